/* bridle check-config FILE, new-key, hash-key KEY; bridle keys and bridle
 * teams (keys and teams in PostgreSQL). */
#include <json-c/json.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "db/keystore.h"
#include "db/migrate.h"
#include "lib/util.h"
#include "router/config.h"

int check_config_main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bridle %s ARG\n", argv[1]);
        return 2;
    }
    char err[1024];
    bridle_config *c = config_load(argv[2], err, sizeof err);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int enabled = 0;
    for (int i = 0; i < config_n_models(c); i++)
        enabled += config_model(c, i)->enabled;
    printf("%s: ok (%d providers, %d models of which %d enabled, %d routes, %d keys)\n", argv[2],
           config_n_providers(c), config_n_models(c), enabled, config_n_routes(c),
           config_n_keys(c));
    config_free(c);
    return 0;
}

int new_key_main(int argc, char **argv)
{
    bool admin = argc > 2 && strcmp(argv[2], "--admin") == 0;
    if (argc > 2 && !admin) {
        fprintf(stderr, "usage: bridle new-key [--admin]\n");
        return 2;
    }
    char key[KEYSTORE_KEY_MAX], sha[65], prefix[16], last4[5];
    if (!keystore_make_key(admin, key, sha, prefix, last4)) {
        fprintf(stderr, "bridle: cannot read random bytes\n");
        return 1;
    }
    printf("key: %s\nsha256: %s\n", key, sha);
    return 0;
}

int hash_key_main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bridle %s ARG\n", argv[1]);
        return 2;
    }
    char sha[65];
    util_sha256_hex(argv[2], strlen(argv[2]), sha);
    printf("%s\n", sha);
    return 0;
}

/* ------------------------------------------------------------ keys, teams
 *
 * bridle keys create|list|revoke and bridle teams set|list: keys and teams
 * in PostgreSQL (DATABASE_URL), with the SQL the admin API runs
 * (db/keystore.h). The new key is printed once and stored as its SHA-256,
 * prefix and last 4 characters only. */

static int keys_usage(FILE *f, int code)
{
    fprintf(f,
            "usage:\n"
            "  bridle keys create --team TEAM [--id ID] [--admin] [--models a,b] [--agent A]\n"
            "                     [--feature F] [--expires 2027-01-31T00:00:00Z]\n"
            "                     [--budget-daily USD] [--budget-weekly USD] [--budget-monthly "
            "USD]\n"
            "                     [--rpm N] [--tokens-per-hour N] [--usd-per-hour USD] [--json]\n"
            "  bridle keys list [--json]\n"
            "  bridle keys revoke ID\n"
            "  bridle teams set NAME [--budget-daily USD] [--budget-weekly USD] [--budget-monthly "
            "USD]\n"
            "                        [--rpm N] [--tokens-per-hour N] [--usd-per-hour USD]   (0 "
            "removes)\n"
            "  bridle teams list [--json]\n"
            "all read DATABASE_URL (or --database-url URL)\n");
    return code;
}

/* The flags a command takes, and their values once parsed. */
typedef struct kflag {
    const char *name;
    bool takes_value;
    const char *value; /* NULL: not given; "" for a switch given */
} kflag;

enum {
    F_TEAM,
    F_ID,
    F_ADMIN,
    F_MODELS,
    F_AGENT,
    F_FEATURE,
    F_EXPIRES,
    F_BD,
    F_BW,
    F_BM,
    F_RPM,
    F_TPH,
    F_UPH,
    F_JSON,
    F_URL,
    N_FLAGS
};

static const kflag flag_defs[N_FLAGS] = {
    {"--team", true, NULL},          {"--id", true, NULL},
    {"--admin", false, NULL},        {"--models", true, NULL},
    {"--agent", true, NULL},         {"--feature", true, NULL},
    {"--expires", true, NULL},       {"--budget-daily", true, NULL},
    {"--budget-weekly", true, NULL}, {"--budget-monthly", true, NULL},
    {"--rpm", true, NULL},           {"--tokens-per-hour", true, NULL},
    {"--usd-per-hour", true, NULL},  {"--json", false, NULL},
    {"--database-url", true, NULL},
};

