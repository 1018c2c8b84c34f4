/*
 * W3C trace context: traceparent parsing and formatting, tracestate
 * normalisation. Pure functions: no allocation, no global mutable state.
 */
#include <string.h>

#include "pdtrace/common.h"
#include "propagation.h"

/* Layout of a version 00 traceparent. */
#define TP_LEN 55
#define TP_TRACE_OFF 3
#define TP_SPAN_OFF 36
#define TP_FLAGS_OFF 53

/* Tracestate limits. */
#define TS_MAX_MEMBERS 32
#define TS_MAX_KEY 256
#define TS_MAX_VALUE 256
#define TS_TRUNCATE_FIRST 128 /* longer members are dropped first */


static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Lowercase hex digit values; 0x10 marks anything else, so that OR-ing
 * the entries of a string tells whether any character was invalid. */
#define X16 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, \
            0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10
static const uint8_t hex_val[256] = {
    X16, X16, X16,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
    X16, X16,
    0x10, 10, 11, 12, 13, 14, 15, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
    0x10, 0x10,
    X16,
    X16, X16, X16, X16, X16, X16, X16, X16
};
#undef X16

/* Decodes 2n lowercase hex characters into n bytes; 0 on success. */
static int parse_hex(const char *s, uint8_t *out, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    unsigned bad = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned hi = hex_val[u[2 * i]], lo = hex_val[u[2 * i + 1]];
        bad |= hi | lo;
        out[i] = (uint8_t)((hi << 4) | (lo & 0x0f));
    }
    return (bad & 0x10) ? -1 : 0;
}

static int all_zero(const uint8_t *b, size_t n)
{
    uint64_t acc = 0, w;
    size_t i;

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, b + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

int pdti_traceparent_parse(const char *s, size_t len, uint8_t trace_id[16],
                           uint8_t span_id[8], uint8_t *flags)
{
    uint8_t version, tid[16], sid[8], fl;

    if (s == NULL)
        return PDT_EPARSE;
    while (len > 0 && is_ows(s[0])) {
        s++;
        len--;
    }
    while (len > 0 && is_ows(s[len - 1]))
        len--;
    if (len < TP_LEN)
        return PDT_EPARSE;
    if (s[2] != '-' || s[TP_SPAN_OFF - 1] != '-' || s[TP_FLAGS_OFF - 1] != '-')
        return PDT_EPARSE;
    if (parse_hex(s, &version, 1) != 0 || version == 0xff)
        return PDT_EPARSE;
    /* A traceparent never holds a ',': one means several header lines
     * joined (RFC 9110), i.e. a duplicated traceparent, which is invalid
     * whatever its version. */
    if (memchr(s, ',', len) != NULL)
        return PDT_EPARSE;
    if (version == 0x00) {
        if (len != TP_LEN)
            return PDT_EPARSE;
    } else if (len > TP_LEN && s[TP_LEN] != '-') {
        return PDT_EPARSE;
    }
    if (parse_hex(s + TP_TRACE_OFF, tid, 16) != 0 ||
        parse_hex(s + TP_SPAN_OFF, sid, 8) != 0 ||
        parse_hex(s + TP_FLAGS_OFF, &fl, 1) != 0)
        return PDT_EPARSE;
    if (all_zero(tid, 16) || all_zero(sid, 8))
        return PDT_EPARSE;
    memcpy(trace_id, tid, 16);
    memcpy(span_id, sid, 8);
    *flags = fl;
    return PDT_OK;
}

/* "000102...ff": two characters for every byte value. */
const char pdti_hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* Hex without the terminating NUL. */
static inline void hex_raw(char *out, const uint8_t *bytes, size_t n)
{
    while (n >= 4) {
        memcpy(out, pdti_hex_pairs + 2 * bytes[0], 2);
        memcpy(out + 2, pdti_hex_pairs + 2 * bytes[1], 2);
        memcpy(out + 4, pdti_hex_pairs + 2 * bytes[2], 2);
        memcpy(out + 6, pdti_hex_pairs + 2 * bytes[3], 2);
        out += 8;
        bytes += 4;
        n -= 4;
    }
    while (n-- > 0) {
        memcpy(out, pdti_hex_pairs + 2 * *bytes++, 2);
        out += 2;
    }
}

void pdti_hex(char *out, const uint8_t *bytes, size_t n)
{
    hex_raw(out, bytes, n);
    out[2 * n] = '\0';
}

void pdti_traceparent_format(char out[56], const uint8_t trace_id[16],
                             const uint8_t span_id[8], uint8_t flags)
{
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    hex_raw(out + TP_TRACE_OFF, trace_id, 16);
    out[TP_SPAN_OFF - 1] = '-';
    hex_raw(out + TP_SPAN_OFF, span_id, 8);
    out[TP_FLAGS_OFF - 1] = '-';
    hex_raw(out + TP_FLAGS_OFF, &flags, 1);
    out[TP_LEN] = '\0';
}

/* Level 2 keychar: lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@" */
static int is_keychar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '*' || c == '/' || c == '@';
}

