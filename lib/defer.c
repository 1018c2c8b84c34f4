/*
 * Deferred attributes. Setting an attribute on the caller's thread only
 * appends a small entry (header, key, value) to the record; the exporter
 * thread turns the entries into protobuf KeyValue fields just before it
 * encodes the batch. The calling thread thus pays for a copy, and the
 * UTF-8 checks, truncation and framing happen off the request path.
 */
#include <stdio.h>
#include <string.h>

#include "pdtrace/request.h"
#include "core.h"
#include "error.h"

#define TAG_SPAN_ATTR 0x4a
#define PFX "llm_d.pd_proxy."

typedef pdti_dent dent;

#define ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

/* Breakdown keys, in PDT_BD_* bit order. */
static const struct {
    const char *key;
    size_t len;
} bd_keys[8] = {
    { PDTI_LIT(PFX "queue_ms") },
    { PDTI_LIT(PFX "prefill_duration_ms") },
    { PDTI_LIT(PFX "kv_transfer_overhead_ms") },
    { PDTI_LIT(PFX "decode_ttft_ms") },
    { PDTI_LIT(PFX "true_ttft_ms") },
    { PDTI_LIT(PFX "decode_duration_ms") },
    { PDTI_LIT(PFX "total_duration_ms") },
    { PDTI_LIT(PFX "tpot_ms") },
};

int pdti_defer(pdt_tracer *t, pdti_rec *r, int kind, const char *key,
               size_t klen, int key_lit, const void *val, size_t vlen,
               int64_t i, double d, unsigned nattrs)
{
    int64_t limit = t->cfg.attr_value_len_limit;
    int rc;

    if (kind == PDTI_DEF_STR && limit >= 0 && (uint64_t)vlen >
                                                 (uint64_t)limit + 4) {
        /* Truncation happens when encoded, on a character boundary of the
         * repaired string; its first `limit` bytes come from at most
         * `limit` input bytes, and a character is at most 4 bytes long, so
         * limit + 4 input bytes decide the result. */
        vlen = (size_t)limit + 4;
    }
    if (kind == PDTI_DEF_DOUBLE)
        memcpy(&i, &d, sizeof(d));
    rc = pdti_defer_fast(r, kind, key, klen, key_lit, val, vlen, i, nattrs);
    if (rc == PDT_ELIMIT)
        return pdti_err(rc, "attribute too large");
    if (rc != PDT_OK)
        return pdti_err(rc, "out of memory for an attribute");
    return PDT_OK;
}

int pdti_defer_group(pdti_rec *r, int kind, uint32_t aux, uint32_t split,
                     const void *a, size_t alen, const void *b, size_t blen,
                     int64_t v, unsigned nattrs)
{
    size_t vlen = alen + blen, total;
    dent h;
    uint8_t *p;

    if (vlen > UINT32_MAX)
        return PDT_ELIMIT;
    total = ALIGN8(sizeof(dent) + vlen);
    if (pdti_buf_reserve(&r->deferred, total) != 0)
        return PDT_ENOMEM;
    memset(&h, 0, sizeof(h));
    h.kind = (uint8_t)kind;
    h.key_lit = 1;
    h.nattrs = (uint16_t)nattrs;
    h.klen = split;
    h.vlen = (uint32_t)vlen;
    h.aux = aux;
    h.v = v;
    p = r->deferred.data + r->deferred.len;
    memcpy(p, &h, sizeof(h));
    p += sizeof(h);
    if (alen != 0)
        memcpy(p, a, alen);
    if (blen != 0)
        memcpy(p + alen, b, blen);
    r->deferred.len += total;
    r->deferred_bound += 64 * (size_t)nattrs + 3 * vlen;
    r->nattrs += nattrs;
    return PDT_OK;
}

/* Splits "scheme://host:port/path", "host:port" or "[v6]:port". */
static void parse_target(const char *s, size_t len, const char **host,
                         size_t *hlen, long *port)
{
    const char *end = s + len, *p, *colon = NULL, *q;

    *port = -1;
    *hlen = 0;
    *host = s;
    for (p = s; p + 3 <= end; p++) {
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            if (p - s == 5 && memcmp(s, "https", 5) == 0)
                *port = 443;
            else if (p - s == 4 && memcmp(s, "http", 4) == 0)
                *port = 80;
            s = p + 3;
            break;
        }
        if (*p == '/' || *p == '?' || *p == '#')
            break;
    }
    for (q = s; q < end && *q != '/' && *q != '?' && *q != '#'; q++)
        ;
    end = q;
    if (s < end && *s == '[') {
        const char *rb = memchr(s, ']', (size_t)(end - s));
        if (rb == NULL)
            return;
        *host = s + 1;
        *hlen = (size_t)(rb - s - 1);
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        *host = s;
        *hlen = (size_t)((colon != NULL ? colon : end) - s);
    }
    if (colon != NULL) {
        long v = 0;
        const char *d = colon + 1;
        if (d == end)
            return;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9' || v > 65535)
                return;
            v = v * 10 + (*d - '0');
        }
        if (v <= 65535)
            *port = v;
    }
}

