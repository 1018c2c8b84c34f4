/*
 * pdtg.c: the C shims of the Go binding (see pdtg.h). They only copy
 * strings, sequence public calls and read the last error; the library
 * does the work.
 */
#include <stdlib.h>
#include <string.h>

#include "pdtg.h"

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

/*
 * A Go string made NUL-terminated: short ones on the C stack, long ones
 * on the heap. With nullable set, an empty string becomes NULL.
 */
#define PDTG_STACK_STR 192
typedef struct pdtg_cs {
    char *p;
    char buf[PDTG_STACK_STR];
} pdtg_cs;

static int pdtg_cs_init(pdtg_cs *c, pdtg_str s, int nullable)
{
    size_t n = s.n;
    if (n == 0 && nullable) {
        c->p = NULL;
        return 1;
    }
    c->p = n < sizeof(c->buf) ? c->buf : malloc(n + 1);
    if (c->p == NULL)
        return 0;
    if (n != 0)
        memcpy(c->p, s.p, n);
    c->p[n] = '\0';
    return 1;
}

static void pdtg_cs_free(pdtg_cs *c)
{
    if (c->p != NULL && c->p != c->buf)
        free(c->p);
}

/* ---- tracer ---------------------------------------------------------------- */

extern void pdtgoLog(uintptr_t handle, int level, char *message);

static void pdtg_log_tramp(void *ud, int level, const char *message)
{
    pdtgoLog((uintptr_t)ud, level, (char *)message);
}

/* opts is a C-allocated struct whose strings are C-allocated. */
pdtg_open_res pdtg_tracer_open(pdt_tracer_options *opts, uintptr_t log_handle)
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

pdt_tracer_options *pdtg_options_new(void)
{
    pdt_tracer_options *o = malloc(sizeof(*o));
    if (o != NULL)
        pdt_tracer_options_init(o, sizeof(*o));
    return o;
}

void pdtg_options_free(pdt_tracer_options *o)
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
    free((char *)o->metrics_tenants);
    free(o);
}

pdtg_count_res pdtg_tracer_flush(pdt_tracer *t, int64_t timeout_ms)
{
    pdtg_count_res r;
    pdtg_res e;
    r.count = 0;
    e = pdtg_result(pdt_tracer_flush(t, timeout_ms, &r.count));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

pdtg_count_res pdtg_tracer_close(pdt_tracer *t, int64_t timeout_ms)
{
    pdtg_count_res r;
    pdtg_res e;
    r.count = 0;
    e = pdtg_result(pdt_tracer_close(t, timeout_ms, &r.count));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

pdtg_stats_res pdtg_tracer_stats(pdt_tracer *t)
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

/* ---- requests -------------------------------------------------------------- */

/*
 * Begins a request and, in the same call, sets its id (if id is not
 * empty) and the http.request.method and url.path attributes (if not
 * empty).
 */
pdtg_begin_res pdtg_request_begin(pdt_tracer *t, pdtg_str tp, pdtg_str ts,
                                  uint64_t arrival, pdtg_str id,
                                  pdtg_str method, pdtg_str path)
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
    if (id.n != 0) {
        if (pdtg_cs_init(&c, id, 0)) {
            e = pdtg_result(pdt_request_set_id(r.req, c.p));
            pdtg_cs_free(&c);
        } else {
            e = pdtg_nomem();
        }
        r.id_rc = e.rc;
        r.id_msg = e.msg;
    }
    if (method.n != 0 || path.n != 0) {
        pdt_span *root = pdt_request_span(r.req, PDT_LEG_REQUEST);
        if (method.n != 0)
            pdt_span_set_strn(root, "http.request.method",
                              method.p, method.n);
        if (path.n != 0)
            pdt_span_set_strn(root, "url.path", path.p,
                              path.n);
    }
    return r;
nomem:
    e = pdtg_nomem();
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

pdtg_res pdtg_request_set_id(pdt_request *req, pdtg_str id)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, id, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_id(req, c.p));
    pdtg_cs_free(&c);
    return r;
}

pdtg_res pdtg_request_set_mode(pdt_request *req, int mode, pdtg_str reason)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, reason, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_mode(req, mode, c.p));
    pdtg_cs_free(&c);
    return r;
}

pdtg_res pdtg_request_set_connector(pdt_request *req, pdtg_str name)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, name, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_connector(req, c.p));
    pdtg_cs_free(&c);
    return r;
}

pdtg_res pdtg_request_mark(pdt_request *req, int mark, uint64_t ts)
{
    return pdtg_result(pdt_request_mark(req, mark, ts));
}

