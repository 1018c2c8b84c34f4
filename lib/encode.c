/*
 * The OTLP encoder: ExportTraceServiceRequest from frozen span records, in
 * one pass. Every length is computed before it is written, so nothing is
 * sized twice; the bytes go out through nanopb's stream primitives.
 */
#include <stdlib.h>
#include <string.h>

#include <pb_encode.h>

#include "core.h"
#include "error.h"

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

static bool put_bytes(pb_ostream_t *s, uint32_t field, const void *p,
                      size_t n)
{
    return pb_encode_tag(s, PB_WT_STRING, field) &&
           pb_encode_string(s, (const pb_byte_t *)p, n);
}

static bool put_span(pb_ostream_t *s, const pdti_rec *r, size_t body)
{
    size_t st = status_body_size(r);
    uint32_t flags = r->trace_flags | SPAN_FLAGS_HAS_IS_REMOTE |
                     (r->parent_remote ? SPAN_FLAGS_IS_REMOTE : 0);

    if (!pb_encode_tag(s, PB_WT_STRING, F_SS_SPANS) ||
        !pb_encode_varint(s, body) ||
        !put_bytes(s, F_SPAN_TRACE_ID, r->trace_id, 16) ||
        !put_bytes(s, F_SPAN_SPAN_ID, r->span_id, 8))
        return false;
    if (r->tracestate.len != 0 &&
        !put_bytes(s, F_SPAN_TRACE_STATE, r->tracestate.data,
                   r->tracestate.len))
        return false;
    if (r->has_parent && !put_bytes(s, F_SPAN_PARENT, r->parent_id, 8))
        return false;
    if (!put_bytes(s, F_SPAN_NAME, r->name.data, r->name.len) ||
        !pb_encode_tag(s, PB_WT_VARINT, F_SPAN_KIND) ||
        !pb_encode_varint(s, (uint64_t)r->kind) ||
        !pb_encode_tag(s, PB_WT_64BIT, F_SPAN_START) ||
        !pb_encode_fixed64(s, &r->start_unix_ns) ||
        !pb_encode_tag(s, PB_WT_64BIT, F_SPAN_END) ||
        !pb_encode_fixed64(s, &r->end_unix_ns) ||
        !pb_write(s, r->attrs.data, r->attrs.len))
        return false;
    if (r->dropped_attrs &&
        (!pb_encode_tag(s, PB_WT_VARINT, F_SPAN_DROPPED_ATTRS) ||
         !pb_encode_varint(s, r->dropped_attrs)))
        return false;
    if (!pb_write(s, r->events.data, r->events.len))
        return false;
    if (r->dropped_events &&
        (!pb_encode_tag(s, PB_WT_VARINT, F_SPAN_DROPPED_EVENTS) ||
         !pb_encode_varint(s, r->dropped_events)))
        return false;
    if (st != 0) {
        if (!pb_encode_tag(s, PB_WT_STRING, F_SPAN_STATUS) ||
            !pb_encode_varint(s, st))
            return false;
        if (r->status_msg.len != 0 &&
            !put_bytes(s, F_STATUS_MESSAGE, r->status_msg.data,
                       r->status_msg.len))
            return false;
        if (r->status_code != 0 &&
            (!pb_encode_tag(s, PB_WT_VARINT, F_STATUS_CODE) ||
             !pb_encode_varint(s, (uint64_t)r->status_code)))
            return false;
    }
    return pb_encode_tag(s, PB_WT_32BIT, F_SPAN_FLAGS) &&
           pb_encode_fixed32(s, &flags);
}

int pdti_encode_request(const uint8_t *resource, size_t resource_len,
                        const uint8_t *scope, size_t scope_len,
                        pdti_rec *const *recs, size_t n, pdti_buf *out)
{
    size_t spans = 0, ss_body, rs_body, total, i;
    pb_ostream_t s;
    size_t bodies_stack[64];
    size_t *bodies = bodies_stack;
    pdti_buf bodies_heap = PDTI_BUF_INIT;
    int rc = PDT_OK;

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
    s = pb_ostream_from_buffer(out->data, total);
    if (!pb_encode_tag(&s, PB_WT_STRING, F_REQ_RESOURCE_SPANS) ||
        !pb_encode_varint(&s, rs_body) ||
        !pb_write(&s, resource, resource_len) ||
        !pb_encode_tag(&s, PB_WT_STRING, F_RS_SCOPE_SPANS) ||
        !pb_encode_varint(&s, ss_body) ||
        !pb_write(&s, scope, scope_len)) {
        rc = PDT_EINTERNAL;
    }
    for (i = 0; rc == PDT_OK && i < n; i++)
        if (!put_span(&s, recs[i], bodies[i]))
            rc = PDT_EINTERNAL;
    if (rc == PDT_OK && s.bytes_written != total)
        rc = PDT_EINTERNAL;
    pdti_buf_free(&bodies_heap);
    if (rc != PDT_OK)
        return pdti_err(rc, "encoder size mismatch: %s",
                        PB_GET_ERROR(&s));
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
