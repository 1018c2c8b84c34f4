/* Generic spans: start, attributes, events, status, inject, end, free. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/span.h"
#include "attr.h"
#include "clock.h"
#include "error.h"
#include "exporter.h"
#include "ids.h"
#include "propagation.h"
#include "rec.h"
#include "span.h"
#include "tracer.h"
#include "tracer_data.h"
#include "wire.h"

#define TAG_SPAN_ATTR 0x4a   /* Span.attributes */
#define TAG_EVENT_ATTR 0x1a  /* Event.attributes */
#define TAG_SPAN_EVENT 0x5a  /* Span.events */

/* Timestamps more than this far ahead of now are refused. */
#define PDTI_FUTURE_SLACK_NS 1000000000ull

static int check_time(uint64_t *ts, const char *what)
{
    uint64_t now;

    if (*ts == 0) {
        *ts = pdt_now_ns();
        return PDT_OK;
    }
    now = pdti_coarse_now_ns();
    if (*ts > now + PDTI_FUTURE_SLACK_NS)
        return pdti_err(PDT_ERANGE,
                        "%s is %.3f s in the future; timestamps are "
                        "pdt_now_ns() nanoseconds", what,
                        (double)(*ts - now) / 1e9);
    return PDT_OK;
}

int pdti_span_init(pdt_span *s, pdt_tracer *t, const char *name,
                   size_t name_lit_len, int kind, const pdt_span *parent,
                   const char *traceparent, const char *tracestate,
                   uint64_t start_ns, int record, pdti_rec **spare)
{
    uint8_t parent_id[8];
    uint8_t pflags = 0;
    int has_parent = 0, remote = 0, rc;
    pdti_rec *r;

    if (kind < PDT_SPAN_KIND_INTERNAL || kind > PDT_SPAN_KIND_CONSUMER)
        return pdti_err(PDT_EINVAL, "span kind %d is not a pdt_span_kind",
                        kind);
    rc = check_time(&start_ns, "start time");
    if (rc != PDT_OK)
        return rc;

    memset(s, 0, offsetof(pdt_span, tracestate));
    s->tracestate[0] = '\0';
    s->magic = PDTI_MAGIC_SPAN;
    s->tracer = t;
    s->start_ns = start_ns;
    if (parent != NULL) {
        memcpy(s->trace_id, parent->trace_id, 16);
        memcpy(parent_id, parent->span_id, 8);
        pflags = parent->trace_flags;
        has_parent = 1;
        strcpy(s->tracestate, parent->tracestate);
    } else if (traceparent != NULL &&
               pdti_traceparent_parse(traceparent, strlen(traceparent),
                                      s->trace_id, parent_id, &pflags)
                   == PDT_OK) {
        has_parent = 1;
        remote = 1;
        if (tracestate != NULL)
            pdti_tracestate_normalize(tracestate, strlen(tracestate),
                                      s->tracestate, sizeof(s->tracestate));
    } else {
        if (traceparent != NULL)
            pdti_log(&t->log, PDT_LOG_DEBUG,
                     "malformed inbound traceparent ignored; new trace");
        pdti_new_trace_id(s->trace_id);
    }
    pdti_new_span_id(s->span_id);
    s->sampled = has_parent
                     ? pdti_sample_with_parent(t, s->trace_id, pflags & 1,
                                               remote)
                     : pdti_sample_root(t, s->trace_id);
    /* Only the flags of Level 2 go out: sampled, and random-trace-id,
     * which a parent's trace id keeps as it came and a trace id of ours
     * (random: ids.c) always has. Unknown flags are cleared. */
    s->trace_flags = (uint8_t)((has_parent ? pflags & PDTI_FLAG_RANDOM
                                           : PDTI_FLAG_RANDOM) |
                               (s->sampled ? PDTI_FLAG_SAMPLED : 0));
    PDTI_COUNT(t, spans_started, 1);

    if (!t->export_enabled || !(s->sampled || record))
        return PDT_OK;
    if (spare != NULL && *spare != NULL) {
        r = *spare;
        *spare = NULL;
    } else if ((r = pdti_tracer_rec(t)) == NULL) {
        return pdti_err(PDT_ENOMEM, "out of memory for a span");
    }
    memcpy(r->trace_id, s->trace_id, 16);
    memcpy(r->span_id, s->span_id, 8);
    if (has_parent)
        memcpy(r->parent_id, parent_id, 8);
    r->has_parent = has_parent;
    r->parent_remote = remote;
    r->trace_flags = s->trace_flags;
    r->kind = kind;
    r->start_unix_ns = pdti_unix_ns(t, start_ns);
    if ((name_lit_len != 0
             ? pdti_buf_append(&r->name, name, name_lit_len) != 0
             : pdti_put_utf8_limit(t, &r->name, name, strlen(name),
                                   t->cfg.value_cap) != PDT_OK) ||
        (s->tracestate[0] != '\0' &&
         pdti_buf_append(&r->tracestate, s->tracestate,
                         strlen(s->tracestate)) != 0)) {
        pdti_rec_release(&t->pool, r);
        return pdti_err(PDT_ENOMEM, "out of memory for a span");
    }
    s->rec = r;
    return PDT_OK;
}

