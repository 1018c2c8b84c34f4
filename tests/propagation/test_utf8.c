/* Unit tests for lib/utf8.c: validation, repair and truncation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "propagation.h"

#define U(s) ((const uint8_t *)(s))

/* ---- a deliberately simple reference: decode, then check the value ---- */

/*
 * Returns the length of the well-formed character at s, or 0. Decodes
 * the code point from the lead byte's length, then rejects overlongs,
 * surrogates and values above U+10FFFF.
 */
static size_t ref_char(const uint8_t *s, size_t n)
{
    size_t len, i;
    uint32_t cp, min;

    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2;
        cp = s[0] & 0x1fu;
        min = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = s[0] & 0x0fu;
        min = 0x800;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4;
        cp = s[0] & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static size_t ref_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t l = ref_char(s + i, n - i);
        if (l == 0)
            return i;
        i += l;
    }
    return n;
}

/* Encodes a code point (no validity checks); returns the length. */
static size_t encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* Checks sanitize(in) == want byte for byte, and sanitized_len agrees. */
static void check_sanitize(const char *in, size_t n, const char *want,
                           size_t wn)
{
    uint8_t out[256];
    size_t got, len;

    assert_true(wn <= sizeof out);
    memset(out, 0xcc, sizeof out);
    len = pdti_utf8_sanitized_len(U(in), n);
    got = pdti_utf8_sanitize(U(in), n, out);
    assert_int_equal(len, got);
    assert_int_equal(got, wn);
    assert_memory_equal(out, want, wn);
    assert_int_equal(out[wn], 0xcc); /* nothing written past the end */
    assert_int_equal(pdti_utf8_valid(out, got), got);
}

#define SAN(in, want) check_sanitize(in, sizeof(in) - 1, want, sizeof(want) - 1)
#define FFFD "\xef\xbf\xbd"

/* Expects s to be invalid, with the first invalid byte at `at`. */
static void expect_invalid(const char *s, size_t n, size_t at)
{
    assert_int_equal(pdti_utf8_valid(U(s), n), at);
    assert_int_equal(ref_valid(U(s), n), at);
}

#define BAD(s, at) expect_invalid(s, sizeof(s) - 1, at)
#define GOOD(s) expect_invalid(s, sizeof(s) - 1, sizeof(s) - 1)

static void valid_strings(void **state)
{
    (void)state;
    GOOD("");
    GOOD("hello, world");
    GOOD("\x00\x7f");
    GOOD("\xc2\x80");                   /* U+0080 */
    GOOD("\xdf\xbf");                   /* U+07FF */
    GOOD("\xe0\xa0\x80");               /* U+0800 */
    GOOD("\xed\x9f\xbf");               /* U+D7FF */
    GOOD("\xee\x80\x80");               /* U+E000 */
    GOOD("\xef\xbf\xbf");               /* U+FFFF */
    GOOD("\xf0\x90\x80\x80");           /* U+10000 */
    GOOD("\xf4\x8f\xbf\xbf");           /* U+10FFFF */
    GOOD("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad\xe6\x96\x87");
    GOOD("a long ASCII run that crosses several 8-byte words, then \xc3\xa9"
         " and more ASCII after it to go through the fast path again.");
}

static void invalid_classes(void **state)
{
    (void)state;
    /* Lone continuation bytes. */
    BAD("\x80", 0);
    BAD("abc\xbf", 3);
    BAD("0123456789abcdef\x80xyz", 16);
    /* Truncated sequences at the end. */
    BAD("a\xc3", 1);
    BAD("a\xe2\x82", 1);
    BAD("a\xf0\x9f\x98", 1);
    BAD("\xf0", 0);
    /* Truncated sequences followed by something else. */
    BAD("\xe2\x82x", 0);
    BAD("\xc3\xc3\xa9", 0);
    /* Overlongs. */
    BAD("\xc0\x80", 0);
    BAD("\xc1\xbf", 0);
    BAD("\xe0\x80\x80", 0);
    BAD("\xe0\x9f\xbf", 0);
    BAD("\xf0\x80\x80\x80", 0);
    BAD("\xf0\x8f\xbf\xbf", 0);
    /* Surrogates. */
    BAD("\xed\xa0\x80", 0);
    BAD("\xed\xbf\xbf", 0);
    BAD("ok\xed\xb0\x80", 2);
    /* Above U+10FFFF. */
    BAD("\xf4\x90\x80\x80", 0);
    BAD("\xf7\xbf\xbf\xbf", 0);
    /* Bytes that never appear. */
    BAD("\xf5\x80\x80\x80", 0);
    BAD("\xf8\x88\x80\x80\x80", 0);
    BAD("\xfc\x84\x80\x80\x80\x80", 0);
    BAD("x\xfe", 1);
    BAD("x\xff", 1);
    /* After valid multi-byte text. */
    BAD("\xc3\xa9\xe2\x82\xac\x80", 5);
}

