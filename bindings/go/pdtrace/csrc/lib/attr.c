/*
 * Attribute encoding. Attributes are turned into their final protobuf form
 * (a framed KeyValue field) the moment they are set, so that ending a span
 * and encoding a batch only copy bytes. Strings are UTF-8-repaired and
 * truncated to the value length limit here.
 */
#include <string.h>

#include "attr.h"
#include "error.h"
#include "propagation.h"
#include "rec.h"
#include "tracer_data.h"
#include "wire.h"

/* Wire tags: attr.h. */

int pdti_put_utf8(pdt_tracer *t, pdti_buf *b, const char *s, size_t n)
{
    const uint8_t *src = (const uint8_t *)s;
    size_t len;

    if (pdti_ascii(src, n) || pdti_utf8_valid(src, n) == n) {
        if (pdti_buf_append(b, s, n) != 0)
            return pdti_err(PDT_ENOMEM, "out of memory");
        return PDT_OK;
    }
    len = pdti_utf8_sanitized_len(src, n);
    if (pdti_buf_reserve(b, len) != 0)
        return pdti_err(PDT_ENOMEM, "out of memory");
    b->len += pdti_utf8_sanitize(src, n, b->data + b->len);
    PDTI_COUNT(t, strings_sanitized, 1);
    return PDT_OK;
}

int pdti_put_utf8_limit(pdt_tracer *t, pdti_buf *b, const char *s, size_t n,
                        int64_t limit)
{
    size_t start = b->len, len;
    int rc = pdti_put_utf8(t, b, s, n);

    if (rc != PDT_OK || limit < 0 || b->len - start <= (uint64_t)limit)
        return rc;
    len = pdti_utf8_truncate(b->data + start, b->len - start, (size_t)limit);
    b->len = start + len;
    PDTI_COUNT(t, values_truncated, 1);
    return PDT_OK;
}

/* Truncates the valid string s to at most limit bytes on a boundary. */
static size_t trunc_len(const uint8_t *s, size_t n, int64_t limit, int *cut)
{
    *cut = 0;
    if (limit < 0 || (uint64_t)n <= (uint64_t)limit)
        return n;
    *cut = 1;
    return pdti_utf8_truncate(s, n, (size_t)limit);
}

int pdti_put_string_field(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                          const char *s, size_t n, int64_t limit)
{
    const uint8_t *src = (const uint8_t *)s;
    size_t len;
    uint8_t *p;
    int cut;

    if (pdti_ascii(src, n) || pdti_utf8_valid(src, n) == n) {
        len = trunc_len(src, n, limit, &cut);
        if (pdti_buf_reserve(b, 1 + 10 + len) != 0)
            return pdti_err(PDT_ENOMEM, "out of memory");
        p = b->data + b->len;
        *p++ = tag;
        p = pdti_put_varint(p, len);
        memcpy(p, src, len);
        b->len = (size_t)(p + len - b->data);
        if (cut)
            PDTI_COUNT(t, values_truncated, 1);
        return PDT_OK;
    } else {
        /* Rare path: repair into a scratch area at the end of b, then
         * frame it. */
        size_t full = pdti_utf8_sanitized_len(src, n);
        size_t start;
        uint8_t *tmp;
        if (pdti_buf_reserve(b, 2 * full + 11) != 0)
            return pdti_err(PDT_ENOMEM, "out of memory");
        start = b->len;
        tmp = b->data + b->len + full + 11;
        pdti_utf8_sanitize(src, n, tmp);
        len = trunc_len(tmp, full, limit, &cut);
        p = b->data + start;
        *p++ = tag;
        p = pdti_put_varint(p, len);
        memmove(p, tmp, len);
        b->len = (size_t)(p + len - b->data);
        PDTI_COUNT(t, strings_sanitized, 1);
        if (cut)
            PDTI_COUNT(t, values_truncated, 1);
        return PDT_OK;
    }
}

int pdti_rec_attr_room(pdt_tracer *t, pdti_rec *r)
{
    if ((int64_t)r->nattrs >= t->cfg.attr_count_limit) {
        r->dropped_attrs++;
        PDTI_COUNT(t, attributes_dropped, 1);
        return pdti_err(PDT_ELIMIT, "attribute count limit (%lld) reached",
                        (long long)t->cfg.attr_count_limit);
    }
    return PDT_OK;
}

