/*
 * Internal, floor 4: the span handle and what span.c gives request.c.
 */
#ifndef PDTI_SPAN_H
#define PDTI_SPAN_H

#include <stddef.h>
#include <stdint.h>

#include "pdtrace/request.h"
#include "pdtrace/span.h"
#include "error.h"
#include "handle.h"
#include "rec.h"
#include "tracer_data.h"

/* Span handle. For requests, the handles live inside pdt_request. One
 * calling thread at a time uses it; rec belongs to that thread until the
 * span ends and its record goes to the queue. */
struct pdt_span {
    uint32_t magic;           /* PDTI_MAGIC_SPAN while usable (handle.h) */
    pdt_tracer *tracer;
    pdti_rec *rec;            /* NULL when not recorded or ended */
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t trace_flags;
    int sampled;
    int ended;
    int in_request;           /* owned by a pdt_request: no end/free */
    uint64_t start_ns;        /* monotonic */
    char tracestate[PDTI_TRACESTATE_MAX + 1];
};

/* The sizes of the caller-filled structs as of 0.1.0: the smallest the
 * library accepts. Fields added later are written only when out->size
 * covers them. */
#define PDTI_PROPAGATION_V0_1_SIZE \
    (offsetof(pdt_propagation, request_id) + sizeof(const char *))
#define PDTI_BREAKDOWN_V0_1_SIZE \
    (offsetof(pdt_breakdown, sampled) + sizeof(int))

/* The entry check of a function that takes a span: one compare for a
 * live span; PDT_EINVAL for NULL or a freed span (handle.h). */
static inline int pdti_span_live(const pdt_span *s, const char *fn)
{
    if (s == NULL)
        return pdti_err(PDT_EINVAL, "%s: span is NULL", fn);
    if (s->magic != PDTI_MAGIC_SPAN)
        return pdti_handle_bad(fn, "span", s->magic);
    return PDT_OK;
}

#define PDTI_SPAN_CHECK(s, fn)                                  \
    do {                                                        \
        int pdti_rc_ = pdti_span_live((s), (fn));               \
        if (pdti_rc_ != PDT_OK)                                 \
            return pdti_rc_;                                    \
    } while (0)

/* Span internals shared with request.c. name_lit_len > 0: name is a
 * library literal of that length (no UTF-8 check). spare: a record to use
 * instead of taking one from the pool (consumed: *spare is set to NULL),
 * or NULL. */
int pdti_span_init(pdt_span *s, pdt_tracer *t, const char *name,
                   size_t name_lit_len, int kind, const pdt_span *parent,
                   const char *traceparent, const char *tracestate,
                   uint64_t start_ns, int record, pdti_rec **spare);
/* Freezes the span at end_ns: returns the record (caller enqueues). */
pdti_rec *pdti_span_finish(pdt_span *s, uint64_t end_ns);

/* Attribute kinds of pdti_span_attr(). */
enum { PDTI_ATTR_STR = 1, PDTI_ATTR_INT, PDTI_ATTR_DOUBLE, PDTI_ATTR_BOOL };

/* The attribute setters of spans (and of a request's root span): checks,
 * count limit, then the encoding. v: int, bool, or the bits of a double. */
int pdti_span_attr(pdt_span *s, int kind, const char *key, const void *val,
                   size_t vlen, int64_t v);

#endif
