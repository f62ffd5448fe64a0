/* `bridle cost`: spend reports over the usage ledger, for people (aligned
 * tables) and scripts (--json). They read the readers of
 * migrations/0008_narrow_rollups.sql, never a scan of usage_events (but for
 * --by user); each reader covers [from, to) with whole days, hours and
 * 5 minutes of rollups (plus rows still pending) and raw events only for the
 * < 5 minute edges, and returns pieces that share buckets: always summed here.
 *   summary, breakdown --by model|provider|requested_model|day
 *                       bridle_usage(from, to, 1 day): the ops rollup (model,
 *                       provider, requested_model, status, error class);
 *   breakdown --by key|team|agent|task|feature|tier
 *                       bridle_usage_by(dim, from, to, 1 day): one row per
 *                       value of that one dimension ('' = none);
 *   top                 bridle_top(from, to, N): the kept top 100 of each whole
 *                       hour; for a partial hour at an edge, that hour's kept
 *                       top 100 when N of them fall inside, else its raw
 *                       events; so N is at most 100.
 * --by user is not a rollup dimension (end_user would multiply the rows): it
 * still scans the raw events of the window (usage_events_v). Rows written
 * before 0008 have requested_model '' (0006 did not keep it): --by
 * requested_model shows them as none.
 *
 *   bridle cost summary   [--period day|week|month] [--from TS] [--to TS]
 *   bridle cost breakdown --by model|provider|requested_model|key|team|agent|task|feature|tier|
 *                              user|day [...]
 *   bridle cost top       [--limit N] [...]
 *   bridle cost alert     [--threshold 0.75]
 *   common: [--json] [--database-url URL]  (env DATABASE_URL)
 *
 * A period is the window ending now: day = last 24 hours, week = last 7 days,
 * month = last 30 days; --from / --to (any PostgreSQL timestamptz literal)
 * override either end. Rows count when from <= ts < to.
 *
 * Money is summed by PostgreSQL over bigint pico-dollars (exact numeric) and
 * printed here from the integer's digits: no floating point anywhere. JSON
 * carries dollars with all 12 decimals ("cost_usd": 0.012500000000) and the
 * exact integer ("cost_pusd": 12500000000); tables round to 6 decimals.
 *
 * `cost alert` reads the budgets instead (the view bridle_budget_status of
 * migrations/0004_keys_budgets.sql): every budget whose current period's
 * spend is at or above --threshold of its limit, with the spend projected
 * linearly to the period's end.
 *
 * Blocking libpq: a CLI, never on the serving path. */
#include "cli/cli.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/migrate.h"

/* ------------------------------------------------------------ formatting */

void report_format_pusd(const char *pusd, int decimals, bool group, char *out, size_t outlen)
{
    if (decimals < 0) decimals = 0;
    if (decimals > 12) decimals = 12;
    const char *p = pusd ? pusd : "0";
    while (*p == ' ')
        p++;
    bool neg = false;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    while (*p == '0' && p[1] >= '0' && p[1] <= '9')
        p++;
    /* magnitude, left-padded to at least 13 digits: 1 integer digit + 12 */
    char d[128];
    size_t n = 0;
    while (p[n] >= '0' && p[n] <= '9' && n < 100)
        n++;
    size_t pad = n < 13 ? 13 - n : 0;
    memset(d, '0', pad);
    memcpy(d + pad, p, n);
    size_t len = pad + n;
    d[len] = '\0';
    size_t ilen = len - 12, keep = ilen + (size_t)decimals;
    bool up = decimals < 12 && d[keep] >= '5';
    d[keep] = '\0';
    char r[130];
    size_t rlen = keep;
    memcpy(r + 1, d, keep + 1); /* r[0] is room for a carry digit */
    r[0] = '0';
    if (up) {
        size_t i = keep;
        while (i > 0 && r[i] == '9')
            r[i--] = '0';
        r[i]++; /* i == 0 lands on the carry slot */
    }
    const char *digits = r[0] == '0' ? r + 1 : r;
    if (r[0] != '0') {
        ilen++;
        rlen++;
    }
    bool zero = true;
    for (size_t i = 0; i < rlen; i++)
        zero = zero && digits[i] == '0';
    size_t o = 0;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < outlen) out[o++] = (ch);                                                       \
    } while (0)
    if (neg && !zero) PUT('-');
    for (size_t i = 0; i < ilen; i++) {
        if (group && i > 0 && (ilen - i) % 3 == 0) PUT(',');
        PUT(digits[i]);
    }
    if (decimals > 0) {
        PUT('.');
        for (size_t i = ilen; i < rlen; i++)
            PUT(digits[i]);
    }
