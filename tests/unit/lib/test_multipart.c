/* lib/multipart: what the SDKs send, and what is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/multipart.h"

static void test_boundary(void **state)
{
    char b[72];
    assert_true(multipart_boundary("multipart/form-data; boundary=----formdata-undici-1", b));
    assert_string_equal(b, "----formdata-undici-1");
    assert_true(multipart_boundary("Multipart/Form-Data; charset=x; boundary=\"a b\"", b));
    assert_string_equal(b, "a b");
    assert_false(multipart_boundary("application/json", b));
    assert_false(multipart_boundary("multipart/form-data", b));
    assert_false(multipart_boundary("multipart/form-data; boundary=", b));
    assert_false(multipart_boundary(NULL, b));
}

static void test_parse_sdk_body(void **state)
{
    const char *body =
        "------x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n{\"a\":1}\n\r\n------x\r\n"
        "Content-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n------x--\r\n";
    static multipart m;
    char err[128];
    assert_int_equal(multipart_parse(body, strlen(body), "----x", &m, err, sizeof err), 0);
    assert_int_equal(m.n, 2);
    const multipart_part *f = multipart_get(&m, "file");
    assert_non_null(f);
    assert_string_equal(f->filename, "in.jsonl");
    assert_string_equal(f->content_type, "application/octet-stream");
    assert_int_equal(f->len, 8);
    assert_memory_equal(f->data, "{\"a\":1}\n", 8);
    const multipart_part *p = multipart_get(&m, "purpose");
    assert_int_equal(p->len, 5);
    assert_null(p->filename);
    assert_null(multipart_get(&m, "nope"));
}

static void refused(const char *body, const char *needle)
{
    static multipart m;
    char err[128] = "";
    assert_int_equal(multipart_parse(body, strlen(body), "b", &m, err, sizeof err), -1);
    if (!strstr(err, needle)) fail_msg("\"%s\" does not mention \"%s\"", err, needle);
}

static void test_refusals(void **state)
{
    refused("no boundary at all", "no multipart boundary");
    refused("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue", "closing boundary");
    refused("--b\r\nContent-Type: text/plain\r\n\r\nv\r\n--b--", "no Content-Disposition");
    refused("--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--b--",
            "not form-data");
    refused("--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--", "no name");
    refused("--b\r\nno colon here\r\n\r\nv\r\n--b--", "no colon");
    refused("--b--", "no parts");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_parse_sdk_body),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