/* The same for a caller's key: checked, and repaired if it is not UTF-8. */
static int kv_begin(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                    size_t av_len, uint8_t **out)
{
    size_t klen = strlen(key);
    const uint8_t *k = (const uint8_t *)key;
    pdti_buf kb = PDTI_BUF_INIT;
    int rc;

    if (pdti_ascii(k, klen) || pdti_utf8_valid(k, klen) == klen) {
        *out = pdti_kv_begin_lit(b, tag, key, klen, av_len);
    } else {
        rc = pdti_put_utf8(t, &kb, key, klen);
        if (rc != PDT_OK) {
            pdti_buf_free(&kb);
            return rc;
        }
        *out = pdti_kv_begin_lit(b, tag, (const char *)kb.data, kb.len,
                                 av_len);
        pdti_buf_free(&kb);
    }
    return *out != NULL ? PDT_OK : pdti_err(PDT_ENOMEM, "out of memory");
}

int pdti_attr_str(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  const char *value, size_t vlen)
{
    const uint8_t *v = (const uint8_t *)value;
    int64_t limit = t->cfg.attr_value_len_limit;
    size_t len, av_len;
    int cut = 0;
    uint8_t *p;
    int rc;

    if (pdti_ascii(v, vlen) || pdti_utf8_valid(v, vlen) == vlen) {
        len = trunc_len(v, vlen, limit, &cut);
    } else {
        /* Repair into a temporary, then encode the clean bytes. */
        pdti_buf tmp = PDTI_BUF_INIT;
        size_t full = pdti_utf8_sanitized_len(v, vlen);
        if (pdti_buf_reserve(&tmp, full) != 0)
            return pdti_err(PDT_ENOMEM, "out of memory");
        tmp.len = pdti_utf8_sanitize(v, vlen, tmp.data);
        PDTI_COUNT(t, strings_sanitized, 1);
        rc = pdti_attr_str(t, b, tag, key, (const char *)tmp.data, tmp.len);
        pdti_buf_free(&tmp);
        return rc;
    }
    av_len = 1 + pdti_varint_len(len) + len;
    rc = kv_begin(t, b, tag, key, av_len, &p);
    if (rc != PDT_OK)
        return rc;
    *p++ = PDTI_TAG_AV_STRING;
    p = pdti_put_varint(p, len);
    memcpy(p, v, len);
    b->len = (size_t)(p + len - b->data);
    if (cut)
        PDTI_COUNT(t, values_truncated, 1);
    return PDT_OK;
}

int pdti_attr_int(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  int64_t v)
{
    uint64_t u = (uint64_t)v;
    size_t av_len = 1 + pdti_varint_len(u);
    uint8_t *p;
    int rc = kv_begin(t, b, tag, key, av_len, &p);

    if (rc != PDT_OK)
        return rc;
    *p++ = PDTI_TAG_AV_INT;
    p = pdti_put_varint(p, u);
    b->len = (size_t)(p - b->data);
    return PDT_OK;
}

int pdti_attr_double(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                     const char *key, double v)
{
    uint64_t bits;
    uint8_t *p;
    int i, rc = kv_begin(t, b, tag, key, 9, &p);

    if (rc != PDT_OK)
        return rc;
    memcpy(&bits, &v, sizeof(bits));
    *p++ = PDTI_TAG_AV_DOUBLE;
    for (i = 0; i < 8; i++) {
        *p++ = (uint8_t)bits;
        bits >>= 8;
    }
    b->len = (size_t)(p - b->data);
    return PDT_OK;
}

int pdti_attr_bool(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                   int v)
{
    uint8_t *p;
    int rc = kv_begin(t, b, tag, key, 2, &p);

    if (rc != PDT_OK)
        return rc;
    *p++ = PDTI_TAG_AV_BOOL;
    *p++ = v ? 1 : 0;
    b->len = (size_t)(p - b->data);
    return PDT_OK;
}

/* ---- the library's own keys (the fast paths are inline in attr.h) ---- */

int pdti_attr_str_lit_slow(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                           const char *key, size_t klen, const char *value,
                           size_t vlen)
{
    const uint8_t *v = (const uint8_t *)value;
    int64_t limit = t->cfg.attr_value_len_limit;
    uint8_t *p;
    int cut;

    if (!pdti_ascii(v, vlen) && pdti_utf8_valid(v, vlen) != vlen)
        return pdti_attr_str(t, b, tag, key, value, vlen);
    vlen = trunc_len(v, vlen, limit, &cut);
    p = pdti_kv_begin_lit(b, tag, key, klen,
                          1 + pdti_varint_len(vlen) + vlen);
    if (p == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    *p++ = PDTI_TAG_AV_STRING;
    p = pdti_put_varint(p, vlen);
    memcpy(p, v, vlen);
    b->len = (size_t)(p + vlen - b->data);
    if (cut)
        PDTI_COUNT(t, values_truncated, 1);
    return PDT_OK;
}