static void every_single_byte(void **state)
{
    unsigned b;

    (void)state;
    for (b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        size_t want = b < 0x80 ? 1 : 0;
        assert_int_equal(pdti_utf8_valid(&c, 1), want);
        assert_int_equal(pdti_utf8_sanitized_len(&c, 1), b < 0x80 ? 1 : 3);
    }
}

static void sanitize_exact(void **state)
{
    (void)state;
    SAN("", "");
    SAN("plain", "plain");
    SAN("caf\xc3\xa9", "caf\xc3\xa9");
    /* A truncated 4-byte sequence is one maximal subpart. */
    SAN("a\xf0\x9f\x98" "b", "a" FFFD "b");
    SAN("a\xf0\x9f\x98", "a" FFFD);
    SAN("\xe2\x82", FFFD);
    /* Overlongs: the lead cannot start them, so each byte is replaced. */
    SAN("\xc0\x80", FFFD FFFD);
    SAN("\xe0\x80\x80", FFFD FFFD FFFD);
    SAN("\xf0\x80\x80\x80", FFFD FFFD FFFD FFFD);
    /* Surrogate and out of range: the second byte is out of range. */
    SAN("\xed\xa0\x80", FFFD FFFD FFFD);
    SAN("\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD);
    SAN("\xf5\x80", FFFD FFFD);
    SAN("\xff" "a\xfe", FFFD "a" FFFD);
    /* Lone continuations: one each. */
    SAN("\x80\x80\x80", FFFD FFFD FFFD);
    /* A lead interrupted by another lead. */
    SAN("\xe2\xe2\x82\xac", FFFD "\xe2\x82\xac");
    SAN("\xf0\x9f\xc3\xa9", FFFD "\xc3\xa9");
    SAN("\xe1\x80\xe2\xf0\x91\x92\xf1\xbf\x41",
        FFFD FFFD FFFD FFFD "\x41");
    /* The example from the Unicode standard, "substitution of maximal
     * subparts": 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64. */
    SAN("\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64",
        "\x61" FFFD FFFD FFFD "\x62" FFFD "\x63" FFFD FFFD "\x64");
    /* Embedded NUL is valid. */
    check_sanitize("a\0\x80" "b", 4, "a\0" FFFD "b", 6);
}

static void sanitize_unchanged_and_len(void **state)
{
    static const char *samples[] = {
        "ASCII only, several words long to exercise the 8-byte path",
        "\xe4\xb8\xad\xe6\x96\x87\xe6\xb5\x8b\xe8\xaf\x95",
        "mixed caf\xc3\xa9 \xf0\x9f\x98\x80 end",
        "bad \xc3 here \xed\xa0\x80 and \xf4\x90\x80\x80 and \x80",
        "\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5",
    };
    uint8_t out[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        const uint8_t *s = U(samples[i]);
        size_t n = strlen(samples[i]);
        size_t len = pdti_utf8_sanitized_len(s, n);
        size_t got;
        assert_true(len <= sizeof out);
        got = pdti_utf8_sanitize(s, n, out);
        assert_int_equal(got, len);
        assert_int_equal(pdti_utf8_valid(out, got), got);
        if (pdti_utf8_valid(s, n) == n) {
            assert_int_equal(got, n);
            assert_memory_equal(out, s, n);
        } else {
            assert_true(got != n || memcmp(out, s, n) != 0);
        }
        /* Sanitizing twice changes nothing. */
        {
            uint8_t again[512];
            assert_int_equal(pdti_utf8_sanitize(out, got, again), got);
            assert_memory_equal(again, out, got);
        }
    }
}

static void truncate_boundaries(void **state)
{
    /* a(1) é(2) €(3) 😀(4) b(1): boundaries at 0 1 3 6 10 11. */
    static const char s[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "b";
    static const size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 11};
    size_t n = sizeof s - 1, max;

    (void)state;
    assert_int_equal(n, 11);
    for (max = 0; max <= n; max++) {
        size_t t = pdti_utf8_truncate(U(s), n, max);
        assert_int_equal(t, want[max]);
        assert_int_equal(pdti_utf8_valid(U(s), t), t);
    }
    assert_int_equal(pdti_utf8_truncate(U(s), n, 100), n);
    assert_int_equal(pdti_utf8_truncate(U(s), n, (size_t)-1), n);
    assert_int_equal(pdti_utf8_truncate(U(""), 0, 0), 0);
    assert_int_equal(pdti_utf8_truncate(U("abc"), 3, 2), 2);
}

/* Small deterministic generator (xorshift64*), fixed seed. */
static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

static uint32_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * UINT64_C(0x2545f4914f6cdd1d)) >> 32);
}

