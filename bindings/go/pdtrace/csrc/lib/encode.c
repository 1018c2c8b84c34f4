/*
 * The OTLP encoder: ExportTraceServiceRequest from frozen span records, in
 * one pass. Every length is computed before it is written, so nothing is
 * sized twice, and the bytes are written straight into a buffer of the
 * exact size (the nanopb descriptors serve the decoders and the tests).
 */
#include <stdlib.h>
#include <string.h>

#include "attr.h"
#include "encode.h"
#include "error.h"
#include "rec.h"
#include "tracer_data.h"
#include "wire.h"

/* Field numbers (the OTLP specification). */
enum {
    F_REQ_RESOURCE_SPANS = 1,
    F_RS_RESOURCE = 1, F_RS_SCOPE_SPANS = 2,
    F_SS_SCOPE = 1, F_SS_SPANS = 2,
    F_SPAN_TRACE_ID = 1, F_SPAN_SPAN_ID = 2, F_SPAN_TRACE_STATE = 3,
    F_SPAN_PARENT = 4, F_SPAN_NAME = 5, F_SPAN_KIND = 6, F_SPAN_START = 7,
    F_SPAN_END = 8, F_SPAN_DROPPED_ATTRS = 10, F_SPAN_DROPPED_EVENTS = 12,
    F_SPAN_STATUS = 15, F_SPAN_FLAGS = 16,
    F_STATUS_MESSAGE = 2, F_STATUS_CODE = 3,
    F_RESOURCE_ATTRS = 1, F_SCOPE_NAME = 1, F_SCOPE_VERSION = 2
};

/* Span.flags bits: the W3C flags in the low byte, then "is_remote known"
 * and "parent is remote". */
#define SPAN_FLAGS_HAS_IS_REMOTE 0x100u
#define SPAN_FLAGS_IS_REMOTE 0x200u

static size_t ld_len(size_t n) /* a length-delimited field, 1-byte tag */
{
    return 1 + pdti_varint_len(n) + n;
}

static size_t status_body_size(const pdti_rec *r)
{
    size_t n = 0;
    if (r->status_msg.len != 0)
        n += ld_len(r->status_msg.len);
    if (r->status_code != 0)
        n += 1 + pdti_varint_len((uint64_t)r->status_code);
    return n;
}

size_t pdti_span_body_size(const pdti_rec *r)
{
    size_t n = ld_len(16) + ld_len(8);
    size_t st = status_body_size(r);

    if (r->tracestate.len != 0)
        n += ld_len(r->tracestate.len);
    if (r->has_parent)
        n += ld_len(8);
    n += ld_len(r->name.len);
    n += 1 + pdti_varint_len((uint64_t)r->kind);
    n += 9 + 9;
    n += r->attrs.len;
    if (r->dropped_attrs)
        n += 1 + pdti_varint_len(r->dropped_attrs);
    n += r->events.len;
    if (r->dropped_events)
        n += 1 + pdti_varint_len(r->dropped_events);
    if (st != 0)
        n += 1 + pdti_varint_len(st) + st; /* field 15: 1-byte tag */
    n += 2 + 4;                            /* field 16: 2-byte tag */
    return n;
}

/* The writers below fill a buffer sized in advance by the *_size()
 * functions above: no bounds checks per field, one pass, every length
 * known before it is written. */

static inline uint8_t *w_tag(uint8_t *p, uint32_t field, unsigned wire)
{
    return pdti_put_varint(p, ((uint64_t)field << 3) | wire);
}

static inline uint8_t *w_bytes(uint8_t *p, uint32_t field, const void *d,
                               size_t n)
{
    p = w_tag(p, field, 2);
    p = pdti_put_varint(p, n);
    if (n != 0)
        memcpy(p, d, n);
    return p + n;
}

static inline uint8_t *w_fixed64(uint8_t *p, uint32_t field, uint64_t v)
{
    int i;

    p = w_tag(p, field, 1);
    for (i = 0; i < 8; i++) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
    return p + 8;
}

