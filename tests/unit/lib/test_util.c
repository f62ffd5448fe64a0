/* lib/util: the money formatting the reply headers use, and the ledger's
 * timestamps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

/* What gmtime_r and strftime make of us: the formatter's reference. */
static void utc_reference(int64_t us, char *out, size_t n)
{
    time_t s = (time_t)util_floor_div(us, 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t k = strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%06lld+00", (long long)(us - (int64_t)s * 1000000));
}

static void test_format_utc_us(void **state)
{
    char got[UTIL_UTC_US_LEN], want[64];
    assert_int_equal(util_format_utc_us(0, got), 29);
    assert_string_equal(got, "1970-01-01 00:00:00.000000+00");
    util_format_utc_us(1796601600123456LL, got); /* 2026-12-07, the leap days behind it */
    assert_string_equal(got, "2026-12-07 00:00:00.123456+00");
    util_format_utc_us(951782399999999LL, got); /* the end of 2000-02-28 */
    assert_string_equal(got, "2000-02-28 23:59:59.999999+00");
    util_format_utc_us(-1, got);
    assert_string_equal(got, "1969-12-31 23:59:59.999999+00");
    util_format_utc_us(INT64_MAX, got); /* clamped */
    assert_string_equal(got, "9999-12-31 23:59:59.999999+00");
    util_format_utc_us(INT64_MIN, got);
    assert_string_equal(got, "0000-01-01 00:00:00.000000+00");
    /* every day from 1900 to 2400 at a varying time of day, against libc */
    for (int64_t day = -25567; day < 157000; day++) {
        int64_t us = (day * 86400 + (day * 7919) % 86400) * 1000000 + (day * 104729) % 1000000;
        utc_reference(us, want, sizeof want);
        util_format_utc_us(us, got);
        assert_string_equal(got, want);
    }
}

static bool peer_in(const char *cidr, const char *addr)
{
    util_cidr c;
    assert_int_equal(util_cidr_parse(cidr, &c), 0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, addr, &a6->sin6_addr), 1);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, addr, &a4->sin_addr), 1);
    }
    return util_cidr_match(&c, (const struct sockaddr *)&ss);
}

static void test_cidr(void **state)
{
    assert_true(peer_in("127.0.0.0/8", "127.1.2.3"));
    assert_false(peer_in("127.0.0.0/8", "128.0.0.1"));
    assert_true(peer_in("10.1.0.0/17", "10.1.127.255"));
    assert_false(peer_in("10.1.0.0/17", "10.1.128.0"));
    assert_true(peer_in("0.0.0.0/0", "8.8.8.8"));
    assert_true(peer_in("192.168.1.7", "192.168.1.7")); /* a bare address: all its bits */
    assert_false(peer_in("192.168.1.7", "192.168.1.8"));
    assert_true(peer_in("::1/128", "::1"));
    assert_false(peer_in("::1/128", "::2"));
    assert_true(peer_in("fd00::/8", "fd12:3456::1"));
    assert_true(peer_in("127.0.0.0/8", "::ffff:127.0.0.1")); /* IPv4-mapped counts as IPv4 */
    assert_false(peer_in("::1/128", "127.0.0.1"));
    util_cidr c;
    const char *bad[] = {"",          "/8",          "10.0.0.0/33", "::/129",
                         "10.0.0.0/", "10.0.0.0/8x", "host",        "1.2.3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (util_cidr_parse(bad[i], &c) == 0) fail_msg("accepted \"%s\"", bad[i]);
    assert_false(util_cidr_match(&c, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_digits),  cmocka_unit_test(test_format_utc_us),
        cmocka_unit_test(test_format_pusd), cmocka_unit_test(test_format_pusd_truncates),
        cmocka_unit_test(test_cidr),
    };
    return cmocka_run_group_tests_name("lib/util", tests, NULL, NULL);
}
