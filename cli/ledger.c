/* `bridle ledger rollup|status`: the rollup step of migrations 0006/0008 run by
 * hand (or from cron), and what is waiting for it. Blocking libpq: this is
 * not the serving path. */
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "db/migrate.h"
#include "lib/util.h"

static int ledger_usage(FILE *f, int code)
{
    fprintf(f,
            "usage: bridle ledger rollup [--database-url URL] [--limit N] [--json]\n"
            "       bridle ledger status [--database-url URL] [--json]\n"
            "  rollup  moves the usage still pending (captured by the trigger on usage_events)\n"
            "          into the 5-minute, hourly and daily rollups: bridle_rollup(N) until it\n"
            "          moves nothing (N pending rows a call, default 100000). Idempotent; safe\n"
            "          next to gateways and other runs (every gateway also runs it every\n"
            "          database.rollup_interval_ms)\n"
            "  status  pending rows, the oldest pending bucket, rollup rows per table and grain\n"
            "  env DATABASE_URL when no --database-url\n");
    return code;
}

/* One value from a one-row query, or NULL (err set). */
static PGresult *query(PGconn *c, const char *sql, int n, const char *const *params, char *err,
                       size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        size_t l = strlen(err);
        while (l && (err[l - 1] == '\n' || err[l - 1] == ' '))
            err[--l] = 0;
        PQclear(r);
        return NULL;
    }
    return r;
}

static int do_rollup(PGconn *c, long long limit, bool json)
{
    char lim[24], err[1024];
    snprintf(lim, sizeof lim, "%lld", limit);
    const char *p[1] = {lim};
    long long moved = 0, calls = 0;
    int64_t t0 = util_now_ms();
    for (;;) {
        PGresult *r = query(c, "SELECT bridle_rollup($1::integer)", 1, p, err, sizeof err);
        if (!r) {
            fprintf(stderr, "bridle ledger rollup: bridle_rollup() failed: %s%s\n", err,
                    strstr(err, "does not exist") ? " (run `bridle migrate` first)" : "");
            return 1;
        }
        long long m = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        calls++;
        moved += m;
        if (m == 0) break;
    }
    int64_t ms = util_now_ms() - t0;
    if (json)
        printf("{\"moved\":%lld,\"calls\":%lld,\"ms\":%lld}\n", moved, calls, (long long)ms);
    else
        printf("rolled up %lld pending rows in %lld call(s), %lld ms\n", moved, calls,
               (long long)ms);
    return 0;
}

/* Rollup rows per table and grain (0008: ops cube, attribution values,
 * histograms); rollup_rows stays the ops rows (scripts read it). */
static const char STATUS_SQL[] =
    "SELECT (SELECT count(*) FROM usage_rollup_pending), "
    "(SELECT count(*) FROM usage_rollup_hist_pending), "
    "(SELECT coalesce(to_char(min(bucket) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "'') FROM usage_rollup_pending), "
    "(SELECT count(*) FROM usage_top_dirty), "
    "(SELECT count(*) FROM usage_rollup_ops WHERE grain = '5m'), "
    "(SELECT count(*) FROM usage_rollup_ops WHERE grain = '1h'), "
    "(SELECT count(*) FROM usage_rollup_ops WHERE grain = '1d'), "
    "(SELECT count(*) FROM usage_rollup_attr WHERE grain = '5m'), "
    "(SELECT count(*) FROM usage_rollup_attr WHERE grain = '1h'), "
    "(SELECT count(*) FROM usage_rollup_attr WHERE grain = '1d'), "
    "(SELECT count(*) FROM usage_rollup_hist WHERE grain = '5m'), "
    "(SELECT count(*) FROM usage_rollup_hist WHERE grain = '1h'), "
    "(SELECT count(*) FROM usage_rollup_hist WHERE grain = '1d'), "
    "(SELECT count(*) FROM usage_top), (SELECT count(*) FROM usage_top_floor)";
enum { NSTATUS = 15 };

