/* Unit tests for router/cache.c: the LRU bounded by bytes, expiry on a
 * clock the test moves, the key's sensitivity, and the two replay forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router/cache.h"
#include "router/canon.h"

/* A key like resp_cache_key's: a few lines of text. */
static const buf *key_of(int i)
{
    static buf k;
    buf_reset(&k);
    buf_printf(&k, "key\tk1\ngpt-4o-mini\n4096\n0\n\"messages\":[{\"content\":\"%d\"}]\n", i);
    return &k;
}

static cache_answer answer_of(const char *body)
{
    cache_answer a = {
        body, strlen(body), NULL, {.input_uncached = 3, .output = 8, .exact = true}, false};
    return a;
}

/* ------------------------------------------------------------ the store */

static void test_put_get_and_expiry(void **state)
{
    resp_cache *c = resp_cache_new(1 << 20);
    const buf *k = key_of(1);
    cache_answer got, a = answer_of("{\"a\":1}");
    assert_false(resp_cache_get(c, k, 1000, &got));
    assert_true(resp_cache_put(c, k, &a, 2000));
    assert_true(resp_cache_get(c, k, 1999, &got));
    assert_int_equal(got.len, 7);
    assert_memory_equal(got.body, "{\"a\":1}", 7);
    assert_int_equal(got.usage.output, 8);
    /* at its expiry it is gone, and counted so */
    assert_false(resp_cache_get(c, k, 2000, &got));
    cache_stats st = resp_cache_get_stats(c);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    resp_cache_free(c);
}

static void test_replace_same_key(void **state)
{
    resp_cache *c = resp_cache_new(1 << 20);
    const buf *k = key_of(7);
    cache_answer got, a = answer_of("first"), b = answer_of("second answer");
    assert_true(resp_cache_put(c, k, &a, 5000));
    assert_true(resp_cache_put(c, k, &b, 5000));
    assert_true(resp_cache_get(c, k, 0, &got));
    assert_string_equal(got.body, "second answer");
    assert_int_equal(resp_cache_get_stats(c).entries, 1);
    resp_cache_free(c);
}

/* Many entries through a small cache: the bytes never pass the bound, the
 * most recently used stay, the least recently used go. */
static void test_lru_under_the_memory_cap(void **state)
{
    const int64_t cap = 64 << 10;
    resp_cache *c = resp_cache_new(cap);
    char body[1000];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    cache_answer a = answer_of(body), got;
    buf k0 = BUF_INIT;
    buf_append(&k0, key_of(0)->data, key_of(0)->len);
    assert_true(resp_cache_put(c, &k0, &a, 1 << 30));
    for (int i = 1; i < 2000; i++) {
        assert_true(resp_cache_put(c, key_of(i), &a, 1 << 30));
        assert_true(resp_cache_get_stats(c).bytes <= cap);
        assert_true(resp_cache_get(c, &k0, 0, &got)); /* used all along: never evicted */
    }
    buf_free(&k0);
    cache_stats st = resp_cache_get_stats(c);
    assert_true(st.entries > 30 && st.entries < 70);
    assert_int_equal(st.stores, 2000);
    assert_int_equal(st.evictions, 2000 - st.entries);
    assert_false(resp_cache_get(c, key_of(1), 0, &got)); /* the oldest unused went first */
    assert_true(resp_cache_get(c, key_of(1999), 0, &got));
    /* one answer bigger than an eighth of the cache is refused */
    char *big = malloc(cap / 8);
    memset(big, 'y', cap / 8 - 1);
    big[cap / 8 - 1] = '\0';
    cache_answer b = answer_of(big);
    assert_false(resp_cache_put(c, key_of(5000), &b, 1 << 30));
    assert_int_equal(resp_cache_get_stats(c).refused, 1);
    free(big);
    resp_cache_free(c);
}

/* ------------------------------------------------------------ the key */

typedef struct parsed {
    jdoc doc;
    buf strings;
    canon_request req;
} parsed;

