/*
 * P/D requests, their lifecycle: the object pool, begin, the stage marks
 * that start and end the prefill/decode children, end (which freezes the
 * spans and hands them to the queue) and free. The breakdown is computed
 * in breakdown.c, the legs' outcomes and the caller's attributes are set in
 * request_attr.c (docs/spans.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/metrics.h"
#include "pdtrace/request.h"
#include "attr.h"
#include "clock.h"
#include "error.h"
#include "exporter.h"
#include "ids.h"
#include "metrics.h"
#include "propagation.h"
#include "rec.h"
#include "request.h"
#include "span.h"
#include "tracer.h"
#include "tracer_data.h"

/* ---- object pool -------------------------------------------------------- */

/* A request object from the pool (or the heap), with up to `nrec` span
 * records taken under the same lock: recs[0] for the root, the others as
 * the request's spares. */
static pdt_request *req_alloc(pdt_tracer *t, pdti_rec **recs, size_t nrec)
{
    pdt_request *r;
    size_t got = 0, i;

    pthread_mutex_lock(&t->pool.mu);
    r = t->free_reqs;
    if (r != NULL) {
        t->free_reqs = r->next_free;
        t->free_reqs_len--;
    }
    if (nrec != 0)
        got = pdti_rec_take_locked(&t->pool, recs, nrec);
    pthread_mutex_unlock(&t->pool.mu);
    for (i = 0; i < got; i++) {
        /* The lines the spans will write: fetched now, while the caller
         * parses and draws ids, rather than missed one by one later. */
        const char *p = (const char *)recs[i];
        __builtin_prefetch(p, 1);
        __builtin_prefetch(p + 64, 1);
        __builtin_prefetch(p + 128, 1);
    }
    for (i = got; i < nrec; i++)
        recs[i] = pdti_rec_new(&t->pool);
    if (r != NULL)
        return r;
    if ((r = malloc(sizeof(*r))) != NULL) {
        memset(&r->summary, 0, sizeof(r->summary));
        return r;
    }
    pthread_mutex_lock(&t->pool.mu);
    for (i = 0; i < nrec; i++)
        if (recs[i] != NULL)
            pdti_rec_put_locked(&t->pool, recs[i]);
    pthread_mutex_unlock(&t->pool.mu);
    return NULL;
}

/* Gives unused records back to the tracer's pool (pool.mu held). */
static void spares_put_locked(pdt_tracer *t, pdt_request *r,
                              pdti_rec *unused)
{
    if (unused != NULL)
        pdti_rec_put_locked(&t->pool, unused);
    if (r->spare[0] != NULL)
        pdti_rec_put_locked(&t->pool, r->spare[0]);
    if (r->spare[1] != NULL)
        pdti_rec_put_locked(&t->pool, r->spare[1]);
    r->spare[0] = r->spare[1] = NULL;
}

/* Frees the requests parked in a tracer (its free_reqs_fn): the tracer
 * calls it when it goes. */
static void req_pool_free(void *list)
{
    pdt_request *r = list, *n;

    while (r != NULL) {
        n = r->next_free;
        pdti_buf_free(&r->summary);
        free(r);
        r = n;
    }
}

static void req_release(void *block)
{
    free(block);
}

/* Back to the pool, with the unused spare records. The handle and its
 * spans are poisoned first: a parked or quarantined request refuses every
 * call through a stale pointer (handle.h). */
static void req_recycle(pdt_tracer *t, pdt_request *r, pdti_rec *unused)
{
    r->magic = PDTI_MAGIC_FREED;
    r->root.magic = PDTI_MAGIC_FREED;
    r->prefill.magic = PDTI_MAGIC_FREED;
    r->decode.magic = PDTI_MAGIC_FREED;
    pthread_mutex_lock(&t->pool.mu);
    spares_put_locked(t, r, unused);
    if (t->free_reqs_len < PDTI_FREE_REQS_MAX &&
        !__atomic_load_n(&t->stopping, __ATOMIC_ACQUIRE)) {
        r->next_free = t->free_reqs;
        t->free_reqs = r;
        t->free_reqs_len++;
        if (t->free_reqs_fn == NULL)
            t->free_reqs_fn = req_pool_free;
        r = NULL;
    }
    pthread_mutex_unlock(&t->pool.mu);
    if (r != NULL) {
        pdti_buf_free(&r->summary);
        pdti_quarantine(r, req_release);
    }
}