/* key = ( lcalpha / DIGIT ) 0*255( keychar ), Trace Context Level 2. */
static int ts_key_valid(const char *k, size_t n)
{
    size_t i;

    if (n < 1 || n > TS_MAX_KEY)
        return 0;
    if (!(k[0] >= 'a' && k[0] <= 'z') && !(k[0] >= '0' && k[0] <= '9'))
        return 0;
    for (i = 1; i < n; i++)
        if (!is_keychar(k[i]))
            return 0;
    return 1;
}

/* 1 to 256 chars of 0x20-0x7e except ',' and '='; last one not a space. */
static int ts_value_valid(const char *v, size_t n)
{
    size_t i;

    if (n < 1 || n > TS_MAX_VALUE || v[n - 1] == ' ')
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
            return 0;
    }
    return 1;
}

/* The combined length of the kept members joined by ','. */
static size_t ts_joined_len(const size_t *mlen, const int *kept, size_t n)
{
    size_t total = 0, k = 0, i;

    for (i = 0; i < n; i++) {
        if (kept[i]) {
            total += mlen[i];
            k++;
        }
    }
    return k > 0 ? total + k - 1 : 0;
}

size_t pdti_tracestate_normalize(const char *s, size_t len, char *out,
                                 size_t outcap)
{
    /* The members, as offsets into s (stack only, bounded by 32). */
    size_t off[TS_MAX_MEMBERS], mlen[TS_MAX_MEMBERS], klen[TS_MAX_MEMBERS];
    int kept[TS_MAX_MEMBERS];
    size_t n = 0, olen = 0, pos = 0, limit, i, j;

    if (out != NULL && outcap > 0)
        out[0] = '\0';
    if (s == NULL || out == NULL || outcap == 0)
        return 0;

    /* Parse every member; any invalid member, a duplicated key or a 33rd
     * member makes the whole header invalid: it is discarded. */
    while (pos <= len) {
        const char *comma = memchr(s + pos, ',', len - pos);
        size_t a = pos;
        size_t b = comma != NULL ? (size_t)(comma - s) : len;
        const char *eq;
        size_t kl;

        pos = b + 1;
        while (a < b && is_ows(s[a]))
            a++;
        while (b > a && is_ows(s[b - 1]))
            b--;
        if (a == b)
            continue; /* empty and whitespace-only members are allowed */
        if (n == TS_MAX_MEMBERS)
            return 0;
        eq = memchr(s + a, '=', b - a);
        if (eq == NULL)
            return 0;
        kl = (size_t)(eq - (s + a));
        if (!ts_key_valid(s + a, kl) ||
            !ts_value_valid(eq + 1, (b - a) - kl - 1))
            return 0;
        for (i = 0; i < n; i++)
            if (klen[i] == kl && memcmp(s + off[i], s + a, kl) == 0)
                return 0;
        off[n] = a;
        mlen[n] = b - a;
        klen[n] = kl;
        kept[n] = 1;
        n++;
    }

    /* Truncation to fit outcap (PDTI_TRACESTATE_MAX + 1 = 512 characters
     * and the NUL for spans): members longer than 128 characters go
     * first, the rightmost first; then members from the end. */
    limit = outcap - 1;
    while (ts_joined_len(mlen, kept, n) > limit) {
        size_t drop = n;
        for (i = n; i-- > 0;) {
            if (kept[i] && mlen[i] > TS_TRUNCATE_FIRST) {
                drop = i;
                break;
            }
        }
        if (drop == n)
            for (i = n; i-- > 0;)
                if (kept[i]) {
                    drop = i;
                    break;
                }
        kept[drop] = 0;
    }

    for (j = 0; j < n; j++) {
        if (!kept[j])
            continue;
        if (olen > 0)
            out[olen++] = ',';
        memcpy(out + olen, s + off[j], mlen[j]);
        olen += mlen[j];
    }
    out[olen] = '\0';
    return olen;
}