static void parse(parsed *p, const char *body)
{
    memset(p, 0, sizeof *p);
    canon_error err;
    int rc = canon_parse_chat(body, strlen(body), &p->doc, &p->strings, &p->req, &err);
    if (rc != 0) fail_msg("%s: %s", body, err.message);
}

/* The key as a string (it holds no NUL). */
static void key_for(const char *body, const char *scope, const char *model, int64_t cap,
                    char out[4096])
{
    parsed p;
    buf k = BUF_INIT;
    parse(&p, body);
    resp_cache_key(&p.req, strncmp(scope, "team\t", 5) == 0, strchr(scope, '\t') + 1, model, cap,
                   &k);
    assert_true(k.len < 4096);
    memcpy(out, k.data, k.len);
    out[k.len] = '\0';
    buf_free(&k);
    jdoc_free(&p.doc);
    buf_free(&p.strings);
}

#define BASE                                                                                       \
    "\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static void test_key_changes_with_what_changes_the_answer(void **state)
{
    char base[4096], k[4096];
    key_for("{" BASE "}", "key\tk1", "gpt-4o-mini", 4096, base);
    static const char *const changed[] = {
        "{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi!\"}]"
        "}",
        "{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":\"system\",\"content\":\"hi\"}]"
        "}",
        "{" BASE ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
        "{" BASE ",\"tool_choice\":\"none\"}",
        "{" BASE ",\"response_format\":{\"type\":\"json_object\"}}",
        "{" BASE ",\"top_p\":0.5}",
        "{" BASE ",\"seed\":1}",
        "{" BASE ",\"stop\":[\"x\"]}",
        "{" BASE ",\"presence_penalty\":1}",
        "{" BASE ",\"frequency_penalty\":1}",
        "{" BASE ",\"logit_bias\":{\"1\":5}}",
        "{" BASE ",\"logprobs\":true}",
        "{" BASE ",\"reasoning_effort\":\"low\"}",
        "{\"model\":\"m\",\"temperature\":0.0,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
        "}",
    };
    for (size_t i = 0; i < sizeof changed / sizeof *changed; i++) {
        key_for(changed[i], "key\tk1", "gpt-4o-mini", 4096, k);
        if (strcmp(k, base) == 0) fail_msg("same key for %s", changed[i]);
    }
    key_for("{" BASE "}", "key\tk2", "gpt-4o-mini", 4096, k);
    assert_string_not_equal(k, base);
    key_for("{" BASE "}", "team\tk1", "gpt-4o-mini", 4096, k);
    assert_string_not_equal(k, base);
    key_for("{" BASE "}", "key\tk1", "claude-haiku-4-5", 4096, k);
    assert_string_not_equal(k, base);
    key_for("{" BASE "}", "key\tk1", "gpt-4o-mini", 100, k);
    assert_string_not_equal(k, base);
}

static void test_key_ignores_form_and_bookkeeping(void **state)
{
    char base[4096], k[4096];
    key_for("{" BASE "}", "key\tk1", "gpt-4o-mini", 4096, base);
    static const char *const same[] = {
        "{" BASE ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
        "{" BASE ",\"user\":\"u-1\",\"metadata\":{\"task\":\"x\"},\"store\":false}",
        "{\"model\":\"another-name\",\"temperature\":0,\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":0,\"model\":\"m\"}",
        "{ \"model\" : \"m\" ,\n \"temperature\": 0, \"messages\": [ { \"role\": \"user\", "
        "\"content\": \"hi\" } ] }",
        "{" BASE ",\"max_tokens\":50}", /* the cap is passed apart */
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        key_for(same[i], "key\tk1", "gpt-4o-mini", 4096, k);
        if (strcmp(k, base) != 0) fail_msg("another key for %s", same[i]);
    }
}

/* ------------------------------------------------------------ replay forms */

static const char completion[] =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":17,\"model\":\"gpt-4o-"
    "mini\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hi "
    "\\\"there\\\"\","
    "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
    "\"arguments\":\"{\\\"a\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}],"
    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":8,\"total_tokens\":11}}";

