/* Unit tests of `ainode audit`'s reading of --since. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "service/cli_audit.h"

#define NOW ((int64_t)1796203704858) /* 2026-12-02T09:28:24.858Z */

static int64_t since(const char *when)
{
    int64_t out = -12345;
    assert_int_equal(cli_audit_parse_since(when, NOW, &out), 0);
    return out;
}

static void test_spans_are_back_from_now(void **state)
{
    (void)state;
    assert_int_equal(since("30m"), NOW - 30 * 60000);
    assert_int_equal(since("24h"), NOW - 24 * 3600000LL);
    assert_int_equal(since("7d"), NOW - 7 * 86400000LL);
    assert_int_equal(since("0h"), NOW);
    assert_int_equal(since("365d"), NOW - 365 * 86400000LL);
}

static void test_dates_and_times_are_utc(void **state)
{
    (void)state;
    assert_int_equal(since("1970-01-01"), 0);
    assert_int_equal(since("2026-12-01"), 1796083200000LL);
    assert_int_equal(since("2026-12-01T10:00"), 1796083200000LL + 10 * 3600000LL);
    assert_int_equal(since("2026-12-01T10:00:30"), 1796083200000LL + 10 * 3600000LL + 30000);
    assert_int_equal(since("2026-12-01T10:00:30Z"), 1796083200000LL + 10 * 3600000LL + 30000);
    assert_int_equal(since("2026-12-01 10:00"), 1796083200000LL + 10 * 3600000LL);
    assert_int_equal(since("2024-02-29"), 1709164800000LL);
    assert_int_equal(since("2000-03-01"), 951868800000LL);
}

static void test_anything_else_is_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "h", "d", "7", "-1d", "1.5h", "7w", "12h30", "yesterday", "2026-12-1",
        "2026-13-01", "2026-00-10", "2026-02-29", "2026-04-31", "2026-12-01T24:00",
        "2026-12-01T10:60", "2026-12-01T10", "2026-12-01T10:00:61", "2026-12-01T10:00Zx",
        "2026-12-01X", "1969-12-31", "99999999d",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t out = -12345;
        if (cli_audit_parse_since(bad[i], NOW, &out) == 0)
            fail_msg("'%s' was read as %lld", bad[i], (long long)out);
        assert_int_equal(out, -12345);
    }
    int64_t out;
    assert_int_not_equal(cli_audit_parse_since(NULL, NOW, &out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spans_are_back_from_now),
        cmocka_unit_test(test_dates_and_times_are_utc),
        cmocka_unit_test(test_anything_else_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