pdtg_res pdtg_request_tokens(pdt_request *req, uint64_t ts, uint32_t count)
{
    return pdtg_result(pdt_request_tokens(req, ts, count));
}

pdtg_res pdtg_request_set_usage(pdt_request *req, int64_t in, int64_t out,
                                int64_t cached)
{
    return pdtg_result(pdt_request_set_usage(req, in, out, cached));
}

pdtg_res pdtg_request_set_leg(pdt_request *req, int leg, pdtg_str target,
                              int status, pdtg_str error_type)
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

pdtg_res pdtg_request_set_response(pdt_request *req, int status,
                                   pdtg_str error_type)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, error_type, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_response(req, status, c.p));
    pdtg_cs_free(&c);
    return r;
}

/*
 * Sets one typed attribute on a span: kind selects the setter, and the
 * matching one of sv / iv / dv is used. Event attributes when event != 0.
 */
static int pdtg_span_attr(pdt_span *s, int event, const char *key, int kind,
                          pdtg_str sv, int64_t iv, double dv)
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
        return pdt_span_set_strn(s, key, sv.p, sv.n);
    case PDTG_INT:
        return pdt_span_set_int(s, key, iv);
    case PDTG_DOUBLE:
        return pdt_span_set_double(s, key, dv);
    default:
        return pdt_span_set_bool(s, key, (int)iv);
    }
}

static pdtg_res pdtg_attr_common(pdt_span *s, int event, pdtg_str key,
                                 int kind, pdtg_str sv, int64_t iv,
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

/*
 * Typed attribute on a request's span: leg is a pdt_leg. For the request
 * span this goes through pdt_request_set_* (same checks), except strings,
 * which go through pdt_span_set_strn() on the request span so that the
 * value needs no copy.
 */
pdtg_res pdtg_request_attr(pdt_request *req, int leg, pdtg_str key, int kind,
                           pdtg_str sv, int64_t iv, double dv)
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

pdtg_res pdtg_request_event(pdt_request *req, int leg, pdtg_str name,
                            uint64_t ts)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, name, 0))
        return pdtg_nomem();
    r = pdtg_result(pdt_span_add_event(pdt_request_span(req, leg), c.p, ts));
    pdtg_cs_free(&c);
    return r;
}

pdtg_res pdtg_request_status(pdt_request *req, int leg, int code, pdtg_str msg)
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

pdtg_inject_res pdtg_request_inject(pdt_request *req, int leg)
{
    pdt_propagation p = PDT_PROPAGATION_INIT;
    return pdtg_inject_out(pdt_request_inject(req, leg, &p), &p);
}

pdtg_end_res pdtg_request_end(pdt_request *req, uint64_t ts)
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

pdtg_ids pdtg_span_ids(const pdt_span *s)
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

pdtg_ids pdtg_request_ids(pdt_request *req, int leg)
{
    return pdtg_span_ids(pdt_request_span(req, leg));
}

/*
 * ---- batched calls ---------------------------------------------------------
 *
 * The shims below only sequence public calls, so that the Go side makes one
 * cgo call where it would make several in a row. Each applies every step
 * even if an earlier one failed and returns the first failure with the
 * message of the last one (as pdt_request_set_attrs() does for entries).
 */

pdtg_attrbuf *pdtg_attrbuf_new(void)
{
    return calloc(1, sizeof(pdtg_attrbuf));
}

void pdtg_attrbuf_free(pdtg_attrbuf *b)
{
    if (b == NULL)
        return;
    free(b->attrs);
    free(b->arena);
    free(b);
}

/*
 * Makes room for n attributes and `bytes` bytes of keys and values.
 * Returns 0 when out of memory (the buffer is left as it was).
 */
int pdtg_attrbuf_reserve(pdtg_attrbuf *b, size_t n, size_t bytes)
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

pdtg_res pdtg_request_set_attrs(pdt_request *req, int leg,
                                const pdtg_attrbuf *b, size_t n)
{
    return pdtg_result(pdt_request_set_attrs(req, leg, n ? b->attrs : NULL,
                                             n));
}

pdtg_res pdtg_span_set_attrs(pdt_span *s, const pdtg_attrbuf *b, size_t n)
{
    return pdtg_result(pdt_span_set_attrs(s, n ? b->attrs : NULL, n));
}

pdtg_res pdtg_request_set_model(pdt_request *req, pdtg_str model)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, model, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_model(req, c.p));
    pdtg_cs_free(&c);
    return r;
}