/* One attribute could not be encoded (out of memory): it is dropped. */
static void lost(pdt_tracer *t, pdti_rec *r, unsigned n)
{
    if (n == 0)
        return;
    r->nattrs = r->nattrs >= n ? r->nattrs - n : 0;
    r->dropped_attrs += n;
    PDTI_COUNT(t, attributes_dropped, n);
}

/* One attribute of a group: counts what was written. */
#define G_STR(key, v, n) \
    made += pdti_attr_str_lit(t, b, TAG_SPAN_ATTR, PDTI_LIT(key), (v), \
                              (n)) == PDT_OK
#define G_INT(key, v) \
    made += pdti_attr_int_lit(b, TAG_SPAN_ATTR, PDTI_LIT(key), (v)) == PDT_OK
#define G_BOOL(key, v) \
    made += pdti_attr_bool_lit(b, TAG_SPAN_ATTR, PDTI_LIT(key), (v)) == \
            PDT_OK

static unsigned expand_group(pdt_tracer *t, pdti_rec *r, const dent *h,
                             const uint8_t *val)
{
    pdti_buf *b = &r->attrs;
    unsigned made = 0;

    if (h->kind == PDTI_DEF_LEG) {
        const char *tgt = (const char *)val, *err = tgt + h->klen;
        size_t tlen = h->klen, elen = h->vlen - h->klen;
        if (tlen != 0) {
            const char *host;
            size_t hlen;
            long port;
            parse_target(tgt, tlen, &host, &hlen, &port);
            if (hlen != 0)
                G_STR("server.address", host, hlen);
            if (port >= 0)
                G_INT("server.port", port);
        }
        if (h->v > 0)
            G_INT("http.response.status_code", h->v);
        if (elen != 0) {
            G_STR("error.type", err, elen);
        } else if (h->aux & 1) {
            /* OpenTelemetry: without a better type, the status code. */
            char code[24];
            int n = snprintf(code, sizeof(code), "%lld", (long long)h->v);
            G_STR("error.type", code, (size_t)n);
        }
    } else if (h->kind == PDTI_DEF_ROOTLEG) {
        if (h->vlen != 0) {
            if (h->aux == PDT_LEG_PREFILL)
                G_STR(PFX "prefill_target", (const char *)val, h->vlen);
            else
                G_STR(PFX "decode_target", (const char *)val, h->vlen);
        }
        if (h->aux == PDT_LEG_PREFILL)
            G_INT(PFX "prefill.status_code", h->v);
        else
            G_INT(PFX "decode.status_code", h->v);
    } else {
        pdti_def_reqinfo ri;
        const char *id, *conn, *model, *reason;
        memcpy(&ri, val, sizeof(ri));
        id = (const char *)val + sizeof(ri);
        conn = id + ri.len_id;
        model = conn + ri.len_connector;
        reason = model + ri.len_model;
        G_STR(PFX "request_id", id, ri.len_id);
        if (h->aux == 1) { /* the decode span */
            if (ri.output_tokens >= 0)
                G_INT("gen_ai.usage.output_tokens", ri.output_tokens);
            return made;
        }
        if (ri.len_connector != 0)
            G_STR(PFX "connector", conn, ri.len_connector);
        if (ri.len_model != 0)
            G_STR("gen_ai.request.model", model, ri.len_model);
        G_BOOL(PFX "disaggregation_enabled",
               ri.mode != PDT_MODE_DECODE_ONLY);
        G_BOOL(PFX "concurrent_pd", ri.mode == PDT_MODE_CONCURRENT);
        if (ri.len_reason != 0)
            G_STR(PFX "reason", reason, ri.len_reason);
        if (ri.usage_in >= 0)
            G_INT("gen_ai.usage.input_tokens", ri.usage_in);
        if (ri.output_tokens >= 0)
            G_INT("gen_ai.usage.output_tokens", ri.output_tokens);
        if (ri.usage_cached >= 0)
            G_INT("gen_ai.usage.cache_read.input_tokens", ri.usage_cached);
    }
    return made;
}

#undef G_STR
#undef G_INT
#undef G_BOOL

/* A group wrote fewer attributes than counted: a target without a host
 * or port is simply absent; anything else was lost to memory. */
