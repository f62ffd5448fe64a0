/* providers/batch.c: what goes to the providers' batch APIs and how their
 * answers are read (wire-formats.md §2, §3.6). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "providers/batch.h"

static provider_conf conf(const char *kind)
{
    return (provider_conf){
        .name = "p", .ops = provider_find(kind), .base_url = "https://h/v1", .api_key = "sk-test"};
}

static bool has_header(const upstream_request *r, const char *line)
{
    for (int i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i], line) == 0) return true;
    return false;
}

static void test_openai_file_then_batch(void **state)
{
    provider_conf p = conf("openai");
    assert_true(provider_batch_supported(&p) && provider_batch_uploads(&p));
    buf payload = BUF_INIT;
    provider_batch_begin(&p, &payload);
    provider_batch_add(&p, &payload, "batch_1-1", "{\"model\":\"m\"}", 13);
    provider_batch_add(&p, &payload, "batch_1-2", "{\"model\":\"m\"}", 13);
    provider_batch_end(&p, &payload);
    assert_string_equal(payload.data,
                        "{\"custom_id\":\"batch_1-1\",\"method\":\"POST\",\"url\":\"/v1/chat/"
                        "completions\",\"body\":{\"model\":\"m\"}}\n"
                        "{\"custom_id\":\"batch_1-2\",\"method\":\"POST\",\"url\":\"/v1/chat/"
                        "completions\",\"body\":{\"model\":\"m\"}}\n");
    upstream_request up;
    upstream_request_init(&up);
    provider_batch_upload(&p, &payload, &up);
    assert_string_equal(up.url.data, "https://h/v1/files");
    assert_false(up.get);
    assert_true(has_header(&up, "Authorization: Bearer sk-test"));
    assert_non_null(strstr(up.body.data, "name=\"purpose\"\r\n\r\nbatch\r\n"));
    assert_non_null(strstr(up.body.data, "filename=\"batch.jsonl\""));
    assert_non_null(strstr(up.body.data, payload.data));
    upstream_request_reset(&up);
    provider_batch_create(&p, "file-abc", NULL, "pb_1", NULL, &up);
    assert_string_equal(up.url.data, "https://h/v1/batches");
    assert_string_equal(up.body.data,
                        "{\"input_file_id\":\"file-abc\",\"endpoint\":\"/v1/chat/completions\","
                        "\"completion_window\":\"24h\",\"metadata\":{\"bridle_batch\":\"pb_1\"}}");
    upstream_request_reset(&up);
    provider_batch_status(&p, "batch_9", &up);
    assert_string_equal(up.url.data, "https://h/v1/batches/batch_9");
    assert_true(up.get);
    upstream_request_reset(&up);
    provider_batch_fetch(&p, "file-out", &up);
    assert_string_equal(up.url.data, "https://h/v1/files/file-out/content");
    upstream_request_free(&up);
    buf_free(&payload);
}

static void test_anthropic_one_call(void **state)
{
    provider_conf p = conf("anthropic");
    assert_true(provider_batch_supported(&p));
    assert_false(provider_batch_uploads(&p));
    buf payload = BUF_INIT;
    provider_batch_begin(&p, &payload);
    provider_batch_add(&p, &payload, "a-1", "{\"x\":1}", 7);
    provider_batch_add(&p, &payload, "a-2", "{\"x\":2}", 7);
    provider_batch_end(&p, &payload);
    assert_string_equal(payload.data, "{\"requests\":[{\"custom_id\":\"a-1\",\"params\":{\"x\":1}},"
                                      "{\"custom_id\":\"a-2\",\"params\":{\"x\":2}}]}");
    upstream_request up;
    upstream_request_init(&up);
    provider_batch_create(&p, NULL, &payload, "pb_1", NULL, &up);
    assert_string_equal(up.url.data, "https://h/v1/messages/batches");
    assert_true(has_header(&up, "x-api-key: sk-test"));
    assert_true(has_header(&up, "anthropic-version: 2023-06-01"));
    assert_string_equal(up.body.data, payload.data);
    upstream_request_reset(&up);
    provider_batch_fetch(&p, "msgbatch_1", &up);
    assert_string_equal(up.url.data, "https://h/v1/messages/batches/msgbatch_1/results");
    upstream_request_reset(&up);
    provider_batch_cancel(&p, "msgbatch_1", &up);
    assert_string_equal(up.url.data, "https://h/v1/messages/batches/msgbatch_1/cancel");
    assert_false(up.get);
    upstream_request_free(&up);
    buf_free(&payload);
    provider_conf o = conf("ollama");
    assert_false(provider_batch_supported(&o)); /* no batch API: its lines run live */
}

