/* The keys a gateway accepts: the config file's ($.keys) and, with a
 * database, the rows of bridle_keys (db/keystore.h), reloaded within
 * database.keys_refresh_ms of any change to keys, teams or budgets.
 *
 * Database keys live in a snapshot (struct keyset, key_conf.set) built from
 * one load; a reload builds a new one and swaps it in. A run holds its key
 * (keyring_hold) for its whole life, so the old snapshot is freed only when
 * it is no longer current and no run holds one of its keys. Config keys
 * live as long as the config: holding them is a no-op.
 *
 * A database key's team is the bridle_teams row of that name (its budgets
 * from bridle_budgets scope 'team'), else the config's team of that name,
 * else a team with just the name and no limits. Revoked keys stay in the
 * snapshot (revoked = true) so that the 401 can say so. One thread. */
#ifndef BRIDLE_KEYRING_H
#define BRIDLE_KEYRING_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "router/config.h"

typedef struct keyring keyring;
struct keystore_rows;

/* database_url "" = the config file's keys only (then it is loaded at
 * once). refresh_ms <= 0: 1000. Returns NULL on OOM. */
keyring *keyring_new(struct event_base *base, const bridle_config *cfg, const char *database_url,
                     int64_t refresh_ms);
/* Frees the keyring; snapshots still held by runs are freed by their last
 * keyring_release. */
void keyring_free(keyring *kr);

/* The key with this SHA-256 (lower-case hex): the config's first, then the
 * database's. Valid until the next reload unless held. NULL: unknown. */
const key_conf *keyring_find(keyring *kr, const char *sha256_hex);

/* Keeps k's snapshot alive until the matching release. NULL is fine. */
void keyring_hold(const key_conf *k);
void keyring_release(const key_conf *k);

/* A config reload: the file's keys are cfg's from now on (the caller keeps
 * the old config alive while runs hold its keys). Database keys of a
 * team defined only in the file keep that team's limits as they were
 * when their snapshot was built, until the next change in the database. */
void keyring_set_config(keyring *kr, const bridle_config *cfg);
/* Changes at every reload: what caches of keyring_find's answers key on. */
uint64_t keyring_generation(const keyring *kr);
/* False while a database is configured and its keys were never loaded. */
bool keyring_loaded(const keyring *kr);
/* When k was revoked (ms since the epoch), 0 if it was not or is a config key. */
int64_t keyring_revoked_ms(const key_conf *k);
/* Database keys in the current snapshot (revoked ones included). */
int keyring_n_db_keys(const keyring *kr);

/* For router/keyring.c's tests and the keystore: builds a new snapshot
 * from rows (taking them) and swaps it in. */
void keyring_apply(keyring *kr, struct keystore_rows *rows);

#endif