static int do_status(PGconn *c, bool json)
{
    char err[1024];
    PGresult *r = query(c, STATUS_SQL, 0, NULL, err, sizeof err);
    if (!r) {
        fprintf(stderr, "bridle ledger status: %s%s\n", err,
                strstr(err, "does not exist") ? " (run `bridle migrate` first)" : "");
        return 1;
    }
    const char *v[NSTATUS];
    for (int i = 0; i < NSTATUS; i++)
        v[i] = PQgetvalue(r, 0, i);
    long long hist = 0;
    for (int i = 10; i < 13; i++)
        hist += strtoll(v[i], NULL, 10);
    if (json)
        printf("{\"pending\":%s,\"pending_hist\":%s,\"oldest_pending_bucket\":%s%s%s,"
               "\"top_hours_dirty\":%s,\"rollup_rows\":{\"5m\":%s,\"1h\":%s,\"1d\":%s},"
               "\"attr_rows\":{\"5m\":%s,\"1h\":%s,\"1d\":%s},"
               "\"hist_rows\":%lld,\"hist_rows_by_grain\":{\"5m\":%s,\"1h\":%s,\"1d\":%s},"
               "\"top_rows\":%s,\"top_floor_hours\":%s}\n",
               v[0], v[1], *v[2] ? "\"" : "", *v[2] ? v[2] : "null", *v[2] ? "\"" : "", v[3], v[4],
               v[5], v[6], v[7], v[8], v[9], hist, v[10], v[11], v[12], v[13], v[14]);
    else
        printf("pending rows:          %s (histogram rows %s)\n"
               "oldest pending bucket: %s\n"
               "hours to trim (top):   %s\n"
               "ops rollup rows:       5m %s, 1h %s, 1d %s\n"
               "attribution rows:      5m %s, 1h %s, 1d %s\n"
               "histogram rows:        5m %s, 1h %s, 1d %s\n"
               "top events kept:       %s (hours with a floor %s)\n",
               v[0], v[1], *v[2] ? v[2] : "-", v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
               v[11], v[12], v[13], v[14]);
    PQclear(r);
    return 0;
}

int ledger_main(int argc, char **argv)
{
    if (argc < 3) return ledger_usage(stderr, 2);
    const char *sub = argv[2];
    if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) return ledger_usage(stdout, 0);
    bool rollup = strcmp(sub, "rollup") == 0, status = strcmp(sub, "status") == 0;
    if (!rollup && !status) {
        fprintf(stderr, "bridle ledger: unknown command \"%s\" (expected rollup or status)\n", sub);
        return ledger_usage(stderr, 2);
    }
    const char *url = getenv("DATABASE_URL");
    long long limit = 100000;
    bool json = false;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--database-url") == 0 && i + 1 < argc)
            url = argv[++i];
        else if (strncmp(argv[i], "--database-url=", 15) == 0)
            url = argv[i] + 15;
        else if (rollup &&
                 (strcmp(argv[i], "--limit") == 0 || strncmp(argv[i], "--limit=", 8) == 0)) {
            const char *v = argv[i][7] == '=' ? argv[i] + 8 : i + 1 < argc ? argv[++i] : "";
            char *end;
            limit = strtoll(v, &end, 10);
            if (!*v || *end || limit < 1 || limit > 100000000) {
                fprintf(stderr,
                        "bridle ledger rollup: --limit expects a whole number of pending rows "
                        "per call, 1..100000000 (got \"%s\")\n",
                        v);
                return 2;
            }
        } else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return ledger_usage(stdout, 0);
        else {
            fprintf(stderr, "bridle ledger %s: unexpected argument \"%s\"\n", sub, argv[i]);
            return ledger_usage(stderr, 2);
        }
    }
    if (!url || !*url) {
        fprintf(stderr,
                "bridle ledger %s: no database: pass --database-url URL or set DATABASE_URL\n",
                sub);
        return 2;
    }
    char err[1024];
    PGconn *c = migrate_connect(url, "bridle-ledger", err, sizeof err);
    if (!c) {
        fprintf(stderr, "bridle ledger %s: %s\n", sub, err);
        return 1;
    }
    int rc = rollup ? do_rollup(c, limit, json) : do_status(c, json);
    PQfinish(c);
    return rc;
}
