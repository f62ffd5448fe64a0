/* Keys and teams in PostgreSQL (migrations/0004: bridle_keys, bridle_teams,
 * bridle_budgets, bridle_keys_version).
 *
 * The keystore polls `SELECT version FROM bridle_keys_version` every
 * refresh_ms on its own non-blocking connection (db/pgconn.h) and, when the
 * version changed (or on the first poll), reads every key, team and
 * key/team budget in one statement (one snapshot) and hands the rows to its
 * owner (router/keyring.h), which builds its lookup table from them. A
 * failed load is retried at the next poll; the rows last handed over stay
 * in use meanwhile.
 *
 * The SQL the command line (cli/keys.c) and the admin API (server/admin.c)
 * run to create, list and revoke keys and to set teams lives here too, so
 * the two ways agree on it; so do the key format and the dollar parser.
 * Only the SHA-256 of a key, its prefix and its last 4 characters are ever
 * stored. Nothing here includes a router/ header: the rows are plain
 * structs, budgets indexed day, week, month (router/config.h's order). */
#ifndef BRIDLE_KEYSTORE_H
#define BRIDLE_KEYSTORE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { KS_DAY, KS_WEEK, KS_MONTH, KS_PERIODS };

/* What a key or a team may spend and how fast; 0 = no limit. */
typedef struct keystore_limits {
    int64_t rpm, tokens_per_hour, pusd_per_hour;
    int64_t budget_pusd[KS_PERIODS];
} keystore_limits;

typedef struct keystore_key {
    char *id;
    char sha256[65];
    bool admin;
    char *team; /* NULL: none */
    char **models;
    int n_models; /* 0: any model */
    char *agent, *feature;
    keystore_limits lim;
    int64_t expires_ms; /* 0: never */
    int64_t revoked_ms; /* 0: not revoked */
} keystore_key;

typedef struct keystore_team {
    char *name;
    keystore_limits lim;
} keystore_team;

typedef struct keystore_rows {
    int64_t version;
    keystore_key *keys;
    int n_keys;
    keystore_team *teams;
    int n_teams;
} keystore_rows;

void keystore_rows_free(keystore_rows *rows);

/* Called on the loop with the rows of a new version; the callee owns them
 * (keystore_rows_free). */
typedef void (*keystore_load_fn)(void *ctx, keystore_rows *rows);

typedef struct keystore keystore;

/* Starts polling at once. Returns NULL on OOM. */
keystore *keystore_new(struct event_base *base, const char *database_url, int refresh_ms,
                       keystore_load_fn on_load, void *ctx);
void keystore_free(keystore *ks);

/* ------------------------------------------------------------ shared helpers */

/* A new key: "bk-" + 48 hex digits for a client key, "bk-admin-" + 48
 * for an admin key (192 random bits either way), its SHA-256 hex, its
 * display prefix ("bk-" + 4, "bk-admin-" + 4) and last 4 characters.
 * False when the OS gives no random bytes. */
#define KEYSTORE_KEY_MAX 64
bool keystore_make_key(bool admin, char key[KEYSTORE_KEY_MAX], char sha256[65], char prefix[16],
                       char last4[5]);

/* Parses dollars ("12", "0.5", "1.000000000001": at most 12 decimals, no
 * sign, below $9,000,000) exactly into pico-dollars. False if malformed. */
bool keystore_parse_usd(const char *s, int64_t *pusd);

/* Parses "2027-01-31T00:00:00Z" into ms since the epoch. */
bool keystore_parse_time(const char *s, int64_t *ms);

/* Creates a key: $1 id, $2 sha256, $3 prefix, $4 last4, $5 kind ('client' /
 * 'admin'), $6 team, $7 models (a text[] literal, or NULL), $8 agent, $9
 * feature, $10 rpm, $11 tokens_per_hour, $12 usd_per_hour_pusd, $13
 * expires_at (timestamptz text or NULL), $14..$16 budgets day, week, month
 * in pico-dollars (0: none). One statement, so one transaction. Returns
 * one row: the key's JSON as listed (keystore_list_keys_sql's element). */
extern const char keystore_create_sql[];
/* Lists keys as one JSON array (one row, one column), newest last. */
extern const char keystore_list_keys_sql[];
/* Revokes key $1 (kept, revoked_at set once); returns its JSON, no row when
 * there is no such key. */
extern const char keystore_revoke_sql[];
/* Upserts team $1: $2 rpm, $3 tokens_per_hour, $4 usd_per_hour_pusd, $5..$7
 * budgets day, week, month; each NULL keeps the current value, 0 removes
 * the limit. Returns the team's JSON. */
extern const char keystore_team_set_sql[];
/* Lists teams as one JSON array. */
extern const char keystore_list_teams_sql[];
/* The rows of bridle_budget_status as one JSON array. */
extern const char keystore_budgets_sql[];

/* Writes a text[] literal ({"a","b"}) for names separated by commas in csv
 * into out. False when it does not fit or a name is empty. */
bool keystore_models_literal(const char *csv, char *out, size_t outlen);

#endif
