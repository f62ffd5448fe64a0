/* Keys and teams in PostgreSQL: see keystore.h and migrations/0004. */
#include "db/keystore.h"

#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db/pgconn.h"
#include "lib/log.h"
#include "lib/util.h"

struct keystore {
    struct event_base *base;
    pgconn *pg;
    int refresh_ms;
    keystore_load_fn on_load;
    void *ctx;
    struct event timer;
    int64_t version; /* of the rows last handed over; -1 before */
    bool loading;    /* the load query is the one in flight */
    bool warned;     /* a failure was logged since the last success */
};

/* ------------------------------------------------------------ SQL */

#define TS(x) "to_char((" x ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define USD(x) "trim_scale(nullif(" x ", 0)::numeric / 1000000000000)"
#define BUDGET(scope, id, period)                                                                  \
    USD("(SELECT limit_pusd FROM bridle_budgets WHERE scope = '" scope "' AND scope_id = " id      \
        " AND period = '" period "')")

/* A key row k as JSON, with its budgets from expressions d, w, m. */
#define KEY_JSON(d, w, m)                                                                          \
    "json_build_object('id', k.id, 'prefix', k.prefix, 'last4', k.last4, 'kind', k.kind,"          \
    " 'team', k.team, 'models', k.models, 'agent', k.agent, 'feature', k.feature,"                 \
    " 'budget_daily_usd', " d ", 'budget_weekly_usd', " w ", 'budget_monthly_usd', " m ","         \
    " 'rpm', nullif(k.rpm, 0), 'tokens_per_hour', nullif(k.tokens_per_hour, 0),"                   \
    " 'usd_per_hour', " USD(                                                                       \
        "k.usd_per_hour_pusd") ","                                                                 \
                               " 'created_at', " TS("k.created_at") ", 'expires_at', " TS(         \
                                   "k.expires_at") ","                                             \
                                                   " 'revoked_at', " TS("k.revoked_at") ")"

#define KEY_JSON_DB                                                                                \
    KEY_JSON(BUDGET("key", "k.id", "day"), BUDGET("key", "k.id", "week"),                          \
             BUDGET("key", "k.id", "month"))

const char keystore_create_sql[] =
    "WITH k AS (INSERT INTO bridle_keys (id, key_hash, prefix, last4, kind, team, models, agent,"
    " feature, rpm, tokens_per_hour, usd_per_hour_pusd, expires_at) VALUES ($1, $2, $3, $4, $5,"
    " $6, $7::text[], $8, $9, $10::bigint, $11::bigint, $12::bigint, $13::timestamptz)"
    " RETURNING *),"
    " b AS (INSERT INTO bridle_budgets AS o (scope, scope_id, period, limit_pusd, source)"
    " SELECT 'key', $1, p, l, 'db' FROM (VALUES ('day', $14::bigint), ('week', $15::bigint),"
    " ('month', $16::bigint)) v(p, l) WHERE l > 0"
    " ON CONFLICT (scope, scope_id, period) DO UPDATE SET limit_pusd = excluded.limit_pusd,"
    " source = 'db', updated_at = now())"
    " SELECT " KEY_JSON(USD("$14::bigint"), USD("$15::bigint"), USD("$16::bigint")) "::text FROM k";

const char keystore_list_keys_sql[] =
    "SELECT coalesce(json_agg(" KEY_JSON_DB " ORDER BY k.created_at, k.id), '[]')::text"
    " FROM bridle_keys k";

const char keystore_revoke_sql[] =
    "UPDATE bridle_keys k SET revoked_at = coalesce(k.revoked_at, now()), updated_at = now()"
    " WHERE k.id = $1 RETURNING " KEY_JSON_DB "::text";

#define TEAM_JSON(d, w, m)                                                                         \
    "json_build_object('name', t.name, 'budget_daily_usd', " d ", 'budget_weekly_usd', " w         \
    ", 'budget_monthly_usd', " m ", 'rpm', nullif(t.rpm, 0), 'tokens_per_hour',"                   \
    " nullif(t.tokens_per_hour, 0), 'usd_per_hour', " USD(                                         \
        "t.usd_per_hour_pusd") ","                                                                 \
                               " 'updated_at', " TS("t.updated_at") ")"

/* The statement sees the budgets as they were before it: the returned
 * budgets are the new values where given, else the old ones. */
#define TEAM_BUDGET(n, period)                                                                     \
    "CASE WHEN $" n "::bigint IS NULL THEN " BUDGET("team", "t.name",                              \
                                                    period) " ELSE " USD("$" n "::bigint") " END"

