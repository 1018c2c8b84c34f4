/*
 * UTF-8 validation, repair and truncation (RFC 3629). Pure functions: no
 * allocation, no global mutable state.
 *
 * Well-formed sequences (Unicode table 3-7):
 *   00..7F
 *   C2..DF 80..BF
 *   E0     A0..BF 80..BF
 *   E1..EC 80..BF 80..BF
 *   ED     80..9F 80..BF          (no surrogates D800..DFFF)
 *   EE..EF 80..BF 80..BF
 *   F0     90..BF 80..BF 80..BF   (no overlongs)
 *   F1..F3 80..BF 80..BF 80..BF
 *   F4     80..8F 80..BF 80..BF   (nothing above U+10FFFF)
 * C0, C1 and F5..FF never appear.
 */
#include <string.h>

#include "propagation.h"

#define ASCII_MASK UINT64_C(0x8080808080808080)

/*
 * Examines the sequence starting at s[0] (n >= 1). Returns 1 if it is a
 * well-formed character and 0 otherwise; *adv receives the length of the
 * character, or of the maximal invalid subpart (at least 1): the longest
 * prefix that could still begin a well-formed sequence.
 */
static int step(const uint8_t *s, size_t n, size_t *adv)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xbf;
    size_t need, i;

    if (c < 0x80) {
        *adv = 1;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        *adv = 1; /* 80..C1, F5..FF */
        return 0;
    }
    /* The second byte has the lead-specific range, the rest 80..BF. */
    for (i = 1; i < need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *adv = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    *adv = need;
    return 1;
}

/* Length of the leading run of ASCII bytes, checked 8 bytes at a time. */
static size_t ascii_run(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (n - i >= 16) {
        uint64_t a, b;
        memcpy(&a, s + i, 8);
        memcpy(&b, s + i + 8, 8);
        if ((a | b) & ASCII_MASK)
            break;
        i += 16;
    }
    while (n - i >= 8) {
        uint64_t a;
        memcpy(&a, s + i, 8);
        if (a & ASCII_MASK)
            break;
        i += 8;
    }
    while (i < n && s[i] < 0x80)
        i++;
    return i;
}

size_t pdti_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, adv;

    while (i < n) {
        i += ascii_run(s + i, n - i);
        /* Multi-byte text: stay in the byte loop until ASCII comes back. */
        while (i < n && s[i] >= 0x80) {
            if (!step(s + i, n - i, &adv))
                return i;
            i += adv;
        }
    }
    return n;
}

/*
 * Shared walk for sanitize and sanitized_len, so the two always agree:
 * copies valid runs and writes EF BF BD for each maximal invalid subpart.
 * out may be NULL to count only.
 */
static size_t repair(const uint8_t *s, size_t n, uint8_t *out)
{
    static const uint8_t fffd[3] = {0xef, 0xbf, 0xbd};
    size_t i = 0, o = 0, run, adv;

    while (i < n) {
        run = pdti_utf8_valid(s + i, n - i);
        if (out != NULL && run > 0)
            memcpy(out + o, s + i, run);
        o += run;
        i += run;
        if (i == n)
            break;
        (void)step(s + i, n - i, &adv);
        if (out != NULL)
            memcpy(out + o, fffd, 3);
        o += 3;
        i += adv;
    }
    return o;
}

size_t pdti_utf8_sanitized_len(const uint8_t *s, size_t n)
{
    return repair(s, n, NULL);
}

size_t pdti_utf8_sanitize(const uint8_t *s, size_t n, uint8_t *out)
{
    return repair(s, n, out);
}

size_t pdti_utf8_truncate(const uint8_t *s, size_t n, size_t max)
{
    size_t k, back;

    if (max >= n)
        return n;
    /* s[max] starts a character unless it is a continuation byte. */
    k = max;
    for (back = 0; back < 3 && k > 0 && (s[k] & 0xc0) == 0x80; back++)
        k--;
    return k;
}
