/* The admin API: see admin.h. */
#include "server/admin.h"

#include <event2/http.h> /* evhttp_uridecode: libevent's, linked for the loop anyway */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/keystore.h"
#include "db/pgconn.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "server/http.h"

#define MAX_PARAMS 16
#define MAX_QUEUE 256

typedef enum { OP_CREATE, OP_LIST_KEYS, OP_REVOKE, OP_TEAM_SET, OP_LIST_TEAMS, OP_BUDGETS } op;

typedef struct job {
    admin *ad;
    h1_req *req;
    bool gone; /* the client left: the request is ours to release */
    op what;
    const char *sql;
    char *params[MAX_PARAMS];
    int n_params;
    char key[KEYSTORE_KEY_MAX]; /* OP_CREATE: the new key, for the 201 body only */
    struct job *next;
} job;

struct admin {
    app *a;
    pgconn *pg;
    job *head, *tail, *running;
    int queued;
};

static void pump(admin *ad);

/* ------------------------------------------------------------ replies */

static void bad_request(app *a, h1_req *req, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void bad_request(app *a, h1_req *req, const char *param, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_reply_error(a, req, 400, "invalid_request_error", "invalid_request", param, msg, false);
}

static void job_free(job *j)
{
    for (int i = 0; i < j->n_params; i++)
        free(j->params[i]);
    explicit_bzero(j->key, sizeof j->key);
    free(j);
}

/* The job is over: its client leaves or is answered. */
static void job_end(job *j)
{
    if (j->gone)
        h1_req_release(j->req);
    else
        h1_watch_gone(j->req, NULL, NULL);
    j->ad->a->in_flight--;
    job_free(j);
}

static void reply_list(app *a, h1_req *req, const char *array)
{
    buf b = BUF_INIT;
    buf_printf(&b, "{\"object\":\"list\",\"data\":%s}", array);
    http_reply_json(a, req, 200, b.data, b.len);
    buf_free(&b);
}

static void on_result(void *ctx, PGresult *res, const char *error)
{
    job *j = ctx;
    admin *ad = j->ad;
    app *a = ad->a;
    ad->running = NULL;
    if (j->gone) {
        job_end(j);
        pump(ad);
        return;
    }
    h1_req *req = j->req;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!error && PQresultStatus(res) != PGRES_TUPLES_OK) error = PQresultErrorMessage(res);
    if (error) {
        char msg[400];
        if (state && strcmp(state, "23505") == 0 && j->what == OP_CREATE) {
            snprintf(msg, sizeof msg,
                     "A key with the id '%.64s' already exists: choose another id (or leave "
                     "\"id\" out for a generated one)",
                     j->params[0]);
            http_reply_error(a, req, 409, "invalid_request_error", "key_exists", "id", msg, false);
        } else if (state && strncmp(state, "23", 2) == 0) {
            snprintf(msg, sizeof msg, "The database refused the change: %.300s", error);
            http_reply_error(a, req, 400, "invalid_request_error", "invalid_request", NULL, msg,
                             false);
        } else {
            log_warn("admin: query failed: %s", error);
            snprintf(msg, sizeof msg, "The database could not be reached or failed: %.300s", error);
            h1_add_header(req, "Retry-After", "1");
            http_reply_error(a, req, 503, "server_error", "database_unavailable", NULL, msg, true);
        }
        job_end(j);
        pump(ad);
        return;
    }
    bool row = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0);
    const char *json = row ? PQgetvalue(res, 0, 0) : "";
    switch (j->what) {
    case OP_CREATE: {
        if (!row || json[0] != '{') { /* the INSERT returns its row, always */
            http_reply_error(a, req, 500, "server_error", "internal_error", NULL,
                             "The key was not returned by the database; list the keys to see "
                             "whether it was made",
                             false);
            break;
        }
        buf b = BUF_INIT;
        buf_append_str(&b, "{\"key\":");
        buf_append_json_str(&b, j->key, strlen(j->key));
        buf_append_char(&b, ',');
        buf_append_str(&b, json + 1); /* the key's row as JSON, after its '{' */
        http_reply_json(a, req, 201, b.data, b.len);
        explicit_bzero(b.data, b.len);
        buf_free(&b);
        log_info("admin: key %s created (team %s)", j->params[0],
                 j->params[5] ? j->params[5] : "-");
        break;
    }
    case OP_REVOKE:
        if (!row) {
            char msg[300];
            snprintf(msg, sizeof msg,
                     "No key with the id '%.64s': GET /v1/bridle/admin/keys lists the keys",
                     j->params[0]);
            http_reply_error(a, req, 404, "invalid_request_error", "key_not_found", "id", msg,
                             false);
            break;
        }
        log_info("admin: key %s revoked", j->params[0]);
        http_reply_json(a, req, 200, json, strlen(json));
        break;
    case OP_TEAM_SET:
        log_info("admin: team %s set", j->params[0]);
        http_reply_json(a, req, 200, json, strlen(json));
        break;
    default:
        reply_list(a, req, row ? json : "[]");
    }
    job_end(j);
    pump(ad);
}

