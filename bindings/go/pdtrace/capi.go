package pdtrace

// This file is the only one that calls C. Every libpdtrace function that
// can fail is called through a small shim below, which on failure copies
// pdt_last_error() into a malloc'd string inside the same C call, so the
// message is the one of that failure even if the goroutine moves to another
// OS thread right after. Go strings are passed as _GoString_ (pointer and
// length, borrowed for the duration of the call only); the shims copy them
// to NUL-terminated storage where the C API needs it.

/*
#cgo pkg-config: libpdtrace
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pdtrace.h>

#if PDT_VERSION_MAJOR != 0 || PDT_VERSION_MINOR < 1
#error "this Go binding needs libpdtrace 0.x with x >= 1 (pdtrace/version.h)"
#endif

// The result of a shim: a status and, on failure, the message read from
// pdt_last_error() in the same call (malloc'd; the Go side frees it).
typedef struct pdtg_res {
    int rc;
    char *msg;
} pdtg_res;

static char *pdtg_dup(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    char *d = malloc(n + 1);
    if (d != NULL) {
        if (n != 0)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static pdtg_res pdtg_result(int rc)
{
    pdtg_res r;
    r.rc = rc;
    r.msg = rc != PDT_OK ? pdtg_dup(pdt_last_error()) : NULL;
    return r;
}

static pdtg_res pdtg_nomem(void)
{
    pdtg_res r;
    r.rc = PDT_ENOMEM;
    r.msg = pdtg_dup("out of memory copying a string argument");
    return r;
}

// A Go string made NUL-terminated: short ones on the C stack, long ones
// on the heap. With nullable set, an empty string becomes NULL.
#define PDTG_STACK_STR 192
typedef struct pdtg_cs {
    char *p;
    char buf[PDTG_STACK_STR];
} pdtg_cs;

static int pdtg_cs_init(pdtg_cs *c, _GoString_ s, int nullable)
{
    size_t n = _GoStringLen(s);
    if (n == 0 && nullable) {
        c->p = NULL;
        return 1;
    }
    c->p = n < sizeof(c->buf) ? c->buf : malloc(n + 1);
    if (c->p == NULL)
        return 0;
    if (n != 0)
        memcpy(c->p, _GoStringPtr(s), n);
    c->p[n] = '\0';
    return 1;
}

static void pdtg_cs_free(pdtg_cs *c)
{
    if (c->p != NULL && c->p != c->buf)
        free(c->p);
}

// ---- tracer ----------------------------------------------------------------

extern void pdtgoLog(uintptr_t handle, int level, char *message);

static void pdtg_log_tramp(void *ud, int level, const char *message)
{
    pdtgoLog((uintptr_t)ud, level, (char *)message);
}

typedef struct pdtg_open_res {
    int rc;
    char *msg;
    pdt_tracer *tracer;
} pdtg_open_res;

// opts is a C-allocated struct whose strings are C-allocated.
static pdtg_open_res pdtg_tracer_open(pdt_tracer_options *opts,
                                      uintptr_t log_handle)
{
    pdtg_open_res r;
    pdtg_res e;
    if (opts != NULL && log_handle != 0) {
        opts->log_fn = pdtg_log_tramp;
        opts->log_userdata = (void *)log_handle;
    }
    r.tracer = NULL;
    e = pdtg_result(pdt_tracer_open(&r.tracer, opts));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

static pdt_tracer_options *pdtg_options_new(void)
{
    pdt_tracer_options *o = malloc(sizeof(*o));
    if (o != NULL)
        pdt_tracer_options_init(o, sizeof(*o));
    return o;
}

static void pdtg_options_free(pdt_tracer_options *o)
{
    if (o == NULL)
        return;
    free((char *)o->service_name);
    free((char *)o->resource_attributes);
    free((char *)o->endpoint);
    free((char *)o->headers);
    free((char *)o->console_path);
    free((char *)o->ca_file);
    free((char *)o->client_cert);
    free((char *)o->client_key);
    free((char *)o->spool_dir);
    free(o);
}

typedef struct pdtg_count_res {
    int rc;
    char *msg;
    uint64_t count;
} pdtg_count_res;

static pdtg_count_res pdtg_tracer_flush(pdt_tracer *t, int64_t timeout_ms)
{
    pdtg_count_res r;
    pdtg_res e;
    r.count = 0;
    e = pdtg_result(pdt_tracer_flush(t, timeout_ms, &r.count));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

static pdtg_count_res pdtg_tracer_close(pdt_tracer *t, int64_t timeout_ms)
{
    pdtg_count_res r;
    pdtg_res e;
    r.count = 0;
    e = pdtg_result(pdt_tracer_close(t, timeout_ms, &r.count));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

typedef struct pdtg_stats_res {
    int rc;
    char *msg;
    pdt_stats st;
} pdtg_stats_res;

static pdtg_stats_res pdtg_tracer_stats(pdt_tracer *t)
{
    pdtg_stats_res r;
    pdtg_res e;
    memset(&r.st, 0, sizeof(r.st));
    r.st.size = sizeof(r.st);
    e = pdtg_result(pdt_tracer_stats(t, &r.st));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

// ---- requests --------------------------------------------------------------

typedef struct pdtg_begin_res {
    int rc;
    char *msg;
    pdt_request *req;
    int id_rc;     // status of pdt_request_set_id, if an id was given
    char *id_msg;
} pdtg_begin_res;

// Begins a request and, in the same call, sets its id (if id is not
// empty) and the http.request.method and url.path attributes (if not
// empty).
static pdtg_begin_res pdtg_request_begin(pdt_tracer *t, _GoString_ tp,
                                         _GoString_ ts, uint64_t arrival,
                                         _GoString_ id, _GoString_ method,
                                         _GoString_ path)
{
    pdtg_begin_res r;
    pdtg_res e;
    pdtg_cs ctp, cts, c;
    memset(&r, 0, sizeof(r));
    if (!pdtg_cs_init(&ctp, tp, 1))
        goto nomem;
    if (!pdtg_cs_init(&cts, ts, 1)) {
        pdtg_cs_free(&ctp);
        goto nomem;
    }
    e = pdtg_result(pdt_request_begin(&r.req, t, ctp.p, cts.p, arrival));
    pdtg_cs_free(&ctp);
    pdtg_cs_free(&cts);
    r.rc = e.rc;
    r.msg = e.msg;
    if (r.rc != PDT_OK)
        return r;
    if (_GoStringLen(id) != 0) {
        if (pdtg_cs_init(&c, id, 0)) {
            e = pdtg_result(pdt_request_set_id(r.req, c.p));
            pdtg_cs_free(&c);
        } else {
            e = pdtg_nomem();
        }
        r.id_rc = e.rc;
        r.id_msg = e.msg;
    }
    if (_GoStringLen(method) != 0 || _GoStringLen(path) != 0) {
        pdt_span *root = pdt_request_span(r.req, PDT_LEG_REQUEST);
        if (_GoStringLen(method) != 0)
            pdt_span_set_strn(root, "http.request.method",
                              _GoStringPtr(method), _GoStringLen(method));
        if (_GoStringLen(path) != 0)
            pdt_span_set_strn(root, "url.path", _GoStringPtr(path),
                              _GoStringLen(path));
    }
    return r;
nomem:
    e = pdtg_nomem();
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

static pdtg_res pdtg_request_set_id(pdt_request *req, _GoString_ id)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, id, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_id(req, c.p));
    pdtg_cs_free(&c);
    return r;
}

static pdtg_res pdtg_request_set_mode(pdt_request *req, int mode,
                                      _GoString_ reason)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, reason, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_mode(req, mode, c.p));
    pdtg_cs_free(&c);
    return r;
}

static pdtg_res pdtg_request_set_connector(pdt_request *req, _GoString_ name)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, name, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_connector(req, c.p));
    pdtg_cs_free(&c);
    return r;
}

static pdtg_res pdtg_request_mark(pdt_request *req, int mark, uint64_t ts)
{
    return pdtg_result(pdt_request_mark(req, mark, ts));
}

static pdtg_res pdtg_request_tokens(pdt_request *req, uint64_t ts,
                                    uint32_t count)
{
    return pdtg_result(pdt_request_tokens(req, ts, count));
}

static pdtg_res pdtg_request_set_usage(pdt_request *req, int64_t in,
                                       int64_t out, int64_t cached)
{
    return pdtg_result(pdt_request_set_usage(req, in, out, cached));
}

static pdtg_res pdtg_request_set_leg(pdt_request *req, int leg,
                                     _GoString_ target, int status,
                                     _GoString_ error_type)
{
    pdtg_cs ct, ce;
    pdtg_res r;
    if (!pdtg_cs_init(&ct, target, 1))
        return pdtg_nomem();
    if (!pdtg_cs_init(&ce, error_type, 1)) {
        pdtg_cs_free(&ct);
        return pdtg_nomem();
    }
    r = pdtg_result(pdt_request_set_leg(req, leg, ct.p, status, ce.p));
    pdtg_cs_free(&ct);
    pdtg_cs_free(&ce);
    return r;
}

static pdtg_res pdtg_request_set_response(pdt_request *req, int status,
                                          _GoString_ error_type)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, error_type, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_response(req, status, c.p));
    pdtg_cs_free(&c);
    return r;
}

// Attribute kinds for the typed setters below.
enum { PDTG_STR = 0, PDTG_INT = 1, PDTG_DOUBLE = 2, PDTG_BOOL = 3 };

// Sets one typed attribute on a span: kind selects the setter, and the
// matching one of sv / iv / dv is used. Event attributes when event != 0.
static int pdtg_span_attr(pdt_span *s, int event, const char *key, int kind,
                          _GoString_ sv, int64_t iv, double dv)
{
    if (event) {
        switch (kind) {
        case PDTG_STR: {
            pdtg_cs c;
            int rc;
            if (!pdtg_cs_init(&c, sv, 0))
                return -1;
            rc = pdt_span_event_set_str(s, key, c.p);
            pdtg_cs_free(&c);
            return rc;
        }
        case PDTG_INT:
            return pdt_span_event_set_int(s, key, iv);
        case PDTG_DOUBLE:
            return pdt_span_event_set_double(s, key, dv);
        default:
            return pdt_span_event_set_bool(s, key, (int)iv);
        }
    }
    switch (kind) {
    case PDTG_STR:
        return pdt_span_set_strn(s, key, _GoStringPtr(sv), _GoStringLen(sv));
    case PDTG_INT:
        return pdt_span_set_int(s, key, iv);
    case PDTG_DOUBLE:
        return pdt_span_set_double(s, key, dv);
    default:
        return pdt_span_set_bool(s, key, (int)iv);
    }
}

static pdtg_res pdtg_attr_common(pdt_span *s, int event, _GoString_ key,
                                 int kind, _GoString_ sv, int64_t iv,
                                 double dv)
{
    pdtg_cs ck;
    int rc;
    if (!pdtg_cs_init(&ck, key, 0))
        return pdtg_nomem();
    rc = pdtg_span_attr(s, event, ck.p, kind, sv, iv, dv);
    pdtg_cs_free(&ck);
    if (rc == -1)
        return pdtg_nomem();
    return pdtg_result(rc);
}

// Typed attribute on a request's span: leg is a pdt_leg. For the request
// span this goes through pdt_request_set_* (same checks), except strings,
// which go through pdt_span_set_strn() on the request span so that the
// value needs no copy.
static pdtg_res pdtg_request_attr(pdt_request *req, int leg, _GoString_ key,
                                  int kind, _GoString_ sv, int64_t iv,
                                  double dv)
{
    pdtg_cs ck;
    int rc;
    if (leg == PDT_LEG_REQUEST && kind != PDTG_STR) {
        if (!pdtg_cs_init(&ck, key, 0))
            return pdtg_nomem();
        if (kind == PDTG_INT)
            rc = pdt_request_set_int(req, ck.p, iv);
        else if (kind == PDTG_DOUBLE)
            rc = pdt_request_set_double(req, ck.p, dv);
        else
            rc = pdt_request_set_bool(req, ck.p, (int)iv);
        pdtg_cs_free(&ck);
        return pdtg_result(rc);
    }
    return pdtg_attr_common(pdt_request_span(req, leg), 0, key, kind, sv, iv,
                            dv);
}

static pdtg_res pdtg_request_event(pdt_request *req, int leg,
                                   _GoString_ name, uint64_t ts)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, name, 0))
        return pdtg_nomem();
    r = pdtg_result(pdt_span_add_event(pdt_request_span(req, leg), c.p, ts));
    pdtg_cs_free(&c);
    return r;
}

static pdtg_res pdtg_request_status(pdt_request *req, int leg, int code,
                                    _GoString_ msg)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, msg, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_span_set_status(pdt_request_span(req, leg), code,
                                        c.p));
    pdtg_cs_free(&c);
    return r;
}

typedef struct pdtg_inject_res {
    int rc;
    char *msg;
    char traceparent[PDT_TRACEPARENT_SIZE];
    const char *tracestate;
    const char *request_id;
} pdtg_inject_res;

static pdtg_inject_res pdtg_inject_out(int rc, const pdt_propagation *p)
{
    pdtg_inject_res r;
    pdtg_res e = pdtg_result(rc);
    r.rc = e.rc;
    r.msg = e.msg;
    memcpy(r.traceparent, p->traceparent, sizeof(r.traceparent));
    r.tracestate = p->tracestate;
    r.request_id = p->request_id;
    return r;
}

static pdtg_inject_res pdtg_request_inject(pdt_request *req, int leg)
{
    pdt_propagation p = PDT_PROPAGATION_INIT;
    return pdtg_inject_out(pdt_request_inject(req, leg, &p), &p);
}

typedef struct pdtg_end_res {
    int rc;
    char *msg;
    pdt_breakdown bd;
} pdtg_end_res;

static pdtg_end_res pdtg_request_end(pdt_request *req, uint64_t ts)
{
    pdtg_end_res r;
    pdtg_res e;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    e = pdtg_result(pdt_request_end(req, ts, &bd));
    r.rc = e.rc;
    r.msg = e.msg;
    r.bd = bd;
    return r;
}

typedef struct pdtg_ids {
    char trace_id[33];
    char span_id[17];
    int sampled;
} pdtg_ids;

static pdtg_ids pdtg_span_ids(const pdt_span *s)
{
    pdtg_ids r;
    memset(&r, 0, sizeof(r));
    if (pdt_span_ids(s, r.trace_id, r.span_id) != PDT_OK) {
        r.trace_id[0] = '\0';
        r.span_id[0] = '\0';
    }
    r.sampled = pdt_span_is_sampled(s);
    return r;
}

static pdtg_ids pdtg_request_ids(pdt_request *req, int leg)
{
    return pdtg_span_ids(pdt_request_span(req, leg));
}

// ---- batched calls ---------------------------------------------------------
//
// The shims below only sequence public calls, so that the Go side makes one
// cgo call where it would make several in a row. Each applies every step
// even if an earlier one failed and returns the first failure with the
// message of the last one (as pdt_request_set_attrs() does for entries).

// A C-allocated pdt_attr array and byte arena that the Go side fills before
// a batch call (Go strings are copied into the arena, so C never sees Go
// memory). Pooled on the Go side; grown here.
typedef struct pdtg_attrbuf {
    pdt_attr *attrs;
    size_t cap;
    char *arena;
    size_t arena_cap;
} pdtg_attrbuf;

static pdtg_attrbuf *pdtg_attrbuf_new(void)
{
    return calloc(1, sizeof(pdtg_attrbuf));
}

static void pdtg_attrbuf_free(pdtg_attrbuf *b)
{
    if (b == NULL)
        return;
    free(b->attrs);
    free(b->arena);
    free(b);
}

// Makes room for n attributes and `bytes` bytes of keys and values.
// Returns 0 when out of memory (the buffer is left as it was).
static int pdtg_attrbuf_reserve(pdtg_attrbuf *b, size_t n, size_t bytes)
{
    if (n > b->cap) {
        size_t c = n < 16 ? 16 : n;
        pdt_attr *a = realloc(b->attrs, c * sizeof(*a));
        if (a == NULL)
            return 0;
        b->attrs = a;
        b->cap = c;
    }
    if (bytes > b->arena_cap) {
        size_t c = bytes < 1024 ? 1024 : bytes;
        char *p = realloc(b->arena, c);
        if (p == NULL)
            return 0;
        b->arena = p;
        b->arena_cap = c;
    }
    return 1;
}

#define PDTG_STEP(call) do { int r_ = (call); if (rc == PDT_OK) rc = r_; } \
    while (0)

static pdtg_res pdtg_request_set_attrs(pdt_request *req, int leg,
                                       const pdtg_attrbuf *b, size_t n)
{
    return pdtg_result(pdt_request_set_attrs(req, leg, n ? b->attrs : NULL,
                                             n));
}

static pdtg_res pdtg_span_set_attrs(pdt_span *s, const pdtg_attrbuf *b,
                                    size_t n)
{
    return pdtg_result(pdt_span_set_attrs(s, n ? b->attrs : NULL, n));
}

static pdtg_res pdtg_request_set_model(pdt_request *req, _GoString_ model)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, model, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_model(req, c.p));
    pdtg_cs_free(&c);
    return r;
}

typedef struct pdtg_begin_with_res {
    pdtg_begin_res b;
    int set_rc;    // the first failure of the settings after begin
    char *set_msg;
} pdtg_begin_with_res;

// pdtg_request_begin, then set_connector, set_model (each when not empty)
// and the n attributes of b, in the same call.
static pdtg_begin_with_res pdtg_request_begin_with(
    pdt_tracer *t, _GoString_ tp, _GoString_ ts, uint64_t arrival,
    _GoString_ id, _GoString_ method, _GoString_ path, _GoString_ connector,
    _GoString_ model, const pdtg_attrbuf *b, size_t n)
{
    pdtg_begin_with_res w;
    pdtg_cs c;
    int rc = PDT_OK;
    w.b = pdtg_request_begin(t, tp, ts, arrival, id, method, path);
    w.set_rc = PDT_OK;
    w.set_msg = NULL;
    if (w.b.rc != PDT_OK)
        return w;
    if (_GoStringLen(connector) != 0) {
        if (pdtg_cs_init(&c, connector, 0)) {
            PDTG_STEP(pdt_request_set_connector(w.b.req, c.p));
            pdtg_cs_free(&c);
        } else {
            PDTG_STEP(PDT_ENOMEM);
        }
    }
    if (_GoStringLen(model) != 0) {
        if (pdtg_cs_init(&c, model, 0)) {
            PDTG_STEP(pdt_request_set_model(w.b.req, c.p));
            pdtg_cs_free(&c);
        } else {
            PDTG_STEP(PDT_ENOMEM);
        }
    }
    if (n != 0)
        PDTG_STEP(pdt_request_set_attrs(w.b.req, PDT_LEG_REQUEST, b->attrs,
                                        n));
    if (rc != PDT_OK) {
        pdtg_res e = pdtg_result(rc);
        w.set_rc = e.rc;
        w.set_msg = e.msg;
    }
    return w;
}

// inject the leg's headers, then record the SENT mark.
static pdtg_inject_res pdtg_request_send(pdt_request *req, int leg, int mark,
                                         uint64_t ts)
{
    pdt_propagation p = PDT_PROPAGATION_INIT;
    int rc = pdt_request_inject(req, leg, &p);
    PDTG_STEP(pdt_request_mark(req, mark, ts));
    return pdtg_inject_out(rc, &p);
}

// a mark, then set_leg.
static pdtg_res pdtg_request_leg_done(pdt_request *req, int leg, int mark,
                                      uint64_t ts, _GoString_ target,
                                      int status, _GoString_ error_type)
{
    pdtg_cs ct, ce;
    int rc = pdt_request_mark(req, mark, ts);
    if (!pdtg_cs_init(&ct, target, 1))
        return pdtg_nomem();
    if (!pdtg_cs_init(&ce, error_type, 1)) {
        pdtg_cs_free(&ct);
        return pdtg_nomem();
    }
    PDTG_STEP(pdt_request_set_leg(req, leg, ct.p, status, ce.p));
    pdtg_cs_free(&ct);
    pdtg_cs_free(&ce);
    return pdtg_result(rc);
}

typedef struct pdtg_finish_res {
    int rc;
    char *msg;
    pdt_breakdown bd;
    int end_rc;    // the status of pdt_request_end itself
} pdtg_finish_res;

// set_leg (decode when leg_set), set_usage (when usage_set), set_response
// (when status != 0), then end.
static pdtg_finish_res pdtg_request_finish(pdt_request *req, uint64_t end_ns,
                                           int status, _GoString_ error_type,
                                           int leg_set, _GoString_ target,
                                           int leg_status,
                                           _GoString_ leg_error,
                                           int usage_set, int64_t in,
                                           int64_t out, int64_t cached)
{
    pdtg_finish_res r;
    pdtg_res e;
    pdtg_cs c1, c2;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    int rc = PDT_OK;
    if (leg_set) {
        if (pdtg_cs_init(&c1, target, 1)) {
            if (pdtg_cs_init(&c2, leg_error, 1)) {
                PDTG_STEP(pdt_request_set_leg(req, PDT_LEG_DECODE, c1.p,
                                              leg_status, c2.p));
                pdtg_cs_free(&c2);
            } else {
                PDTG_STEP(PDT_ENOMEM);
            }
            pdtg_cs_free(&c1);
        } else {
            PDTG_STEP(PDT_ENOMEM);
        }
    }
    if (usage_set)
        PDTG_STEP(pdt_request_set_usage(req, in, out, cached));
    if (status != 0) {
        if (pdtg_cs_init(&c1, error_type, 1)) {
            PDTG_STEP(pdt_request_set_response(req, status, c1.p));
            pdtg_cs_free(&c1);
        } else {
            PDTG_STEP(PDT_ENOMEM);
        }
    }
    r.end_rc = pdt_request_end(req, end_ns, &bd);
    PDTG_STEP(r.end_rc);
    e = pdtg_result(rc);
    r.rc = e.rc;
    r.msg = e.msg;
    r.bd = bd;
    return r;
}

// ---- metrics ---------------------------------------------------------------

typedef struct pdtg_metrics_res {
    int rc;
    char *msg;
    size_t len;
} pdtg_metrics_res;

// buf is Go memory without Go pointers, used for the call only.
static pdtg_metrics_res pdtg_tracer_metrics(pdt_tracer *t, char *buf,
                                            size_t cap)
{
    pdtg_metrics_res r;
    pdtg_res e;
    r.len = 0;
    e = pdtg_result(pdt_tracer_metrics(t, buf, cap, &r.len));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

// ---- generic spans ---------------------------------------------------------

typedef struct pdtg_start_res {
    int rc;
    char *msg;
    pdt_span *span;
} pdtg_start_res;

static pdtg_start_res pdtg_span_start(pdt_tracer *t, _GoString_ name,
                                      int kind, pdt_span *parent,
                                      _GoString_ tp, _GoString_ ts,
                                      uint64_t start)
{
    pdtg_start_res r;
    pdtg_res e;
    pdtg_cs cn, ctp, cts;
    r.span = NULL;
    if (!pdtg_cs_init(&cn, name, 0))
        goto nomem;
    if (!pdtg_cs_init(&ctp, tp, 1)) {
        pdtg_cs_free(&cn);
        goto nomem;
    }
    if (!pdtg_cs_init(&cts, ts, 1)) {
        pdtg_cs_free(&cn);
        pdtg_cs_free(&ctp);
        goto nomem;
    }
    e = pdtg_result(pdt_span_start(&r.span, t, cn.p, kind, parent, ctp.p,
                                   cts.p, start));
    pdtg_cs_free(&cn);
    pdtg_cs_free(&ctp);
    pdtg_cs_free(&cts);
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
nomem:
    e = pdtg_nomem();
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

static pdtg_res pdtg_span_attr_set(pdt_span *s, int event, _GoString_ key,
                                   int kind, _GoString_ sv, int64_t iv,
                                   double dv)
{
    return pdtg_attr_common(s, event, key, kind, sv, iv, dv);
}

static pdtg_res pdtg_span_add_event(pdt_span *s, _GoString_ name, uint64_t ts)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, name, 0))
        return pdtg_nomem();
    r = pdtg_result(pdt_span_add_event(s, c.p, ts));
    pdtg_cs_free(&c);
    return r;
}

static pdtg_res pdtg_span_set_status(pdt_span *s, int code, _GoString_ msg)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, msg, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_span_set_status(s, code, c.p));
    pdtg_cs_free(&c);
    return r;
}

static pdtg_inject_res pdtg_span_inject(pdt_span *s)
{
    pdt_propagation p = PDT_PROPAGATION_INIT;
    return pdtg_inject_out(pdt_span_inject(s, &p), &p);
}

static pdtg_res pdtg_span_end(pdt_span *s, uint64_t ts)
{
    return pdtg_result(pdt_span_end(s, ts));
}

typedef struct pdtg_parse_res {
    int rc;
    char *msg;
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;
} pdtg_parse_res;

static pdtg_parse_res pdtg_traceparent_parse(_GoString_ v)
{
    pdtg_parse_res r;
    pdtg_res e;
    pdtg_cs c;
    memset(&r, 0, sizeof(r));
    if (!pdtg_cs_init(&c, v, 1)) {
        e = pdtg_nomem();
    } else {
        e = pdtg_result(pdt_traceparent_parse(c.p, r.trace_id, r.span_id,
                                              &r.flags));
        pdtg_cs_free(&c);
    }
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}
*/
import "C"

