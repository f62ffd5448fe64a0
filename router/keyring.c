/* The keys a gateway accepts: see keyring.h. */
#include "router/keyring.h"

#include <stdlib.h>
#include <string.h>

#include "db/keystore.h"
#include "lib/log.h"

struct keyset {
    int refs; /* 1 while current, + 1 per hold */
    keystore_rows *rows;
    key_conf *keys;
    int n_keys;
    team_conf *teams; /* bridle_teams rows, then teams made up for a name alone */
    int n_teams;
    size_t *slots; /* open addressing: key index + 1, 0 empty */
    size_t mask;
};

struct keyring {
    const bridle_config *cfg;
    keystore *ks;
    struct keyset *cur;
    uint64_t generation;
    bool loaded;
};

static void set_free(struct keyset *s)
{
    keystore_rows_free(s->rows);
    free(s->keys);
    free(s->teams);
    free(s->slots);
    free(s);
}

static void set_unref(struct keyset *s)
{
    if (s && --s->refs == 0) set_free(s);
}

static size_t slot_of(const char *sha256, size_t mask)
{
    size_t h = 0;
    for (int i = 0; i < 16 && sha256[i]; i++)
        h = h * 16 + (size_t)(sha256[i] <= '9' ? sha256[i] - '0' : (sha256[i] | 32) - 'a' + 10);
    return h & mask;
}

static void copy_limits(spend_limits *l, const keystore_limits *r)
{
    l->budget_pusd[PERIOD_DAY] = r->budget_pusd[KS_DAY];
    l->budget_pusd[PERIOD_WEEK] = r->budget_pusd[KS_WEEK];
    l->budget_pusd[PERIOD_MONTH] = r->budget_pusd[KS_MONTH];
    l->rpm = r->rpm;
    l->tokens_per_hour = r->tokens_per_hour;
    l->pusd_per_hour = r->pusd_per_hour;
}

/* A database key's team: the bridle_teams row, else the config's team of
 * that name copied (the snapshot never points into a config, which a
 * reload frees), else one with just the name. */
static const team_conf *team_for(struct keyset *s, const bridle_config *cfg, const char *name)
{
    for (int i = 0; i < s->n_teams; i++)
        if (strcmp(s->teams[i].name, name) == 0) return &s->teams[i];
    team_conf *made = &s->teams[s->n_teams++];
    made->name = name;
    const team_conf *t = cfg ? config_find_team(cfg, name) : NULL;
    if (t) made->lim = t->lim;
    return made;
}

/* A snapshot of rows (taken), or NULL on OOM (rows freed). */
static struct keyset *set_build(const bridle_config *cfg, keystore_rows *rows)
{
    struct keyset *s = calloc(1, sizeof *s);
    size_t cap = 16;
    while (cap < (size_t)rows->n_keys * 2)
        cap *= 2;
    if (s) {
        s->rows = rows;
        s->refs = 1;
        s->keys = calloc((size_t)rows->n_keys + 1, sizeof *s->keys);
        s->teams = calloc((size_t)(rows->n_teams + rows->n_keys) + 1, sizeof *s->teams);
        s->slots = calloc(cap, sizeof *s->slots);
        s->mask = cap - 1;
    }
    if (!s || !s->keys || !s->teams || !s->slots) {
        if (s)
            set_free(s);
        else
            keystore_rows_free(rows);
        return NULL;
    }
    for (int i = 0; i < rows->n_teams; i++) {
        keystore_team *r = &rows->teams[i];
        team_conf *t = &s->teams[s->n_teams++];
        t->name = r->name;
        copy_limits(&t->lim, &r->lim);
    }
    for (int i = 0; i < rows->n_keys; i++) {
        keystore_key *r = &rows->keys[i];
        key_conf *k = &s->keys[s->n_keys];
        k->id = r->id;
        memcpy(k->sha256, r->sha256, sizeof k->sha256);
        k->admin = r->admin;
        k->team = r->team;
        k->team_cfg = r->team ? team_for(s, cfg, r->team) : NULL;
        copy_limits(&k->lim, &r->lim);
        k->agent = r->agent;
        k->feature = r->feature;
        k->models = (const char *const *)r->models;
        k->n_models = r->n_models;
        k->expires_ms = r->expires_ms;
        k->revoked = r->revoked_ms != 0;
        k->set = s;
        size_t h = slot_of(k->sha256, s->mask);
        while (s->slots[h])
            h = (h + 1) & s->mask;
        s->slots[h] = (size_t)s->n_keys + 1;
        s->n_keys++;
    }
    return s;
}

void keyring_apply(keyring *kr, keystore_rows *rows)
{
    struct keyset *s = set_build(kr->cfg, rows);
    if (!s) {
        log_error("key store: out of memory building the key table; keeping the previous one");
        return;
    }
    set_unref(kr->cur);
    kr->cur = s;
    kr->generation++;
    if (!kr->loaded) log_info("key store: %d database keys loaded", s->n_keys);
    kr->loaded = true;
}

static void on_load(void *ctx, keystore_rows *rows)
{
    keyring_apply(ctx, rows);
}

keyring *keyring_new(struct event_base *base, const bridle_config *cfg, const char *database_url,
                     int64_t refresh_ms)
{
    keyring *kr = calloc(1, sizeof *kr);
    if (!kr) return NULL;
    kr->cfg = cfg;
    kr->generation = 1;
    if (!database_url || !*database_url) {
        kr->loaded = true;
        return kr;
    }
    kr->ks = keystore_new(base, database_url, refresh_ms > 0 ? (int)refresh_ms : 1000, on_load, kr);
    if (!kr->ks) {
        free(kr);
        return NULL;
    }
    return kr;
}

void keyring_free(keyring *kr)
{
    if (!kr) return;
    keystore_free(kr->ks);
    set_unref(kr->cur);
    free(kr);
}

const key_conf *keyring_find(keyring *kr, const char *sha256_hex)
{
    const key_conf *k = kr->cfg ? config_find_key(kr->cfg, sha256_hex) : NULL;
    if (k || !kr->cur) return k;
    struct keyset *s = kr->cur;
    for (size_t h = slot_of(sha256_hex, s->mask); s->slots[h]; h = (h + 1) & s->mask) {
        key_conf *c = &s->keys[s->slots[h] - 1];
        if (strcmp(c->sha256, sha256_hex) == 0) return c;
    }
    return NULL;
}

void keyring_hold(const key_conf *k)
{
    if (k && k->set) k->set->refs++;
}

void keyring_release(const key_conf *k)
{
    if (k && k->set) set_unref(k->set);
}

void keyring_set_config(keyring *kr, const bridle_config *cfg)
{
    kr->cfg = cfg;
    kr->generation++;
}

uint64_t keyring_generation(const keyring *kr)
{
    return kr->generation;
}

bool keyring_loaded(const keyring *kr)
{
    return kr->loaded;
}

int64_t keyring_revoked_ms(const key_conf *k)
{
    if (!k || !k->set || !k->revoked) return 0;
    return k->set->rows->keys[k - k->set->keys].revoked_ms;
}

int keyring_n_db_keys(const keyring *kr)
{
    return kr->cur ? kr->cur->n_keys : 0;
}