static void pump(admin *ad)
{
    while (ad->head && !ad->running && pgconn_idle(ad->pg)) {
        job *j = ad->head;
        ad->head = j->next;
        if (!ad->head) ad->tail = NULL;
        ad->queued--;
        if (j->gone) {
            job_end(j);
            continue;
        }
        if (pgconn_send(ad->pg, j->sql, j->n_params, (const char *const *)j->params, on_result,
                        j) != 0) { /* not idle after all: back in front */
            j->next = ad->head;
            ad->head = j;
            if (!ad->tail) ad->tail = j;
            ad->queued++;
            return;
        }
        ad->running = j;
    }
}

static void on_state(void *ctx, bool up)
{
    admin *ad = ctx;
    if (up) {
        pump(ad);
        return;
    }
    /* down: nobody waits for a database that is away */
    while (ad->head) {
        job *j = ad->head;
        ad->head = j->next;
        ad->queued--;
        if (!j->gone) {
            h1_add_header(j->req, "Retry-After", "1");
            http_reply_error(ad->a, j->req, 503, "server_error", "database_unavailable", NULL,
                             "The database cannot be reached: the admin API needs it; retry "
                             "shortly",
                             true);
        }
        job_end(j);
    }
    ad->tail = NULL;
}

static void on_client_gone(void *arg)
{
    job *j = arg;
    j->gone = true;
}

static void submit(app *a, h1_req *req, job *j)
{
    admin *ad = a->admin;
    if (!pgconn_up(ad->pg) || ad->queued >= MAX_QUEUE) {
        h1_add_header(req, "Retry-After", "1");
        http_reply_error(a, req, 503, "server_error", "database_unavailable", NULL,
                         pgconn_up(ad->pg)
                             ? "The admin API is busy: too many requests are queued; retry shortly"
                             : "The database cannot be reached: the admin API needs it; retry "
                               "shortly",
                         true);
        job_free(j);
        return;
    }
    j->ad = ad;
    j->req = req;
    a->in_flight++;
    h1_watch_gone(req, on_client_gone, j);
    if (ad->tail)
        ad->tail->next = j;
    else
        ad->head = j;
    ad->tail = j;
    ad->queued++;
    pump(ad);
}

static job *job_new(op what, const char *sql)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->what = what;
    j->sql = sql;
    return j;
}

/* Appends a parameter (a copy; NULL = SQL NULL). False on OOM. */
static bool param(job *j, const char *v)
{
    char *c = v ? strdup(v) : NULL;
    if (v && !c) return false;
    j->params[j->n_params++] = c;
    return true;
}

static bool param_i64(job *j, bool set, int64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)v);
    return param(j, set ? s : NULL);
}

/* ------------------------------------------------------------ bodies */

/* The request body as a JSON object; NULL after a 400. */
static json_object *read_body(app *a, h1_req *req)
{
    size_t len;
    const char *body = h1_req_body(req, &len);
    json_tokener *tok = json_tokener_new();
    json_object *o = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
    bool whole = tok && json_tokener_get_error(tok) == json_tokener_success &&
                 json_tokener_get_parse_end(tok) == len;
    if (tok) json_tokener_free(tok);
    if (!o || !whole || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        bad_request(a, req, NULL, "The request body must be one JSON object%s",
                    len ? "" : " (it is empty)");
        return NULL;
    }
    return o;
}

static bool known_field(const char *name, const char *const *known)
{
    for (; *known; known++)
        if (strcmp(name, *known) == 0) return true;
    return false;
}

