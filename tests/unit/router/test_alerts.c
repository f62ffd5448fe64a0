/* Unit tests for router/alerts.c: the log line and the webhook body, money
 * printed exactly from pico-dollars. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "router/alerts.h"

static alert_row row(const char *scope, const char *id, const char *period, int bp, int64_t limit,
                     int64_t spent)
{
    alert_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.scope, sizeof r.scope, "%s", scope);
    snprintf(r.scope_id, sizeof r.scope_id, "%s", id);
    snprintf(r.period, sizeof r.period, "%s", period);
    snprintf(r.period_start, sizeof r.period_start, "2026-12-06T00:00:00Z");
    snprintf(r.period_end, sizeof r.period_end, "2026-12-07T00:00:00Z");
    snprintf(r.fired_at, sizeof r.fired_at, "2026-12-06T18:42:56.123Z");
    r.share_bp = bp;
    r.limit_pusd = limit;
    r.spent_pusd = spent;
    return r;
}

static void test_usd(void **state)
{
    char s[64];
    alerts_format_usd(751200000000, 2, s, sizeof s);
    assert_string_equal(s, "0.7512");
    alerts_format_usd(1000000000000, 2, s, sizeof s);
    assert_string_equal(s, "1.00");
    alerts_format_usd(1000000000000, 1, s, sizeof s);
    assert_string_equal(s, "1.0");
    alerts_format_usd(1, 2, s, sizeof s);
    assert_string_equal(s, "0.000000000001");
    alerts_format_usd(0, 0, s, sizeof s);
    assert_string_equal(s, "0");
    alerts_format_usd(INT64_MAX, 2, s, sizeof s);
    assert_string_equal(s, "9223372.036854775807");
}

static void test_text(void **state)
{
    char t[512];
    alert_row r = row("key", "k1", "day", 7500, 1000000000000, 751200000000);
    alerts_format_text(&r, t, sizeof t);
    assert_string_equal(t, "key \"k1\" daily budget 75% reached: $0.7512 of $1.00 (period from "
                           "2026-12-06T00:00:00Z, resets 2026-12-07T00:00:00Z)");
    r = row("total", "", "month", 5050, 250000000000000, 126250000000000);
    alerts_format_text(&r, t, sizeof t);
    assert_non_null(strstr(t, "total monthly budget 50.5% reached: $126.25 of $250.00"));
    r = row("team", "alpha", "week", 10000, 3, 4);
    alerts_format_text(&r, t, sizeof t);
    assert_non_null(strstr(t, "team \"alpha\" weekly budget 100% reached"));
}

static void test_body(void **state)
{
    alert_row r = row("key", "k\"1", "day", 7500, 1000000000000, 751200000000);
    buf b = BUF_INIT;
    alerts_format_body(&r, &b);
    json_object *o = json_tokener_parse(b.data);
    assert_non_null(o);
    json_object *v;
#define STR(k, want)                                                                               \
    assert_true(json_object_object_get_ex(o, k, &v));                                              \
    assert_string_equal(json_object_get_string(v), want)
    STR("type", "budget_alert");
    STR("scope", "key");
    STR("id", "k\"1");
    STR("period", "day");
    STR("period_start", "2026-12-06T00:00:00Z");
    STR("period_end", "2026-12-07T00:00:00Z");
    STR("fired_at", "2026-12-06T18:42:56.123Z");
#undef STR
    /* the exact decimals, as written */
    assert_non_null(strstr(b.data, "\"threshold\":0.75,"));
    assert_non_null(strstr(b.data, "\"spent_usd\":0.7512,"));
    assert_non_null(strstr(b.data, "\"limit_usd\":1.0,"));
    assert_non_null(strstr(b.data, "\"share\":0.7512,"));
    json_object_put(o);
    buf_free(&b);
    /* share rounds to 6 decimals; huge amounts do not overflow */
    r = row("total", "", "month", 9500, 3000000000000, 2000000000000);
    alerts_format_body(&r, &b);
    assert_non_null(strstr(b.data, "\"share\":0.666667,"));
    assert_non_null(strstr(b.data, "\"threshold\":0.95,"));
    buf_free(&b);
    r = row("total", "", "month", 10000, INT64_MAX / 2, INT64_MAX);
    alerts_format_body(&r, &b);
    assert_non_null(strstr(b.data, "\"share\":2,"));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usd),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
