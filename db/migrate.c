/* Schema migrations: see migrate.h. The SQL lives in migrations/NNNN_name.sql and is
 * compiled in ($(BUILD)/gen/migrations.c), so a binary always carries exactly
 * the schema it was built for. */
#include "db/migrate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* pg_advisory_lock key shared by every bridle that migrates this database:
 * "bridle" in ASCII. */
#define MIGRATE_LOCK_KEY "108170571557989"

static const char CREATE_SCHEMA_TABLE[] = "CREATE TABLE IF NOT EXISTS bridle_schema_migrations ("
                                          " version integer PRIMARY KEY,"
                                          " name text NOT NULL,"
                                          " applied_at timestamptz NOT NULL DEFAULT now())";

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Copies s into out with newlines and tabs folded to single spaces and
 * trailing blanks dropped: libpq messages end with "\n" and some span lines. */
static void one_line(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    bool space = false;
    for (; s && *s && n + 1 < outlen; s++) {
        if (*s == '\n' || *s == '\r' || *s == '\t' || *s == ' ') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < outlen) out[n++] = ' ';
        space = false;
        out[n++] = *s;
    }
    out[n] = '\0';
}

/* The PostgreSQL error in r as one line: message, the line of sql it points
 * at (when the server gave a position), detail and hint. */
static void pg_result_error(const PGresult *r, const PGconn *c, const char *sql, char *out,
                            size_t outlen)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char primary[512], detail[512] = "", hint[256] = "", where[64] = "";
    one_line(msg ? msg : PQerrorMessage(c), primary, sizeof primary);
    if (r) {
        const char *d = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
        const char *h = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
        const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
        if (d) {
            char t[480];
            one_line(d, t, sizeof t);
            snprintf(detail, sizeof detail, "; %s", t);
        }
        if (h) {
            char t[224];
            one_line(h, t, sizeof t);
            snprintf(hint, sizeof hint, " (hint: %s)", t);
        }
        if (pos && sql) {
            /* position counts characters from 1; close enough for ASCII SQL */
            long p = strtol(pos, NULL, 10);
            int line = 1;
            for (long i = 0; i < p - 1 && sql[i]; i++)
                line += sql[i] == '\n';
            snprintf(where, sizeof where, " at line %d", line);
        }
    }
    snprintf(out, outlen, "%s%s%s%s", primary, where, detail, hint);
}