/* Parses argv[from..] into f (only the flags in `allowed` are taken) and
 * at most one positional argument. Returns 0, or 2 after a usage error. */
static int parse_flags(const char *cmd, int argc, char **argv, int from, kflag *f,
                       const int *allowed, int n_allowed, const char **positional)
{
    memcpy(f, flag_defs, sizeof flag_defs);
    if (positional) *positional = NULL;
    for (int i = from; i < argc; i++) {
        const char *a = argv[i];
        int which = -1;
        for (int j = 0; j < n_allowed; j++)
            if (strcmp(a, f[allowed[j]].name) == 0) which = allowed[j];
        if (which < 0) {
            if (a[0] != '-' && positional && !*positional) {
                *positional = a;
                continue;
            }
            fprintf(stderr, "bridle %s: %s \"%s\"\n", cmd,
                    a[0] == '-' ? "unknown flag" : "unexpected argument", a);
            return keys_usage(stderr, 2);
        }
        if (f[which].takes_value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "bridle %s: %s needs a value\n", cmd, a);
                return keys_usage(stderr, 2);
            }
            f[which].value = argv[++i];
        } else
            f[which].value = "";
    }
    return 0;
}

/* A dollar flag into pico-dollars ("" when absent); false after a usage
 * error. */
static bool flag_usd(const char *cmd, const kflag *f, int which, bool *set, int64_t *pusd)
{
    *set = f[which].value != NULL;
    *pusd = 0;
    if (!*set) return true;
    if (keystore_parse_usd(f[which].value, pusd)) return true;
    fprintf(stderr,
            "bridle %s: %s: expected an amount of US dollars like 25 or 12.50 (at most 12 "
            "decimals), got \"%s\"\n",
            cmd, f[which].name, f[which].value);
    keys_usage(stderr, 2);
    return false;
}

static bool flag_count(const char *cmd, const kflag *f, int which, bool *set, int64_t *n)
{
    *set = f[which].value != NULL;
    *n = 0;
    if (!*set) return true;
    char *end;
    long long v = strtoll(f[which].value, &end, 10);
    if (*f[which].value && !*end && v >= 0 && f[which].value[0] != '-') {
        *n = v;
        return true;
    }
    fprintf(stderr, "bridle %s: %s: expected a whole number >= 0, got \"%s\"\n", cmd, f[which].name,
            f[which].value);
    keys_usage(stderr, 2);
    return false;
}

static PGconn *db_connect(const char *cmd, const kflag *f)
{
    const char *url = f[F_URL].value ? f[F_URL].value : getenv("DATABASE_URL");
    if (!url || !*url) {
        fprintf(stderr,
                "bridle %s: DATABASE_URL is not set: keys and teams live in PostgreSQL; set "
                "DATABASE_URL=postgres://USER@HOST/DB (or pass --database-url URL)\n",
                cmd);
        return NULL;
    }
    char err[512];
    PGconn *c = migrate_connect(url, "bridle-keys", err, sizeof err);
    if (!c)
        fprintf(stderr, "bridle %s: cannot connect to the database (DATABASE_URL): %s\n", cmd, err);
    return c;
}

/* Runs sql; the result, or NULL after printing why. */
static PGresult *db_run(const char *cmd, PGconn *c, const char *sql, int n,
                        const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) return r;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorMessage(r);
    if (state && strcmp(state, "42P01") == 0)
        fprintf(stderr, "bridle %s: the database has no key tables yet: run `bridle migrate` (%s)",
                cmd, msg);
    else
        fprintf(stderr, "bridle %s: %s", cmd, msg);
    PQclear(r);
    return NULL;
}

static void i64s(char out[24], int64_t v)
{
    snprintf(out, 24, "%lld", (long long)v);
}