#undef PUT
    if (outlen) out[o < outlen ? o : outlen - 1] = '\0';
}

/* An integer's digits with thousands separators. */
static void format_int(const char *s, char *out, size_t outlen)
{
    size_t o = 0, n = strlen(s), start = (s[0] == '-') ? 1 : 0;
    for (size_t i = 0; i < n && o + 1 < outlen; i++) {
        if (i > start && (n - i) % 3 == 0 && s[i] >= '0' && o + 2 < outlen) out[o++] = ',';
        out[o++] = s[i];
    }
    out[o] = '\0';
}

static void json_str(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\r')
            fputs("\\r", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* A tiny aligned table: cells are copied; right-aligned columns are numbers. */
typedef struct table {
    int ncols, nrows, cap;
    const char **head;
    const bool *right;
    char **cells;    /* nrows * ncols */
    int rule_before; /* row index preceded by a rule (the total), or -1 */
} table;

static void table_add(table *t, const char **row)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, (size_t)t->cap * (size_t)t->ncols * sizeof *t->cells);
        if (!t->cells) {
            fprintf(stderr, "bridle cost: out of memory\n");
            exit(1);
        }
    }
    for (int c = 0; c < t->ncols; c++)
        t->cells[t->nrows * t->ncols + c] = strdup(row[c] ? row[c] : "");
    t->nrows++;
}