/* Runs one command that returns no rows; on failure err = "<what>: <pg error>". */
static int exec_cmd(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    char pe[1200];
    pg_result_error(r, c, sql, pe, sizeof pe);
    snprintf(err, errlen, "%s: %s", what, pe);
    PQclear(r);
    return -1;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *migrate_connect(const char *database_url, const char *application_name, char *err,
                        size_t errlen)
{
    if (!database_url || !*database_url) {
        snprintf(err, errlen, "no database: pass --database-url URL or set DATABASE_URL");
        return NULL;
    }
    /* Later entries override earlier ones, so a connect_timeout in the URL wins. */
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"10", application_name ? application_name : "bridle", database_url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        snprintf(err, errlen, "cannot connect to the database: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char m[900];
        one_line(PQerrorMessage(c), m, sizeof m);
        snprintf(err, errlen, "cannot connect to the database: %s", m);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, ignore_notice, NULL);
    if (exec_cmd(c, "SET client_min_messages = warning", "session setup", err, errlen) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* The version number a migration's name starts with, or -1. */
static int file_version(const char *name)
{
    char *end;
    long v = strtol(name, &end, 10);
    if (end == name || v <= 0 || v > 1000000000 || *end != '_') return -1;
    return (int)v;
}

/* Checks the embedded list once: names start with increasing numbers. */
static int check_embedded(char *err, size_t errlen)
{
    int prev = 0;
    for (int i = 0; i < migrate_n_files; i++) {
        int v = file_version(migrate_files[i].name);
        if (v <= prev) {
            snprintf(err, errlen,
                     "embedded migration \"%s\": names must start with a number greater than the "
                     "previous one followed by '_' (e.g. 0002_budgets)",
                     migrate_files[i].name);
            return -1;
        }
        prev = v;
    }
    return 0;
}

/* What the database has applied. */
typedef struct applied {
    int n;
    int *version;
    char **name;
    char **at;
} applied;

static void applied_free(applied *a)
{
    for (int i = 0; i < a->n; i++) {
        free(a->name[i]);
        free(a->at[i]);
    }
    free(a->version);
    free(a->name);
    free(a->at);
    memset(a, 0, sizeof *a);
}

/* Whether bridle_schema_migrations exists: 1 yes, 0 no, -1 error. */
static int schema_table_exists(PGconn *c, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, "SELECT to_regclass('bridle_schema_migrations') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char pe[1000];
        pg_result_error(r, c, NULL, pe, sizeof pe);
        snprintf(err, errlen, "reading the schema version: %s", pe);
        PQclear(r);
        return -1;
    }
    int yes = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return yes;
}

static int read_applied(PGconn *c, applied *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    int exists = schema_table_exists(c, err, errlen);
    if (exists <= 0) return exists;
    PGresult *r = PQexec(c, "SELECT version, name, to_char(applied_at AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD HH24:MI:SS') || ' UTC' "
                            "FROM bridle_schema_migrations ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char pe[1000];
        pg_result_error(r, c, NULL, pe, sizeof pe);
        snprintf(err, errlen, "reading bridle_schema_migrations: %s", pe);
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    a->version = calloc((size_t)n + 1, sizeof *a->version);
    a->name = calloc((size_t)n + 1, sizeof *a->name);
    a->at = calloc((size_t)n + 1, sizeof *a->at);
    if (!a->version || !a->name || !a->at) {
        PQclear(r);
        applied_free(a);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        a->version[i] = atoi(PQgetvalue(r, i, 0));
        a->name[i] = strdup(PQgetvalue(r, i, 1));
        a->at[i] = strdup(PQgetvalue(r, i, 2));
        a->n++;
    }
    PQclear(r);
    return 0;
}

/* Index in a of version v, or -1. */
static int applied_find(const applied *a, int v)
{
    for (int i = 0; i < a->n; i++)
        if (a->version[i] == v) return i;
    return -1;
}

/* Applies one migration and records it, in one transaction. */
static int apply_one(PGconn *c, const migrate_file *f, int version, char *err, size_t errlen)
{
    char what[160];
    snprintf(what, sizeof what, "migration %s failed", f->name);
    if (exec_cmd(c, "BEGIN", what, err, errlen) != 0) return -1;
    if (exec_cmd(c, f->sql, what, err, errlen) != 0) {
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", version);
    const char *params[] = {vbuf, f->name};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO bridle_schema_migrations (version, name, applied_at) "
                               "VALUES ($1, $2, now())",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char pe[1000];
        pg_result_error(r, c, NULL, pe, sizeof pe);
        snprintf(err, errlen, "%s: recording it: %s", what, pe);
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    PQclear(r);
    return exec_cmd(c, "COMMIT", what, err, errlen);
}

int migrate_apply(const char *database_url, bool dry_run, char *err, size_t errlen)
{
    if (check_embedded(err, errlen) != 0) return -1;
    PGconn *c = migrate_connect(database_url, "bridle-migrate", err, errlen);
    if (!c) return -1;
    int done = 0, rc = -1;
    applied a = {0};
    bool locked = false;
    if (!dry_run) {
        /* A migration may legitimately run longer than a role's default limits. */
        if (exec_cmd(c, "SET statement_timeout = 0", "session setup", err, errlen) != 0 ||
            exec_cmd(c, "SET lock_timeout = 0", "session setup", err, errlen) != 0)
            goto out;
        /* Serialise with any other bridle migrating this database; what is
         * applied is read only once we hold the lock. */
        if (exec_cmd(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                     "taking the migration lock", err, errlen) != 0)
            goto out;
        locked = true;
        if (exec_cmd(c, CREATE_SCHEMA_TABLE, "creating bridle_schema_migrations", err, errlen) != 0)
            goto out;
    }
    if (read_applied(c, &a, err, errlen) < 0) goto out;
    for (int i = 0; i < migrate_n_files; i++) {
        const migrate_file *f = &migrate_files[i];
        int v = file_version(f->name);
        int at = applied_find(&a, v);
        if (at >= 0) {
            if (strcmp(a.name[at], f->name) != 0)
                fprintf(stderr,
                        "bridle migrate: warning: version %d is recorded as \"%s\" but this "
                        "binary calls it \"%s\"\n",
                        v, a.name[at], f->name);
            continue;
        }
        if (dry_run) {
            printf("pending: %s\n", f->name);
            done++;
            continue;
        }
        int64_t t0 = now_ms();
        if (apply_one(c, f, v, err, errlen) != 0) goto out;
        printf("applied %s (%lld ms)\n", f->name, (long long)(now_ms() - t0));
        fflush(stdout);
        done++;
    }
    int unknown = 0;
    for (int i = 0; i < a.n; i++) {
        bool known = false;
        for (int j = 0; j < migrate_n_files && !known; j++)
            known = file_version(migrate_files[j].name) == a.version[i];
        unknown += !known;
    }
    if (unknown)
        printf("note: the database has %d migration%s this binary does not know (a newer bridle "
               "applied %s)\n",
               unknown, unknown == 1 ? "" : "s", unknown == 1 ? "it" : "them");
    if (done == 0)
        printf("database is up to date (%d migration%s applied)\n", a.n, a.n == 1 ? "" : "s");
    else if (dry_run)
        printf("%d migration%s pending (dry run: nothing changed)\n", done, done == 1 ? "" : "s");
    rc = done;
out:
    if (locked) PQclear(PQexec(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    applied_free(&a);
    PQfinish(c);
    return rc;
}

int migrate_pending(const char *database_url, int *count, char *err, size_t errlen)
{
    *count = 0;
    if (check_embedded(err, errlen) != 0) return -1;
    PGconn *c = migrate_connect(database_url, "bridle", err, errlen);
    if (!c) return -1;
    applied a;
    if (read_applied(c, &a, err, errlen) < 0) {
        PQfinish(c);
        return -1;
    }
    for (int i = 0; i < migrate_n_files; i++)
        *count += applied_find(&a, file_version(migrate_files[i].name)) < 0;
    applied_free(&a);
    PQfinish(c);
    return 0;
}

int migrate_print_status(const char *url, char *err, size_t errlen)
{
    if (check_embedded(err, errlen) != 0) return -1;
    PGconn *c = migrate_connect(url, "bridle-migrate", err, errlen);
    if (!c) return -1;
    applied a;
    if (read_applied(c, &a, err, errlen) < 0) {
        PQfinish(c);
        return -1;
    }
    int pending = 0;
    for (int i = 0; i < migrate_n_files; i++) {
        int at = applied_find(&a, file_version(migrate_files[i].name));
        if (at >= 0) {
            printf("%-40s applied %s\n", migrate_files[i].name, a.at[at]);
        } else {
            printf("%-40s pending\n", migrate_files[i].name);
            pending++;
        }
    }
    printf("%d applied, %d pending\n", migrate_n_files - pending, pending);
    applied_free(&a);
    PQfinish(c);
    return 0;
}
