/* Unit tests for router/keyring.c: lookup order (config keys first, then
 * the database snapshot), a snapshot swap while a run holds a key of the
 * old one, the generation, teams (database row, config team, a name alone),
 * revoked keys and the keystore's helpers (key format, exact dollars). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "db/keystore.h"
#include "lib/util.h"
#include "router/keyring.h"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

static bridle_config *load_config(void)
{
    char path[] = "/tmp/bridle-test-keyring-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text =
        "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://127.0.0.1:1/v1\"}},"
        " \"models\": {\"gpt-4o\": {\"provider\": \"p\"}},"
        " \"teams\": {\"cfgteam\": {\"budget_daily_usd\": 3}},"
        " \"keys\": [{\"id\": \"file-key\", \"sha256\": \"" SHA_A "\", \"team\": \"cfgteam\"}]}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char err[512];
    bridle_config *c = config_load(path, err, sizeof err);
    unlink(path);
    if (!c) print_error("%s\n", err);
    assert_non_null(c);
    return c;
}

static char *xdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

/* Rows: key "db-a" with SHA_A (shadowed by the file's key), key "db-b"
 * (team "dbteam", a row of its own), key "db-c" (team "cfgteam" from the
 * file, revoked when `revoked`), and team rows. budget: db-b's daily. */
static keystore_rows *rows(int64_t budget, bool revoked, const char *b_team)
{
    keystore_rows *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->keys = calloc(3, sizeof *r->keys);
    r->teams = calloc(1, sizeof *r->teams);
    r->n_keys = 3;
    r->n_teams = 1;
    r->keys[0].id = xdup("db-a");
    memcpy(r->keys[0].sha256, SHA_A, 65);
    r->keys[1].id = xdup("db-b");
    memcpy(r->keys[1].sha256, SHA_B, 65);
    r->keys[1].team = xdup(b_team);
    r->keys[1].lim.budget_pusd[KS_DAY] = budget;
    r->keys[1].lim.rpm = 60;
    r->keys[1].agent = xdup("agent-b");
    r->keys[1].models = calloc(1, sizeof(char *));
    r->keys[1].models[0] = xdup("gpt-4o");
    r->keys[1].n_models = 1;
    r->keys[2].id = xdup("db-c");
    memcpy(r->keys[2].sha256, SHA_C, 65);
    r->keys[2].team = xdup("cfgteam");
    r->keys[2].revoked_ms = revoked ? 1700000000000 : 0;
    r->keys[2].admin = true;
    r->teams[0].name = xdup("dbteam");
    r->teams[0].lim.budget_pusd[KS_MONTH] = 7;
    return r;
}

static void test_config_only(void **state)
{
    bridle_config *c = load_config();
    keyring *kr = keyring_new(NULL, c, "", 0);
    assert_true(keyring_loaded(kr));
    const key_conf *k = keyring_find(kr, SHA_A);
    assert_non_null(k);
    assert_string_equal(k->id, "file-key");
    assert_null(k->set);
    keyring_hold(k); /* config keys: no-op */
    keyring_release(k);
    assert_null(keyring_find(kr, SHA_B));
    assert_int_equal(keyring_n_db_keys(kr), 0);
    keyring_free(kr);
    config_free(c);
}

static void test_lookup_order_and_teams(void **state)
{
    bridle_config *c = load_config();
    keyring *kr = keyring_new(NULL, c, "", 0);
    uint64_t g0 = keyring_generation(kr);
    keyring_apply(kr, rows(5, false, "dbteam"));
    assert_true(keyring_generation(kr) != g0);
    assert_int_equal(keyring_n_db_keys(kr), 3);
    /* the file's key wins over a database key with the same hash */
    assert_string_equal(keyring_find(kr, SHA_A)->id, "file-key");
    const key_conf *b = keyring_find(kr, SHA_B);
    assert_non_null(b);
    assert_string_equal(b->id, "db-b");
    assert_non_null(b->set);
    assert_int_equal(b->lim.budget_pusd[PERIOD_DAY], 5);
    assert_int_equal(b->lim.rpm, 60);
    assert_string_equal(b->agent, "agent-b");
    assert_int_equal(b->n_models, 1);
    assert_string_equal(b->models[0], "gpt-4o");
    /* the database's team row */
    assert_string_equal(b->team_cfg->name, "dbteam");
    assert_int_equal(b->team_cfg->lim.budget_pusd[PERIOD_MONTH], 7);
    /* no row: the config's team, copied (a config reload frees the config) */
    const key_conf *cc = keyring_find(kr, SHA_C);
    assert_ptr_not_equal(cc->team_cfg, config_find_team(c, "cfgteam"));
    assert_string_equal(cc->team_cfg->name, "cfgteam");
    assert_int_equal(cc->team_cfg->lim.budget_pusd[PERIOD_DAY], 3000000000000LL);
    assert_true(cc->admin);
    assert_false(cc->revoked);
    assert_int_equal(keyring_revoked_ms(cc), 0);
    /* neither: a team with just its name */
    keyring_apply(kr, rows(5, true, "nowhere"));
    b = keyring_find(kr, SHA_B);
    assert_string_equal(b->team_cfg->name, "nowhere");
    assert_int_equal(b->team_cfg->lim.budget_pusd[PERIOD_DAY], 0);
    /* revoked keys are kept, with when */
    cc = keyring_find(kr, SHA_C);
    assert_true(cc->revoked);
    assert_int_equal(keyring_revoked_ms(cc), 1700000000000LL);
    keyring_free(kr);
    config_free(c);
}

