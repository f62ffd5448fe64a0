/* db/idem: the Idempotency-Key header parser (the claims themselves are
 * tested against PostgreSQL in tests/integration/idempotency.test.mjs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "db/idem.h"

static void test_parse_key(void **state)
{
    char k[256];
    assert_int_equal(idem_parse_key("\"abc-123\"", k, sizeof k), 0);
    assert_string_equal(k, "abc-123");
    assert_int_equal(idem_parse_key("\"a \\\"quoted\\\" \\\\ key\"", k, sizeof k), 0);
    assert_string_equal(k, "a \"quoted\" \\ key");
    assert_int_equal(idem_parse_key("8e03978e-40d5-43e8-bc93-6894a57f9324", k, sizeof k), 0);
    assert_string_equal(k, "8e03978e-40d5-43e8-bc93-6894a57f9324");
    char max[260];
    max[0] = '"';
    memset(max + 1, 'x', 255);
    strcpy(max + 256, "\"");
    assert_int_equal(idem_parse_key(max, k, sizeof k), 0);
    assert_int_equal(strlen(k), 255);
}

static void test_parse_key_rejects(void **state)
{
    char k[256];
    const char *bad[] = {"",           "\"\"",          "\"open",       "\"a\"b",    "\"a\\q\"",
                         "with space", "\"tab\there\"", "\"\xc3\xa9\"", "quote\"in", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(idem_parse_key(bad[i], k, sizeof k), -1);
    assert_int_equal(idem_parse_key(NULL, k, sizeof k), -1);
    char big[300];
    big[0] = '"';
    memset(big + 1, 'x', 256);
    strcpy(big + 257, "\"");
    assert_int_equal(idem_parse_key(big, k, sizeof k), -1);   /* 256 characters */
    assert_int_equal(idem_parse_key("\"abcdef\"", k, 4), -1); /* does not fit: refused, not cut */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_key),
        cmocka_unit_test(test_parse_key_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
