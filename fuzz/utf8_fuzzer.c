/*
 * Fuzz target for lib/utf8.c.
 *
 * Checks: pdti_utf8_valid agrees with a plain decoder; sanitize writes
 * exactly pdti_utf8_sanitized_len bytes of valid UTF-8, leaves valid input
 * unchanged and is idempotent; truncate never cuts a character.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "propagation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Length of the well-formed character at s, or 0 (decode, then check). */
static size_t plain_char(const uint8_t *s, size_t n)
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

static size_t plain_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, l;

    while (i < n) {
        l = plain_char(s + i, n - i);
        if (l == 0)
            return i;
        i += l;
    }
    return n;
}

static void check_truncate(const uint8_t *s, size_t n, size_t max)
{
    size_t t = pdti_utf8_truncate(s, n, max);

    if (max >= n) {
        if (t != n)
            abort();
        return;
    }
    if (t > max || max - t > 3)
        abort();
    /* s is valid, so t is a boundary unless s[t] is a continuation byte. */
    if ((s[t] & 0xc0) == 0x80)
        abort();
    if (n <= 64 && (pdti_utf8_valid(s, t) != t ||
                    pdti_utf8_valid(s + t, n - t) != n - t))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t v, len, got, i;
    uint8_t *out, *again;

    v = pdti_utf8_valid(data, size);
    if (v != plain_valid(data, size))
        abort();
    if (pdti_utf8_valid(data, v) != v)
        abort();

    len = pdti_utf8_sanitized_len(data, size);
    out = malloc(len > 0 ? len : 1); /* exact size: overruns are caught */
    again = malloc(len > 0 ? len : 1);
    if (out == NULL || again == NULL)
        abort();
    got = pdti_utf8_sanitize(data, size, out);
    if (got != len || pdti_utf8_valid(out, got) != got)
        abort();
    if (v == size && (got != size || memcmp(out, data, size) != 0))
        abort();
    if (v != size && got == size && memcmp(out, data, size) == 0)
        abort();
    if (pdti_utf8_sanitized_len(out, got) != got ||
        pdti_utf8_sanitize(out, got, again) != got ||
        memcmp(out, again, got) != 0)
        abort();

    if (got <= 64) {
        for (i = 0; i <= got + 1; i++)
            check_truncate(out, got, i);
    } else {
        for (i = 0; i < 64; i++)
            check_truncate(out, got, (got * i) / 64 + (size_t)(i % 4));
    }

    free(out);
    free(again);
    return 0;
}
