/*
 * Internal, floor 1: attributes and strings encoded into a record's
 * buffers on the calling thread (attr.c), in their protobuf form, with the
 * tracer's limits applied and counted.
 */
#ifndef PDTI_ATTR_H
#define PDTI_ATTR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "rec.h"
#include "tracer_data.h"
#include "wire.h"

/* Wire tags inside KeyValue and AnyValue. */
#define PDTI_TAG_KV_KEY 0x0a      /* KeyValue.key, length-delimited */
#define PDTI_TAG_KV_VALUE 0x12    /* KeyValue.value, length-delimited */
#define PDTI_TAG_AV_STRING 0x0a   /* AnyValue.string_value */
#define PDTI_TAG_AV_BOOL 0x10     /* AnyValue.bool_value, varint */
#define PDTI_TAG_AV_INT 0x18      /* AnyValue.int_value, varint */
#define PDTI_TAG_AV_DOUBLE 0x21   /* AnyValue.double_value, fixed64 */

#if defined(__GNUC__) || defined(__clang__)
#define PDTI_ALWAYS_INLINE __attribute__((always_inline))
#else
#define PDTI_ALWAYS_INLINE
#endif

/* Attribute encoding into a record (tag 9 for spans, 3 for events). */
int pdti_attr_str(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  const char *value, size_t vlen);
int pdti_attr_int(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  int64_t v);
int pdti_attr_double(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                     const char *key, double v);
int pdti_attr_bool(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                   int v);
/* Appends validated UTF-8 (sanitized, optionally truncated) as a framed
 * string field `tag` to b. limit < 0: no truncation. */
int pdti_put_string_field(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                          const char *s, size_t n, int64_t limit);
/* Copies UTF-8-sanitized s[0..n) into b (unframed). */
int pdti_put_utf8(pdt_tracer *t, pdti_buf *b, const char *s, size_t n);
/* The same, cut to at most `limit` bytes on a character boundary (counted
 * in values_truncated); limit < 0: no cut. */
int pdti_put_utf8_limit(pdt_tracer *t, pdti_buf *b, const char *s, size_t n,
                        int64_t limit);

/* Span-level checks before adding an attribute: 0 = go ahead. */
int pdti_rec_attr_room(pdt_tracer *t, pdti_rec *r);

/*
 * 1 if s[0..n) is plain ASCII (hence valid UTF-8): the fast path in front
 * of pdti_utf8_valid() for the short keys and values of the hot path.
 */
static inline int pdti_ascii(const uint8_t *s, size_t n)
{
    uint64_t acc = 0, w;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= s[i];
    return (acc & 0x8080808080808080ull) == 0;
}

/*
 * The library's own attribute keys: string literals of valid ASCII whose
 * length the caller passes (PDTI_LIT). No scan, no strlen.
 *
 * These writers are inline: the key and its length are constants at each
 * call site, so the compiler folds the KeyValue header (tag, lengths, key
 * bytes) into constant stores, a pre-encoded header without a table. They
 * run for about 37 attributes a traced request.
 */
#define PDTI_LIT(s) (s), (sizeof(s) - 1)

/* Framed KeyValue header for a known-valid key: tag, length, key field,
 * value field header. Returns where the AnyValue's av_len bytes go (the
 * room is reserved), NULL when out of memory. */
static inline PDTI_ALWAYS_INLINE uint8_t *
pdti_kv_begin_lit(pdti_buf *b, uint8_t tag, const char *key, size_t klen,
                  size_t av_len)
{
    size_t kv_len;
    uint8_t *p;

    if (klen < 120 && av_len < 120 && klen + av_len + 4 < 128) {
        /* Every length fits one varint byte: the common case. */
        kv_len = klen + av_len + 4;
        if (pdti_buf_reserve(b, kv_len + 2) != 0)
            return NULL;
        p = b->data + b->len;
        p[0] = tag;
        p[1] = (uint8_t)kv_len;
        p[2] = PDTI_TAG_KV_KEY;
        p[3] = (uint8_t)klen;
        memcpy(p + 4, key, klen);
        p += 4 + klen;
        p[0] = PDTI_TAG_KV_VALUE;
        p[1] = (uint8_t)av_len;
        return p + 2;
    }
    kv_len = 1 + pdti_varint_len(klen) + klen + 1 + pdti_varint_len(av_len) +
             av_len;
    if (pdti_buf_reserve(b, 1 + pdti_varint_len(kv_len) + kv_len) != 0)
        return NULL;
    p = b->data + b->len;
    *p++ = tag;
    p = pdti_put_varint(p, kv_len);
    *p++ = PDTI_TAG_KV_KEY;
    p = pdti_put_varint(p, klen);
    memcpy(p, key, klen);
    p += klen;
    *p++ = PDTI_TAG_KV_VALUE;
    return pdti_put_varint(p, av_len);
}

static inline int pdti_attr_double_lit(pdti_buf *b, uint8_t tag,
                                       const char *key, size_t klen, double v)
{
    uint64_t bits;
    uint8_t *p = pdti_kv_begin_lit(b, tag, key, klen, 9);
    int i;

    if (p == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    memcpy(&bits, &v, sizeof(bits));
    *p++ = PDTI_TAG_AV_DOUBLE;
    for (i = 0; i < 8; i++) {
        *p++ = (uint8_t)bits;
        bits >>= 8;
    }
    b->len = (size_t)(p - b->data);
    return PDT_OK;
}

static inline int pdti_attr_int_lit(pdti_buf *b, uint8_t tag, const char *key,
                                    size_t klen, int64_t v)
{
    uint64_t u = (uint64_t)v;
    uint8_t *p = pdti_kv_begin_lit(b, tag, key, klen, 1 + pdti_varint_len(u));

    if (p == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    *p++ = PDTI_TAG_AV_INT;
    p = pdti_put_varint(p, u);
    b->len = (size_t)(p - b->data);
    return PDT_OK;
}

static inline int pdti_attr_bool_lit(pdti_buf *b, uint8_t tag,
                                     const char *key, size_t klen, int v)
{
    uint8_t *p = pdti_kv_begin_lit(b, tag, key, klen, 2);

    if (p == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    *p++ = PDTI_TAG_AV_BOOL;
    *p++ = v ? 1 : 0;
    b->len = (size_t)(p - b->data);
    return PDT_OK;
}

/* A string value of a library key: any value, repaired if it is not UTF-8
 * and cut to the tracer's value length limit (attr.c). */
int pdti_attr_str_lit_slow(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                           const char *key, size_t klen, const char *value,
                           size_t vlen);

/* The same; short ASCII values within the limit are written inline. */
static inline int pdti_attr_str_lit(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                                    const char *key, size_t klen,
                                    const char *value, size_t vlen)
{
    int64_t limit = t->cfg.attr_value_len_limit;
    uint8_t *p;

    if (vlen >= 120 || (limit >= 0 && (uint64_t)vlen > (uint64_t)limit) ||
        !pdti_ascii((const uint8_t *)value, vlen))
        return pdti_attr_str_lit_slow(t, b, tag, key, klen, value, vlen);
    p = pdti_kv_begin_lit(b, tag, key, klen, 2 + vlen);
    if (p == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    p[0] = PDTI_TAG_AV_STRING;
    p[1] = (uint8_t)vlen;
    memcpy(p + 2, value, vlen);
    b->len = (size_t)(p + 2 + vlen - b->data);
    return PDT_OK;
}

#endif