static void test_stream_of_completion_and_back(void **state)
{
    buf sse = BUF_INIT, back = BUF_INIT;
    assert_int_equal(resp_cache_stream_of(completion, strlen(completion), true, &sse), 0);
    assert_non_null(strstr(sse.data, "\"object\":\"chat.completion.chunk\""));
    assert_non_null(strstr(sse.data, "\"delta\":{\"role\":\"assistant\",\"content\":\"Hi "
                                     "\\\"there\\\"\",\"tool_calls\":[{\"index\":0,\"id\":"));
    assert_non_null(strstr(sse.data, "\"finish_reason\":\"tool_calls\""));
    assert_non_null(strstr(sse.data, "\"choices\":[],\"usage\":{\"prompt_tokens\":3"));
    assert_int_equal(memcmp(sse.data + sse.len - 14, "data: [DONE]\n\n", 14), 0);
    /* and the stream adds up to the same answer */
    usage_record u = {.exact = true};
    assert_int_equal(resp_cache_completion_of(sse.data, sse.len, &u, &back), 0);
    assert_non_null(strstr(back.data, "\"content\":\"Hi \\\"there\\\"\""));
    assert_non_null(strstr(back.data, "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
                                      "\"function\":{\"name\":\"f\",\"arguments\":"
                                      "\"{\\\"a\\\":1}\"}}]"));
    assert_non_null(strstr(back.data, "\"finish_reason\":\"tool_calls\""));
    assert_non_null(strstr(back.data, "\"usage\":{\"prompt_tokens\":3"));
    /* without include_usage there is no usage chunk */
    buf_reset(&sse);
    assert_int_equal(resp_cache_stream_of(completion, strlen(completion), false, &sse), 0);
    assert_null(strstr(sse.data, "\"usage\""));
    buf_free(&sse);
    buf_free(&back);
}

static void test_completion_of_split_stream(void **state)
{
    const char *s =
        "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
        "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"content\":\"Hel\"}}]}\n\n"
        "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"function\":{\"name\":\"g\",\"arguments\":"
        "\"{\\\"x\\\"\"}}]}}]}\n\n"
        "data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"content\":\"lo\",\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":2}\"}}]},"
        "\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";
    usage_record u = {.input_uncached = 5, .cache_read = 2, .output = 4, .exact = true};
    buf out = BUF_INIT;
    assert_int_equal(resp_cache_completion_of(s, strlen(s), &u, &out), 0);
    assert_non_null(strstr(out.data, "{\"id\":\"c\",\"object\":\"chat.completion\",\"created\":1,"
                                     "\"model\":\"m\","));
    assert_non_null(strstr(out.data, "\"content\":\"Hello\""));
    assert_non_null(strstr(out.data, "\"arguments\":\"{\\\"x\\\":2}\""));
    assert_non_null(strstr(out.data, "\"prompt_tokens\":7,\"completion_tokens\":4,"
                                     "\"total_tokens\":11,\"prompt_tokens_details\":"
                                     "{\"cached_tokens\":2}"));
    /* a stream that did not finish, carried an error or a second choice is not an answer */
    const char *cut =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
    const char *err = "data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n";
    const char *two = "data: {\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"},"
                      "\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    const char *bad[] = {cut, err, two};
    for (int i = 0; i < 3; i++) {
        buf_reset(&out);
        assert_int_equal(resp_cache_completion_of(bad[i], strlen(bad[i]), &u, &out), -1);
    }
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_and_expiry),
        cmocka_unit_test(test_replace_same_key),
        cmocka_unit_test(test_lru_under_the_memory_cap),
        cmocka_unit_test(test_key_changes_with_what_changes_the_answer),
        cmocka_unit_test(test_key_ignores_form_and_bookkeeping),
        cmocka_unit_test(test_stream_of_completion_and_back),
        cmocka_unit_test(test_completion_of_split_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