/* Fills buf with a random mix biased toward interesting byte patterns. */
static size_t random_string(uint8_t *buf, size_t cap)
{
    size_t n = 0, target = rng() % (cap - 4);

    while (n < target) {
        uint32_t r = rng() % 16;
        if (r < 5) {
            buf[n++] = (uint8_t)(rng() % 0x80);
        } else if (r < 9) {
            /* A code point from an interesting range, often valid. */
            static const uint32_t edges[] = {0x7f, 0x80, 0x7ff, 0x800,
                                             0xd7ff, 0xd800, 0xdfff, 0xe000,
                                             0xffff, 0x10000, 0x10ffff,
                                             0x110000, 0x1fffff};
            uint32_t cp;
            if (rng() % 2)
                cp = edges[rng() % (sizeof edges / sizeof edges[0])];
            else
                cp = rng() % 0x110000;
            if (cp > 0x1fffff)
                cp = 0x1fffff;
            n += encode(cp, buf + n);
        } else if (r < 11) {
            buf[n++] = (uint8_t)(0x80 + rng() % 0x40); /* continuation */
        } else if (r < 13) {
            static const uint8_t leads[] = {0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
                                            0xed, 0xef, 0xf0, 0xf4, 0xf5,
                                            0xff};
            buf[n++] = leads[rng() % sizeof leads];
        } else if (r < 14) {
            /* A valid character with its tail cut short. */
            uint8_t tmp[4];
            size_t l = encode(0x80 + rng() % (0x10ffff - 0x80), tmp);
            size_t keep = 1 + rng() % (l - 1);
            memcpy(buf + n, tmp, keep);
            n += keep;
        } else {
            buf[n++] = (uint8_t)rng();
        }
    }
    return n;
}

static void random_crosscheck(void **state)
{
    uint8_t buf[72], out[72 * 3];
    unsigned iter, valid_count = 0;

    (void)state;
    for (iter = 0; iter < 100000; iter++) {
        size_t n = random_string(buf, sizeof buf);
        size_t got = pdti_utf8_valid(buf, n);
        size_t want = ref_valid(buf, n);
        size_t len, san;
        if (got != want) {
            size_t i;
            fprintf(stderr, "iteration %u: got %zu want %zu:", iter, got, want);
            for (i = 0; i < n; i++)
                fprintf(stderr, " %02x", buf[i]);
            fprintf(stderr, "\n");
            fail();
        }
        if (got == n)
            valid_count++;
        len = pdti_utf8_sanitized_len(buf, n);
        assert_true(len <= sizeof out);
        san = pdti_utf8_sanitize(buf, n, out);
        assert_int_equal(san, len);
        assert_int_equal(ref_valid(out, san), san);
        if (got == n) {
            size_t max;
            assert_int_equal(san, n);
            assert_memory_equal(out, buf, n);
            for (max = 0; max <= n; max++) {
                size_t t = pdti_utf8_truncate(buf, n, max);
                assert_true(t <= max);
                assert_true(max - t <= 3);
                assert_int_equal(ref_valid(buf, t), t);
            }
        }
    }
    /* The generator must produce both outcomes in useful numbers. */
    assert_true(valid_count > 1000);
    assert_true(valid_count < 99000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_strings),
        cmocka_unit_test(invalid_classes),
        cmocka_unit_test(every_single_byte),
        cmocka_unit_test(sanitize_exact),
        cmocka_unit_test(sanitize_unchanged_and_len),
        cmocka_unit_test(truncate_boundaries),
        cmocka_unit_test(random_crosscheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