/* Every field of o is known; else a 400 that names the first that is not. */
static bool check_fields(app *a, h1_req *req, json_object *o, const char *const *known)
{
    json_object_object_foreach(o, k, v)
    {
        (void)v;
        if (!known_field(k, known)) {
            buf b = BUF_INIT;
            for (const char *const *p = known; *p; p++)
                buf_printf(&b, "%s%s", p == known ? "" : ", ", *p);
            bad_request(a, req, k, "Unknown field \"%.64s\": the fields are %s", k, b.data);
            buf_free(&b);
            return false;
        }
    }
    return true;
}

/* o[name] as a string of 1..max bytes; *out NULL when absent or null. */
static bool get_string(app *a, h1_req *req, json_object *o, const char *name, size_t max,
                       const char **out)
{
    json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(o, name, &v) || !v) return true;
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    if (!s || !*s || strlen(s) > max) {
        bad_request(a, req, name, "\"%s\" must be a string of 1 to %zu characters", name, max);
        return false;
    }
    *out = s;
    return true;
}

/* o[name] as dollars (a number or a decimal string) in pico-dollars. */
static bool get_usd(app *a, h1_req *req, json_object *o, const char *name, bool *set, int64_t *pusd)
{
    json_object *v;
    *set = false;
    *pusd = 0;
    if (!json_object_object_get_ex(o, name, &v) || !v) return true;
    const char *s = NULL;
    if (json_object_is_type(v, json_type_string))
        s = json_object_get_string(v);
    else if (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
        s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN); /* the text as sent */
    if (!s || !keystore_parse_usd(s, pusd)) {
        bad_request(a, req, name,
                    "\"%s\" must be an amount of US dollars like 25 or \"12.50\" (at most 12 "
                    "decimals; 0 = none)",
                    name);
        return false;
    }
    *set = true;
    return true;
}

static bool get_count(app *a, h1_req *req, json_object *o, const char *name, bool *set, int64_t *n)
{
    json_object *v;
    *set = false;
    *n = 0;
    if (!json_object_object_get_ex(o, name, &v) || !v) return true;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
        bad_request(a, req, name, "\"%s\" must be a whole number >= 0 (0 = no limit)", name);
        return false;
    }
    *n = json_object_get_int64(v);
    *set = true;
    return true;
}

typedef struct limits_in {
    bool set[6];
    int64_t v[6]; /* budgets day, week, month (pusd), rpm, tokens/h, pusd/h */
} limits_in;

static bool get_limits(app *a, h1_req *req, json_object *o, limits_in *l)
{
    return get_usd(a, req, o, "budget_daily_usd", &l->set[0], &l->v[0]) &&
           get_usd(a, req, o, "budget_weekly_usd", &l->set[1], &l->v[1]) &&
           get_usd(a, req, o, "budget_monthly_usd", &l->set[2], &l->v[2]) &&
           get_count(a, req, o, "rpm", &l->set[3], &l->v[3]) &&
           get_count(a, req, o, "tokens_per_hour", &l->set[4], &l->v[4]) &&
           get_usd(a, req, o, "usd_per_hour", &l->set[5], &l->v[5]);
}

#define LIMIT_FIELDS                                                                               \
    "budget_daily_usd", "budget_weekly_usd", "budget_monthly_usd", "rpm", "tokens_per_hour",       \
        "usd_per_hour"

/* ------------------------------------------------------------ operations */

static void oom(app *a, h1_req *req)
{
    http_reply_error(a, req, 503, "server_error", "out_of_memory", NULL,
                     "The gateway is out of memory; retry shortly", true);
}

static bool model_known(const bridle_config *c, const char *name)
{
    return config_find_model(c, name) || config_find_route(c, name) || strcmp(name, "auto") == 0;
}