static void table_print(table *t, FILE *f)
{
    int w[32] = {0};
    for (int c = 0; c < t->ncols; c++) {
        w[c] = (int)strlen(t->head[c]);
        for (int r = 0; r < t->nrows; r++) {
            int l = (int)strlen(t->cells[r * t->ncols + c]);
            if (l > w[c]) w[c] = l;
        }
    }
    int total = 0;
    for (int c = 0; c < t->ncols; c++)
        total += w[c] + (c ? 2 : 0);
    for (int r = -1; r < t->nrows; r++) {
        if (r == t->rule_before || r == 0) {
            for (int i = 0; i < total; i++)
                fputc('-', f);
            fputc('\n', f);
        }
        for (int c = 0; c < t->ncols; c++) {
            const char *s = r < 0 ? t->head[c] : t->cells[r * t->ncols + c];
            bool last = c == t->ncols - 1;
            if (c) fputs("  ", f);
            if (t->right[c])
                fprintf(f, "%*s", w[c], s);
            else if (last)
                fputs(s, f);
            else
                fprintf(f, "%-*s", w[c], s);
        }
        fputc('\n', f);
    }
    for (int i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
}

/* ------------------------------------------------------------ queries */

/* The measures every report shows, in this order (13 columns): MEASURES
 * over usage_events_v (raw rows), MEASURES_R over the readers' rows.
 * Savings split in two (migration 0009): what answers served without an
 * upstream call saved (cache_hit events: their baseline is the call they
 * replaced) and what routing saved (the rest). */
#define MEASURES_R                                                                                 \
    "coalesce(sum(requests), 0), coalesce(sum(errors), 0), coalesce(sum(cache_hits), 0), "         \
    "coalesce(sum(input_tokens), 0), coalesce(sum(cache_read_tokens), 0), "                        \
    "coalesce(sum(cache_write_tokens), 0), coalesce(sum(output_tokens), 0), "                      \
    "coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost_pusd), 0), "                            \
    "coalesce(sum(baseline_cost_pusd), 0), "                                                       \
    "coalesce(sum(baseline_cost_pusd), 0) - coalesce(sum(cost_pusd), 0), "                         \
    "coalesce(sum(cache_saved_pusd), 0), "                                                         \
    "coalesce(sum(baseline_cost_pusd), 0) - coalesce(sum(cost_pusd), 0) - "                        \
    "coalesce(sum(cache_saved_pusd), 0)"
#define USAGE_FROM " FROM bridle_usage($1::timestamptz, $2::timestamptz, interval '1 day') "
#define USAGE_BY_FROM                                                                              \
    " FROM bridle_usage_by($3::text, $1::timestamptz, $2::timestamptz, interval '1 day') "
#define MEASURES                                                                                   \
    "count(*), count(*) FILTER (WHERE is_error), count(*) FILTER (WHERE cache_hit), "              \
    "coalesce(sum(input_tokens), 0), coalesce(sum(cache_read_tokens), 0), "                        \
    "coalesce(sum(cache_write_tokens), 0), coalesce(sum(output_tokens), 0), "                      \
    "coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost_pusd), 0), "                            \
    "coalesce(sum(baseline_cost_pusd), 0), "                                                       \
    "coalesce(sum(baseline_cost_pusd), 0) - coalesce(sum(cost_pusd), 0), "                         \
    "coalesce(sum(baseline_cost_pusd) FILTER (WHERE cache_hit), 0), "                              \
    "coalesce(sum(baseline_cost_pusd) FILTER (WHERE NOT cache_hit), 0) - "                         \
    "coalesce(sum(cost_pusd), 0)"
enum {
    M_REQ,
    M_ERR,
    M_HITS,
    M_IN,
    M_CR,
    M_CW,
    M_OUT,
    M_REAS,
    M_COST,
    M_BASE,
    M_SAV,
    M_CSAV,
    M_RSAV,
    M_N
};
static const char *const M_JSON[M_N] = {"requests",
                                        "errors",
                                        "cache_hits",
                                        "input_tokens",
                                        "cache_read_tokens",
                                        "cache_write_tokens",
                                        "output_tokens",
                                        "reasoning_tokens",
                                        "cost",
                                        "baseline_cost",
                                        "savings",
                                        "cache_savings",
                                        "routing_savings"};

static void json_measures(FILE *f, PGresult *r, int row, int col0)
{
    for (int m = 0; m < M_N; m++) {
        const char *v = PQgetvalue(r, row, col0 + m);
        if (m >= M_COST) {
            char usd[80];
            report_format_pusd(v, 12, false, usd, sizeof usd);
            fprintf(f, ", \"%s_usd\": %s, \"%s_pusd\": %s", M_JSON[m], usd, M_JSON[m], v);
        } else {
            fprintf(f, ", \"%s\": %s", M_JSON[m], v);
        }
    }
}

/* Table cells for the measures (money rounded to micro-dollars). */
static void table_measures(PGresult *r, int row, int col0, char cells[M_N][64])
{
    for (int m = 0; m < M_N; m++) {
        const char *v = PQgetvalue(r, row, col0 + m);
        if (m >= M_COST) {
            char usd[60];
            report_format_pusd(v, 6, true, usd, sizeof usd);
            if (usd[0] == '-')
                snprintf(cells[m], 64, "-$%s", usd + 1);
            else
                snprintf(cells[m], 64, "$%s", usd);
        } else {
            format_int(v, cells[m], 64);
        }
    }
}

typedef struct opts {
    const char *sub, *url, *period, *from, *to, *by, *threshold;
    int limit;
    bool json;
} opts;

typedef struct window {
    char from_iso[40], to_iso[40]; /* shown */
    char from_arg[64], to_arg[64]; /* passed back as $1, $2 */
    const char *label;
} window;

static void print_pg_error(const char *what, PGresult *r, PGconn *c)
{
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    fprintf(stderr, "bridle cost: %s: %s%s", what, m ? m : PQerrorMessage(c), m ? "\n" : "");
}

static int resolve_window(PGconn *c, const opts *o, window *w)
{
    const char *interval = strcmp(o->period, "week") == 0    ? "7 days"
                           : strcmp(o->period, "month") == 0 ? "30 days"
                                                             : "1 day";
    const char *params[] = {o->from, o->to, interval};
    PGresult *r = PQexecParams(
        c,
        "SELECT to_char(f AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        "       to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        "       to_char(f AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00'),"
        "       to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00'), f < t "
        "FROM (SELECT coalesce($1::timestamptz, t - $3::interval) AS f, t"
        "      FROM (SELECT coalesce($2::timestamptz, date_trunc('second', now())) AS t) x) y",
        3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        print_pg_error("bad --from / --to", r, c);
        PQclear(r);
        return -1;
    }
    snprintf(w->from_iso, sizeof w->from_iso, "%s", PQgetvalue(r, 0, 0));
    snprintf(w->to_iso, sizeof w->to_iso, "%s", PQgetvalue(r, 0, 1));
    snprintf(w->from_arg, sizeof w->from_arg, "%s", PQgetvalue(r, 0, 2));
    snprintf(w->to_arg, sizeof w->to_arg, "%s", PQgetvalue(r, 0, 3));
    bool ok = PQgetvalue(r, 0, 4)[0] == 't';
    PQclear(r);
    if (!ok) {
        fprintf(stderr, "bridle cost: the window is empty: from %s is not before to %s\n",
                w->from_iso, w->to_iso);
        return -1;
    }
    w->label = o->from                           ? "custom"
               : strcmp(o->period, "week") == 0  ? "week"
               : strcmp(o->period, "month") == 0 ? "month"
                                                 : "day";
    return 0;
}

static const char *window_words(const window *w)
{
    if (strcmp(w->label, "week") == 0) return "last 7 days";
    if (strcmp(w->label, "month") == 0) return "last 30 days";
    if (strcmp(w->label, "day") == 0) return "last 24 hours";
    return "custom window";
}

static PGresult *run(PGconn *c, const char *sql, const window *w, const char *extra)
{
    const char *params[] = {w->from_arg, w->to_arg, extra};
    PGresult *r = PQexecParams(c, sql, extra ? 3 : 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        print_pg_error("query failed", r, c);
        PQclear(r);
        return NULL;
    }
    return r;
}

static int do_summary(PGconn *c, const opts *o, const window *w)
{
    PGresult *r = run(c, "SELECT " MEASURES_R USAGE_FROM, w, NULL);
    if (!r) return 1;
    if (o->json) {
        printf("{\"period\": \"%s\", \"from\": \"%s\", \"to\": \"%s\"", w->label, w->from_iso,
               w->to_iso);
        json_measures(stdout, r, 0, 0);
        printf("}\n");
    } else {
        char cells[M_N][64];
        table_measures(r, 0, 0, cells);
        static const char *const label[M_N] = {"requests",
                                               "errors",
                                               "cache hits",
                                               "input tokens (uncached)",
                                               "cache read tokens",
                                               "cache write tokens",
                                               "output tokens",
                                               "reasoning tokens",
                                               "cost",
                                               "baseline cost",
                                               "savings",
                                               "  by caching",
                                               "  by routing"};
        printf("cost summary, %s (%s .. %s)\n", window_words(w), w->from_iso, w->to_iso);
        int vw = 0;
        for (int m = 0; m < M_N; m++)
            if ((int)strlen(cells[m]) > vw) vw = (int)strlen(cells[m]);
        for (int m = 0; m < M_N; m++)
            printf("  %-24s %*s\n", label[m], vw, cells[m]);
    }
    PQclear(r);
    return 0;
}

/* Where a breakdown's rows come from. */
typedef enum { SRC_OPS, SRC_ATTR, SRC_RAW } by_source;

/* --by NAME -> the SQL expression it groups by and its source: bridle_usage()
 * rows, bridle_usage_by(NAME) rows (the --by name is the reader's dim) or,
 * for end_user, usage_events_v. The readers say none as '': back to NULL,
 * as the raw rows have it. */
static const char *by_expr(const char *by, by_source *src)
{
    static const struct {
        const char *name, *expr;
        by_source src;
    } map[] = {
        {"model", "nullif(model, '')", SRC_OPS},
        {"provider", "nullif(provider, '')", SRC_OPS},
        {"requested_model", "nullif(requested_model, '')", SRC_OPS},
        {"key", "nullif(value, '')", SRC_ATTR},
        {"team", "nullif(value, '')", SRC_ATTR},
        {"agent", "nullif(value, '')", SRC_ATTR},
        {"task", "nullif(value, '')", SRC_ATTR},
        {"feature", "nullif(value, '')", SRC_ATTR},
        {"tier", "nullif(value, '')", SRC_ATTR},
        {"user", "end_user", SRC_RAW},
        {"day", "to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD')", SRC_OPS},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(by, map[i].name) == 0) {
            if (src) *src = map[i].src;
            return map[i].expr;
        }
    return NULL;
}

static int do_breakdown(PGconn *c, const opts *o, const window *w)
{
    by_source src = SRC_OPS;
    const char *e = by_expr(o->by, &src);
    bool by_day = strcmp(o->by, "day") == 0;
    const char *from = src == SRC_RAW ? MEASURES " FROM usage_events_v WHERE ts >= $1 AND ts < $2"
                       : src == SRC_ATTR ? MEASURES_R USAGE_BY_FROM
                                         : MEASURES_R USAGE_FROM;
    char sql[2048];
    /* GROUPING SETS adds the total row, summed exactly by PostgreSQL (over
     * the readers' pieces, which share buckets and values). */
    snprintf(sql, sizeof sql,
             "SELECT grouping(%s), %s, %s GROUP BY GROUPING SETS ((%s), ()) "
             "ORDER BY 1, %s 2 NULLS LAST",
             e, e, from, e, by_day ? "" : "sum(cost_pusd) DESC,");
    PGresult *r = run(c, sql, w, src == SRC_ATTR ? o->by : NULL);
    if (!r) return 1;
    int n = PQntuples(r);
    if (o->json) {
        printf("[");
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (strcmp(PQgetvalue(r, i, 0), "0") != 0) continue; /* the total row is for people */
            printf(k++ ? ",\n {" : "\n {");
            json_str(stdout, o->by);
            printf(": ");
            json_str(stdout, PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1));
            json_measures(stdout, r, i, 2);
            printf("}");
        }
        printf(k ? "\n]\n" : "]\n");
    } else {
        static const char *const head[] = {"",           "requests",    "errors",    "input",
                                           "cache read", "cache write", "output",    "cost",
                                           "baseline",   "savings",     "by caching"};
        static const bool right[] = {false, true, true, true, true, true,
                                     true,  true, true, true, true};
        static const int pick[] = {M_REQ, M_ERR,  M_IN,   M_CR,  M_CW,
                                   M_OUT, M_COST, M_BASE, M_SAV, M_CSAV};
        enum { NCOLS = 1 + sizeof pick / sizeof *pick };
        const char *h[NCOLS];
        memcpy(h, head, sizeof h);
        h[0] = o->by;
        table t = {.ncols = NCOLS, .head = h, .right = right, .rule_before = -1};
        for (int i = 0; i < n; i++) {
            bool total = strcmp(PQgetvalue(r, i, 0), "0") != 0;
            char cells[M_N][64];
            table_measures(r, i, 2, cells);
            const char *row[NCOLS];
            row[0] = total ? "total" : PQgetisnull(r, i, 1) ? "(none)" : PQgetvalue(r, i, 1);
            for (int k = 0; k < NCOLS - 1; k++)
                row[k + 1] = cells[pick[k]];
            if (total) t.rule_before = t.nrows;
            table_add(&t, row);
        }
        printf("cost by %s, %s (%s .. %s)\n", o->by, window_words(w), w->from_iso, w->to_iso);
        table_print(&t, stdout);
    }
    PQclear(r);
    return 0;
}