static void print_json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static int keys_create(int argc, char **argv)
{
    static const int allowed[] = {F_TEAM,    F_ID,      F_ADMIN, F_MODELS, F_AGENT,
                                  F_FEATURE, F_EXPIRES, F_BD,    F_BW,     F_BM,
                                  F_RPM,     F_TPH,     F_UPH,   F_JSON,   F_URL};
    kflag f[N_FLAGS];
    const char *cmd = "keys create";
    if (parse_flags(cmd, argc, argv, 3, f, allowed, sizeof allowed / sizeof *allowed, NULL))
        return 2;
    bool admin = f[F_ADMIN].value != NULL;
    if (!f[F_TEAM].value && !admin) {
        fprintf(stderr,
                "bridle %s: --team TEAM is required (the team the key's spend counts "
                "against)\n",
                cmd);
        return keys_usage(stderr, 2);
    }
    if (f[F_TEAM].value && (!*f[F_TEAM].value || strlen(f[F_TEAM].value) > 64)) {
        fprintf(stderr, "bridle %s: --team: a team's name has 1 to 64 characters\n", cmd);
        return keys_usage(stderr, 2);
    }
    if (f[F_ID].value && (!*f[F_ID].value || strlen(f[F_ID].value) > 64)) {
        fprintf(stderr, "bridle %s: --id: a key's id has 1 to 64 characters\n", cmd);
        return keys_usage(stderr, 2);
    }
    bool set[6];
    int64_t v[6], exp_ms;
    if (!flag_usd(cmd, f, F_BD, &set[0], &v[0]) || !flag_usd(cmd, f, F_BW, &set[1], &v[1]) ||
        !flag_usd(cmd, f, F_BM, &set[2], &v[2]) || !flag_count(cmd, f, F_RPM, &set[3], &v[3]) ||
        !flag_count(cmd, f, F_TPH, &set[4], &v[4]) || !flag_usd(cmd, f, F_UPH, &set[5], &v[5]))
        return 2;
    if (f[F_EXPIRES].value && !keystore_parse_time(f[F_EXPIRES].value, &exp_ms)) {
        fprintf(stderr,
                "bridle %s: --expires: expected a UTC time like 2027-01-31T00:00:00Z, got "
                "\"%s\"\n",
                cmd, f[F_EXPIRES].value);
        return keys_usage(stderr, 2);
    }
    char models[4096];
    if (f[F_MODELS].value && !keystore_models_literal(f[F_MODELS].value, models, sizeof models)) {
        fprintf(stderr,
                "bridle %s: --models: expected model or route names separated by commas "
                "(like gpt-4o-mini,auto)\n",
                cmd);
        return keys_usage(stderr, 2);
    }
    char id[72], key[KEYSTORE_KEY_MAX], sha[65], prefix[16], last4[5], hex[13];
    if (!keystore_make_key(admin, key, sha, prefix, last4) || !util_random_hex(hex, 6)) {
        fprintf(stderr, "bridle %s: cannot read random bytes\n", cmd);
        return 1;
    }
    snprintf(id, sizeof id, "%s", f[F_ID].value ? f[F_ID].value : "");
    if (!*id) snprintf(id, sizeof id, "key_%s", hex);
    PGconn *c = db_connect(cmd, f);
    if (!c) return 1;
    char s[6][24];
    for (int i = 0; i < 6; i++)
        i64s(s[i], v[i]);
    const char *params[16] = {id,
                              sha,
                              prefix,
                              last4,
                              admin ? "admin" : "client",
                              f[F_TEAM].value,
                              f[F_MODELS].value ? models : NULL,
                              f[F_AGENT].value,
                              f[F_FEATURE].value,
                              s[3],
                              s[4],
                              s[5],
                              f[F_EXPIRES].value,
                              s[0],
                              s[1],
                              s[2]};
    PGresult *r = PQexecParams(c, keystore_create_sql, 16, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "23505") == 0)
            fprintf(stderr,
                    "bridle %s: a key with the id \"%s\" already exists: choose another "
                    "--id\n",
                    cmd, id);
        else if (state && strcmp(state, "42P01") == 0)
            fprintf(stderr, "bridle %s: the database has no key tables yet: run `bridle migrate`\n",
                    cmd);
        else
            fprintf(stderr, "bridle %s: %s", cmd, PQresultErrorMessage(r));
        rc = 1;
    } else if (f[F_JSON].value) {
        printf("{\"id\": ");
        print_json_str(id);
        printf(", \"key\": \"%s\"}\n", key);
    } else {
        printf("created %s key %s (team %s)\n", admin ? "admin" : "client", id,
               f[F_TEAM].value ? f[F_TEAM].value : "-");
        printf("key: %s\n", key);
        printf("store it now, it is not shown again (bridle keeps only its sha256, %s…%s)\n",
               prefix, last4);
    }
    fflush(stdout);
    explicit_bzero(key, sizeof key);
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* obj[name] as text ("-" when null or absent). */
static const char *jtext(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !v) return "-";
    if (json_object_is_type(v, json_type_string)) return json_object_get_string(v);
    return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
}

