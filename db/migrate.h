/* Schema migrations: the numbered SQL files in migrations/ are embedded in the
 * binary at build time ($(BUILD)/gen/migrations.c, made by the Makefile) and
 * applied in file-name order, each in its own transaction, recorded in
 * bridle_schema_migrations(version, name, applied_at).
 *
 * Blocking libpq: for the CLI (`bridle migrate`, `bridle cost`) and for the
 * one check at `serve` start, before the event loop serves anyone. Never on
 * the serving path.
 *
 * Return convention: 0 (or a count >= 0) on success, -1 on failure with a
 * one-line message in err (which names the migration and carries the
 * PostgreSQL message). */
#ifndef BRIDLE_MIGRATE_H
#define BRIDLE_MIGRATE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* One embedded migration: name is the file name without ".sql"
 * ("0001_usage_events"); its version is the leading number (1). */
typedef struct migrate_file {
    const char *name;
    const char *sql;
} migrate_file;

/* Generated: every migrations/NNNN_name.sql file, in file-name order. */
extern const migrate_file migrate_files[];
extern const int migrate_n_files;

/* Opens a blocking connection (URL or key=value string; connect_timeout
 * defaults to 10 s unless the URL sets it). NULL with err set on failure. */
PGconn *migrate_connect(const char *database_url, const char *application_name, char *err,
                        size_t errlen);

/* Applies every pending migration under pg_advisory_lock (two gateways
 * starting together apply each migration once). Prints one line per
 * migration to stdout ("applied 0001_usage_events (12 ms)") or "database is
 * up to date". dry_run: prints "pending: NAME" and changes nothing. Returns
 * the number applied (or pending, for dry_run), -1 on error. */
int migrate_apply(const char *database_url, bool dry_run, char *err, size_t errlen);

/* How many embedded migrations the database has not applied yet (all of them
 * when bridle_schema_migrations does not exist): for `serve` to refuse to start
 * on a stale schema. 0 with *count set, -1 on error. */
int migrate_pending(const char *database_url, int *count, char *err, size_t errlen);

/* `bridle migrate --status`: prints one line per embedded migration and a
 * count to stdout. 0, or -1 with err set. */
int migrate_print_status(const char *url, char *err, size_t errlen);

#endif