/* ---- helpers ------------------------------------------------------------ */

/*
 * A timestamp of 0 is now; another is checked not to lie in the future.
 * *ok caches a bound below which no check is needed (the monotonic clock
 * only moves forward), so most marks read no clock at all.
 */
static int resolve_ts(uint64_t *ts, uint64_t *ok)
{
    uint64_t now;

    if (*ts == 0) {
        *ts = pdt_now_ns();
        *ok = *ts + PDTI_FUTURE_SLACK_NS;
        return PDT_OK;
    }
    if (*ts <= *ok)
        return PDT_OK;
    now = pdti_coarse_now_ns();
    if (*ts > now + PDTI_FUTURE_SLACK_NS)
        return pdti_err(PDT_ERANGE, "timestamp is %.3f s in the future; "
                                    "use pdt_now_ns() nanoseconds",
                        (double)(*ts - now) / 1e9);
    *ok = now + PDTI_FUTURE_SLACK_NS;
    return PDT_OK;
}

/*
 * Starts a leg span with a reserved id, parented by the root. A leg is
 * sampled and recorded exactly when the root is (every sampler decides a
 * child of the root as it decided the root), so this only copies.
 */
static int leg_start(pdt_request *req, pdt_span *s, const char *name,
                     size_t name_len, const uint8_t id[8], uint64_t ts,
                     pdti_rec **spare)
{
    pdt_tracer *t = req->tracer;
    const pdt_span *root = &req->root;
    pdti_rec *r = NULL;

    if (root->rec != NULL) {
        if (*spare != NULL) {
            r = *spare;
            *spare = NULL;
        } else if ((r = pdti_tracer_rec(t)) == NULL) {
            return pdti_err(PDT_ENOMEM, "out of memory for a span");
        }
        if (pdti_buf_append(&r->name, name, name_len) != 0 ||
            (root->tracestate[0] != '\0' &&
             pdti_buf_append(&r->tracestate, root->tracestate,
                             strlen(root->tracestate)) != 0)) {
            pdti_rec_release(&t->pool, r);
            return pdti_err(PDT_ENOMEM, "out of memory for a span");
        }
        memcpy(r->trace_id, root->trace_id, 16);
        memcpy(r->span_id, id, 8);
        memcpy(r->parent_id, root->span_id, 8);
        r->has_parent = 1;
        r->parent_remote = 0;
        r->trace_flags = root->trace_flags;
        r->kind = PDT_SPAN_KIND_CLIENT;
        r->start_unix_ns = pdti_unix_ns(t, ts);
    }
    memset(s, 0, offsetof(pdt_span, tracestate));
    if (root->tracestate[0] != '\0')
        strcpy(s->tracestate, root->tracestate);
    else
        s->tracestate[0] = '\0';
    s->magic = PDTI_MAGIC_SPAN;
    s->tracer = t;
    s->rec = r;
    memcpy(s->trace_id, root->trace_id, 16);
    memcpy(s->span_id, id, 8);
    s->trace_flags = root->trace_flags;
    s->sampled = root->sampled;
    s->start_ns = ts;
    s->in_request = 1;
    PDTI_COUNT(t, spans_started, 1);
    return PDT_OK;
}