static uint8_t *put_span(uint8_t *p, const pdti_rec *r, size_t body)
{
    size_t st = status_body_size(r);
    uint32_t flags = r->trace_flags | SPAN_FLAGS_HAS_IS_REMOTE |
                     (r->parent_remote ? SPAN_FLAGS_IS_REMOTE : 0);
    int i;

    /* Fields in the order that compresses best across a batch (protobuf
     * readers accept any order): what repeats from span to span first,
     * then the random ids and the times together, then the attributes. */
    p = w_tag(p, F_SS_SPANS, 2);
    p = pdti_put_varint(p, body);
    p = w_bytes(p, F_SPAN_TRACE_ID, r->trace_id, 16);
    p = w_bytes(p, F_SPAN_NAME, r->name.data, r->name.len);
    p = w_tag(p, F_SPAN_KIND, 0);
    p = pdti_put_varint(p, (uint64_t)r->kind);
    p = w_tag(p, F_SPAN_FLAGS, 5);
    for (i = 0; i < 4; i++) {
        p[i] = (uint8_t)flags;
        flags >>= 8;
    }
    p += 4;
    if (r->tracestate.len != 0)
        p = w_bytes(p, F_SPAN_TRACE_STATE, r->tracestate.data,
                    r->tracestate.len);
    p = w_bytes(p, F_SPAN_SPAN_ID, r->span_id, 8);
    if (r->has_parent)
        p = w_bytes(p, F_SPAN_PARENT, r->parent_id, 8);
    p = w_fixed64(p, F_SPAN_START, r->start_unix_ns);
    p = w_fixed64(p, F_SPAN_END, r->end_unix_ns);
    if (r->attrs.len != 0) {
        memcpy(p, r->attrs.data, r->attrs.len);
        p += r->attrs.len;
    }
    if (r->dropped_attrs) {
        p = w_tag(p, F_SPAN_DROPPED_ATTRS, 0);
        p = pdti_put_varint(p, r->dropped_attrs);
    }
    if (r->events.len != 0) {
        memcpy(p, r->events.data, r->events.len);
        p += r->events.len;
    }
    if (r->dropped_events) {
        p = w_tag(p, F_SPAN_DROPPED_EVENTS, 0);
        p = pdti_put_varint(p, r->dropped_events);
    }
    if (st != 0) {
        p = w_tag(p, F_SPAN_STATUS, 2);
        p = pdti_put_varint(p, st);
        if (r->status_msg.len != 0)
            p = w_bytes(p, F_STATUS_MESSAGE, r->status_msg.data,
                        r->status_msg.len);
        if (r->status_code != 0) {
            p = w_tag(p, F_STATUS_CODE, 0);
            p = pdti_put_varint(p, (uint64_t)r->status_code);
        }
    }
    return p;
}

int pdti_encode_request(const uint8_t *resource, size_t resource_len,
                        const uint8_t *scope, size_t scope_len,
                        pdti_rec *const *recs, size_t n, pdti_buf *out)
{
    size_t spans = 0, ss_body, rs_body, total, i;
    size_t bodies_stack[64];
    size_t *bodies = bodies_stack;
    pdti_buf bodies_heap = PDTI_BUF_INIT;
    uint8_t *p;

    if (n > 64) {
        if (pdti_buf_reserve(&bodies_heap, n * sizeof(size_t)) != 0)
            return pdti_err(PDT_ENOMEM, "out of memory encoding a batch");
        bodies = (size_t *)(void *)bodies_heap.data;
    }
    for (i = 0; i < n; i++) {
        bodies[i] = pdti_span_body_size(recs[i]);
        spans += 1 + pdti_varint_len(bodies[i]) + bodies[i];
    }
    ss_body = scope_len + spans;
    rs_body = resource_len + 1 + pdti_varint_len(ss_body) + ss_body;
    total = 1 + pdti_varint_len(rs_body) + rs_body;

    pdti_buf_reset(out);
    if (pdti_buf_reserve(out, total) != 0) {
        pdti_buf_free(&bodies_heap);
        return pdti_err(PDT_ENOMEM, "out of memory encoding a batch");
    }
    p = out->data;
    p = w_tag(p, F_REQ_RESOURCE_SPANS, 2);
    p = pdti_put_varint(p, rs_body);
    memcpy(p, resource, resource_len);
    p += resource_len;
    p = w_tag(p, F_RS_SCOPE_SPANS, 2);
    p = pdti_put_varint(p, ss_body);
    memcpy(p, scope, scope_len);
    p += scope_len;
    for (i = 0; i < n; i++)
        p = put_span(p, recs[i], bodies[i]);
    pdti_buf_free(&bodies_heap);
    if ((size_t)(p - out->data) != total) {
        /* The size functions and the writers disagree: a bug. */
        pdti_buf_reset(out);
        return pdti_err(PDT_EINTERNAL, "encoder size mismatch");
    }
    out->len = total;
    return PDT_OK;
}