static int do_top(PGconn *c, const opts *o, const window *w)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", o->limit);
    PGresult *r = run(c,
                      "SELECT event_id,"
                      "  to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
                      "  key_id, team, model, provider, input_tokens, cache_read_tokens,"
                      "  cache_write_tokens, output_tokens, cost_pusd, baseline_cost_pusd,"
                      "  latency_us * 0.001, status, attempts "
                      "FROM bridle_top($1::timestamptz, $2::timestamptz, $3::int) "
                      "ORDER BY cost_pusd DESC, ts DESC, event_id",
                      w, lim);
    if (!r) return 1;
    int n = PQntuples(r);
#define V(i, col) (PQgetisnull(r, (i), (col)) ? NULL : PQgetvalue(r, (i), (col)))
    if (o->json) {
        printf("[");
        for (int i = 0; i < n; i++) {
            char cost[64], base[64];
            report_format_pusd(V(i, 10), 12, false, cost, sizeof cost);
            report_format_pusd(V(i, 11), 12, false, base, sizeof base);
            printf(i ? ",\n {" : "\n {");
            static const char *const names[] = {"event_id", "ts",    "key",
                                                "team",     "model", "provider"};
            for (int k = 0; k < 6; k++) {
                printf(k ? ", \"%s\": " : "\"%s\": ", names[k]);
                json_str(stdout, V(i, k));
            }
            printf(", \"input_tokens\": %s, \"cache_read_tokens\": %s, \"cache_write_tokens\": %s, "
                   "\"output_tokens\": %s, \"cost_usd\": %s, \"cost_pusd\": %s, "
                   "\"baseline_cost_usd\": %s, \"baseline_cost_pusd\": %s, \"latency_ms\": %s, "
                   "\"status\": %s, \"attempts\": %s}",
                   V(i, 6), V(i, 7), V(i, 8), V(i, 9), cost, V(i, 10), base, V(i, 11), V(i, 12),
                   V(i, 13), V(i, 14));
        }
        printf(n ? "\n]\n" : "]\n");
    } else {
        static const char *const head[] = {"time (UTC)", "event_id", "key",
                                           "model",      "provider", "input",
                                           "output",     "cost",     "latency ms"};
        static const bool right[] = {false, false, false, false, false, true, true, true, true};
        table t = {.ncols = 9, .head = (const char **)head, .right = right, .rule_before = -1};
        for (int i = 0; i < n; i++) {
            char ts[32], in[40], out[40], cost[64], usd[60];
            snprintf(ts, sizeof ts, "%.19s", V(i, 1));
            ts[10] = ' ';
            format_int(V(i, 6), in, sizeof in);
            format_int(V(i, 9), out, sizeof out);
            report_format_pusd(V(i, 10), 6, true, usd, sizeof usd);
            snprintf(cost, sizeof cost, "$%s", usd);
            const char *row[] = {ts,
                                 V(i, 0),
                                 V(i, 2) ? V(i, 2) : "(none)",
                                 V(i, 4) ? V(i, 4) : "(none)",
                                 V(i, 5) ? V(i, 5) : "(none)",
                                 in,
                                 out,
                                 cost,
                                 V(i, 12)};
            table_add(&t, row);
        }
        printf("most expensive requests, %s (%s .. %s)\n", window_words(w), w->from_iso, w->to_iso);
        table_print(&t, stdout);
    }