static void test_states(void **state)
{
    provider_conf o = conf("openai"), a = conf("anthropic");
    provider_batch_state st;
    char err[200];
    const char *done = "{\"id\":\"b\",\"status\":\"completed\",\"output_file_id\":\"file-1\","
                       "\"error_file_id\":null}";
    assert_int_equal(provider_batch_read_state(&o, done, strlen(done), &st, err, sizeof err), 0);
    assert_true(st.ended);
    assert_false(st.refused);
    assert_string_equal(st.output_file, "file-1");
    assert_string_equal(st.error_file, "");
    const char *failed = "{\"status\":\"failed\",\"errors\":{\"data\":[{\"message\":\"line 3 "
                         "is bad\"}]}}";
    assert_int_equal(provider_batch_read_state(&o, failed, strlen(failed), &st, err, sizeof err),
                     0);
    assert_true(st.ended && st.refused);
    assert_string_equal(st.why, "line 3 is bad");
    const char *going = "{\"status\":\"in_progress\"}";
    assert_int_equal(provider_batch_read_state(&o, going, strlen(going), &st, err, sizeof err), 0);
    assert_false(st.ended);
    const char *ended = "{\"processing_status\":\"ended\"}";
    assert_int_equal(provider_batch_read_state(&a, ended, strlen(ended), &st, err, sizeof err), 0);
    assert_true(st.ended);
    /* a file id that could not go in a URL path is not used */
    const char *odd = "{\"status\":\"completed\",\"output_file_id\":\"../../x\"}";
    assert_int_equal(provider_batch_read_state(&o, odd, strlen(odd), &st, err, sizeof err), 0);
    assert_string_equal(st.output_file, "");
    assert_int_equal(provider_batch_read_state(&o, "[]", 2, &st, err, sizeof err), -1);
}

static void test_results(void **state)
{
    provider_conf o = conf("openai"), a = conf("anthropic");
    provider_batch_result r = {.body = BUF_INIT};
    char err[200];
    const char *ok = "{\"id\":\"x\",\"custom_id\":\"b-1\",\"response\":{\"status_code\":200,"
                     "\"request_id\":\"q\",\"body\":{\"id\":\"c\"}},\"error\":null}";
    assert_int_equal(provider_batch_read_result(&o, ok, strlen(ok), &r, err, sizeof err), 0);
    assert_string_equal(r.custom_id, "b-1");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"id\":\"c\"}");
    const char *none = "{\"custom_id\":\"b-2\",\"response\":null,\"error\":{\"code\":"
                       "\"batch_expired\",\"message\":\"too late\"}}";
    assert_int_equal(provider_batch_read_result(&o, none, strlen(none), &r, err, sizeof err), 0);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.body.data, "batch_expired (too late)"));
    const char *bad = "{\"custom_id\":\"b-3\",\"response\":{\"status_code\":7,\"body\":{}}}";
    assert_int_equal(provider_batch_read_result(&o, bad, strlen(bad), &r, err, sizeof err), -1);
    const char *msg = "{\"custom_id\":\"a-1\",\"result\":{\"type\":\"succeeded\",\"message\":"
                      "{\"id\":\"msg_1\"}}}";
    assert_int_equal(provider_batch_read_result(&a, msg, strlen(msg), &r, err, sizeof err), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"id\":\"msg_1\"}");
    const char *errd =
        "{\"custom_id\":\"a-2\",\"result\":{\"type\":\"errored\",\"error\":{\"type\":"
        "\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"m\"}}}}";
    assert_int_equal(provider_batch_read_result(&a, errd, strlen(errd), &r, err, sizeof err), 0);
    assert_int_equal(r.status, 429);
    const char *canc = "{\"custom_id\":\"a-3\",\"result\":{\"type\":\"canceled\"}}";
    assert_int_equal(provider_batch_read_result(&a, canc, strlen(canc), &r, err, sizeof err), 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(provider_batch_read_result(&a, "{}", 2, &r, err, sizeof err), -1);
    buf_free(&r.body);
}