/* Resource and scope, encoded once at open. */
int pdti_encode_preamble(pdt_tracer *t)
{
    pdti_buf attrs = PDTI_BUF_INIT, *b = &t->preamble;
    const pdti_kvlist *res = &t->cfg.resource;
    size_t i, vlen;
    int rc = PDT_OK;
    uint8_t *p;
    static const char scope_name[] = "libpdtrace";
    /* The span attribute limits do not apply to the resource. */
    int64_t span_value_limit = t->cfg.attr_value_len_limit;

    t->cfg.attr_value_len_limit = -1;
    for (i = 0; i < res->count && rc == PDT_OK; i++) {
        const char *k = res->items[i].key, *v = res->items[i].value;
        if (strcmp(k, "process.pid") == 0) {
            char *end;
            long long pid = strtoll(v, &end, 10);
            if (*v != '\0' && *end == '\0') {
                rc = pdti_attr_int(t, &attrs, 0x0a, k, pid);
                continue;
            }
        }
        rc = pdti_attr_str(t, &attrs, 0x0a, k, v, strlen(v));
    }
    t->cfg.attr_value_len_limit = span_value_limit;
    if (rc != PDT_OK) {
        pdti_buf_free(&attrs);
        return rc;
    }
    pdti_buf_reset(b);
    vlen = strlen(PDT_VERSION_STRING);
    if (pdti_buf_reserve(b, attrs.len + 64 + vlen) != 0) {
        pdti_buf_free(&attrs);
        return pdti_err(PDT_ENOMEM, "out of memory");
    }
    /* ResourceSpans.resource { Resource.attributes... } */
    p = b->data;
    *p++ = (F_RS_RESOURCE << 3) | 2;
    p = pdti_put_varint(p, attrs.len);
    memcpy(p, attrs.data, attrs.len);
    p += attrs.len;
    t->scope_off = (size_t)(p - b->data);
    /* ScopeSpans.scope { name, version } */
    *p++ = (F_SS_SCOPE << 3) | 2;
    p = pdti_put_varint(p, ld_len(sizeof(scope_name) - 1) + ld_len(vlen));
    *p++ = (F_SCOPE_NAME << 3) | 2;
    p = pdti_put_varint(p, sizeof(scope_name) - 1);
    memcpy(p, scope_name, sizeof(scope_name) - 1);
    p += sizeof(scope_name) - 1;
    *p++ = (F_SCOPE_VERSION << 3) | 2;
    p = pdti_put_varint(p, vlen);
    memcpy(p, PDT_VERSION_STRING, vlen);
    p += vlen;
    b->len = (size_t)(p - b->data);
    pdti_buf_free(&attrs);
    (void)F_RESOURCE_ATTRS;
    return PDT_OK;
}

/* ---- splitting a request ------------------------------------------------ */

/* Reads a varint at *p (below end); -1 if malformed. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    unsigned shift = 0;

    *v = 0;
    while (*p < end && shift < 64) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
        shift += 7;
    }
    return -1;
}

/* Reads one length-delimited field's tag and bounds at *p: its payload is
 * [*body, *body + *len), *p moves past it. -1 if the field is not
 * length-delimited or runs past end. */
static int get_ld_field(const uint8_t **p, const uint8_t *end,
                        uint64_t *field, const uint8_t **body, size_t *len)
{
    uint64_t tag, l;

    if (get_varint(p, end, &tag) != 0 || (tag & 7) != 2 ||
        get_varint(p, end, &l) != 0 || l > (uint64_t)(end - *p))
        return -1;
    *field = tag >> 3;
    *body = *p;
    *len = (size_t)l;
    *p += l;
    return 0;
}