static void create_key(app *a, h1_req *req)
{
    static const char *const known[] = {"team",    "id",         "kind",       "models", "agent",
                                        "feature", "expires_at", LIMIT_FIELDS, NULL};
    json_object *o = read_body(a, req);
    if (!o) return;
    const char *team, *id, *kind, *agent, *feature, *expires;
    limits_in l = {0};
    char models[2048] = "";
    job *j = NULL;
    if (!check_fields(a, req, o, known) || !get_string(a, req, o, "team", 64, &team) ||
        !get_string(a, req, o, "id", 64, &id) || !get_string(a, req, o, "kind", 16, &kind) ||
        !get_string(a, req, o, "agent", 200, &agent) ||
        !get_string(a, req, o, "feature", 200, &feature) ||
        !get_string(a, req, o, "expires_at", 40, &expires) || !get_limits(a, req, o, &l))
        goto out;
    bool is_admin = kind && strcmp(kind, "admin") == 0;
    if (kind && !is_admin && strcmp(kind, "client") != 0) {
        bad_request(a, req, "kind", "\"kind\" must be \"client\" (the default) or \"admin\"");
        goto out;
    }
    if (!team && !is_admin) {
        bad_request(a, req, "team",
                    "\"team\" is required: the team the key's spend counts against");
        goto out;
    }
    int64_t exp_ms;
    if (expires && !keystore_parse_time(expires, &exp_ms)) {
        bad_request(a, req, "expires_at",
                    "\"expires_at\" must be a UTC time like \"2027-01-31T00:00:00Z\"");
        goto out;
    }
    json_object *ms;
    if (json_object_object_get_ex(o, "models", &ms) && ms) {
        size_t n = json_object_is_type(ms, json_type_array) ? json_object_array_length(ms) : 0;
        buf csv = BUF_INIT;
        bool ok = n > 0;
        for (size_t i = 0; i < n && ok; i++) {
            json_object *m = json_object_array_get_idx(ms, i);
            const char *name =
                json_object_is_type(m, json_type_string) ? json_object_get_string(m) : NULL;
            ok = name && *name && !strchr(name, ',') && model_known(a->cfg, name);
            if (ok) buf_printf(&csv, "%s%s", i ? "," : "", name);
        }
        ok = ok && keystore_models_literal(csv.data, models, sizeof models);
        buf_free(&csv);
        if (!ok) {
            bad_request(a, req, "models",
                        "\"models\" must be a non-empty list of models or routes this gateway "
                        "serves (GET /v1/models), or \"auto\"; leave it out for any");
            goto out;
        }
    }
    char gen_id[32], sha[65], prefix[16], last4[5];
    if (!id) {
        char hex[13];
        if (!util_random_hex(hex, 6)) {
            oom(a, req);
            goto out;
        }
        snprintf(gen_id, sizeof gen_id, "key_%s", hex);
        id = gen_id;
    }
    j = job_new(OP_CREATE, keystore_create_sql);
    if (!j || !keystore_make_key(is_admin, j->key, sha, prefix, last4)) {
        oom(a, req);
        goto out;
    }
    bool ok = param(j, id) && param(j, sha) && param(j, prefix) && param(j, last4) &&
              param(j, is_admin ? "admin" : "client") && param(j, team) &&
              param(j, models[0] ? models : NULL) && param(j, agent) && param(j, feature) &&
              param_i64(j, true, l.v[3]) && param_i64(j, true, l.v[4]) &&
              param_i64(j, true, l.v[5]) && param(j, expires) && param_i64(j, true, l.v[0]) &&
              param_i64(j, true, l.v[1]) && param_i64(j, true, l.v[2]);
    if (!ok) {
        oom(a, req);
        goto out;
    }
    submit(a, req, j);
    j = NULL;
out:
    if (j) job_free(j);
    json_object_put(o);
}

static void set_team(app *a, h1_req *req, const char *name)
{
    static const char *const known[] = {LIMIT_FIELDS, NULL};
    json_object *o = read_body(a, req);
    if (!o) return;
    limits_in l = {0};
    job *j = NULL;
    if (!check_fields(a, req, o, known) || !get_limits(a, req, o, &l)) goto out;
    if (!*name || strlen(name) > 64) {
        bad_request(a, req, "name", "A team's name has 1 to 64 characters");
        goto out;
    }
    j = job_new(OP_TEAM_SET, keystore_team_set_sql);
    if (!j || !param(j, name) || !param_i64(j, l.set[3], l.v[3]) ||
        !param_i64(j, l.set[4], l.v[4]) || !param_i64(j, l.set[5], l.v[5]) ||
        !param_i64(j, l.set[0], l.v[0]) || !param_i64(j, l.set[1], l.v[1]) ||
        !param_i64(j, l.set[2], l.v[2])) {
        oom(a, req);
        goto out;
    }
    submit(a, req, j);
    j = NULL;
out:
    if (j) job_free(j);
    json_object_put(o);
}

static void simple(app *a, h1_req *req, op what, const char *sql, const char *arg)
{
    job *j = job_new(what, sql);
    if (!j || (arg && !param(j, arg))) {
        if (j) job_free(j);
        oom(a, req);
        return;
    }
    submit(a, req, j);
}