const char keystore_team_set_sql[] =
    "WITH t AS (INSERT INTO bridle_teams AS o (name, rpm, tokens_per_hour, usd_per_hour_pusd)"
    " VALUES ($1, coalesce($2::bigint, 0), coalesce($3::bigint, 0), coalesce($4::bigint, 0))"
    " ON CONFLICT (name) DO UPDATE SET rpm = coalesce($2::bigint, o.rpm),"
    " tokens_per_hour = coalesce($3::bigint, o.tokens_per_hour),"
    " usd_per_hour_pusd = coalesce($4::bigint, o.usd_per_hour_pusd), updated_at = now()"
    " RETURNING *),"
    " d AS (DELETE FROM bridle_budgets WHERE scope = 'team' AND scope_id = $1 AND"
    " ((period = 'day' AND $5::bigint = 0) OR (period = 'week' AND $6::bigint = 0) OR"
    " (period = 'month' AND $7::bigint = 0))),"
    " u AS (INSERT INTO bridle_budgets AS o (scope, scope_id, period, limit_pusd, source)"
    " SELECT 'team', $1, p, l, 'db' FROM (VALUES ('day', $5::bigint), ('week', $6::bigint),"
    " ('month', $7::bigint)) v(p, l) WHERE l > 0"
    " ON CONFLICT (scope, scope_id, period) DO UPDATE SET limit_pusd = excluded.limit_pusd,"
    " source = 'db', updated_at = now())"
    " SELECT " TEAM_JSON(TEAM_BUDGET("5", "day"), TEAM_BUDGET("6", "week"),
                         TEAM_BUDGET("7", "month")) "::text FROM t";

const char keystore_list_teams_sql[] = "SELECT coalesce(json_agg(" TEAM_JSON(
    BUDGET("team", "t.name", "day"), BUDGET("team", "t.name", "week"),
    BUDGET("team", "t.name", "month")) " ORDER BY t.name),"
                                       " '[]')::text FROM bridle_teams t";

const char keystore_budgets_sql[] =
    "SELECT coalesce(json_agg(json_build_object('scope', s.scope, 'id', s.scope_id,"
    " 'period', s.period, 'period_start', " TS("s.period_start") ", 'period_end', " TS(
        "s.period_end") ", 'limit_usd', trim_scale(s.limit_usd),"
                        " 'spent_usd', trim_scale(s.spent_usd), 'held_usd', trim_scale(s.held_usd),"
                        " 'share', round(s.share, 6)) ORDER BY s.scope, s.scope_id, s.period), "
                        "'[]')::text"
                        " FROM bridle_budget_status s";

/* Every key, team and key/team budget, and the version, in one statement
 * (one snapshot). Models are joined with U+001F, which no name holds. */
static const char load_sql[] =
    "WITH b AS (SELECT scope, scope_id,"
    " coalesce(max(limit_pusd) FILTER (WHERE period = 'day'), 0) AS d,"
    " coalesce(max(limit_pusd) FILTER (WHERE period = 'week'), 0) AS w,"
    " coalesce(max(limit_pusd) FILTER (WHERE period = 'month'), 0) AS m"
    " FROM bridle_budgets WHERE scope IN ('key', 'team') GROUP BY 1, 2)"
    " SELECT 'v', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0::bigint, 0::bigint, 0::bigint,"
    " 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, version FROM bridle_keys_version"
    " UNION ALL"
    " SELECT 'k', k.id, k.key_hash, k.kind, k.team, array_to_string(k.models, chr(31)), k.agent,"
    " k.feature, k.rpm, k.tokens_per_hour, k.usd_per_hour_pusd, coalesce(b.d, 0),"
    " coalesce(b.w, 0), coalesce(b.m, 0),"
    " coalesce((extract(epoch FROM k.expires_at) * 1000)::bigint, 0),"
    " CASE WHEN k.revoked_at IS NULL THEN 0"
    " ELSE greatest((extract(epoch FROM k.revoked_at) * 1000)::bigint, 1) END, 0"
    " FROM bridle_keys k LEFT JOIN b ON b.scope = 'key' AND b.scope_id = k.id"
    " UNION ALL"
    " SELECT 't', t.name, NULL, NULL, NULL, NULL, NULL, NULL, t.rpm, t.tokens_per_hour,"
    " t.usd_per_hour_pusd, coalesce(b.d, 0), coalesce(b.w, 0), coalesce(b.m, 0), 0, 0, 0"
    " FROM bridle_teams t LEFT JOIN b ON b.scope = 'team' AND b.scope_id = t.name";

static const char version_sql[] = "SELECT version FROM bridle_keys_version";

/* ------------------------------------------------------------ rows */

static void key_free(keystore_key *k)
{
    free(k->id);
    free(k->team);
    for (int i = 0; i < k->n_models; i++)
        free(k->models[i]);
    free(k->models);
    free(k->agent);
    free(k->feature);
}