int pdti_encode_split(const uint8_t *req, size_t len, size_t *nspans,
                      size_t k, pdti_buf *first, pdti_buf *second)
{
    const uint8_t *p = req, *end = req + len, *rs, *ss = NULL, *q, *ss_end;
    const uint8_t *rs_end, *ss_field = NULL, *ss_field_end = NULL, *split_at;
    size_t rs_len, ss_len = 0, n = 0, part;
    uint64_t field;
    size_t span_bytes[2] = { 0, 0 }, other = 0;
    pdti_buf *outs[2];

    outs[0] = first;
    outs[1] = second;
    /* One ResourceSpans holding one ScopeSpans: what pdti_encode_request()
     * writes. */
    if (get_ld_field(&p, end, &field, &rs, &rs_len) != 0 ||
        field != F_REQ_RESOURCE_SPANS || p != end)
        return pdti_err(PDT_EPARSE, "split: not a single ResourceSpans");
    rs_end = rs + rs_len;
    for (q = rs; q < rs_end;) {
        const uint8_t *start = q, *b;
        size_t l;
        if (get_ld_field(&q, rs_end, &field, &b, &l) != 0)
            return pdti_err(PDT_EPARSE, "split: bad ResourceSpans");
        if (field == F_RS_SCOPE_SPANS) {
            if (ss_field != NULL)
                return pdti_err(PDT_EPARSE, "split: several ScopeSpans");
            ss_field = start;
            ss_field_end = q;
            ss = b;
            ss_len = l;
        }
    }
    if (ss_field == NULL)
        return pdti_err(PDT_EPARSE, "split: no ScopeSpans");
    /* Count the spans (field 2 of ScopeSpans) and find the k-th. */
    ss_end = ss + ss_len;
    split_at = NULL;
    for (q = ss; q < ss_end;) {
        const uint8_t *start = q, *b;
        size_t l;
        if (get_ld_field(&q, ss_end, &field, &b, &l) != 0)
            return pdti_err(PDT_EPARSE, "split: bad ScopeSpans");
        if (field == 2) {
            if (n == k)
                split_at = start;
            span_bytes[n < k ? 0 : 1] += (size_t)(q - start);
            n++;
        } else {
            if (n != 0)
                return pdti_err(PDT_EPARSE, "split: scope after spans");
            other += (size_t)(q - start);
        }
    }
    *nspans = n;
    if (k == 0 || k >= n || split_at == NULL)
        return pdti_err(PDT_EINVAL, "split: cannot cut %zu spans at %zu", n,
                        k);
    for (part = 0; part < 2; part++) {
        size_t ss_body = other + span_bytes[part];
        size_t rs_body = (size_t)(ss_field - rs) +
                         (size_t)(rs_end - ss_field_end) + 1 +
                         pdti_varint_len(ss_body) + ss_body;
        size_t total = 1 + pdti_varint_len(rs_body) + rs_body;
        const uint8_t *from = part == 0 ? ss + other : split_at;
        uint8_t *w;

        pdti_buf_reset(outs[part]);
        if (pdti_buf_reserve(outs[part], total) != 0)
            return pdti_err(PDT_ENOMEM, "out of memory splitting a batch");
        w = outs[part]->data;
        w = w_tag(w, F_REQ_RESOURCE_SPANS, 2);
        w = pdti_put_varint(w, rs_body);
        memcpy(w, rs, (size_t)(ss_field - rs));
        w += ss_field - rs;
        w = w_tag(w, F_RS_SCOPE_SPANS, 2);
        w = pdti_put_varint(w, ss_body);
        memcpy(w, ss, other);
        w += other;
        memcpy(w, from, span_bytes[part]);
        w += span_bytes[part];
        memcpy(w, ss_field_end, (size_t)(rs_end - ss_field_end));
        w += rs_end - ss_field_end;
        outs[part]->len = (size_t)(w - outs[part]->data);
    }
    return PDT_OK;
}
