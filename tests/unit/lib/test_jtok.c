/* lib/jtok: validation, navigation, unescaping, copying values out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "lib/jtok.h"

static int parse(jdoc *d, const char *s)
{
    char err[128];
    size_t pos;
    return jdoc_parse(d, s, strlen(s), err, sizeof err, &pos);
}

static void test_valid_documents(void **state)
{
    const char *ok[] = {"{}",
                        "[]",
                        " {\"a\":1} ",
                        "\"x\"",
                        "0",
                        "-0.5e+10",
                        "true",
                        "null",
                        "[1,[2,[3,{\"k\":[]}]]]",
                        "{\"u\":\"\\u00e9\\ud83d\\ude00\"}",
                        "\"caf\xc3\xa9\"",
                        "\"\xf0\x9f\x98\x80\""};
    jdoc d = JDOC_INIT;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(parse(&d, ok[i]), 0);
    jdoc_free(&d);
}

static void test_invalid_documents(void **state)
{
    const char *bad[] = {"",         "{",          "{\"a\"}", "{\"a\":}", "[1,]",
                         "{,}",      "01",         "1.",      "-",        "1e",
                         "tru",      "nul",        "\"abc",   "\"\\x\"",  "\"\\u12G4\"",
                         "\"a\nb\"", "{} {}",      "[1 2]",   "\"\xc3\"", "\"\xed\xa0\x80\"",
                         "\"\xff\"", "{\"a\":1,}", "'a'"};
    jdoc d = JDOC_INIT;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(&d, bad[i]), -1);
    jdoc_free(&d);
}

static void test_depth_limit(void **state)
{
    char deep[600];
    memset(deep, '[', 300);
    memset(deep + 300, ']', 300);
    deep[599] = ']';
    jdoc d = JDOC_INIT;
    char s[600];
    memcpy(s, deep, 599);
    s[599] = '\0';
    assert_int_equal(parse(&d, s), -1);
    jdoc_free(&d);
}

static void test_navigation(void **state)
{
    const char *s =
        "{\"model\":\"gpt\",\"n\":3,\"messages\":[{\"role\":\"user\"},{\"role\":\"a\\u0062c\"}],"
        "\"x\":{\"y\":[1,2,3]},\"f\":-1.5}";
    jdoc d = JDOC_INIT;
    assert_int_equal(parse(&d, s), 0);
    assert_true(jdoc_str_eq(&d, jdoc_get(&d, 0, "model"), "gpt"));
    int64_t n;
    assert_true(jdoc_int64(&d, jdoc_get(&d, 0, "n"), &n));
    assert_int_equal(n, 3);
    assert_false(jdoc_int64(&d, jdoc_get(&d, 0, "f"), &n));
    double f;
    assert_true(jdoc_double(&d, jdoc_get(&d, 0, "f"), &f));
    assert_true(f == -1.5);
    uint32_t msgs = jdoc_get(&d, 0, "messages");
    assert_int_equal(jdoc_type(&d, msgs), JT_ARRAY);
    assert_int_equal(d.t[msgs].size, 2);
    uint32_t m1 = jdoc_index(&d, msgs, 1);
    assert_true(jdoc_str_eq(&d, jdoc_get(&d, m1, "role"), "abc"));
    assert_int_equal(jdoc_get(&d, 0, "missing"), JT_NONE);
    assert_int_equal(jdoc_index(&d, msgs, 2), JT_NONE);
    /* iteration visits every key once, skipping nested values */
    int keys = 0;
    for (uint32_t k = jdoc_first(&d, 0); k != JT_NONE; k = jdoc_next(&d, 0, k))
        keys++;
    assert_int_equal(keys, 5);
    size_t len;
    const char *raw = jdoc_raw(&d, jdoc_get(&d, 0, "x"), &len);
    assert_int_equal(len, strlen("{\"y\":[1,2,3]}"));
    assert_memory_equal(raw, "{\"y\":[1,2,3]}", len);
    raw = jdoc_raw(&d, jdoc_get(&d, 0, "model"), &len);
    assert_memory_equal(raw, "\"gpt\"", len);
    jdoc_free(&d);
}

static void test_get_keys(void **state)
{
    /* a key that is a prefix of another, an escaped key, a key after them */
    const char *s = "{\"mod\":1,\"model\":2,\"m\\u006fdel2\":3,\"z\":4}";
    jdoc d = JDOC_INIT;
    int64_t n = 0;
    assert_int_equal(parse(&d, s), 0);
    assert_true(jdoc_int64(&d, jdoc_get(&d, 0, "model"), &n));
    assert_int_equal(n, 2);
    assert_true(jdoc_int64(&d, jdoc_get(&d, 0, "mod"), &n));
    assert_int_equal(n, 1);
    assert_true(jdoc_int64(&d, jdoc_get(&d, 0, "model2"), &n));
    assert_int_equal(n, 3);
    assert_true(jdoc_int64(&d, jdoc_get(&d, 0, "z"), &n));
    assert_int_equal(n, 4);
    assert_int_equal(jdoc_get(&d, 0, "mode"), JT_NONE);
    assert_int_equal(jdoc_get(&d, 0, ""), JT_NONE);
    jdoc_free(&d);
}