/* Frames the open event (if any) into the events buffer. */
static int close_event(pdt_tracer *t, pdti_rec *r)
{
    size_t body;
    uint8_t *p;

    (void)t;
    if (!r->ev_open)
        return PDT_OK;
    body = r->ev_cur.len;
    if (r->ev_dropped_attrs)
        body += 1 + pdti_varint_len(r->ev_dropped_attrs);
    if (pdti_buf_reserve(&r->events, 1 + 10 + body) != 0)
        return pdti_err(PDT_ENOMEM, "out of memory");
    p = r->events.data + r->events.len;
    *p++ = TAG_SPAN_EVENT;
    p = pdti_put_varint(p, body);
    memcpy(p, r->ev_cur.data, r->ev_cur.len);
    p += r->ev_cur.len;
    if (r->ev_dropped_attrs) {
        *p++ = 0x20; /* Event.dropped_attributes_count */
        p = pdti_put_varint(p, r->ev_dropped_attrs);
    }
    r->events.len = (size_t)(p - r->events.data);
    r->ev_open = 0;
    pdti_buf_reset(&r->ev_cur);
    return PDT_OK;
}

pdti_rec *pdti_span_finish(pdt_span *s, uint64_t end_ns)
{
    pdti_rec *r = s->rec;

    s->ended = 1;
    s->rec = NULL;
    PDTI_COUNT(s->tracer, spans_ended, 1);
    if (r == NULL) {
        /* Sampled but never recorded: the SDK is disabled or the
         * exporter is "none". */
        if (s->sampled && !s->tracer->export_enabled)
            PDTI_COUNT(s->tracer, dropped_disabled, 1);
        else
            PDTI_COUNT(s->tracer, spans_not_sampled, 1);
        return NULL;
    }
    if (end_ns < s->start_ns)
        end_ns = s->start_ns;
    if (close_event(s->tracer, r) != PDT_OK) {
        /* Out of memory: the open event is lost, the span is kept. */
        r->ev_open = 0;
        r->dropped_events++;
    }
    r->end_unix_ns = pdti_unix_ns(s->tracer, end_ns);
    return r;
}