static bool jnull(json_object *o, const char *name)
{
    json_object *v;
    return !json_object_object_get_ex(o, name, &v) || !v;
}

/* "d $5 w $20 m $50" or "-". */
static void fmt_limits(json_object *o, char *out, size_t n, bool rates)
{
    static const char *const budgets[][2] = {{"budget_daily_usd", "day $"},
                                             {"budget_weekly_usd", "week $"},
                                             {"budget_monthly_usd", "month $"}};
    static const char *const limits[][2] = {
        {"rpm", "rpm "}, {"tokens_per_hour", "tokens/h "}, {"usd_per_hour", "$/h "}};
    const char *const(*t)[2] = rates ? limits : budgets;
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < 3; i++) {
        if (jnull(o, t[i][0])) continue;
        len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%s%s", len ? " " : "", t[i][1],
                                jtext(o, t[i][0]));
        if (len >= n) break;
    }
    if (!out[0]) snprintf(out, n, "-");
}

static int print_list(const char *cmd, PGconn *c, const char *sql, bool json, bool keys)
{
    PGresult *r = db_run(cmd, c, sql, 0, NULL);
    if (!r) return 1;
    const char *text = PQgetvalue(r, 0, 0);
    if (json) {
        printf("%s\n", text);
        PQclear(r);
        return 0;
    }
    json_object *arr = json_tokener_parse(text);
    size_t n = arr ? json_object_array_length(arr) : 0;
    if (keys)
        printf("%-20s %-22s %-6s %-14s %-28s %-26s %-20s %-20s %s\n", "ID", "KEY", "KIND", "TEAM",
               "BUDGETS", "LIMITS", "CREATED", "EXPIRES", "REVOKED");
    else
        printf("%-20s %-28s %-26s %s\n", "TEAM", "BUDGETS", "LIMITS", "UPDATED");
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(arr, i);
        char budgets[128], limits[128], shown[40];
        fmt_limits(o, budgets, sizeof budgets, false);
        fmt_limits(o, limits, sizeof limits, true);
        if (keys) {
            snprintf(shown, sizeof shown, "%s…%s", jtext(o, "prefix"), jtext(o, "last4"));
            printf("%-20s %-24s %-6s %-14s %-28s %-26s %-20s %-20s %s\n", jtext(o, "id"), shown,
                   jtext(o, "kind"), jtext(o, "team"), budgets, limits, jtext(o, "created_at"),
                   jtext(o, "expires_at"), jtext(o, "revoked_at"));
        } else
            printf("%-20s %-28s %-26s %s\n", jtext(o, "name"), budgets, limits,
                   jtext(o, "updated_at"));
    }
    if (!n) printf("(none)\n");
    json_object_put(arr);
    PQclear(r);
    return 0;
}

static int keys_list(int argc, char **argv, bool keys)
{
    static const int allowed[] = {F_JSON, F_URL};
    kflag f[N_FLAGS];
    const char *cmd = keys ? "keys list" : "teams list";
    if (parse_flags(cmd, argc, argv, 3, f, allowed, 2, NULL)) return 2;
    PGconn *c = db_connect(cmd, f);
    if (!c) return 1;
    int rc = print_list(cmd, c, keys ? keystore_list_keys_sql : keystore_list_teams_sql,
                        f[F_JSON].value != NULL, keys);
    PQfinish(c);
    return rc;
}