static void test_swap_while_held(void **state)
{
    bridle_config *c = load_config();
    keyring *kr = keyring_new(NULL, c, "", 0);
    keyring_apply(kr, rows(5, false, "dbteam"));
    const key_conf *held = keyring_find(kr, SHA_B);
    keyring_hold(held); /* a run starts */
    keyring_hold(held); /* and another */
    uint64_t g1 = keyring_generation(kr);
    keyring_apply(kr, rows(9, false, "dbteam")); /* a reload: new snapshot */
    assert_true(keyring_generation(kr) != g1);
    const key_conf *now = keyring_find(kr, SHA_B);
    assert_ptr_not_equal(now, held);
    assert_int_equal(now->lim.budget_pusd[PERIOD_DAY], 9);
    /* the held key still reads its own snapshot (ASan would catch a free) */
    assert_string_equal(held->id, "db-b");
    assert_int_equal(held->lim.budget_pusd[PERIOD_DAY], 5);
    assert_string_equal(held->team_cfg->name, "dbteam");
    keyring_release(held);
    assert_string_equal(held->agent, "agent-b"); /* one hold left */
    keyring_apply(kr, rows(11, false, "dbteam"));
    assert_string_equal(held->models[0], "gpt-4o");
    keyring_release(held); /* the last: the first snapshot is freed now */
    assert_int_equal(keyring_find(kr, SHA_B)->lim.budget_pusd[PERIOD_DAY], 11);
    /* a snapshot still held when the keyring goes is freed by the release */
    const key_conf *last = keyring_find(kr, SHA_B);
    keyring_hold(last);
    keyring_free(kr);
    assert_string_equal(last->id, "db-b");
    keyring_release(last);
    config_free(c);
}

static void test_many_keys(void **state)
{
    keyring *kr = keyring_new(NULL, NULL, "", 0);
    keystore_rows *r = calloc(1, sizeof *r);
    int n = 5000;
    r->keys = calloc((size_t)n, sizeof *r->keys);
    r->n_keys = n;
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "k%d", i);
        r->keys[i].id = xdup(id);
        util_sha256_hex(id, strlen(id), r->keys[i].sha256);
    }
    keyring_apply(kr, r);
    char sha[65];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "k%d", i);
        util_sha256_hex(id, strlen(id), sha);
        const key_conf *k = keyring_find(kr, sha);
        assert_non_null(k);
        assert_string_equal(k->id, id);
    }
    util_sha256_hex("nope", 4, sha);
    assert_null(keyring_find(kr, sha));
    keyring_free(kr);
}

static void test_key_format(void **state)
{
    char key[KEYSTORE_KEY_MAX], sha[65], prefix[16], last4[5], check[65];
    assert_true(keystore_make_key(false, key, sha, prefix, last4));
    assert_int_equal(strlen(key), 3 + 48);
    assert_memory_equal(key, "bk-", 3);
    assert_int_equal(strlen(prefix), 7);
    assert_memory_equal(prefix, key, 7);
    assert_string_equal(last4, key + strlen(key) - 4);
    util_sha256_hex(key, strlen(key), check);
    assert_string_equal(sha, check);
    assert_true(keystore_make_key(true, key, sha, prefix, last4));
    assert_int_equal(strlen(key), 9 + 48);
    assert_memory_equal(key, "bk-admin-", 9);
    assert_int_equal(strlen(prefix), 13);
    assert_memory_equal(prefix, key, 13);
}

static void test_parse_usd(void **state)
{
    int64_t v;
    assert_true(keystore_parse_usd("12", &v));
    assert_int_equal(v, 12000000000000LL);
    assert_true(keystore_parse_usd("0.5", &v));
    assert_int_equal(v, 500000000000LL);
    assert_true(keystore_parse_usd("100.000000000001", &v));
    assert_int_equal(v, 100000000000001LL);
    assert_true(keystore_parse_usd(".25", &v));
    assert_int_equal(v, 250000000000LL);
    assert_true(keystore_parse_usd("0", &v));
    assert_int_equal(v, 0);
    assert_false(keystore_parse_usd("1.0000000000001", &v)); /* 13 decimals */
    assert_false(keystore_parse_usd("-1", &v));
    assert_false(keystore_parse_usd("1e3", &v));
    assert_false(keystore_parse_usd("1.", &v));
    assert_false(keystore_parse_usd("", &v));
    assert_false(keystore_parse_usd("9000000", &v));
    char lit[64];
    assert_true(keystore_models_literal("a,b\"c", lit, sizeof lit));
    assert_string_equal(lit, "{\"a\",\"b\\\"c\"}");
    assert_false(keystore_models_literal("a,,b", lit, sizeof lit));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_only),     cmocka_unit_test(test_lookup_order_and_teams),
        cmocka_unit_test(test_swap_while_held), cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_key_format),      cmocka_unit_test(test_parse_usd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