static void method_not_allowed(app *a, h1_req *req, const char *path, const char *allowed)
{
    char msg[300];
    snprintf(msg, sizeof msg, "Use %s for %.150s", allowed, path);
    h1_add_header(req, "Allow", allowed);
    http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL, msg, false);
}

void admin_handle(app *a, h1_req *req, const char *uri, h1_method cmd)
{
    if (!a->admin) {
        http_reply_error(a, req, 503, "server_error", "no_database", NULL,
                         "The admin API needs database.url: keys and teams live in PostgreSQL; "
                         "set database.url (or DATABASE_URL) in the gateway's config",
                         false);
        return;
    }
    char path[512];
    size_t n = strcspn(uri, "?");
    if (n >= sizeof path) n = sizeof path - 1;
    memcpy(path, uri, n);
    path[n] = '\0';
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    const char *rest = path + strlen("/v1/bridle/admin");
    if (strcmp(rest, "/keys") == 0) {
        if (cmd == H1_POST)
            create_key(a, req);
        else if (cmd == H1_GET)
            simple(a, req, OP_LIST_KEYS, keystore_list_keys_sql, NULL);
        else
            method_not_allowed(a, req, path, "GET, POST");
        return;
    }
    if (strcmp(rest, "/teams") == 0) {
        if (cmd == H1_GET)
            simple(a, req, OP_LIST_TEAMS, keystore_list_teams_sql, NULL);
        else
            method_not_allowed(a, req, path, "GET");
        return;
    }
    if (strcmp(rest, "/budgets") == 0) {
        if (cmd == H1_GET)
            simple(a, req, OP_BUDGETS, keystore_budgets_sql, NULL);
        else
            method_not_allowed(a, req, path, "GET");
        return;
    }
    bool keys = strncmp(rest, "/keys/", 6) == 0, teams = strncmp(rest, "/teams/", 7) == 0;
    if (keys || teams) {
        char seg[256];
        const char *p = rest + (keys ? 6 : 7);
        bool revoke = false;
        size_t len = strcspn(p, "/");
        if (keys && p[len] == '/' && strcmp(p + len, "/revoke") == 0)
            revoke = true;
        else if (p[len] != '\0')
            len = 0; /* more segments: unknown */
        if (len && len < sizeof seg) {
            memcpy(seg, p, len);
            seg[len] = '\0';
            char *name = evhttp_uridecode(seg, 0, NULL);
            if (!name) {
                oom(a, req);
                return;
            }
            if (teams) {
                if (cmd == H1_PUT)
                    set_team(a, req, name);
                else
                    method_not_allowed(a, req, path, "PUT");
            } else if (revoke) {
                if (cmd == H1_POST)
                    simple(a, req, OP_REVOKE, keystore_revoke_sql, name);
                else
                    method_not_allowed(a, req, path, "POST");
            } else if (cmd == H1_DELETE)
                simple(a, req, OP_REVOKE, keystore_revoke_sql, name);
            else
                method_not_allowed(a, req, path, "DELETE");
            free(name);
            return;
        }
    }
    char msg[300];
    snprintf(msg, sizeof msg,
             "Unknown admin path %.120s: the admin API serves /v1/bridle/admin/keys, "
             "/v1/bridle/admin/keys/{id}/revoke, /v1/bridle/admin/teams[/{name}] and "
             "/v1/bridle/admin/budgets",
             path);
    http_reply_error(a, req, 404, "invalid_request_error", "unknown_url", NULL, msg, false);
}

/* ------------------------------------------------------------ life */

admin *admin_new(app *a)
{
    admin *ad = calloc(1, sizeof *ad);
    if (!ad) return NULL;
    ad->a = a;
    pgconn_options po = {.connect_timeout_ms = 5000,
                         .query_timeout_ms = 10000,
                         .backoff_min_ms = 100,
                         .backoff_max_ms = 2000};
    ad->pg = pgconn_new(a->base, config_database(a->cfg)->url, &po, on_state, ad);
    if (!ad->pg) {
        free(ad);
        return NULL;
    }
    return ad;
}

void admin_free(admin *ad)
{
    if (!ad) return;
    pgconn_free(ad->pg); /* calls no callback */
    job *running = ad->running;
    ad->running = NULL;
    while (ad->head) {
        job *j = ad->head;
        ad->head = j->next;
        if (j->gone) h1_req_release(j->req);
        job_free(j);
    }
    if (running) {
        if (running->gone) h1_req_release(running->req);
        job_free(running);
    }
    free(ad);
}