static int keys_revoke(int argc, char **argv)
{
    static const int allowed[] = {F_JSON, F_URL};
    kflag f[N_FLAGS];
    const char *cmd = "keys revoke", *id;
    if (parse_flags(cmd, argc, argv, 3, f, allowed, 2, &id)) return 2;
    if (!id) {
        fprintf(stderr, "bridle %s: which key? give its ID (bridle keys list)\n", cmd);
        return keys_usage(stderr, 2);
    }
    PGconn *c = db_connect(cmd, f);
    if (!c) return 1;
    const char *params[1] = {id};
    PGresult *r = db_run(cmd, c, keystore_revoke_sql, 1, params);
    int rc = r ? 0 : 1;
    if (r && PQntuples(r) == 0) {
        fprintf(stderr, "bridle %s: no key with the id \"%s\" (bridle keys list shows them)\n", cmd,
                id);
        rc = 1;
    } else if (r && f[F_JSON].value)
        printf("%s\n", PQgetvalue(r, 0, 0));
    else if (r) {
        json_object *o = json_tokener_parse(PQgetvalue(r, 0, 0));
        printf("revoked key %s (%s…%s) at %s; gateways refuse it within "
               "database.keys_refresh_ms\n",
               id, jtext(o, "prefix"), jtext(o, "last4"), jtext(o, "revoked_at"));
        json_object_put(o);
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

static int teams_set(int argc, char **argv)
{
    static const int allowed[] = {F_BD, F_BW, F_BM, F_RPM, F_TPH, F_UPH, F_JSON, F_URL};
    kflag f[N_FLAGS];
    const char *cmd = "teams set", *name;
    if (parse_flags(cmd, argc, argv, 3, f, allowed, sizeof allowed / sizeof *allowed, &name))
        return 2;
    if (!name || !*name || strlen(name) > 64) {
        fprintf(stderr, "bridle %s: which team? give its NAME (1 to 64 characters)\n", cmd);
        return keys_usage(stderr, 2);
    }
    bool set[6];
    int64_t v[6];
    if (!flag_usd(cmd, f, F_BD, &set[0], &v[0]) || !flag_usd(cmd, f, F_BW, &set[1], &v[1]) ||
        !flag_usd(cmd, f, F_BM, &set[2], &v[2]) || !flag_count(cmd, f, F_RPM, &set[3], &v[3]) ||
        !flag_count(cmd, f, F_TPH, &set[4], &v[4]) || !flag_usd(cmd, f, F_UPH, &set[5], &v[5]))
        return 2;
    PGconn *c = db_connect(cmd, f);
    if (!c) return 1;
    char s[6][24];
    for (int i = 0; i < 6; i++)
        i64s(s[i], v[i]);
    const char *params[7] = {name,
                             set[3] ? s[3] : NULL,
                             set[4] ? s[4] : NULL,
                             set[5] ? s[5] : NULL,
                             set[0] ? s[0] : NULL,
                             set[1] ? s[1] : NULL,
                             set[2] ? s[2] : NULL};
    PGresult *r = db_run(cmd, c, keystore_team_set_sql, 7, params);
    if (r && f[F_JSON].value)
        printf("%s\n", PQgetvalue(r, 0, 0));
    else if (r) {
        json_object *o = json_tokener_parse(PQgetvalue(r, 0, 0));
        char budgets[128], limits[128];
        fmt_limits(o, budgets, sizeof budgets, false);
        fmt_limits(o, limits, sizeof limits, true);
        printf("team %s: budgets %s; limits %s\n", name, budgets, limits);
        json_object_put(o);
    }
    int rc = r ? 0 : 1;
    PQclear(r);
    PQfinish(c);
    return rc;
}

int keys_main(int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";
    if (strcmp(sub, "create") == 0) return keys_create(argc, argv);
    if (strcmp(sub, "list") == 0) return keys_list(argc, argv, true);
    if (strcmp(sub, "revoke") == 0) return keys_revoke(argc, argv);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) return keys_usage(stdout, 0);
    fprintf(stderr, "bridle keys: %s\n",
            *sub ? "unknown subcommand (create, list, revoke)" : "create, list or revoke?");
    return keys_usage(stderr, 2);
}

int teams_main(int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";
    if (strcmp(sub, "set") == 0) return teams_set(argc, argv);
    if (strcmp(sub, "list") == 0) return keys_list(argc, argv, false);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) return keys_usage(stdout, 0);
    fprintf(stderr, "bridle teams: %s\n", *sub ? "unknown subcommand (set, list)" : "set or list?");
    return keys_usage(stderr, 2);
}