static void lost_or_absent(pdt_tracer *t, pdti_rec *r, const dent *h,
                           unsigned made)
{
    unsigned missing = h->nattrs - made;

    if (h->kind == PDTI_DEF_LEG && h->klen != 0) {
        /* Up to two of the missing ones may be the target's parts. */
        unsigned parts = missing < 2 ? missing : 2;
        r->nattrs -= parts;
        missing -= parts;
    }
    lost(t, r, missing);
}

static void expand(pdt_tracer *t, pdti_rec *r, const dent *h,
                   const char *key, const uint8_t *val)
{
    pdti_buf *b = &r->attrs;
    size_t klen = h->klen;
    unsigned made = 0;
    int rc = PDT_OK;
    double d;

    memcpy(&d, &h->v, sizeof(d));

    switch (h->kind) {
    case PDTI_DEF_STR:
        rc = h->key_lit
                 ? pdti_attr_str_lit(t, b, TAG_SPAN_ATTR, key, klen,
                                     (const char *)val, h->vlen)
                 : pdti_attr_str(t, b, TAG_SPAN_ATTR, key,
                                 (const char *)val, h->vlen);
        break;
    case PDTI_DEF_INT:
        rc = h->key_lit ? pdti_attr_int_lit(b, TAG_SPAN_ATTR, key, klen,
                                            h->v)
                        : pdti_attr_int(t, b, TAG_SPAN_ATTR, key, h->v);
        break;
    case PDTI_DEF_DOUBLE:
        rc = h->key_lit ? pdti_attr_double_lit(b, TAG_SPAN_ATTR, key, klen,
                                               d)
                        : pdti_attr_double(t, b, TAG_SPAN_ATTR, key, d);
        break;
    case PDTI_DEF_BOOL:
        rc = h->key_lit ? pdti_attr_bool_lit(b, TAG_SPAN_ATTR, key, klen,
                                             (int)h->v)
                        : pdti_attr_bool(t, b, TAG_SPAN_ATTR, key,
                                         (int)h->v);
        break;
    case PDTI_DEF_BREAKDOWN: {
        pdti_def_breakdown bd;
        unsigned k;
        memcpy(&bd, val, sizeof(bd));
        for (k = 0; k < 8; k++)
            if ((bd.present & (1u << k)) &&
                pdti_attr_double_lit(b, TAG_SPAN_ATTR, bd_keys[k].key,
                                     bd_keys[k].len, bd.v[k]) == PDT_OK)
                made++;
        lost(t, r, h->nattrs > made ? h->nattrs - made : 0);
        return;
    }
    case PDTI_DEF_TARGET: {
        const char *host;
        size_t hlen;
        long port;
        parse_target((const char *)val, h->vlen, &host, &hlen, &port);
        if (hlen != 0 &&
            pdti_attr_str_lit(t, b, TAG_SPAN_ATTR,
                              PDTI_LIT("server.address"), host, hlen)
                == PDT_OK)
            made++;
        if (port >= 0 &&
            pdti_attr_int_lit(b, TAG_SPAN_ATTR, PDTI_LIT("server.port"),
                              port) == PDT_OK)
            made++;
        /* Counted as two when recorded; give back what the target did
         * not hold (no port, say) without calling it dropped. */
        if (made < h->nattrs)
            r->nattrs -= h->nattrs - made;
        return;
    }
    case PDTI_DEF_LEG:
    case PDTI_DEF_ROOTLEG:
    case PDTI_DEF_REQINFO:
        made = expand_group(t, r, h, val);
        /* Counted when recorded; what did not come out (a target without
         * a port, an allocation failure) is given back or dropped. */
        if (made < h->nattrs)
            lost_or_absent(t, r, h, made);
        return;
    default:
        rc = PDT_EINTERNAL;
        break;
    }
    if (rc != PDT_OK)
        lost(t, r, h->nattrs);
}

void pdti_rec_materialize(pdt_tracer *t, pdti_rec *r)
{
    const uint8_t *p, *end;

    if (r->deferred.len == 0)
        return;
    p = r->deferred.data;
    end = p + r->deferred.len;

    while (p + sizeof(dent) <= end) {
        dent h;
        const char *key;
        const uint8_t *val;
        size_t kcopy;

        memcpy(&h, p, sizeof(h));
        kcopy = h.key_lit ? 0 : (size_t)h.klen + 1;
        key = h.key_lit ? h.key : (const char *)(p + sizeof(h));
        val = p + sizeof(h) + kcopy;
        expand(t, r, &h, key, val);
        p += ALIGN8(sizeof(h) + kcopy + h.vlen);
    }
    pdti_buf_reset(&r->deferred);
    r->deferred_bound = 0;
}