void keystore_rows_free(keystore_rows *rows)
{
    if (!rows) return;
    for (int i = 0; i < rows->n_keys; i++)
        key_free(&rows->keys[i]);
    for (int i = 0; i < rows->n_teams; i++)
        free(rows->teams[i].name);
    free(rows->keys);
    free(rows->teams);
    free(rows);
}

/* NULL for SQL NULL; *oom set when a copy fails. */
static char *dup_or_null(PGresult *res, int row, int col, bool *oom)
{
    if (PQgetisnull(res, row, col)) return NULL;
    char *s = strdup(PQgetvalue(res, row, col));
    if (!s) *oom = true;
    return s;
}

static int64_t i64(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* Columns 8..13 of the load query: rpm, tokens/h, pusd/h, then the day,
 * week and month budgets. */
static void read_limits(PGresult *res, int row, keystore_limits *l)
{
    l->rpm = i64(res, row, 8);
    l->tokens_per_hour = i64(res, row, 9);
    l->pusd_per_hour = i64(res, row, 10);
    for (int p = 0; p < KS_PERIODS; p++)
        l->budget_pusd[p] = i64(res, row, 11 + p);
}

static bool split_models(const char *s, keystore_key *k)
{
    if (!s || !*s) return true;
    int n = 1;
    for (const char *p = s; *p; p++)
        n += *p == '\x1f';
    k->models = calloc((size_t)n, sizeof *k->models);
    if (!k->models) return false;
    for (const char *p = s;;) {
        const char *e = strchr(p, '\x1f');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!(k->models[k->n_models++] = strndup(p, len))) return false;
        if (!e) break;
        p = e + 1;
    }
    return true;
}

/* The load's rows, or NULL on OOM. */
static keystore_rows *rows_from(PGresult *res)
{
    int n = PQntuples(res);
    keystore_rows *rows = calloc(1, sizeof *rows);
    if (!rows) return NULL;
    rows->keys = calloc((size_t)(n ? n : 1), sizeof *rows->keys);
    rows->teams = calloc((size_t)(n ? n : 1), sizeof *rows->teams);
    bool oom = !rows->keys || !rows->teams;
    for (int i = 0; i < n && !oom; i++) {
        char what = PQgetvalue(res, i, 0)[0];
        if (what == 'v') {
            rows->version = i64(res, i, 16);
        } else if (what == 'k') {
            keystore_key *k = &rows->keys[rows->n_keys++];
            k->id = dup_or_null(res, i, 1, &oom);
            snprintf(k->sha256, sizeof k->sha256, "%s", PQgetvalue(res, i, 2));
            k->admin = strcmp(PQgetvalue(res, i, 3), "admin") == 0;
            k->team = dup_or_null(res, i, 4, &oom);
            if (!PQgetisnull(res, i, 5) && !split_models(PQgetvalue(res, i, 5), k)) oom = true;
            k->agent = dup_or_null(res, i, 6, &oom);
            k->feature = dup_or_null(res, i, 7, &oom);
            read_limits(res, i, &k->lim);
            k->expires_ms = i64(res, i, 14);
            k->revoked_ms = i64(res, i, 15);
        } else if (what == 't') {
            keystore_team *t = &rows->teams[rows->n_teams++];
            t->name = dup_or_null(res, i, 1, &oom);
            read_limits(res, i, &t->lim);
        }
    }
    if (oom) {
        keystore_rows_free(rows);
        return NULL;
    }
    return rows;
}

/* ------------------------------------------------------------ polling */

static void poll_now(keystore *ks);

static void arm(keystore *ks, int ms)
{
    struct timeval tv = util_ms_timeval(ms);
    evtimer_add(&ks->timer, &tv);
}

static void failed(keystore *ks, const char *what, const char *error)
{
    if (!ks->warned)
        log_warn("key store: %s failed (%s); keeping the keys loaded so far and retrying every "
                 "%d ms",
                 what, error, ks->refresh_ms);
    ks->warned = true;
}

static void on_load_result(void *ctx, PGresult *res, const char *error)
{
    keystore *ks = ctx;
    ks->loading = false;
    if (!error && PQresultStatus(res) != PGRES_TUPLES_OK) error = PQresultErrorMessage(res);
    if (error) {
        failed(ks, "loading bridle_keys", error);
        return;
    }
    keystore_rows *rows = rows_from(res);
    if (!rows) {
        failed(ks, "loading bridle_keys", "out of memory");
        return;
    }
    if (ks->warned) log_info("key store: loaded again");
    ks->warned = false;
    ks->version = rows->version;
    log_debug("key store: version %lld, %d keys, %d teams", (long long)rows->version, rows->n_keys,
              rows->n_teams);
    ks->on_load(ks->ctx, rows);
}