int pdt_span_start(pdt_span **out, pdt_tracer *tracer, const char *name,
                   int kind, const pdt_span *parent, const char *traceparent,
                   const char *tracestate, uint64_t start_ns)
{
    pdt_span *s;
    int rc;

    if (out == NULL)
        return pdti_err(PDT_EINVAL, "out is NULL");
    *out = NULL;
    if ((rc = pdti_tracer_live(tracer, "pdt_span_start")) != PDT_OK)
        return rc;
    if (name == NULL || name[0] == '\0')
        return pdti_err(PDT_EINVAL, "span name is NULL or empty");
    if (__atomic_load_n(&tracer->stopping, __ATOMIC_ACQUIRE))
        return pdti_err(PDT_ECLOSED, "tracer is closing");
    pdti_fork_check(tracer);
    s = malloc(sizeof(*s));
    if (s == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory for a span");
    rc = pdti_span_init(s, tracer, name, 0, kind, parent, traceparent,
                        tracestate, start_ns, 0, NULL);
    if (rc != PDT_OK) {
        free(s);
        return rc;
    }
    pdti_tracer_ref(tracer);
    *out = s;
    return PDT_OK;
}

int pdti_span_attr(pdt_span *s, int kind, const char *key, const void *val,
                   size_t vlen, int64_t v)
{
    pdt_tracer *t;
    pdti_rec *r;
    double d;
    int rc;

    if ((rc = pdti_span_live(s, "pdt_span_set_*")) != PDT_OK)
        return rc;
    if (key == NULL || key[0] == '\0')
        return pdti_err(PDT_EINVAL, "attribute key is NULL or empty");
    if (s->ended)
        return pdti_err(PDT_ESTATE, "span already ended");
    r = s->rec;
    if (r == NULL)
        return PDT_OK; /* not recorded: accept and ignore */
    t = s->tracer;
    if ((int64_t)r->nattrs >= t->cfg.attr_count_limit)
        return pdti_rec_attr_room(t, r); /* counts it, PDT_ELIMIT */
    switch (kind) {
    case PDTI_ATTR_STR:
        rc = pdti_attr_str(t, &r->attrs, TAG_SPAN_ATTR, key,
                           val != NULL ? (const char *)val : "", vlen);
        break;
    case PDTI_ATTR_INT:
        rc = pdti_attr_int(t, &r->attrs, TAG_SPAN_ATTR, key, v);
        break;
    case PDTI_ATTR_DOUBLE:
        memcpy(&d, &v, sizeof(d));
        rc = pdti_attr_double(t, &r->attrs, TAG_SPAN_ATTR, key, d);
        break;
    default:
        rc = pdti_attr_bool(t, &r->attrs, TAG_SPAN_ATTR, key, v != 0);
        break;
    }
    if (rc == PDT_OK)
        r->nattrs++;
    return rc;
}

int pdt_span_set_strn(pdt_span *span, const char *key, const char *value,
                      size_t len)
{
    if (value == NULL && len != 0)
        return pdti_err(PDT_EINVAL, "value is NULL");
    return pdti_span_attr(span, PDTI_ATTR_STR, key, value, len, 0);
}

int pdt_span_set_str(pdt_span *span, const char *key, const char *value)
{
    if (value == NULL)
        return pdti_err(PDT_EINVAL, "value is NULL");
    return pdti_span_attr(span, PDTI_ATTR_STR, key, value, strlen(value), 0);
}

int pdt_span_set_int(pdt_span *span, const char *key, int64_t value)
{
    return pdti_span_attr(span, PDTI_ATTR_INT, key, NULL, 0, value);
}

int pdt_span_set_double(pdt_span *span, const char *key, double value)
{
    int64_t bits;

    memcpy(&bits, &value, sizeof(bits));
    return pdti_span_attr(span, PDTI_ATTR_DOUBLE, key, NULL, 0, bits);
}

int pdt_span_set_bool(pdt_span *span, const char *key, int value)
{
    return pdti_span_attr(span, PDTI_ATTR_BOOL, key, NULL, 0, value != 0);
}

int pdt_span_set_attrs(pdt_span *span, const pdt_attr *attrs, size_t n)
{
    int last = PDT_OK, rc;
    size_t i;

    PDTI_SPAN_CHECK(span, "pdt_span_set_attrs");
    if (n == 0)
        return PDT_OK;
    if (attrs == NULL)
        return pdti_err(PDT_EINVAL, "attrs is NULL");
    if (span->ended)
        return pdti_err(PDT_ESTATE, "span already ended");
    for (i = 0; i < n; i++) {
        const pdt_attr *a = &attrs[i];
        switch (a->type) {
        case PDT_ATTR_STRING:
            if (a->str == NULL) {
                rc = pdti_err(PDT_EINVAL, "attribute %zu: string is NULL", i);
                break;
            }
            rc = pdt_span_set_strn(span, a->key, a->str,
                                   a->str_len == (size_t)-1 ? strlen(a->str)
                                                            : a->str_len);
            break;
        case PDT_ATTR_INT:
            rc = pdt_span_set_int(span, a->key, a->i);
            break;
        case PDT_ATTR_DOUBLE:
            rc = pdt_span_set_double(span, a->key, a->d);
            break;
        case PDT_ATTR_BOOL:
            rc = pdt_span_set_bool(span, a->key, a->i != 0);
            break;
        default:
            rc = pdti_err(PDT_EINVAL, "attribute %zu: type %d is not a "
                                      "pdt_attr_type", i, a->type);
            break;
        }
        if (rc != PDT_OK)
            last = rc; /* the last refusal, matching pdt_last_error() */
    }
    return last;
}

int pdt_span_add_event(pdt_span *span, const char *name, uint64_t time_ns)
{
    pdti_rec *r;
    uint8_t *p;
    uint64_t unix_ns;
    int rc, i;

    PDTI_SPAN_CHECK(span, "pdt_span_add_event");
    if (name == NULL || name[0] == '\0')
        return pdti_err(PDT_EINVAL, "event name is NULL or empty");
    if (span->ended)
        return pdti_err(PDT_ESTATE, "span already ended");
    rc = check_time(&time_ns, "event time");
    if (rc != PDT_OK)
        return rc;
    r = span->rec;
    if (r == NULL)
        return PDT_OK;
    if (r->nevents >= PDTI_MAX_EVENTS) {
        r->dropped_events++;
        return pdti_err(PDT_ELIMIT, "event limit (%d) reached",
                        PDTI_MAX_EVENTS);
    }
    rc = close_event(span->tracer, r);
    if (rc != PDT_OK)
        return rc;
    if (pdti_buf_reserve(&r->ev_cur, 9) != 0)
        return pdti_err(PDT_ENOMEM, "out of memory");
    p = r->ev_cur.data;
    *p++ = 0x09; /* Event.time_unix_nano, fixed64 */
    unix_ns = pdti_unix_ns(span->tracer, time_ns);
    for (i = 0; i < 8; i++) {
        *p++ = (uint8_t)unix_ns;
        unix_ns >>= 8;
    }
    r->ev_cur.len = 9;
    rc = pdti_put_string_field(span->tracer, &r->ev_cur, 0x12, name,
                               strlen(name), span->tracer->cfg.value_cap);
    if (rc != PDT_OK) {
        pdti_buf_reset(&r->ev_cur);
        return rc;
    }
    r->ev_open = 1;
    r->ev_nattrs = 0;
    r->ev_dropped_attrs = 0;
    r->nevents++;
    return PDT_OK;
}

/* Checks for the event setters; returns the record or NULL with *rc. */
static pdti_rec *event_writable(pdt_span *s, const char *key, int *rc)
{
    pdti_rec *r;

    if ((*rc = pdti_span_live(s, "pdt_span_event_set_*")) != PDT_OK)
        return NULL;
    if (key == NULL || key[0] == '\0') {
        *rc = pdti_err(PDT_EINVAL, "key is NULL or empty");
        return NULL;
    }
    if (s->ended) {
        *rc = pdti_err(PDT_ESTATE, "span already ended");
        return NULL;
    }
    r = s->rec;
    if (r == NULL)
        return NULL;
    if (!r->ev_open) {
        *rc = pdti_err(PDT_ESTATE, "no event to add attributes to; call "
                                   "pdt_span_add_event() first");
        return NULL;
    }
    if ((int64_t)r->ev_nattrs >= s->tracer->cfg.attr_count_limit) {
        r->ev_dropped_attrs++;
        PDTI_COUNT(s->tracer, attributes_dropped, 1);
        *rc = pdti_err(PDT_ELIMIT, "event attribute count limit reached");
        return NULL;
    }
    return r;
}

int pdt_span_event_set_str(pdt_span *span, const char *key,
                           const char *value)
{
    int rc;
    pdti_rec *r;

    if (value == NULL)
        return pdti_err(PDT_EINVAL, "value is NULL");
    r = event_writable(span, key, &rc);
    if (r == NULL)
        return rc;
    rc = pdti_attr_str(span->tracer, &r->ev_cur, TAG_EVENT_ATTR, key, value,
                       strlen(value));
    if (rc == PDT_OK)
        r->ev_nattrs++;
    return rc;
}

int pdt_span_event_set_int(pdt_span *span, const char *key, int64_t value)
{
    int rc;
    pdti_rec *r = event_writable(span, key, &rc);

    if (r == NULL)
        return rc;
    rc = pdti_attr_int(span->tracer, &r->ev_cur, TAG_EVENT_ATTR, key, value);
    if (rc == PDT_OK)
        r->ev_nattrs++;
    return rc;
}

int pdt_span_event_set_double(pdt_span *span, const char *key, double value)
{
    int rc;
    pdti_rec *r = event_writable(span, key, &rc);

    if (r == NULL)
        return rc;
    rc = pdti_attr_double(span->tracer, &r->ev_cur, TAG_EVENT_ATTR, key,
                          value);
    if (rc == PDT_OK)
        r->ev_nattrs++;
    return rc;
}

int pdt_span_event_set_bool(pdt_span *span, const char *key, int value)
{
    int rc;
    pdti_rec *r = event_writable(span, key, &rc);

    if (r == NULL)
        return rc;
    rc = pdti_attr_bool(span->tracer, &r->ev_cur, TAG_EVENT_ATTR, key, value);
    if (rc == PDT_OK)
        r->ev_nattrs++;
    return rc;
}

int pdt_span_set_status(pdt_span *span, int code, const char *message)
{
    pdti_rec *r;

    PDTI_SPAN_CHECK(span, "pdt_span_set_status");
    if (code < PDT_SPAN_STATUS_UNSET || code > PDT_SPAN_STATUS_ERROR)
        return pdti_err(PDT_EINVAL, "status %d is not a pdt_span_status",
                        code);
    if (span->ended)
        return pdti_err(PDT_ESTATE, "span already ended");
    r = span->rec;
    if (r == NULL)
        return PDT_OK;
    r->status_code = code;
    pdti_buf_reset(&r->status_msg);
    if (code == PDT_SPAN_STATUS_ERROR && message != NULL)
        return pdti_put_utf8_limit(span->tracer, &r->status_msg, message,
                                   strlen(message),
                                   span->tracer->cfg.value_cap);
    return PDT_OK;
}

int pdt_span_inject(const pdt_span *span, pdt_propagation *out)
{
    PDTI_SPAN_CHECK(span, "pdt_span_inject");
    if (out == NULL)
        return pdti_err(PDT_EINVAL, "out is NULL");
    if (out->size < PDTI_PROPAGATION_V0_1_SIZE)
        return pdti_err(PDT_EINVAL, "out->size is too small");
    pdti_traceparent_format(out->traceparent, span->trace_id, span->span_id,
                            span->trace_flags);
    out->tracestate = span->tracestate[0] != '\0' ? span->tracestate : NULL;
    out->request_id = NULL;
    return PDT_OK;
}

int pdt_span_ids(const pdt_span *span, char *trace_buf, char *span_buf)
{
    PDTI_SPAN_CHECK(span, "pdt_span_ids");
    if (trace_buf != NULL)
        pdti_hex(trace_buf, span->trace_id, 16);
    if (span_buf != NULL)
        pdti_hex(span_buf, span->span_id, 8);
    return PDT_OK;
}

int pdt_span_is_sampled(const pdt_span *span)
{
    return span != NULL && span->magic == PDTI_MAGIC_SPAN && span->sampled;
}

int pdt_span_end(pdt_span *span, uint64_t end_ns)
{
    pdti_rec *r;
    int rc = PDT_OK;

    PDTI_SPAN_CHECK(span, "pdt_span_end");
    if (span->in_request)
        return pdti_err(PDT_ESTATE, "a request's span is ended by "
                                    "pdt_request_end()");
    if (span->ended)
        return pdti_err(PDT_ESTATE, "span already ended");
    if (end_ns == 0) {
        end_ns = pdt_now_ns();
    } else if (end_ns < span->start_ns) {
        rc = pdti_err(PDT_ERANGE, "end time before start; clamped to start");
    } else if (check_time(&end_ns, "end time") != PDT_OK) {
        rc = PDT_ERANGE;
        end_ns = pdt_now_ns();
    }
    r = pdti_span_finish(span, end_ns);
    if (r != NULL) {
        r->next = NULL;
        pdti_enqueue(span->tracer, r, 1);
    }
    return rc;
}

void pdt_span_free(pdt_span *span)
{
    pdt_tracer *t;

    if (span == NULL)
        return;
    if (span->magic != PDTI_MAGIC_SPAN) {
        pdti_handle_bad("pdt_span_free", "span", span->magic);
        return;
    }
    if (span->in_request)
        return;
    if (!span->ended)
        pdt_span_end(span, 0);
    t = span->tracer;
    /* Poisoned and parked: a second free is refused (handle.h). */
    span->magic = PDTI_MAGIC_FREED;
    pdti_quarantine(span, free);
    pdti_tracer_unref(t);
}

int pdt_traceparent_parse(const char *value, uint8_t trace_id[16],
                          uint8_t span_id[8], uint8_t *flags)
{
    uint8_t t[16], s[8], f;

    if (value == NULL)
        return pdti_err(PDT_EINVAL, "traceparent is NULL");
    if (pdti_traceparent_parse(value, strlen(value), t, s, &f) != PDT_OK)
        return pdti_err(PDT_EPARSE, "malformed traceparent");
    if (trace_id != NULL)
        memcpy(trace_id, t, 16);
    if (span_id != NULL)
        memcpy(span_id, s, 8);
    if (flags != NULL)
        *flags = f;
    return PDT_OK;
}