#undef V
    PQclear(r);
    return 0;
}

/* ------------------------------------------------------------ alert */

/* Budgets at or above the threshold in their current period. Money comes
 * back as integer pico-dollars (the view's dollars are exact numerics);
 * the projection is spent / elapsed share of the period, rounded. */
static int do_alert(PGconn *c, const opts *o, double threshold)
{
    const char *params[] = {o->threshold};
    PGresult *r =
        PQexecParams(c,
                     "SELECT scope, scope_id, period,"
                     "  to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                     "  to_char(period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                     "  round(spent_usd * 1e12)::bigint, round(limit_usd * 1e12)::bigint,"
                     "  round(share, 6),"
                     "  round(spent_usd * 1e12 * extract(epoch FROM period_end - period_start)"
                     "        / greatest(extract(epoch FROM now() - period_start), 0.001))::bigint,"
                     "  round(100 * share, 1) "
                     "FROM bridle_budget_status WHERE share >= $1::numeric "
                     "ORDER BY share DESC, scope, scope_id, period",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        print_pg_error("query failed", r, c);
        PQclear(r);
        return 1;
    }
    int n = PQntuples(r);
#define V(i, col) PQgetvalue(r, (i), (col))
    if (o->json) {
        printf("[");
        for (int i = 0; i < n; i++) {
            char spent[64], limit[64], proj[64];
            report_format_pusd(V(i, 5), 12, false, spent, sizeof spent);
            report_format_pusd(V(i, 6), 12, false, limit, sizeof limit);
            report_format_pusd(V(i, 8), 12, false, proj, sizeof proj);
            printf(i ? ",\n {\"scope\": " : "\n {\"scope\": ");
            json_str(stdout, V(i, 0));
            printf(", \"id\": ");
            json_str(stdout, V(i, 1));
            printf(", \"period\": \"%s\", \"period_start\": \"%s\", \"period_end\": \"%s\", "
                   "\"spent_usd\": %s, \"limit_usd\": %s, \"share\": %s, \"projected_usd\": %s, "
                   "\"spent_pusd\": %s, \"limit_pusd\": %s, \"projected_pusd\": %s}",
                   V(i, 2), V(i, 3), V(i, 4), spent, limit, V(i, 7), proj, V(i, 5), V(i, 6),
                   V(i, 8));
        }
        printf(n ? "\n]\n" : "]\n");
    } else if (n == 0) {
        printf("no budget at or above %g %% of its limit\n", threshold * 100);
    } else {
        static const char *const head[] = {"scope", "id",    "period",    "spent",
                                           "limit", "share", "projected", "resets (UTC)"};
        static const bool right[] = {false, false, false, true, true, true, true, false};
        table t = {.ncols = 8, .head = (const char **)head, .right = right, .rule_before = -1};
        for (int i = 0; i < n; i++) {
            char spent[64], limit[64], proj[64], s1[60], s2[60], s3[60], share[32], resets[32];
            report_format_pusd(V(i, 5), 6, true, s1, sizeof s1);
            report_format_pusd(V(i, 6), 2, true, s2, sizeof s2);
            report_format_pusd(V(i, 8), 6, true, s3, sizeof s3);
            snprintf(spent, sizeof spent, "$%s", s1);
            snprintf(limit, sizeof limit, "$%s", s2);
            snprintf(proj, sizeof proj, "$%s", s3);
            snprintf(share, sizeof share, "%s %%", V(i, 9));
            snprintf(resets, sizeof resets, "%.16s", V(i, 4));
            resets[10] = ' ';
            const char *row[] = {
                V(i, 0), *V(i, 1) ? V(i, 1) : "(all)", V(i, 2), spent, limit, share, proj, resets};
            table_add(&t, row);
        }
        printf("budgets at or above %g %% of their limit in the current period\n", threshold * 100);
        table_print(&t, stdout);
    }
#undef V
    PQclear(r);
    return 0;
}

/* ------------------------------------------------------------ the command */

static int cost_usage(FILE *f, int code)
{
    fprintf(f, "usage:\n"
               "  bridle cost summary   [--period day|week|month] [--from TS] [--to TS]\n"
               "  bridle cost breakdown --by model|provider|requested_model|key|team|agent|task|\n"
               "                             feature|tier|user|day [--period ...]\n"
               "  bridle cost top       [--limit N] [--period ...]   N from 1 to 100 (default 10)\n"
               "  bridle cost alert     [--threshold 0.75]   budgets at or above a share of their\n"
               "                        limit this period, with the spend projected to its end\n"
               "options for all: --json (for scripts), --database-url URL (env DATABASE_URL)\n"
               "periods end now: day = last 24 hours (default), week = 7 days, month = 30 days;\n"
               "--from / --to take any PostgreSQL timestamp (e.g. 2026-11-01T00:00:00Z).\n"
               "Reports read the rollups (whole days, hours, 5 minutes; raw events only at the\n"
               "edges); --by user scans the raw events of the window. Events from before\n"
               "migration 0008 have no requested_model in the rollups: shown as (none).\n");
    return code;
}

int cost_main(int argc, char **argv)
{
    opts o = {.url = getenv("DATABASE_URL"), .period = "day", .limit = 10};
    if (argc < 3) return cost_usage(stderr, 2);
    o.sub = argv[2];
    if (strcmp(o.sub, "-h") == 0 || strcmp(o.sub, "--help") == 0 || strcmp(o.sub, "help") == 0)
        return cost_usage(stdout, 0);
    if (strcmp(o.sub, "summary") != 0 && strcmp(o.sub, "breakdown") != 0 &&
        strcmp(o.sub, "top") != 0 && strcmp(o.sub, "alert") != 0) {
        fprintf(stderr, "bridle cost: unknown report \"%s\"\n", o.sub);
        return cost_usage(stderr, 2);
    }
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            o.json = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return cost_usage(stdout, 0);
        const char **slot = strcmp(a, "--database-url") == 0 ? &o.url
                            : strcmp(a, "--period") == 0     ? &o.period
                            : strcmp(a, "--from") == 0       ? &o.from
                            : strcmp(a, "--to") == 0         ? &o.to
                            : strcmp(a, "--by") == 0         ? &o.by
                            : strcmp(a, "--threshold") == 0  ? &o.threshold
                                                             : NULL;
        if (strcmp(a, "--limit") == 0 && v) {
            char *end;
            long l = strtol(v, &end, 10);
            if (*end || l < 1 || l > 100) {
                fprintf(stderr,
                        "bridle cost: --limit wants a number from 1 to 100, not \"%s\" (the "
                        "rollups keep the 100 most expensive requests of each hour)\n",
                        v);
                return 2;
            }
            o.limit = (int)l;
            i++;
            continue;
        }
        if (!slot || !v) {
            fprintf(stderr, "bridle cost: %s \"%s\"\n",
                    slot ? "missing value after" : "unexpected argument", a);
            return cost_usage(stderr, 2);
        }
        *slot = v;
        i++;
    }
    if (strcmp(o.period, "day") != 0 && strcmp(o.period, "week") != 0 &&
        strcmp(o.period, "month") != 0) {
        fprintf(stderr, "bridle cost: --period is day, week or month, not \"%s\"\n", o.period);
        return 2;
    }
    if (strcmp(o.sub, "breakdown") == 0 && (!o.by || !by_expr(o.by, NULL))) {
        fprintf(
            stderr,
            "bridle cost breakdown: --by is one of model, provider, requested_model, key, team, "
            "agent, task, feature, tier, user, day%s%s%s\n",
            o.by ? " (not \"" : "", o.by ? o.by : "", o.by ? "\")" : "");
        return 2;
    }
    double threshold = 0.75;
    if (o.threshold) {
        char *end;
        threshold = strtod(o.threshold, &end);
        if (end == o.threshold || *end || !(threshold >= 0 && threshold <= 10)) {
            fprintf(stderr,
                    "bridle cost alert: --threshold wants a share of the budget from 0 to 10, "
                    "like 0.75 for 75 %%, not \"%s\"\n",
                    o.threshold);
            return 2;
        }
    }
    char threshold_arg[32];
    snprintf(threshold_arg, sizeof threshold_arg, "%.6f", threshold);
    o.threshold = threshold_arg; /* normalized: PostgreSQL reads it as numeric */
    if (!o.url || !*o.url) {
        fprintf(stderr, "bridle cost: no database: pass --database-url URL or set DATABASE_URL\n");
        return 2;
    }
    char err[1024];
    PGconn *c = migrate_connect(o.url, "bridle-cost", err, sizeof err);
    if (!c) {
        fprintf(stderr, "bridle cost: %s\n", err);
        return 1;
    }
    int rc = 1;
    bool alert = strcmp(o.sub, "alert") == 0;
    PGresult *r = PQexec(c, alert ? "SELECT to_regclass('bridle_budget_status') IS NOT NULL"
                                  : "SELECT to_regclass('usage_events_v') IS NOT NULL AND "
                                    "to_regprocedure('bridle_top(timestamptz, timestamptz, "
                                    "integer)') IS NOT NULL AND "
                                    "to_regprocedure('bridle_usage_by(text, timestamptz, "
                                    "timestamptz, interval)') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        print_pg_error("checking the schema", r, c);
    } else if (alert && PQgetvalue(r, 0, 0)[0] != 't') {
        fprintf(stderr, "bridle cost: this database has no budgets (bridle_budget_status is "
                        "missing): run `bridle migrate` first\n");
    } else if (alert) {
        rc = do_alert(c, &o, threshold);
    } else if (PQgetvalue(r, 0, 0)[0] != 't') {
        fprintf(stderr, "bridle cost: this database has no usage ledger or not the rollups "
                        "of migration 0008 (usage_events_v, bridle_top or bridle_usage_by is "
                        "missing): run `bridle migrate` first\n");
    } else {
        window w;
        if (resolve_window(c, &o, &w) == 0) {
            if (strcmp(o.sub, "summary") == 0)
                rc = do_summary(c, &o, &w);
            else if (strcmp(o.sub, "breakdown") == 0)
                rc = do_breakdown(c, &o, &w);
            else
                rc = do_top(c, &o, &w);
        }
    }
    PQclear(r);
    PQfinish(c);
    fflush(stdout);
    return rc;
}