static void on_version_result(void *ctx, PGresult *res, const char *error)
{
    keystore *ks = ctx;
    if (!error && PQresultStatus(res) != PGRES_TUPLES_OK) error = PQresultErrorMessage(res);
    if (!error && PQntuples(res) != 1) error = "bridle_keys_version has no row";
    if (error) {
        failed(ks, "reading bridle_keys_version", error);
        return;
    }
    if (ks->version >= 0 && i64(res, 0, 0) == ks->version) return;
    /* called from inside pgconn's result dispatch: the connection is idle
     * again only after this returns, so the load goes out on the next pass */
    ks->loading = true;
    arm(ks, 0);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    keystore *ks = arg;
    poll_now(ks);
}

static void poll_now(keystore *ks)
{
    if (pgconn_idle(ks->pg)) {
        if (ks->loading) {
            if (pgconn_send(ks->pg, load_sql, 0, NULL, on_load_result, ks) == 0) {
                arm(ks, ks->refresh_ms);
                return;
            }
        } else
            pgconn_send(ks->pg, version_sql, 0, NULL, on_version_result, ks);
    }
    arm(ks, ks->refresh_ms);
}

static void on_state(void *ctx, bool up)
{
    keystore *ks = ctx;
    if (up) {
        evtimer_del(&ks->timer);
        arm(ks, 0); /* the first poll as soon as the connection is up */
    } else if (ks->version < 0 && !ks->warned) {
        log_warn("key store: cannot reach the database (%s): database keys are not loaded yet; "
                 "keys from the config file work",
                 ks->pg ? pgconn_last_error(ks->pg) : "connection refused");
        ks->warned = true;
    }
}

keystore *keystore_new(struct event_base *base, const char *database_url, int refresh_ms,
                       keystore_load_fn on_load, void *ctx)
{
    keystore *ks = calloc(1, sizeof *ks);
    if (!ks) return NULL;
    ks->base = base;
    ks->refresh_ms = refresh_ms > 0 ? refresh_ms : 1000;
    ks->on_load = on_load;
    ks->ctx = ctx;
    ks->version = -1;
    evtimer_assign(&ks->timer, base, on_timer, ks);
    pgconn_options po = {.connect_timeout_ms = 5000,
                         .query_timeout_ms = 10000,
                         .backoff_min_ms = 100,
                         .backoff_max_ms = 2000};
    ks->pg = pgconn_new(base, database_url, &po, on_state, ks);
    if (!ks->pg) {
        free(ks);
        return NULL;
    }
    arm(ks, ks->refresh_ms);
    return ks;
}

void keystore_free(keystore *ks)
{
    if (!ks) return;
    evtimer_del(&ks->timer);
    pgconn_free(ks->pg);
    free(ks);
}

/* ------------------------------------------------------------ helpers */

bool keystore_make_key(bool admin, char key[KEYSTORE_KEY_MAX], char sha256[65], char prefix[16],
                       char last4[5])
{
    char hex[49];
    if (!util_random_hex(hex, 24)) return false;
    const char *pre = admin ? "bk-admin-" : "bk-";
    snprintf(key, KEYSTORE_KEY_MAX, "%s%s", pre, hex);
    util_sha256_hex(key, strlen(key), sha256);
    snprintf(prefix, 16, "%s%.4s", pre, hex);
    snprintf(last4, 5, "%s", key + strlen(key) - 4);
    explicit_bzero(hex, sizeof hex);
    return true;
}

bool keystore_parse_usd(const char *s, int64_t *pusd)
{
    if (!s || !*s) return false;
    int64_t whole = 0, frac = 0;
    int ndig = 0, nfrac = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++, ndig++) {
        whole = whole * 10 + (*p - '0');
        if (whole >= 9000000) return false;
    }
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (++nfrac > 12) return false;
            frac = frac * 10 + (*p - '0');
        }
        if (!nfrac) return false;
    }
    if (*p || (!ndig && !nfrac)) return false;
    for (int i = nfrac; i < 12; i++)
        frac *= 10;
    *pusd = whole * 1000000000000LL + frac;
    return true;
}

bool keystore_parse_time(const char *s, int64_t *ms)
{
    struct tm tm = {0};
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
    if (!end || *end) return false;
    *ms = (int64_t)timegm(&tm) * 1000;
    return true;
}

bool keystore_models_literal(const char *csv, char *out, size_t outlen)
{
    size_t n = 0;
    if (outlen < 3) return false;
    out[n++] = '{';
    for (const char *p = csv;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!len) return false;
        if (n + 2 * len + 4 >= outlen) return false;
        if (p != csv) out[n++] = ',';
        out[n++] = '"';
        for (size_t i = 0; i < len; i++) {
            if (p[i] == '"' || p[i] == '\\') out[n++] = '\\';
            out[n++] = p[i];
        }
        out[n++] = '"';
        if (!e) break;
        p = e + 1;
    }
    out[n++] = '}';
    out[n] = '\0';
    return true;
}