import (
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// headerVersion is the version of the pdtrace headers this package was
// compiled against.
const headerVersion = C.PDT_VERSION_STRING

func resultErr(op string, rc C.int, msg *C.char) error {
	if rc == C.PDT_OK {
		return nil
	}
	e := &Error{Op: op, Status: Status(rc)}
	if msg != nil {
		e.Message = C.GoString(msg)
		C.free(unsafe.Pointer(msg))
	}
	return e
}

func check(op string, r C.pdtg_res) error {
	if r.rc == C.PDT_OK {
		return nil
	}
	return resultErr(op, r.rc, r.msg)
}

// A Go string may hold a NUL byte; a C string ends at the first one, so
// the library would silently see only what comes before it. Every string
// handed to C NUL-terminated is checked here first and refused with
// StatusInvalid. (Attribute string values and the method and path of
// Begin travel with their length, NULs included, and are not checked.)
func nulErr(op, what string) error {
	return &Error{Op: op, Status: StatusInvalid,
		Message: what + " contains a NUL byte: C strings end at the first NUL, so the library would see only what comes before it"}
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// checkNUL returns the error for the first of name/value pairs whose value
// holds a NUL, or nil.
func checkNUL(op string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if hasNUL(pairs[i+1]) {
			return nulErr(op, pairs[i])
		}
	}
	return nil
}

func cNow() Time { return Time(C.pdt_now_ns()) }

func cVersion() (string, uint32) {
	return C.GoString(C.pdt_version()), uint32(C.pdt_version_number())
}

func cStatusString(s Status) string { return C.GoString(C.pdt_status_str(C.int(s))) }

func cbool(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// ---- tracer -----------------------------------------------------------------

func cstrOrNil(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

func millis(d time.Duration) C.int64_t {
	if d == 0 {
		return 0
	}
	ms := d.Milliseconds()
	if ms == 0 {
		ms = 1 // a positive duration under 1 ms is not "unset"
	}
	return C.int64_t(ms)
}

func tristate(b *bool) C.int {
	switch {
	case b == nil:
		return 0
	case *b:
		return 1
	default:
		return -1
	}
}

func cOpen(o *Options, logHandle uintptr) (*C.pdt_tracer, error) {
	if o != nil {
		if err := checkNUL("pdt_tracer_open", "ServiceName", o.ServiceName,
			"ResourceAttributes", o.ResourceAttributes, "Endpoint", o.Endpoint,
			"Headers", o.Headers, "ConsolePath", o.ConsolePath, "CAFile", o.CAFile,
			"ClientCert", o.ClientCert, "ClientKey", o.ClientKey,
			"SpoolDir", o.SpoolDir); err != nil {
			return nil, err
		}
	}
	if o == nil {
		r := C.pdtg_tracer_open(nil, 0)
		return r.tracer, resultErr("pdt_tracer_open", r.rc, r.msg)
	}
	co := C.pdtg_options_new()
	if co == nil {
		return nil, &Error{Op: "pdt_tracer_open", Status: StatusNoMemory, Message: "out of memory for options"}
	}
	defer C.pdtg_options_free(co)
	co.service_name = cstrOrNil(o.ServiceName)
	co.resource_attributes = cstrOrNil(o.ResourceAttributes)
	co.exporter = C.int(o.Exporter)
	co.endpoint = cstrOrNil(o.Endpoint)
	co.headers = cstrOrNil(o.Headers)
	co.compression = C.int(o.Compression)
	co.timeout_ms = millis(o.Timeout)
	co.console_path = cstrOrNil(o.ConsolePath)
	co.ca_file = cstrOrNil(o.CAFile)
	co.client_cert = cstrOrNil(o.ClientCert)
	co.client_key = cstrOrNil(o.ClientKey)
	co.schedule_delay_ms = millis(o.ScheduleDelay)
	co.export_timeout_ms = millis(o.ExportTimeout)
	co.max_queue_size = C.int64_t(o.MaxQueueSize)
	co.max_export_batch_size = C.int64_t(o.MaxExportBatchSize)
	co.attribute_count_limit = C.int64_t(o.AttributeCountLimit)
	co.attribute_value_length_limit = C.int64_t(o.AttributeValueLengthLimit)
	co.sampler = C.int(o.Sampler)
	if o.SamplerRatio != nil {
		co.sampler_ratio = C.double(*o.SamplerRatio)
		co.sampler_ratio_set = 1
	}
	co.tail_ttft_threshold_ms = C.double(float64(o.TailTTFTThreshold) / 1e6)
	co.tail_keep_errors = tristate(o.TailKeepErrors)
	co.disabled = tristate(o.Disabled)
	if o.IgnoreEnvironment {
		co.ignore_environment = 1
	}
	co.spool_dir = cstrOrNil(o.SpoolDir)
	co.spool_max_bytes = C.int64_t(o.SpoolMaxBytes)
	co.max_concurrent_exports = C.int64_t(o.MaxConcurrentExports)
	co.compression_level = C.int(o.CompressionLevel)
	r := C.pdtg_tracer_open(co, C.uintptr_t(logHandle))
	return r.tracer, resultErr("pdt_tracer_open", r.rc, r.msg)
}

func cFlush(t *C.pdt_tracer, timeoutMs int64) (uint64, error) {
	r := C.pdtg_tracer_flush(t, C.int64_t(timeoutMs))
	return uint64(r.count), resultErr("pdt_tracer_flush", r.rc, r.msg)
}

func cClose(t *C.pdt_tracer, timeoutMs int64) (uint64, error) {
	r := C.pdtg_tracer_close(t, C.int64_t(timeoutMs))
	return uint64(r.count), resultErr("pdt_tracer_close", r.rc, r.msg)
}

func cStats(t *C.pdt_tracer) (Stats, error) {
	r := C.pdtg_tracer_stats(t)
	if err := resultErr("pdt_tracer_stats", r.rc, r.msg); err != nil {
		return Stats{}, err
	}
	s := &r.st
	return Stats{
		SpansStarted:        uint64(s.spans_started),
		SpansEnded:          uint64(s.spans_ended),
		SpansNotSampled:     uint64(s.spans_not_sampled),
		SpansExported:       uint64(s.spans_exported),
		SpansRejected:       uint64(s.spans_rejected),
		DroppedQueueFull:    uint64(s.dropped_queue_full),
		DroppedExportFailed: uint64(s.dropped_export_failed),
		DroppedShutdown:     uint64(s.dropped_shutdown),
		DroppedDisabled:     uint64(s.dropped_disabled),
		ExportRequests:      uint64(s.export_requests),
		ExportRetries:       uint64(s.export_retries),
		ExportFailures:      uint64(s.export_failures),
		BytesSent:           uint64(s.bytes_sent),
		QueueDepth:          uint64(s.queue_depth),
		AttributesDropped:   uint64(s.attributes_dropped),
		ValuesTruncated:     uint64(s.values_truncated),
		StringsSanitized:    uint64(s.strings_sanitized),
		RequestsCompleted:   uint64(s.requests_completed),
		SpansSpooled:        uint64(s.spans_spooled),
		SpansReplayed:       uint64(s.spans_replayed),
		SpoolDropped:        uint64(s.spool_dropped),
		SpoolCorrupt:        uint64(s.spool_corrupt),
	}, nil
}

// ---- requests ---------------------------------------------------------------

type tracerHandle = *C.pdt_tracer

type reqHandle = *C.pdt_request

// cBegin returns the request, the begin error and, separately, the error
// of setting the request id.
// An id holding a NUL is refused like any id the library refuses: the
// request begins with a generated one.
func cBegin(t *C.pdt_tracer, tp, ts string, arrival Time, id, method, path string) (reqHandle, error, error) {
	if err := checkNUL("pdt_request_begin", "traceparent", tp, "tracestate", ts); err != nil {
		return nil, err, nil
	}
	var idErr error
	if hasNUL(id) {
		id, idErr = "", nulErr("pdt_request_set_id", "request id")
	}
	r := C.pdtg_request_begin(t, tp, ts, C.uint64_t(arrival), id, method, path)
	if r.rc != C.PDT_OK {
		return nil, resultErr("pdt_request_begin", r.rc, r.msg), nil
	}
	if idErr != nil {
		return r.req, nil, idErr
	}
	return r.req, nil, resultErr("pdt_request_set_id", C.int(r.id_rc), r.id_msg)
}

func cReqSetID(h reqHandle, id string) error {
	if err := checkNUL("pdt_request_set_id", "request id", id); err != nil {
		return err
	}
	return check("pdt_request_set_id", C.pdtg_request_set_id(h, id))
}

func cReqID(h reqHandle) string { return C.GoString(C.pdt_request_id(h)) }

func cReqSetMode(h reqHandle, m Mode, reason string) error {
	if err := checkNUL("pdt_request_set_mode", "reason", reason); err != nil {
		return err
	}
	return check("pdt_request_set_mode", C.pdtg_request_set_mode(h, C.int(m), reason))
}

func cReqSetConnector(h reqHandle, name string) error {
	if err := checkNUL("pdt_request_set_connector", "connector", name); err != nil {
		return err
	}
	return check("pdt_request_set_connector", C.pdtg_request_set_connector(h, name))
}

func cReqMark(h reqHandle, m mark, at Time) error {
	return check("pdt_request_mark", C.pdtg_request_mark(h, C.int(m), C.uint64_t(at)))
}

func cReqTokens(h reqHandle, at Time, n uint32) error {
	return check("pdt_request_tokens", C.pdtg_request_tokens(h, C.uint64_t(at), C.uint32_t(n)))
}

func cReqSetUsage(h reqHandle, in, out, cached int64) error {
	return check("pdt_request_set_usage", C.pdtg_request_set_usage(h, C.int64_t(in), C.int64_t(out), C.int64_t(cached)))
}

func cReqSetLeg(h reqHandle, leg Leg, target string, status int, errType string) error {
	if err := checkNUL("pdt_request_set_leg", "target", target, "error type", errType); err != nil {
		return err
	}
	return check("pdt_request_set_leg", C.pdtg_request_set_leg(h, C.int(leg), target, C.int(status), errType))
}

func cReqSetResponse(h reqHandle, status int, errType string) error {
	if err := checkNUL("pdt_request_set_response", "error type", errType); err != nil {
		return err
	}
	return check("pdt_request_set_response", C.pdtg_request_set_response(h, C.int(status), errType))
}

type attrKind = C.int

const (
	kindStr    = C.PDTG_STR
	kindInt    = C.PDTG_INT
	kindDouble = C.PDTG_DOUBLE
	kindBool   = C.PDTG_BOOL
)

func cReqAttr(h reqHandle, leg Leg, key string, kind attrKind, sv string, iv int64, dv float64) error {
	if err := checkNUL("pdt_request_set_attribute", "attribute key", key); err != nil {
		return err
	}
	return check("pdt_request_set_attribute", C.pdtg_request_attr(h, C.int(leg), key, kind, sv, C.int64_t(iv), C.double(dv)))
}

func cReqEvent(h reqHandle, leg Leg, name string, at Time) error {
	if err := checkNUL("pdt_span_add_event", "event name", name); err != nil {
		return err
	}
	return check("pdt_span_add_event", C.pdtg_request_event(h, C.int(leg), name, C.uint64_t(at)))
}

func cReqStatus(h reqHandle, leg Leg, code SpanStatus, msg string) error {
	if err := checkNUL("pdt_span_set_status", "status message", msg); err != nil {
		return err
	}
	return check("pdt_span_set_status", C.pdtg_request_status(h, C.int(leg), C.int(code), msg))
}

// propagation is what an inject call gives back; the strings are borrowed
// C memory and must be copied before the handle goes away.
type propagation struct {
	traceparent string
	tracestate  *C.char
	requestID   *C.char
}

func injectResult(op string, r C.pdtg_inject_res) (propagation, error) {
	if err := resultErr(op, r.rc, r.msg); err != nil {
		return propagation{}, err
	}
	return propagation{
		traceparent: traceparentString(&r.traceparent),
		tracestate:  r.tracestate,
		requestID:   r.request_id,
	}, nil
}

func goStr(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

func cReqInject(h reqHandle, leg Leg) (propagation, error) {
	return injectResult("pdt_request_inject", C.pdtg_request_inject(h, C.int(leg)))
}

func msField(present C.uint32_t, bit C.uint32_t, v C.double) Millis {
	if present&bit == 0 {
		return Millis{}
	}
	return Millis{Value: float64(v), OK: true}
}

func cReqEnd(h reqHandle, at Time) (Breakdown, error) {
	r := C.pdtg_request_end(h, C.uint64_t(at))
	err := resultErr("pdt_request_end", r.rc, r.msg)
	return breakdownOf(&r.bd), err
}

func breakdownOf(bd *C.pdt_breakdown) Breakdown {
	p := bd.present
	return Breakdown{
		Queue:              msField(p, C.PDT_BD_QUEUE, bd.queue_ms),
		Prefill:            msField(p, C.PDT_BD_PREFILL, bd.prefill_ms),
		KVTransferOverhead: msField(p, C.PDT_BD_KV_TRANSFER, bd.kv_transfer_overhead_ms),
		DecodeTTFT:         msField(p, C.PDT_BD_DECODE_TTFT, bd.decode_ttft_ms),
		TrueTTFT:           msField(p, C.PDT_BD_TRUE_TTFT, bd.true_ttft_ms),
		DecodeDuration:     msField(p, C.PDT_BD_DECODE_DURATION, bd.decode_duration_ms),
		Total:              msField(p, C.PDT_BD_TOTAL, bd.total_ms),
		TPOT:               msField(p, C.PDT_BD_TPOT, bd.tpot_ms),
		OutputTokens:       int64(bd.output_tokens),
		Mode:               Mode(bd.mode),
		Error:              bd.error != 0,
		Sampled:            bd.sampled != 0,
	}
}

func cReqFree(h reqHandle) { C.pdt_request_free(h) }

func idsResult(r C.pdtg_ids) (traceID, spanID string, sampled bool) {
	return C.GoString(&r.trace_id[0]), C.GoString(&r.span_id[0]), r.sampled != 0
}

func cReqIDs(h reqHandle, leg Leg) (string, string, bool) {
	return idsResult(C.pdtg_request_ids(h, C.int(leg)))
}

// ---- generic spans ----------------------------------------------------------

type spanHandle = *C.pdt_span

func cSpanStart(t *C.pdt_tracer, name string, kind SpanKind, parent spanHandle, tp, ts string, start Time) (spanHandle, error) {
	if err := checkNUL("pdt_span_start", "span name", name, "traceparent", tp, "tracestate", ts); err != nil {
		return nil, err
	}
	r := C.pdtg_span_start(t, name, C.int(kind), parent, tp, ts, C.uint64_t(start))
	return r.span, resultErr("pdt_span_start", r.rc, r.msg)
}

func cSpanAttr(h spanHandle, event bool, key string, kind attrKind, sv string, iv int64, dv float64) error {
	op := "pdt_span_set_attribute"
	ev := C.int(0)
	if event {
		op, ev = "pdt_span_event_set_attribute", 1
		// Event string values have no length-counted setter.
		if kind == kindStr && hasNUL(sv) {
			return nulErr(op, "event attribute value")
		}
	}
	if hasNUL(key) {
		return nulErr(op, "attribute key")
	}
	return check(op, C.pdtg_span_attr_set(h, ev, key, kind, sv, C.int64_t(iv), C.double(dv)))
}

func cSpanEvent(h spanHandle, name string, at Time) error {
	if err := checkNUL("pdt_span_add_event", "event name", name); err != nil {
		return err
	}
	return check("pdt_span_add_event", C.pdtg_span_add_event(h, name, C.uint64_t(at)))
}

func cSpanStatus(h spanHandle, code SpanStatus, msg string) error {
	if err := checkNUL("pdt_span_set_status", "status message", msg); err != nil {
		return err
	}
	return check("pdt_span_set_status", C.pdtg_span_set_status(h, C.int(code), msg))
}

func cSpanInject(h spanHandle) (propagation, error) {
	return injectResult("pdt_span_inject", C.pdtg_span_inject(h))
}

func cSpanIDs(h spanHandle) (string, string, bool) { return idsResult(C.pdtg_span_ids(h)) }

func cSpanEnd(h spanHandle, at Time) error {
	return check("pdt_span_end", C.pdtg_span_end(h, C.uint64_t(at)))
}

func cSpanFree(h spanHandle) { C.pdt_span_free(h) }

func cParseTraceparent(v string) (tid [16]byte, sid [8]byte, flags byte, err error) {
	if hasNUL(v) {
		return tid, sid, 0, nulErr("pdt_traceparent_parse", "traceparent")
	}
	r := C.pdtg_traceparent_parse(v)
	if err = resultErr("pdt_traceparent_parse", r.rc, r.msg); err != nil {
		return
	}
	for i := range tid {
		tid[i] = byte(r.trace_id[i])
	}
	for i := range sid {
		sid[i] = byte(r.span_id[i])
	}
	return tid, sid, byte(r.flags), nil
}

// ---- batched calls ----------------------------------------------------------

// The pdt_attr_type values, checked against the header at compile time.
const (
	attrString = 1
	attrInt    = 2
	attrDouble = 3
	attrBool   = 4
)

var _ = [1]struct{}{}[attrString-C.PDT_ATTR_STRING+attrInt-C.PDT_ATTR_INT+
	attrDouble-C.PDT_ATTR_DOUBLE+attrBool-C.PDT_ATTR_BOOL]

// attrBuf owns a C pdtg_attrbuf. Buffers are pooled, so a batch call
// allocates nothing once the pool is warm; one that the pool drops is
// freed by its cleanup.
type attrBuf struct{ c *C.pdtg_attrbuf }

var attrPool = sync.Pool{New: func() any {
	b := &attrBuf{c: C.pdtg_attrbuf_new()}
	if b.c != nil {
		runtime.AddCleanup(b, func(c *C.pdtg_attrbuf) { C.pdtg_attrbuf_free(c) }, b.c)
	}
	return b
}}

var errAttrMemory = &Error{Op: "pdt_request_set_attrs", Status: StatusNoMemory,
	Message: "out of memory copying the attributes"}

// getAttrs copies attrs into a pooled C buffer: the pdt_attr array and,
// NUL-terminated, every key and string value. The caller puts it back.
func getAttrs(attrs []Attr) (*attrBuf, error) {
	b := attrPool.Get().(*attrBuf)
	if b.c == nil {
		return nil, errAttrMemory
	}
	if len(attrs) == 0 {
		return b, nil
	}
	size := 0
	for i := range attrs {
		if hasNUL(attrs[i].Key) {
			attrPool.Put(b)
			return nil, nulErr("pdt_request_set_attrs", "attribute key")
		}
		size += len(attrs[i].Key) + 1
		if attrs[i].kind == attrString {
			size += len(attrs[i].s)
		}
	}
	if C.pdtg_attrbuf_reserve(b.c, C.size_t(len(attrs)), C.size_t(size)) == 0 {
		attrPool.Put(b)
		return nil, errAttrMemory
	}
	ca := unsafe.Slice(b.c.attrs, len(attrs))
	arena := unsafe.Slice((*byte)(unsafe.Pointer(b.c.arena)), size)
	off := 0
	for i := range attrs {
		a, e := &attrs[i], &ca[i]
		e.key = (*C.char)(unsafe.Pointer(&arena[off]))
		off += copy(arena[off:], a.Key)
		nul := off
		arena[off] = 0
		off++
		e._type = C.int(a.kind)
		e.str, e.str_len, e.i, e.d = nil, 0, 0, 0
		switch a.kind {
		case attrString:
			// An empty value points at the key's NUL: any valid address.
			e.str = (*C.char)(unsafe.Pointer(&arena[nul]))
			if len(a.s) != 0 {
				e.str = (*C.char)(unsafe.Pointer(&arena[off]))
				off += copy(arena[off:], a.s)
			}
			e.str_len = C.size_t(len(a.s))
		case attrDouble:
			e.d = C.double(a.f)
		default:
			e.i = C.int64_t(a.n)
		}
	}
	return b, nil
}

func cReqSetAttrs(h reqHandle, leg Leg, attrs []Attr) error {
	b, err := getAttrs(attrs)
	if err != nil {
		return err
	}
	r := C.pdtg_request_set_attrs(h, C.int(leg), b.c, C.size_t(len(attrs)))
	attrPool.Put(b)
	return check("pdt_request_set_attrs", r)
}

func cSpanSetAttrs(h spanHandle, attrs []Attr) error {
	b, err := getAttrs(attrs)
	if err != nil {
		return err
	}
	r := C.pdtg_span_set_attrs(h, b.c, C.size_t(len(attrs)))
	attrPool.Put(b)
	return check("pdt_span_set_attrs", r)
}

func cReqSetModel(h reqHandle, model string) error {
	if err := checkNUL("pdt_request_set_model", "model", model); err != nil {
		return err
	}
	return check("pdt_request_set_model", C.pdtg_request_set_model(h, model))
}

// cBeginWith is cBegin plus the connector, model and attributes, set in
// the same cgo call; setErr is the first of those settings that failed.
func cBeginWith(t *C.pdt_tracer, tp, ts string, arrival Time, id, method, path,
	connector, model string, attrs []Attr) (h reqHandle, err, idErr, setErr error) {
	if err := checkNUL("pdt_request_begin", "traceparent", tp, "tracestate", ts,
		"connector", connector, "model", model); err != nil {
		return nil, err, nil, nil
	}
	if hasNUL(id) {
		id, idErr = "", nulErr("pdt_request_set_id", "request id")
	}
	b, err := getAttrs(attrs)
	if err != nil {
		return nil, err, nil, nil
	}
	w := C.pdtg_request_begin_with(t, tp, ts, C.uint64_t(arrival), id, method, path,
		connector, model, b.c, C.size_t(len(attrs)))
	attrPool.Put(b)
	r := &w.b
	if r.rc != C.PDT_OK {
		return nil, resultErr("pdt_request_begin", r.rc, r.msg), nil, nil
	}
	if idErr == nil {
		idErr = resultErr("pdt_request_set_id", C.int(r.id_rc), r.id_msg)
	}
	return r.req, nil, idErr, resultErr("pdt_request_set_attrs", w.set_rc, w.set_msg)
}

// cReqSend injects the headers of a leg and records its SENT mark. The
// propagation is valid when its traceparent is not empty, even with an
// error (the mark's).
func cReqSend(h reqHandle, leg Leg, m mark, at Time) (propagation, error) {
	r := C.pdtg_request_send(h, C.int(leg), C.int(m), C.uint64_t(at))
	err := resultErr("pdt_request_mark", r.rc, r.msg)
	if r.traceparent[0] == 0 {
		return propagation{}, err
	}
	return propagation{
		traceparent: traceparentString(&r.traceparent),
		tracestate:  r.tracestate,
		requestID:   r.request_id,
	}, err
}

// traceparentString copies a traceparent out of a C result held on the Go
// stack (a cgo helper taking its address would move it to the heap).
func traceparentString(tp *[C.PDT_TRACEPARENT_SIZE]C.char) string {
	return string(unsafe.Slice((*byte)(unsafe.Pointer(&tp[0])), C.PDT_TRACEPARENT_SIZE-1))
}

func cReqLegDone(h reqHandle, leg Leg, m mark, at Time, target string, status int, errType string) error {
	if err := checkNUL("pdt_request_set_leg", "target", target, "error type", errType); err != nil {
		return err
	}
	return check("pdt_request_set_leg", C.pdtg_request_leg_done(h, C.int(leg), C.int(m),
		C.uint64_t(at), target, C.int(status), errType))
}

// cReqFinish returns the breakdown, the first error, and whether the
// request was ended (the breakdown is valid).
func cReqFinish(h reqHandle, at Time, o *Outcome) (Breakdown, error, bool) {
	if err := checkNUL("pdt_request_end", "ErrorType", o.ErrorType, "DecodeTarget", o.DecodeTarget,
		"DecodeErrorType", o.DecodeErrorType); err != nil {
		return Breakdown{}, err, false
	}
	legSet, usageSet := C.int(0), C.int(0)
	if o.DecodeStatus != 0 || o.DecodeErrorType != "" {
		legSet = 1
	}
	if o.Usage {
		usageSet = 1
	}
	r := C.pdtg_request_finish(h, C.uint64_t(at), C.int(o.Status), o.ErrorType,
		legSet, o.DecodeTarget, C.int(o.DecodeStatus), o.DecodeErrorType,
		usageSet, C.int64_t(o.InputTokens), C.int64_t(o.OutputTokens),
		C.int64_t(o.CachedInputTokens))
	err := resultErr("pdt_request_end", r.rc, r.msg)
	return breakdownOf(&r.bd), err, r.end_rc == C.PDT_OK || r.end_rc == C.PDT_ERANGE
}

// cMetrics renders the metrics into buf, a Go buffer without Go pointers
// that C uses for the call only. On StatusBufferSize, n is the size
// needed.
func cMetrics(t *C.pdt_tracer, buf []byte) (n int, err error) {
	r := C.pdtg_tracer_metrics(t, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return int(r.len), resultErr("pdt_tracer_metrics", r.rc, r.msg)
}