pdtg_res pdtg_request_set_tenant(pdt_request *req, pdtg_str tenant)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, tenant, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_request_set_tenant(req, c.p));
    pdtg_cs_free(&c);
    return r;
}

/*
 * pdtg_request_begin, then set_connector, set_model (each when not empty)
 * and the n attributes of b, in the same call.
 */
pdtg_begin_with_res pdtg_request_begin_with(
    pdt_tracer *t, pdtg_str tp, pdtg_str ts, uint64_t arrival, pdtg_str id,
    pdtg_str method, pdtg_str path, pdtg_str connector, pdtg_str model,
    const pdtg_attrbuf *b, size_t n)
{
    pdtg_begin_with_res w;
    pdtg_cs c;
    int rc = PDT_OK;
    w.b = pdtg_request_begin(t, tp, ts, arrival, id, method, path);
    w.set_rc = PDT_OK;
    w.set_msg = NULL;
    if (w.b.rc != PDT_OK)
        return w;
    if (connector.n != 0) {
        if (pdtg_cs_init(&c, connector, 0)) {
            PDTG_STEP(pdt_request_set_connector(w.b.req, c.p));
            pdtg_cs_free(&c);
        } else {
            PDTG_STEP(PDT_ENOMEM);
        }
    }
    if (model.n != 0) {
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

/* inject the leg's headers, then record the SENT mark. */
pdtg_inject_res pdtg_request_send(pdt_request *req, int leg, int mark,
                                  uint64_t ts)
{
    pdt_propagation p = PDT_PROPAGATION_INIT;
    int rc = pdt_request_inject(req, leg, &p);
    PDTG_STEP(pdt_request_mark(req, mark, ts));
    return pdtg_inject_out(rc, &p);
}

/* a mark, then set_leg. */
pdtg_res pdtg_request_leg_done(pdt_request *req, int leg, int mark,
                               uint64_t ts, pdtg_str target, int status,
                               pdtg_str error_type)
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

/*
 * set_leg (decode when leg_set), set_usage (when usage_set), set_response
 * (when status != 0), then end.
 */
pdtg_finish_res pdtg_request_finish(pdt_request *req, uint64_t end_ns,
                                    int status, pdtg_str error_type,
                                    int leg_set, pdtg_str target,
                                    int leg_status, pdtg_str leg_error,
                                    int usage_set, int64_t in, int64_t out,
                                    int64_t cached)
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

/* ---- metrics --------------------------------------------------------------- */

/* buf is Go memory without Go pointers, used for the call only. */
pdtg_metrics_res pdtg_tracer_metrics(pdt_tracer *t, char *buf, size_t cap)
{
    pdtg_metrics_res r;
    pdtg_res e;
    r.len = 0;
    e = pdtg_result(pdt_tracer_metrics(t, buf, cap, &r.len));
    r.rc = e.rc;
    r.msg = e.msg;
    return r;
}

/* ---- generic spans --------------------------------------------------------- */

pdtg_start_res pdtg_span_start(pdt_tracer *t, pdtg_str name, int kind,
                               pdt_span *parent, pdtg_str tp, pdtg_str ts,
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

pdtg_res pdtg_span_attr_set(pdt_span *s, int event, pdtg_str key, int kind,
                            pdtg_str sv, int64_t iv, double dv)
{
    return pdtg_attr_common(s, event, key, kind, sv, iv, dv);
}

pdtg_res pdtg_span_add_event(pdt_span *s, pdtg_str name, uint64_t ts)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, name, 0))
        return pdtg_nomem();
    r = pdtg_result(pdt_span_add_event(s, c.p, ts));
    pdtg_cs_free(&c);
    return r;
}

pdtg_res pdtg_span_set_status(pdt_span *s, int code, pdtg_str msg)
{
    pdtg_cs c;
    pdtg_res r;
    if (!pdtg_cs_init(&c, msg, 1))
        return pdtg_nomem();
    r = pdtg_result(pdt_span_set_status(s, code, c.p));
    pdtg_cs_free(&c);
    return r;
}

pdtg_inject_res pdtg_span_inject(pdt_span *s)
{
    pdt_propagation p = PDT_PROPAGATION_INIT;
    return pdtg_inject_out(pdt_span_inject(s, &p), &p);
}

pdtg_res pdtg_span_end(pdt_span *s, uint64_t ts)
{
    return pdtg_result(pdt_span_end(s, ts));
}

pdtg_parse_res pdtg_traceparent_parse(pdtg_str v)
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
