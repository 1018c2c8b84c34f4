/* Unit tests: Retry-After parsing, retryable statuses, backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "transport.h"

/* Sun, 06 Nov 1994 08:49:37 GMT */
#define T1994 ((time_t)784111777)

static void test_delta_seconds(void **state)
{
    (void)state;
    assert_int_equal(pdti_parse_retry_after("0", 0), 0);
    assert_int_equal(pdti_parse_retry_after("5", 0), 5000);
    assert_int_equal(pdti_parse_retry_after("  120 ", 0), 120000);
    assert_int_equal(pdti_parse_retry_after("007", 0), 7000);
    assert_int_equal(pdti_parse_retry_after("30\r\n", 0), 30000);
    /* Delta-seconds do not depend on the clock. */
    assert_int_equal(pdti_parse_retry_after("3", T1994), 3000);
}

static void test_garbage(void **state)
{
    static const char *const bad[] = {
        "", "   ", "abc", "5s", "1.5", "+5", "-5", "-1", "5 5", "0x10",
        "Sun, 06 Nov 1994 08:49:37 UTC",   /* zone must be GMT */
        "Sun, 6 Nov 1994 08:49:37 GMT",    /* IMF day has two digits */
        "Sun, 06 Nov 94 08:49:37 GMT",     /* IMF year has four */
        "Sun, 06 Nov 1994 24:00:00 GMT",   /* hour */
        "Sun, 06 Nov 1994 08:60:00 GMT",   /* minute */
        "Sun, 06 Nov 1994 08:49:61 GMT",   /* second */
        "Sun, 31 Apr 1994 08:49:37 GMT",   /* no April 31st */
        "Sun, 00 Nov 1994 08:49:37 GMT",   /* day 0 */
        "Sun, 06 Xyz 1994 08:49:37 GMT",   /* month */
        "Foo, 06 Nov 1994 08:49:37 GMT",   /* weekday */
        "Sun, 06 Nov 1994 08:49:37 GMT x", /* trailing junk */
        "Sun, 06 Nov 1994 08:49:37",       /* missing zone */
        "Sunday, 06-Nov-1994 08:49:37 GMT", /* RFC 850 year has two */
        "Sun, 06-Nov-94 08:49:37 GMT",     /* RFC 850 needs the long day */
        "Sun Nov 6 08:49:37 1994",         /* asctime pads the day */
        "Sun Nov  6 08:49:37 94",          /* asctime year has four */
        "Fri, 29 Feb 2023 00:00:00 GMT",   /* not a leap year */
        "Thu, 29 Feb 1900 00:00:00 GMT",   /* century, not leap */
        "Sun, 06 Nov 0000 08:49:37 GMT",   /* year 0 */
        /* over the length limit */
        "Sun, 06 Nov 1994 08:49:37 GMTGMTGMTGMTGMTGMTGMTGMTGMTGMTGMTGMTGMTGMT",
    };
    size_t i;

    (void)state;
    assert_int_equal(pdti_parse_retry_after(NULL, 0), -1);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = pdti_parse_retry_after(bad[i], T1994);
        if (v != -1)
            fail_msg("accepted \"%s\" as %lld", bad[i], (long long)v);
    }
}

static void test_overflow(void **state)
{
    (void)state;
    /* Too large to represent: saturates, never wraps negative. */
    assert_true(pdti_parse_retry_after("99999999999999999999999999", 0) ==
                INT64_MAX);
    assert_true(pdti_parse_retry_after("9223372036854775807", 0) ==
                INT64_MAX);
    assert_true(pdti_parse_retry_after("9223372036854775", 0) == INT64_MAX);
    assert_true(pdti_parse_retry_after("9223372036854774", 0) ==
                INT64_C(9223372036854774000));
    /* Still malformed when junk follows the saturated digits. */
    assert_int_equal(pdti_parse_retry_after("99999999999999999999999x", 0),
                     -1);
}

static void test_imf_fixdate(void **state)
{
    (void)state;
    assert_int_equal(
        pdti_parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", T1994),
        10000);
    assert_int_equal(
        pdti_parse_retry_after("  Sun, 06 Nov 1994 08:50:37 GMT ", T1994),
        60000);
    /* Names are matched without regard to case. */
    assert_int_equal(
        pdti_parse_retry_after("sun, 06 nov 1994 08:49:47 gmt", T1994),
        10000);
    /* Leap days and year boundaries. */
    assert_int_equal(
        pdti_parse_retry_after("Thu, 29 Feb 2024 00:00:01 GMT", 1709164800),
        1000);
    assert_int_equal(
        pdti_parse_retry_after("Tue, 29 Feb 2000 00:00:02 GMT", 951782400),
        2000);
    assert_int_equal(
        pdti_parse_retry_after("Thu, 01 Jan 1970 00:00:05 GMT", 0), 5000);
    assert_int_equal(
        pdti_parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT", 946684798),
        1000);
}

