/*
 * Internal, floor 5: the P/D request object, shared by request.c (its
 * lifecycle: pool, begin, marks, end, free), request_attr.c (the legs'
 * outcomes and the caller's attributes) and breakdown.c (the breakdown and
 * the summary attributes it leaves on the spans). One calling thread at a
 * time uses a request.
 */
#ifndef PDTI_REQUEST_H
#define PDTI_REQUEST_H

#include <stdint.h>
#include <string.h>

#include "pdtrace/request.h"
#include "attr.h"
#include "error.h"
#include "handle.h"
#include "metrics.h"
#include "rec.h"
#include "span.h"
#include "tracer_data.h"

#define PDTI_TAG_SPAN_ATTR 0x4a
#define PDTI_PFX "llm_d.pd_proxy."
#define PDTI_REQUEST_ID_MAX 255
#define PDTI_CONNECTOR_MAX 63
#define PDTI_MODEL_MAX PDTI_METRICS_MODEL_MAX
#define PDTI_REASON_MAX 255
#define PDTI_TENANT_MAX 255
#define PDTI_TARGET_MAX 4096
#define PDTI_MAX_PREFILL_ATTEMPTS 8
#define PDTI_FREE_REQS_MAX 1024
#define PDTI_FUTURE_SLACK_NS 1000000000ull

struct pdt_request {
    uint32_t magic;        /* PDTI_MAGIC_REQUEST while usable (handle.h) */
    struct pdt_request *next_free;
    pdti_buf summary;      /* scratch: encoded summary attributes (kept) */
    /* Records taken with the request for its prefill and decode spans, so
     * that starting them needs no lock; given back if unused. */
    pdti_rec *spare[2];
    /* Everything from here to `root` is reset at begin. */
    pdt_tracer *tracer;
    uint8_t next_prefill_id[8]; /* reserved for the next prefill attempt */
    uint8_t decode_id[8];       /* reserved for the decode span */
    pdti_rec *old_prefill[PDTI_MAX_PREFILL_ATTEMPTS];
    unsigned n_old_prefill;
    unsigned prefill_attempts;
    int prefill_live;      /* `prefill` holds an attempt not yet finished */
    int prefill_leg_set;
    int decode_leg_set;
    int decode_live;
    int record;            /* record even if unsampled (tail rules) */
    int mode;
    int ended;
    int error;
    int response_set;
    int response_error_type; /* error.type recorded on the root */
    int leg_failed;        /* a leg span was marked ERROR */
    unsigned tenant_idx;   /* metrics tenant label (pdti_metrics_tenant) */
    uint64_t a, ps, pe, ps_cur, ds, f, l, e; /* marks, 0 = unset */
    int64_t tokens_counted;
    int tokens_seen;
    int64_t usage_in, usage_out, usage_cached;
    uint64_t coarse_ok;    /* timestamps up to this need no clock check */
    /* Strings: only their first byte is reset at begin. */
    char request_id[PDTI_REQUEST_ID_MAX + 1];
    char connector[PDTI_CONNECTOR_MAX + 1];
    char model[PDTI_MODEL_MAX + 1]; /* gen_ai.request.model */
    char reason[PDTI_REASON_MAX + 1];
    char tenant[PDTI_TENANT_MAX + 1]; /* llm_d.tenant */
    /* Spans last: initialised by pdti_span_init(), not by memset. */
    pdt_span root;
    pdt_span prefill;      /* the latest prefill attempt */
    pdt_span decode;
};

/* The entry check of a function that takes a request: one compare for a
 * live request; PDT_EINVAL for NULL or a freed request (handle.h). */
static inline int pdti_request_live(const pdt_request *req, const char *fn)
{
    if (req == NULL)
        return pdti_err(PDT_EINVAL, "%s: request is NULL", fn);
    if (req->magic != PDTI_MAGIC_REQUEST)
        return pdti_handle_bad(fn, "request", req->magic);
    return PDT_OK;
}

static inline int pdti_request_usable(const pdt_request *req)
{
    int rc = pdti_request_live(req, "pdt_request_*");

    if (rc != PDT_OK)
        return rc;
    if (req->ended)
        return pdti_err(PDT_ESTATE, "request already ended");
    return PDT_OK;
}

static inline double pdti_ms_between(uint64_t from, uint64_t to)
{
    return (double)(to - from) / 1e6;
}

/* The library's own attributes: literal keys, count limit honoured. */
static inline void pdti_req_put_strn(pdt_tracer *t, pdti_rec *r, const char *key,
                     size_t klen, const char *v, size_t vlen)
{
    if (pdti_rec_attr_room(t, r) == PDT_OK &&
        pdti_attr_str_lit(t, &r->attrs, PDTI_TAG_SPAN_ATTR, key, klen, v, vlen)
            == PDT_OK)
        r->nattrs++;
}

static inline void pdti_req_put_str(pdt_tracer *t, pdti_rec *r, const char *key, size_t klen,
                    const char *v)
{
    pdti_req_put_strn(t, r, key, klen, v, strlen(v));
}

static inline void pdti_req_put_int(pdt_tracer *t, pdti_rec *r, const char *key, size_t klen,
                    int64_t v)
{
    if (pdti_rec_attr_room(t, r) == PDT_OK &&
        pdti_attr_int_lit(&r->attrs, PDTI_TAG_SPAN_ATTR, key, klen, v) == PDT_OK)
        r->nattrs++;
}

static inline void pdti_req_put_bool(pdt_tracer *t, pdti_rec *r, const char *key, size_t klen,
                     int v)
{
    if (pdti_rec_attr_room(t, r) == PDT_OK &&
        pdti_attr_bool_lit(&r->attrs, PDTI_TAG_SPAN_ATTR, key, klen, v) == PDT_OK)
        r->nattrs++;
}

/* The span of a leg (NULL: none open, or not a leg). */
static inline pdt_span *pdti_request_leg_span(pdt_request *req, int leg)
{
    if (pdti_request_live(req, "pdt_request_span") != PDT_OK)
        return NULL;
    switch (leg) {
    case PDT_LEG_REQUEST:
        return &req->root;
    case PDT_LEG_PREFILL:
        return req->prefill_live ? &req->prefill : NULL;
    case PDT_LEG_DECODE:
        return req->decode_live ? &req->decode : NULL;
    default:
        return NULL;
    }
}

/* The breakdown of an ended request (breakdown.c). */
void pdti_request_breakdown(const pdt_request *req, pdt_breakdown *bd);
/* The breakdown and the request's labels as attributes of the root and
 * decode spans, the breakdown's attributes encoded once (breakdown.c). */
void pdti_request_summary(pdt_request *req, const pdt_breakdown *bd);

#endif