static void test_unescape(void **state)
{
    jdoc d = JDOC_INIT;
    assert_int_equal(parse(&d, "\"a\\n\\t\\\"\\\\\\/\\u00e9\\ud83d\\ude00\\ud800z\""), 0);
    buf b = BUF_INIT;
    jdoc_str_append(&d, 0, &b);
    assert_string_equal(b.data, "a\n\t\"\\/\xc3\xa9\xf0\x9f\x98\x80\xef\xbf\xbdz");
    buf_free(&b);
    jdoc_free(&d);
}

static void test_int64_bounds(void **state)
{
    jdoc d = JDOC_INIT;
    int64_t v;
    assert_int_equal(parse(&d, "9223372036854775807"), 0);
    assert_true(jdoc_int64(&d, 0, &v));
    assert_true(v == INT64_MAX);
    assert_int_equal(parse(&d, "-9223372036854775808"), 0);
    assert_true(jdoc_int64(&d, 0, &v));
    assert_true(v == INT64_MIN);
    assert_int_equal(parse(&d, "9223372036854775808"), 0);
    assert_false(jdoc_int64(&d, 0, &v));
    jdoc_free(&d);
}

static void test_token_cap(void **state)
{
    jdoc d = JDOC_INIT;
    d.max_tokens = 4;
    assert_int_equal(parse(&d, "[1,2,3]"), 0);
    assert_int_equal(parse(&d, "[1,2,3,4]"), -1);
    jdoc_free(&d);
}

/* Copying values out: raw bytes, string views, the last of a repeated
 * key, and surrogate escapes made safe. */
static void test_copy_helpers(void **state)
{
    jdoc d = JDOC_INIT;
    assert_int_equal(parse(&d, "{\"a\": 1, \"s\": \"x\\ny\", \"a\": [ 2 , {\"k\" : \"v\"} ], "
                               "\"p\": \"plain\", \"p2\": \"plain\", \"e\": \"pl\\u0061in\"}"),
                     0);
    assert_int_equal(jdoc_type(&d, jdoc_get(&d, 0, "a")), JT_NUMBER);
    uint32_t last = jdoc_get_last(&d, 0, "a");
    assert_int_equal(jdoc_type(&d, last), JT_ARRAY);
    assert_int_equal(jdoc_get_last(&d, 0, "nope"), JT_NONE);
    buf b = BUF_INIT, scratch = BUF_INIT;
    jdoc_raw_append(&d, last, &b);
    assert_string_equal(b.data, "[ 2 , {\"k\" : \"v\"} ]");
    buf_reset(&b);
    jdoc_json_append(&d, last, &b); /* no surrogate: the same bytes */
    assert_string_equal(b.data, "[ 2 , {\"k\" : \"v\"} ]");
    size_t len;
    const char *v = jdoc_str_view(&d, jdoc_get(&d, 0, "s"), &scratch, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(v, "x\ny", 3);
    v = jdoc_str_view(&d, jdoc_get(&d, 0, "p"), &scratch, &len);
    assert_ptr_equal(v, d.src + d.t[jdoc_get(&d, 0, "p")].start); /* no copy */
    assert_true(jdoc_str_same(&d, jdoc_get(&d, 0, "p"), jdoc_get(&d, 0, "p2")));
    assert_true(jdoc_str_same(&d, jdoc_get(&d, 0, "p"), jdoc_get(&d, 0, "e")));
    assert_false(jdoc_str_same(&d, jdoc_get(&d, 0, "p"), jdoc_get(&d, 0, "s")));
    assert_false(jdoc_str_same(&d, jdoc_get(&d, 0, "p"), last));
    buf_free(&b);
    buf_free(&scratch);
    jdoc_free(&d);
}

static void test_surrogate_escapes(void **state)
{
    jdoc d = JDOC_INIT;
    assert_int_equal(parse(&d,
                           "{\"lone\": \"a\\ud83d b\", \"pair\": \"\\ud83d\\ude00\", "
                           "\"bs\": \"\\\\ud83d\", \"deep\": [{\"x\\udc00\": [\"\\ud800\", 1]}]}"),
                     0);
    buf b = BUF_INIT;
    jdoc_str_append_json(&d, jdoc_get(&d, 0, "lone"), &b);
    assert_string_equal(b.data, "\"a\xef\xbf\xbd b\""); /* U+FFFD, as json-c reads it */
    buf_reset(&b);
    jdoc_str_append_json(&d, jdoc_get(&d, 0, "pair"), &b);
    assert_string_equal(b.data, "\"\xf0\x9f\x98\x80\"");
    buf_reset(&b);
    jdoc_str_append_json(&d, jdoc_get(&d, 0, "bs"), &b); /* an escaped backslash: same text */
    assert_string_equal(b.data, "\"\\\\ud83d\"");
    buf_reset(&b);
    jdoc_json_append(&d, jdoc_get(&d, 0, "deep"), &b);
    assert_string_equal(b.data, "[{\"x\xef\xbf\xbd\":[\"\xef\xbf\xbd\",1]}]");
    buf_free(&b);
    jdoc_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_documents), cmocka_unit_test(test_invalid_documents),
        cmocka_unit_test(test_depth_limit),     cmocka_unit_test(test_navigation),
        cmocka_unit_test(test_unescape),        cmocka_unit_test(test_int64_bounds),
        cmocka_unit_test(test_token_cap),       cmocka_unit_test(test_get_keys),
        cmocka_unit_test(test_copy_helpers),    cmocka_unit_test(test_surrogate_escapes),
    };
    return cmocka_run_group_tests_name("lib/jtok", tests, NULL, NULL);
}