static void test_gemini_inline(void **state)
{
    provider_conf p = conf("gemini");
    assert_true(provider_batch_supported(&p) && provider_batch_inline(&p));
    assert_false(provider_batch_uploads(&p));
    buf payload = BUF_INIT;
    provider_batch_begin(&p, &payload);
    provider_batch_add(&p, &payload, "b-1", "{\"contents\":[]}", 15);
    provider_batch_end(&p, &payload);
    assert_string_equal(payload.data,
                        "{\"batch\":{\"display_name\":\"bridle\",\"input_config\":{\"requests\":{"
                        "\"requests\":[{\"metadata\":{\"key\":\"b-1\"},\"request\":{\"contents\":[]"
                        "}}]}}}}");
    upstream_request up;
    upstream_request_init(&up);
    provider_batch_create(&p, NULL, &payload, "pb_1", "gemini-2.5-flash", &up);
    assert_string_equal(up.url.data, "https://h/v1/models/gemini-2.5-flash:batchGenerateContent");
    assert_true(has_header(&up, "x-goog-api-key: sk-test"));
    upstream_request_reset(&up);
    provider_batch_cancel(&p, "abc", &up);
    assert_string_equal(up.url.data, "https://h/v1/batches/abc:cancel");
    upstream_request_free(&up);
    buf_free(&payload);
    char id[96], err[200];
    const char *op = "{\"name\":\"batches/abc123\",\"metadata\":{}}";
    assert_int_equal(provider_batch_id(op, strlen(op), id, sizeof id, err, sizeof err), 0);
    assert_string_equal(id, "abc123");
    provider_batch_state st;
    const char *running =
        "{\"name\":\"batches/a\",\"metadata\":{\"state\":\"BATCH_STATE_RUNNING\"}}";
    assert_int_equal(provider_batch_read_state(&p, running, strlen(running), &st, err, sizeof err),
                     0);
    assert_false(st.ended);
    const char *done =
        "{\"name\":\"batches/a\",\"done\":true,\"metadata\":{\"state\":\"BATCH_STATE_SUCCEEDED\"},"
        "\"response\":{\"inlinedResponses\":{\"inlinedResponses\":[{\"metadata\":{\"key\":\"b-1\"},"
        "\"response\":{\"candidates\":[]}},{\"error\":{\"code\":400,\"message\":\"bad\"}}]}}}";
    assert_int_equal(provider_batch_read_state(&p, done, strlen(done), &st, err, sizeof err), 0);
    assert_true(st.ended);
    buf jsonl = BUF_INIT;
    assert_int_equal(provider_batch_inline_results(&p, done, strlen(done), &jsonl, err, sizeof err),
                     0);
    assert_string_equal(jsonl.data,
                        "{\"custom_id\":\"b-1\",\"response\":{\"status_code\":200,\"body\":{"
                        "\"candidates\":[]}}}\n"
                        "{\"custom_id\":\"#1/2\",\"response\":{\"status_code\":400,\"body\":{"
                        "\"error\":{\"code\":400,\"message\":\"bad\"}}}}\n");
    provider_batch_result r = {.body = BUF_INIT};
    const char *second = strchr(jsonl.data, '\n') + 1;
    assert_int_equal(
        provider_batch_read_result(&p, second, strlen(second) - 1, &r, err, sizeof err), 0);
    assert_string_equal(r.custom_id, "#1/2");
    assert_int_equal(r.status, 400);
    buf_free(&r.body);
    buf_free(&jsonl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_file_then_batch),
        cmocka_unit_test(test_anthropic_one_call),
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_results),
        cmocka_unit_test(test_gemini_inline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