static void test_rfc850(void **state)
{
    (void)state;
    assert_int_equal(
        pdti_parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", T1994),
        10000);
    /* Two-digit years: 2030 seen from 2026 is 4 years ahead. */
    assert_int_equal(
        pdti_parse_retry_after("Tuesday, 01-Jan-30 00:00:00 GMT",
                               1893455990),
        10000);
    /* "99" seen from 2026 is 1999 (2099 is over 50 years ahead): past. */
    assert_int_equal(
        pdti_parse_retry_after("Friday, 31-Dec-99 23:59:59 GMT", 1780000000),
        0);
    /* "00" seen from the last seconds of 1999 is 2000. */
    assert_int_equal(
        pdti_parse_retry_after("Saturday, 01-Jan-00 00:00:00 GMT",
                               946684798),
        2000);
    /* ... and "99" seen from 1999 is 1999, in the future. */
    assert_int_equal(
        pdti_parse_retry_after("Friday, 31-Dec-99 23:59:59 GMT", 946684798),
        1000);
}

static void test_asctime(void **state)
{
    (void)state;
    assert_int_equal(pdti_parse_retry_after("Sun Nov  6 08:49:47 1994", T1994),
                     10000);
    assert_int_equal(
        pdti_parse_retry_after("Wed Nov 16 08:49:37 1994", T1994),
        10 * 86400 * 1000);
}

static void test_past_dates(void **state)
{
    (void)state;
    assert_int_equal(
        pdti_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", T1994), 0);
    assert_int_equal(
        pdti_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 1700000000),
        0);
    assert_int_equal(pdti_parse_retry_after("Sun Nov  6 08:49:37 1994",
                                            1700000000),
                     0);
}

/* Every format agrees with the C library for many instants. */
static void test_dates_match_libc(void **state)
{
    time_t t;
    uint64_t x = 88172645463325252ULL;
    int i;

    (void)state;
    for (i = 0; i < 20000; i++) {
        char imf[64], asct[64];
        struct tm tm;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t = (time_t)(x % UINT64_C(253402300799)); /* through 9999 */
        gmtime_r(&t, &tm);
        assert_true(strftime(imf, sizeof(imf), "%a, %d %b %Y %H:%M:%S GMT",
                             &tm) > 0);
        assert_true(strftime(asct, sizeof(asct), "%a %b %e %H:%M:%S %Y",
                             &tm) > 0);
        if (pdti_parse_retry_after(imf, 0) != (int64_t)t * 1000)
            fail_msg("%s: %lld", imf,
                     (long long)pdti_parse_retry_after(imf, 0));
        assert_true(pdti_parse_retry_after(asct, 0) == (int64_t)t * 1000);
        assert_int_equal(pdti_parse_retry_after(imf, t + 1), 0);
        assert_int_equal(pdti_parse_retry_after(imf, t - 7), 7000);
        if (tm.tm_year >= 70 && tm.tm_year < 170) {
            /* RFC 850 seen from the same year. */
            char r850[64];
            assert_true(strftime(r850, sizeof(r850),
                                 "%A, %d-%b-%y %H:%M:%S GMT", &tm) > 0);
            assert_int_equal(pdti_parse_retry_after(r850, t - 3), 3000);
        }
    }
}

static void test_status_retryable(void **state)
{
    static const long yes[] = { 429, 502, 503, 504 };
    static const long no[] = { 0,   -1,  100, 200, 204, 301, 400, 401,
                               403, 404, 408, 413, 499, 500, 501, 505,
                               599, 600 };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_int_equal(pdti_status_retryable(yes[i]), 1);
    for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_int_equal(pdti_status_retryable(no[i]), 0);
}

static void test_backoff_bounds(void **state)
{
    uint64_t rng = 12345;
    unsigned a;

    (void)state;
    for (a = 1; a <= 40; a++) {
        int64_t base = a >= 7 ? 5000 : (int64_t)100 << (a - 1);
        int64_t lo = INT64_MAX, hi = 0, sum = 0;
        int i;
        if (base > 5000)
            base = 5000;
        for (i = 0; i < 2000; i++) {
            int64_t v = pdti_backoff_ms(a, &rng);
            assert_true(v >= base / 2 && v <= base);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            sum += v;
        }
        /* Jitter spreads over the range and centres on 75%. */
        assert_true(lo <= base / 2 + base / 10);
        assert_true(hi >= base - base / 10);
        assert_true(sum / 2000 > base * 65 / 100 && sum / 2000 < base * 85 / 100);
    }
    /* Without an rng: the base value. */
    assert_int_equal(pdti_backoff_ms(1, NULL), 100);
    assert_int_equal(pdti_backoff_ms(3, NULL), 400);
    assert_int_equal(pdti_backoff_ms(6, NULL), 3200);
    assert_int_equal(pdti_backoff_ms(7, NULL), 5000);
    assert_int_equal(pdti_backoff_ms(UINT32_MAX, NULL), 5000);
    /* Attempt 0 is treated as the first retry. */
    assert_int_equal(pdti_backoff_ms(0, NULL), 100);
}

static void test_backoff_growth(void **state)
{
    uint64_t rng = 0; /* a zero state must still work */
    int64_t prev_max = 0;
    unsigned a;

    (void)state;
    for (a = 1; a <= 6; a++) {
        int64_t mx = 0, v;
        int i;
        for (i = 0; i < 500; i++) {
            v = pdti_backoff_ms(a, &rng);
            mx = v > mx ? v : mx;
        }
        assert_true(mx > prev_max);
        prev_max = mx;
    }
    assert_true(rng != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta_seconds),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_imf_fixdate),
        cmocka_unit_test(test_rfc850),
        cmocka_unit_test(test_asctime),
        cmocka_unit_test(test_past_dates),
        cmocka_unit_test(test_dates_match_libc),
        cmocka_unit_test(test_status_retryable),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
