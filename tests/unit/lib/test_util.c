/* lib/util: the money formatting the reply headers use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <string.h>

#include "lib/util.h"

static const char *usd(int64_t pusd, int decimals)
{
    static char out[48];
    util_format_pusd(pusd, decimals, out, sizeof out);
    return out;
}

static void test_u64_digits(void **state)
{
    static const struct {
        uint64_t v;
        const char *want;
    } cases[] = {
        {0, "0"}, {7, "7"}, {10, "10"}, {4096, "4096"}, {UINT64_MAX, "18446744073709551615"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32], *end = buf + sizeof buf - 1;
        *end = '\0';
        assert_string_equal(util_u64_digits(cases[i].v, end), cases[i].want);
    }
}

static void test_format_pusd(void **state)
{
    assert_string_equal(usd(0, 6), "0.000000");
    assert_string_equal(usd(5850000, 12), "0.000005850000");
    assert_string_equal(usd(499999, 6), "0.000000");
    assert_string_equal(usd(500000, 6), "0.000001"); /* half up */
    assert_string_equal(usd(-500000, 6), "-0.000001");
    assert_string_equal(usd(1234567890000, 2), "1.23");
    assert_string_equal(usd(1500000000000, 0), "2");
    assert_string_equal(usd(42, -3), "0");
    assert_string_equal(usd(42, 20), "0.000000000042");
    assert_string_equal(usd(INT64_MAX, 12), "9223372.036854775807");
    assert_string_equal(usd(INT64_MIN, 12), "-9223372.036854775808");
}

static void test_format_pusd_truncates(void **state)
{
    char out[5] = "xxxx";
    util_format_pusd(1234567890000, 6, out, sizeof out);
    assert_string_equal(out, "1.23"); /* like snprintf: cut, terminated */
    util_format_pusd(1, 6, out, 0);
    assert_string_equal(out, "1.23"); /* no room: untouched */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_digits),
        cmocka_unit_test(test_format_pusd),
        cmocka_unit_test(test_format_pusd_truncates),
    };
    return cmocka_run_group_tests_name("lib/util", tests, NULL, NULL);
}