/* Finishes the current prefill attempt at its done time (or `end`). */
static void prefill_retire(pdt_request *req, uint64_t end)
{
    pdti_rec *r;

    if (!req->prefill_live)
        return;
    r = pdti_span_finish(&req->prefill, req->pe >= req->ps_cur && req->pe
                                            ? req->pe : end);
    req->prefill_live = 0;
    if (r == NULL)
        return;
    if (req->n_old_prefill < PDTI_MAX_PREFILL_ATTEMPTS) {
        req->old_prefill[req->n_old_prefill++] = r;
    } else {
        /* Too many attempts to hold for the tail decision: send it now if
         * sampled, else let it go (counted). */
        if (req->root.sampled) {
            r->next = NULL;
            pdti_enqueue(req->tracer, r, 1);
        } else {
            pdti_rec_release(&req->tracer->pool, r);
            PDTI_COUNT(req->tracer, spans_not_sampled, 1);
        }
    }
}

/* ---- public API --------------------------------------------------------- */

int pdt_request_begin(pdt_request **out, pdt_tracer *tracer,
                      const char *traceparent, const char *tracestate,
                      uint64_t arrival_ns)
{
    pdt_request *req;
    pdti_rec *recs[3] = { NULL, NULL, NULL };
    uint64_t ok = 0;
    int rc, record, i;

    if (out == NULL)
        return pdti_err(PDT_EINVAL, "out is NULL");
    *out = NULL;
    if ((rc = pdti_tracer_live(tracer, "pdt_request_begin")) != PDT_OK)
        return rc;
    if (__atomic_load_n(&tracer->stopping, __ATOMIC_ACQUIRE))
        return pdti_err(PDT_ECLOSED, "tracer is closing");
    rc = resolve_ts(&arrival_ns, &ok);
    if (rc != PDT_OK)
        return rc;
    pdti_fork_check(tracer);
    req = req_alloc(tracer, recs, tracer->export_enabled ? 3 : 0);
    if (req == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory for a request");
    req->spare[0] = recs[1];
    req->spare[1] = recs[2];
    memset(&req->tracer, 0, offsetof(struct pdt_request, request_id) -
                                offsetof(struct pdt_request, tracer));
    req->connector[0] = req->model[0] = req->reason[0] = '\0';
    req->tenant[0] = '\0';
    req->coarse_ok = ok;
    req->prefill.rec = NULL;
    req->decode.rec = NULL;
    req->prefill.tracer = tracer;
    req->decode.tracer = tracer;
    req->tracer = tracer;
    req->usage_in = req->usage_out = req->usage_cached = -1;
    record = tracer->cfg.tail_keep_errors ||
             tracer->cfg.tail_ttft_threshold_ms > 0;
    req->record = record;
    rc = pdti_span_init(&req->root, tracer, PDTI_LIT(PDTI_PFX "request"),
                        PDT_SPAN_KIND_SERVER, NULL, traceparent, tracestate,
                        arrival_ns, record, &recs[0]);
    if (rc != PDT_OK) {
        req_recycle(tracer, req, recs[0]);
        return rc;
    }
    if (req->root.rec == NULL && (recs[0] != NULL || req->spare[0] != NULL ||
                                  req->spare[1] != NULL)) {
        /* Not recorded: neither are its children; the records go back. */
        pthread_mutex_lock(&tracer->pool.mu);
        spares_put_locked(tracer, req, recs[0]);
        pthread_mutex_unlock(&tracer->pool.mu);
    }
    req->root.in_request = 1;
    req->prefill.in_request = 1;
    req->decode.in_request = 1;
    req->prefill.ended = 1; /* no attempt yet */
    req->decode.ended = 1;
    req->prefill.magic = PDTI_MAGIC_SPAN;
    req->decode.magic = PDTI_MAGIC_SPAN;
    req->a = arrival_ns;
    pdti_new_span_id(req->next_prefill_id);
    pdti_new_span_id(req->decode_id);
    pdti_new_uuid(req->request_id);
    /* The spares' headers have arrived by now: fetch the buffers their
     * spans will write first (name, attributes). */
    for (i = 0; i < 2; i++) {
        if (req->spare[i] != NULL) {
            if (req->spare[i]->name.data != NULL)
                __builtin_prefetch(req->spare[i]->name.data, 1);
            if (req->spare[i]->attrs.data != NULL)
                __builtin_prefetch(req->spare[i]->attrs.data, 1);
        }
    }
    pdti_tracer_ref(tracer);
    req->magic = PDTI_MAGIC_REQUEST;
    *out = req;
    return PDT_OK;
}

int pdt_request_set_id(pdt_request *req, const char *request_id)
{
    size_t n;
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    if (request_id == NULL || request_id[0] == '\0')
        return pdti_err(PDT_EINVAL, "request id is NULL or empty");
    n = strlen(request_id);
    if (n > PDTI_REQUEST_ID_MAX)
        return pdti_err(PDT_ELIMIT, "request id longer than %d bytes",
                        PDTI_REQUEST_ID_MAX);
    /* Keep only what can travel in an HTTP header: visible ASCII. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)request_id[i];
        if (c < 0x21 || c > 0x7e)
            return pdti_err(PDT_EINVAL, "request id has a byte (0x%02x) "
                                        "that cannot go in a header", c);
    }
    memcpy(req->request_id, request_id, n + 1);
    return PDT_OK;
}

const char *pdt_request_id(const pdt_request *req)
{
    if (pdti_request_live(req, "pdt_request_id") != PDT_OK)
        return NULL;
    return req->request_id;
}

int pdt_request_set_mode(pdt_request *req, int mode, const char *reason)
{
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    if (mode < PDT_MODE_SEQUENTIAL || mode > PDT_MODE_DECODE_ONLY)
        return pdti_err(PDT_EINVAL, "mode %d is not a pdt_pd_mode", mode);
    if (req->prefill_attempts > 0 || req->ds != 0)
        return pdti_err(PDT_ESTATE, "mode must be set before the first "
                                    "prefill or decode mark");
    req->mode = mode;
    req->reason[0] = '\0';
    if (reason != NULL) {
        size_t n = strlen(reason);
        if (n > PDTI_REASON_MAX)
            n = pdti_utf8_truncate((const uint8_t *)reason, n,
                                   PDTI_REASON_MAX);
        memcpy(req->reason, reason, n);
        req->reason[n] = '\0';
    }
    return PDT_OK;
}

/* Copies a non-empty label of at most max bytes into dst. */
static int set_label(pdt_request *req, char *dst, size_t max,
                     const char *value, const char *what)
{
    size_t n;
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    if (value == NULL || value[0] == '\0')
        return pdti_err(PDT_EINVAL, "%s is NULL or empty", what);
    n = strlen(value);
    if (n > max)
        return pdti_err(PDT_EINVAL, "%s longer than %zu bytes", what, max);
    memcpy(dst, value, n + 1);
    return PDT_OK;
}

int pdt_request_set_connector(pdt_request *req, const char *connector)
{
    return set_label(req, req != NULL ? req->connector : NULL,
                     PDTI_CONNECTOR_MAX, connector, "connector name");
}

int pdt_request_set_model(pdt_request *req, const char *model)
{
    return set_label(req, req != NULL ? req->model : NULL, PDTI_MODEL_MAX,
                     model, "model name");
}

int pdt_request_set_tenant(pdt_request *req, const char *tenant)
{
    int rc = set_label(req, req != NULL ? req->tenant : NULL,
                       PDTI_TENANT_MAX, tenant, "tenant");

    if (rc != PDT_OK)
        return rc;
    /* Resolved once here, so that the end compares no string. */
    req->tenant_idx = pdti_metrics_tenant(req->tracer->metrics, req->tenant,
                                          strlen(req->tenant));
    return PDT_OK;
}

int pdt_request_mark(pdt_request *req, int mark, uint64_t ts)
{
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    rc = resolve_ts(&ts, &req->coarse_ok);
    if (rc != PDT_OK)
        return rc;
    if (ts < req->a)
        return pdti_err(PDT_ERANGE, "mark is before the request's arrival");

    switch (mark) {
    case PDT_MARK_PREFILL_SENT:
        if (req->mode == PDT_MODE_DECODE_ONLY)
            return pdti_err(PDT_EINVAL, "prefill mark on a decode-only "
                                        "request");
        if (req->prefill_live && req->pe < req->ps_cur)
            return pdti_err(PDT_ESTATE, "previous prefill attempt not done; "
                                        "mark PREFILL_DONE first");
        if (req->mode == PDT_MODE_SEQUENTIAL && req->ds != 0)
            return pdti_err(PDT_ESTATE, "prefill after decode was sent");
        if (req->pe != 0 && ts < req->pe)
            return pdti_err(PDT_ERANGE, "prefill retry before the previous "
                                        "attempt ended");
        prefill_retire(req, ts);
        rc = leg_start(req, &req->prefill, PDTI_LIT(PDTI_PFX "prefill"),
                       req->next_prefill_id, ts, &req->spare[0]);
        if (rc != PDT_OK)
            return rc;
        pdti_new_span_id(req->next_prefill_id);
        req->prefill_live = 1;
        req->prefill_leg_set = 0;
        req->prefill_attempts++;
        if (req->ps == 0)
            req->ps = ts;
        req->ps_cur = ts;
        req->pe = 0;
        return PDT_OK;

    case PDT_MARK_PREFILL_DONE:
        if (!req->prefill_live || req->pe != 0)
            return pdti_err(PDT_ESTATE, "PREFILL_DONE without an open "
                                        "prefill attempt");
        if (ts < req->ps_cur)
            return pdti_err(PDT_ERANGE, "PREFILL_DONE before PREFILL_SENT");
        req->pe = ts;
        return PDT_OK;

    case PDT_MARK_DECODE_SENT:
        if (req->ds != 0)
            return pdti_err(PDT_ESTATE, "DECODE_SENT already recorded");
        if (req->mode == PDT_MODE_SEQUENTIAL) {
            if (req->prefill_attempts == 0)
                return pdti_err(PDT_ESTATE, "sequential request has no "
                                            "prefill; mark it, or set mode "
                                            "PDT_MODE_DECODE_ONLY");
            if (req->pe == 0)
                return pdti_err(PDT_ESTATE, "decode sent before "
                                            "PREFILL_DONE");
            if (ts < req->pe)
                return pdti_err(PDT_ERANGE, "DECODE_SENT before "
                                            "PREFILL_DONE");
        }
        rc = leg_start(req, &req->decode, PDTI_LIT(PDTI_PFX "decode"),
                       req->decode_id, ts, &req->spare[1]);
        if (rc != PDT_OK)
            return rc;
        req->decode_live = 1;
        req->ds = ts;
        return PDT_OK;

    case PDT_MARK_FIRST_TOKEN:
        if (req->ds == 0)
            return pdti_err(PDT_ESTATE, "FIRST_TOKEN before DECODE_SENT");
        if (req->f != 0)
            return pdti_err(PDT_ESTATE, "FIRST_TOKEN already recorded");
        if (ts < req->ds)
            return pdti_err(PDT_ERANGE, "FIRST_TOKEN before DECODE_SENT");
        req->f = ts;
        if (req->l < ts)
            req->l = ts;
        return PDT_OK;

    case PDT_MARK_LAST_TOKEN:
        if (req->f == 0)
            return pdti_err(PDT_ESTATE, "LAST_TOKEN before FIRST_TOKEN");
        if (ts < req->l)
            return pdti_err(PDT_ERANGE, "LAST_TOKEN moves backwards");
        req->l = ts;
        return PDT_OK;

    default:
        return pdti_err(PDT_EINVAL, "mark %d is not a pdt_mark", mark);
    }
}

int pdt_request_tokens(pdt_request *req, uint64_t ts, uint32_t count)
{
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    rc = resolve_ts(&ts, &req->coarse_ok);
    if (rc != PDT_OK)
        return rc;
    if (req->ds == 0)
        return pdti_err(PDT_ESTATE, "tokens before DECODE_SENT");
    if (ts < req->ds || ts < req->l)
        return pdti_err(PDT_ERANGE, "token time before DECODE_SENT or "
                                    "before the previous token");
    if (req->f == 0)
        req->f = ts;
    req->l = ts;
    req->tokens_counted += count;
    req->tokens_seen = 1;
    return PDT_OK;
}

int pdt_request_set_usage(pdt_request *req, int64_t input_tokens,
                          int64_t output_tokens, int64_t cached_input_tokens)
{
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    req->usage_in = input_tokens >= 0 ? input_tokens : -1;
    req->usage_out = output_tokens >= 0 ? output_tokens : -1;
    req->usage_cached = cached_input_tokens >= 0 ? cached_input_tokens : -1;
    return PDT_OK;
}

int pdt_request_set_response(pdt_request *req, int http_status,
                             const char *error_type)
{
    pdti_rec *r;
    pdt_tracer *t;
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    if (http_status < 0 || http_status > 999)
        return pdti_err(PDT_EINVAL, "HTTP status %d out of range",
                        http_status);
    if (req->response_set)
        return pdti_err(PDT_ESTATE, "response already set");
    req->response_set = 1;
    req->response_error_type = error_type != NULL;
    if (http_status >= 500 || error_type != NULL)
        req->error = 1;
    r = req->root.rec;
    t = req->tracer;
    if (r == NULL)
        return PDT_OK;
    if (http_status > 0)
        pdti_req_put_int(t, r, PDTI_LIT("http.response.status_code"), http_status);
    if (error_type != NULL)
        pdti_req_put_str(t, r, PDTI_LIT("error.type"), error_type);
    return PDT_OK;
}


pdt_span *pdt_request_span(pdt_request *req, int leg)
{
    return pdti_request_leg_span(req, leg);
}

int pdt_request_inject(const pdt_request *req, int leg, pdt_propagation *out)
{
    const uint8_t *id;

    int rc = pdti_request_live(req, "pdt_request_inject");

    if (rc != PDT_OK)
        return rc;
    if (out == NULL)
        return pdti_err(PDT_EINVAL, "out is NULL");
    if (out->size < PDTI_PROPAGATION_V0_1_SIZE)
        return pdti_err(PDT_EINVAL, "out->size is too small");
    switch (leg) {
    case PDT_LEG_REQUEST:
        id = req->root.span_id;
        break;
    case PDT_LEG_PREFILL:
        /* The open attempt, or the id reserved for the next one. */
        id = req->prefill_live && req->pe == 0 ? req->prefill.span_id
                                               : req->next_prefill_id;
        break;
    case PDT_LEG_DECODE:
        id = req->decode_id;
        break;
    default:
        return pdti_err(PDT_EINVAL, "leg %d is not a pdt_leg", leg);
    }
    pdti_traceparent_format(out->traceparent, req->root.trace_id, id,
                            req->root.trace_flags);
    out->tracestate = req->root.tracestate[0] != '\0' ? req->root.tracestate
                                                      : NULL;
    out->request_id = req->request_id;
    return PDT_OK;
}

int pdt_request_end(pdt_request *req, uint64_t end_ns, pdt_breakdown *out)
{
    pdt_tracer *t;
    pdt_breakdown bd;
    pdti_rec *list[PDTI_MAX_PREFILL_ATTEMPTS + 2];
    uint64_t latest;
    size_t n = 0, i;
    int rc = pdti_request_usable(req), keep;

    if (rc != PDT_OK)
        return rc;
    if (out != NULL && out->size < PDTI_BREAKDOWN_V0_1_SIZE)
        return pdti_err(PDT_EINVAL, "out->size is too small");
    t = req->tracer;
    pdti_fork_check(t);
    if (end_ns == 0) {
        end_ns = pdt_now_ns();
    } else if (end_ns > req->coarse_ok &&
               end_ns > pdti_coarse_now_ns() + PDTI_FUTURE_SLACK_NS) {
        rc = pdti_err(PDT_ERANGE, "end time in the future; using now");
        end_ns = pdt_now_ns();
    }
    latest = req->a;
    if (req->ps_cur > latest) latest = req->ps_cur;
    if (req->pe > latest) latest = req->pe;
    if (req->ds > latest) latest = req->ds;
    if (req->f > latest) latest = req->f;
    if (req->l > latest) latest = req->l;
    if (end_ns < latest) {
        rc = pdti_err(PDT_ERANGE, "end time before a recorded mark; "
                                  "clamped to the latest mark");
        end_ns = latest;
    }
    req->e = end_ns;
    req->ended = 1;
    /* Nobody said what the client got, and a leg failed: assume the
     * client did not get a complete answer (docs/spans.md, Status). */
    if (!req->response_set && req->leg_failed)
        req->error = 1;

    pdti_request_breakdown(req, &bd);
    {
        pdti_metrics_usage u;
        u.tenant = req->tenant_idx;
        u.input_tokens = req->usage_in;
        u.cached_tokens = req->usage_cached;
        pdti_metrics_observe(t->metrics, req->connector, req->model, &u,
                             &bd);
    }
    pdti_request_summary(req, &bd);

    /* Freeze every span of the request: request, decode, then the prefill
     * attempts. That order puts the two spans that share the breakdown
     * next to each other in a batch, which compresses better. */
    {
        pdti_rec *r = pdti_span_finish(&req->root, end_ns);
        if (r != NULL)
            list[n++] = r;
    }
    if (req->decode_live) {
        pdti_rec *r = pdti_span_finish(&req->decode, end_ns);
        if (r != NULL)
            list[n++] = r;
    }
    /* An attempt still open (no PREFILL_DONE) ends at E. */
    prefill_retire(req, end_ns);
    for (i = 0; i < req->n_old_prefill; i++)
        list[n++] = req->old_prefill[i];
    req->n_old_prefill = 0;

    keep = req->root.sampled ||
           (req->error && t->cfg.tail_keep_errors) ||
           (t->cfg.tail_ttft_threshold_ms > 0 &&
            (bd.present & PDT_BD_TRUE_TTFT) &&
            bd.true_ttft_ms > t->cfg.tail_ttft_threshold_ms);
    if (n > 0) {
        if (keep) {
            for (i = 0; i + 1 < n; i++)
                list[i]->next = list[i + 1];
            list[n - 1]->next = NULL;
            pdti_enqueue(t, list[0], n);
        } else {
            for (i = 0; i < n; i++)
                pdti_rec_release(&t->pool, list[i]);
            PDTI_COUNT(t, spans_not_sampled, n);
        }
    }
    bd.sampled = keep && n > 0;
    PDTI_COUNT(t, requests_completed, 1);
    if (out != NULL) {
        /* A caller built with an older, smaller struct gets its part. */
        size_t size = out->size;
        bd.size = size;
        memcpy(out, &bd, size < sizeof(bd) ? size : sizeof(bd));
    }
    return rc;
}

void pdt_request_free(pdt_request *req)
{
    pdt_tracer *t;

    if (req == NULL)
        return;
    if (pdti_request_live(req, "pdt_request_free") != PDT_OK)
        return; /* freed twice, or not a request: refused, last error set */
    if (!req->ended) {
        if (!req->response_set)
            pdt_request_set_response(req, 0, "abandoned");
        else if (!req->response_error_type && req->root.rec != NULL)
            pdti_req_put_str(req->tracer, req->root.rec, PDTI_LIT("error.type"),
                    "abandoned");
        req->error = 1;
        pdt_request_end(req, 0, NULL);
    }
    t = req->tracer;
    req_recycle(t, req, NULL);
    pdti_tracer_unref(t);
}
