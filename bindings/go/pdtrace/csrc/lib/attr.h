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
#include "rec.h"
#include "tracer_data.h"

/* Attribute encoding into a record (tag 9 for spans, 3 for events). */
int pdti_attr_str(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  const char *value, size_t vlen);
int pdti_attr_int(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  int64_t v);
int pdti_attr_double(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                     const char *key, double v);
int pdti_attr_bool(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                   int v);
/* The same for keys known to be valid ASCII of length klen (the library's
 * own attribute names): no scan, no strlen. */
int pdti_attr_double_lit(pdti_buf *b, uint8_t tag, const char *key,
                         size_t klen, double v);
int pdti_attr_int_lit(pdti_buf *b, uint8_t tag, const char *key, size_t klen,
                      int64_t v);
int pdti_attr_bool_lit(pdti_buf *b, uint8_t tag, const char *key,
                       size_t klen, int v);
int pdti_attr_str_lit(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                      const char *key, size_t klen, const char *value,
                      size_t vlen);
#define PDTI_LIT(s) (s), (sizeof(s) - 1)
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

#endif
