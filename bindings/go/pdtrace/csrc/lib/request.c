/*
 * P/D requests: the root span and its prefill/decode children, the stage
 * marks, and the true-TTFT breakdown (docs/spans.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/metrics.h"
#include "pdtrace/request.h"
#include "core.h"
#include "error.h"
#include "ids.h"
#include "metrics.h"
#include "propagation.h"

#define TAG_SPAN_ATTR 0x4a
#define PFX "llm_d.pd_proxy."
#define PDTI_REQUEST_ID_MAX 255
#define PDTI_CONNECTOR_MAX 63
#define PDTI_MODEL_MAX PDTI_METRICS_MODEL_MAX
#define PDTI_REASON_MAX 255
#define PDTI_TARGET_MAX 4096
#define PDTI_MAX_PREFILL_ATTEMPTS 8
#define PDTI_FREE_REQS_MAX 1024
#define PDTI_FUTURE_SLACK_NS 1000000000ull

struct pdt_request {
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
    /* Spans last: initialised by pdti_span_init(), not by memset. */
    pdt_span root;
    pdt_span prefill;      /* the latest prefill attempt */
    pdt_span decode;
};

/* ---- object pool -------------------------------------------------------- */

/* A request object from the pool (or the heap), with up to `nrec` span
 * records taken under the same lock: recs[0] for the root, the others as
 * the request's spares. */
static pdt_request *req_alloc(pdt_tracer *t, pdti_rec **recs, size_t nrec)
{
    pdt_request *r;
    size_t got = 0, i;

    pthread_mutex_lock(&t->mu);
    r = t->free_reqs;
    if (r != NULL) {
        t->free_reqs = r->next_free;
        t->free_reqs_len--;
    }
    if (nrec != 0)
        got = pdti_rec_take_locked(t, recs, nrec);
    pthread_mutex_unlock(&t->mu);
    for (i = 0; i < got; i++) {
        /* The lines the spans will write: fetched now, while the caller
         * parses and draws ids, rather than missed one by one later. */
        const char *p = (const char *)recs[i];
        __builtin_prefetch(p, 1);
        __builtin_prefetch(p + 64, 1);
        __builtin_prefetch(p + 128, 1);
    }
    for (i = got; i < nrec; i++)
        recs[i] = pdti_rec_new(t);
    if (r != NULL)
        return r;
    if ((r = malloc(sizeof(*r))) != NULL) {
        memset(&r->summary, 0, sizeof(r->summary));
        return r;
    }
    pthread_mutex_lock(&t->mu);
    for (i = 0; i < nrec; i++)
        if (recs[i] != NULL)
            pdti_rec_put_locked(t, recs[i]);
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Gives unused records back to the tracer's pool (lock held). */
static void spares_put_locked(pdt_tracer *t, pdt_request *r,
                              pdti_rec *unused)
{
    if (unused != NULL)
        pdti_rec_put_locked(t, unused);
    if (r->spare[0] != NULL)
        pdti_rec_put_locked(t, r->spare[0]);
    if (r->spare[1] != NULL)
        pdti_rec_put_locked(t, r->spare[1]);
    r->spare[0] = r->spare[1] = NULL;
}

/* Back to the pool, with the unused spare records. */
static void req_recycle(pdt_tracer *t, pdt_request *r, pdti_rec *unused)
{
    pthread_mutex_lock(&t->mu);
    spares_put_locked(t, r, unused);
    if (t->free_reqs_len < PDTI_FREE_REQS_MAX && !t->stopping) {
        r->next_free = t->free_reqs;
        t->free_reqs = r;
        t->free_reqs_len++;
        r = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    if (r != NULL)
        pdti_buf_free(&r->summary);
    free(r);
}

/* Called by tracer close. */
void pdti_request_pool_free(pdt_tracer *t);
void pdti_request_pool_free(pdt_tracer *t)
{
    pdt_request *r = t->free_reqs, *n;

    while (r != NULL) {
        n = r->next_free;
        pdti_buf_free(&r->summary);
        free(r);
        r = n;
    }
    t->free_reqs = NULL;
    t->free_reqs_len = 0;
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

static int usable(const pdt_request *req)
{
    if (req == NULL)
        return pdti_err(PDT_EINVAL, "request is NULL");
    if (req->ended)
        return pdti_err(PDT_ESTATE, "request already ended");
    return PDT_OK;
}

static double ms(uint64_t from, uint64_t to)
{
    return (double)(to - from) / 1e6;
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
        } else if ((r = pdti_rec_acquire(t)) == NULL) {
            return pdti_err(PDT_ENOMEM, "out of memory for a span");
        }
        if (pdti_buf_append(&r->name, name, name_len) != 0 ||
            (root->tracestate[0] != '\0' &&
             pdti_buf_append(&r->tracestate, root->tracestate,
                             strlen(root->tracestate)) != 0)) {
            pdti_rec_release(t, r);
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
            pdti_rec_release(req->tracer, r);
            PDTI_COUNT(req->tracer, spans_not_sampled, 1);
        }
    }
}

/* The library's own attributes: literal keys, count limit honoured. */
static void put_strn(pdt_tracer *t, pdti_rec *r, const char *key,
                     size_t klen, const char *v, size_t vlen)
{
    if (pdti_rec_attr_room(t, r) == PDT_OK &&
        pdti_attr_str_lit(t, &r->attrs, TAG_SPAN_ATTR, key, klen, v, vlen)
            == PDT_OK)
        r->nattrs++;
}

static void put_str(pdt_tracer *t, pdti_rec *r, const char *key, size_t klen,
                    const char *v)
{
    put_strn(t, r, key, klen, v, strlen(v));
}

static void put_int(pdt_tracer *t, pdti_rec *r, const char *key, size_t klen,
                    int64_t v)
{
    if (pdti_rec_attr_room(t, r) == PDT_OK &&
        pdti_attr_int_lit(&r->attrs, TAG_SPAN_ATTR, key, klen, v) == PDT_OK)
        r->nattrs++;
}

static void put_bool(pdt_tracer *t, pdti_rec *r, const char *key, size_t klen,
                     int v)
{
    if (pdti_rec_attr_room(t, r) == PDT_OK &&
        pdti_attr_bool_lit(&r->attrs, TAG_SPAN_ATTR, key, klen, v) == PDT_OK)
        r->nattrs++;
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
    if (tracer == NULL)
        return pdti_err(PDT_EINVAL, "tracer is NULL");
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
    rc = pdti_span_init(&req->root, tracer, PDTI_LIT(PFX "request"),
                        PDT_SPAN_KIND_SERVER, NULL, traceparent, tracestate,
                        arrival_ns, record, &recs[0]);
    if (rc != PDT_OK) {
        req_recycle(tracer, req, recs[0]);
        return rc;
    }
    if (req->root.rec == NULL && (recs[0] != NULL || req->spare[0] != NULL ||
                                  req->spare[1] != NULL)) {
        /* Not recorded: neither are its children; the records go back. */
        pthread_mutex_lock(&tracer->mu);
        spares_put_locked(tracer, req, recs[0]);
        pthread_mutex_unlock(&tracer->mu);
    }
    req->root.in_request = 1;
    req->prefill.in_request = 1;
    req->decode.in_request = 1;
    req->prefill.ended = 1; /* no attempt yet */
    req->decode.ended = 1;
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
    *out = req;
    return PDT_OK;
}

int pdt_request_set_id(pdt_request *req, const char *request_id)
{
    size_t n;
    int rc = usable(req);

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
    return req != NULL ? req->request_id : NULL;
}

int pdt_request_set_mode(pdt_request *req, int mode, const char *reason)
{
    int rc = usable(req);

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
    int rc = usable(req);

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

int pdt_request_mark(pdt_request *req, int mark, uint64_t ts)
{
    int rc = usable(req);

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
        rc = leg_start(req, &req->prefill, PDTI_LIT(PFX "prefill"),
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
        rc = leg_start(req, &req->decode, PDTI_LIT(PFX "decode"),
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
    int rc = usable(req);

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
    int rc = usable(req);

    if (rc != PDT_OK)
        return rc;
    req->usage_in = input_tokens >= 0 ? input_tokens : -1;
    req->usage_out = output_tokens >= 0 ? output_tokens : -1;
    req->usage_cached = cached_input_tokens >= 0 ? cached_input_tokens : -1;
    return PDT_OK;
}

/* Splits "scheme://host:port/path", "host:port" or "[v6]:port". */
static void parse_target(const char *s, char *host, size_t hostcap,
                         long *port)
{
    const char *p = strstr(s, "://"), *end, *colon = NULL;
    size_t n;

    *port = -1;
    host[0] = '\0';
    if (p != NULL) {
        if (strncmp(s, "https", 5) == 0)
            *port = 443;
        else if (strncmp(s, "http", 4) == 0)
            *port = 80;
        s = p + 3;
    }
    end = s + strcspn(s, "/?#");
    if (*s == '[') {
        const char *rb = memchr(s, ']', (size_t)(end - s));
        if (rb == NULL)
            return;
        n = (size_t)(rb - s - 1);
        if (n >= hostcap)
            return;
        memcpy(host, s + 1, n);
        host[n] = '\0';
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        n = (size_t)((colon != NULL ? colon : end) - s);
        if (n >= hostcap)
            return;
        memcpy(host, s, n);
        host[n] = '\0';
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

int pdt_request_set_leg(pdt_request *req, int leg, const char *target,
                        int http_status, const char *error_type)
{
    pdt_span *s;
    int *set_flag, failed, rc = usable(req);
    pdt_tracer *t;
    size_t tlen;

    if (rc != PDT_OK)
        return rc;
    if (leg == PDT_LEG_PREFILL) {
        s = &req->prefill;
        set_flag = &req->prefill_leg_set;
        if (!req->prefill_live)
            return pdti_err(PDT_ESTATE, "no prefill attempt; mark "
                                        "PREFILL_SENT first");
    } else if (leg == PDT_LEG_DECODE) {
        s = &req->decode;
        set_flag = &req->decode_leg_set;
        if (!req->decode_live)
            return pdti_err(PDT_ESTATE, "no decode leg; mark DECODE_SENT "
                                        "first");
    } else {
        return pdti_err(PDT_EINVAL, "leg must be PDT_LEG_PREFILL or "
                                    "PDT_LEG_DECODE");
    }
    if (http_status < 0 || http_status > 999)
        return pdti_err(PDT_EINVAL, "HTTP status %d out of range",
                        http_status);
    tlen = target != NULL ? strlen(target) : 0;
    if (tlen > PDTI_TARGET_MAX)
        return pdti_err(PDT_ELIMIT, "target longer than %d bytes",
                        PDTI_TARGET_MAX);
    if (*set_flag)
        return pdti_err(PDT_ESTATE, "outcome of this leg already set");
    *set_flag = 1;
    t = req->tracer;
    /* Any error type is a failure of the leg (a refused connection, or a
     * 200 whose stream broke off), as is a status of 500 or more. */
    failed = http_status >= 500 || error_type != NULL;
    if (failed)
        req->error = 1;
    if (s->rec != NULL) {
        pdti_rec *r = s->rec;
        if (tlen != 0) {
            char host[256];
            long port;
            parse_target(target, host, sizeof(host), &port);
            if (host[0] != '\0')
                put_str(t, r, PDTI_LIT("server.address"), host);
            if (port >= 0)
                put_int(t, r, PDTI_LIT("server.port"), port);
        }
        if (http_status > 0)
            put_int(t, r, PDTI_LIT("http.response.status_code"), http_status);
        if (error_type != NULL) {
            put_str(t, r, PDTI_LIT("error.type"), error_type);
        } else if (failed) {
            /* OpenTelemetry: without a better type, the status code. */
            char code[16];
            snprintf(code, sizeof(code), "%d", http_status);
            put_str(t, r, PDTI_LIT("error.type"), code);
        }
        if (failed)
            pdt_span_set_status(s, PDT_SPAN_STATUS_ERROR,
                                error_type != NULL ? error_type
                                                   : "upstream error");
    }
    if (req->root.rec != NULL) {
        pdti_rec *r = req->root.rec;
        if (tlen != 0) {
            if (leg == PDT_LEG_PREFILL)
                put_strn(t, r, PDTI_LIT(PFX "prefill_target"), target, tlen);
            else
                put_strn(t, r, PDTI_LIT(PFX "decode_target"), target, tlen);
        }
        if (leg == PDT_LEG_PREFILL)
            put_int(t, r, PDTI_LIT(PFX "prefill.status_code"), http_status);
        else
            put_int(t, r, PDTI_LIT(PFX "decode.status_code"), http_status);
    }
    return PDT_OK;
}

int pdt_request_set_response(pdt_request *req, int http_status,
                             const char *error_type)
{
    pdti_rec *r;
    pdt_tracer *t;
    int rc = usable(req);

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
        put_int(t, r, PDTI_LIT("http.response.status_code"), http_status);
    if (error_type != NULL)
        put_str(t, r, PDTI_LIT("error.type"), error_type);
    return PDT_OK;
}


int pdt_request_set_str(pdt_request *req, const char *key, const char *value)
{
    int rc = usable(req);

    if (rc != PDT_OK)
        return rc;
    if (value == NULL)
        return pdti_err(PDT_EINVAL, "value is NULL");
    return pdti_span_attr(&req->root, PDTI_ATTR_STR, key, value,
                          strlen(value), 0);
}

int pdt_request_set_int(pdt_request *req, const char *key, int64_t value)
{
    int rc = usable(req);
    return rc != PDT_OK ? rc
                        : pdti_span_attr(&req->root, PDTI_ATTR_INT, key, NULL,
                                         0, value);
}

int pdt_request_set_double(pdt_request *req, const char *key, double value)
{
    int rc = usable(req);
    return rc != PDT_OK ? rc : pdt_span_set_double(&req->root, key, value);
}

int pdt_request_set_bool(pdt_request *req, const char *key, int value)
{
    int rc = usable(req);
    return rc != PDT_OK ? rc
                        : pdti_span_attr(&req->root, PDTI_ATTR_BOOL, key, NULL,
                                         0, value != 0);
}

int pdt_request_set_attrs(pdt_request *req, int leg, const pdt_attr *attrs,
                          size_t n)
{
    pdt_span *s;
    int rc = usable(req);

    if (rc != PDT_OK)
        return rc;
    if (leg < PDT_LEG_REQUEST || leg > PDT_LEG_DECODE)
        return pdti_err(PDT_EINVAL, "leg %d is not a pdt_leg", leg);
    s = pdt_request_span(req, leg);
    if (s == NULL)
        return pdti_err(PDT_ESTATE, "that leg has no span yet");
    return pdt_span_set_attrs(s, attrs, n);
}

pdt_span *pdt_request_span(pdt_request *req, int leg)
{
    if (req == NULL)
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

int pdt_request_inject(const pdt_request *req, int leg, pdt_propagation *out)
{
    const uint8_t *id;

    if (req == NULL || out == NULL)
        return pdti_err(PDT_EINVAL, "request or out is NULL");
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

/* Appends one double attribute to the summary scratch buffer. */
static void summary_double(pdt_request *req, unsigned *n, const char *key,
                           size_t klen, double v)
{
    if (pdti_attr_double_lit(&req->summary, TAG_SPAN_ATTR, key, klen, v)
        == PDT_OK)
        (*n)++;
}

/* Copies the summary, encoded once, into a record, within its attribute
 * limit. */
static void add_summary(pdt_request *req, pdti_rec *r, unsigned n)
{
    int64_t limit = req->tracer->cfg.attr_count_limit;

    if ((int64_t)r->nattrs + (int64_t)n > limit) {
        r->dropped_attrs += n;
        PDTI_COUNT(req->tracer, attributes_dropped, n);
        return;
    }
    if (pdti_buf_append(&r->attrs, req->summary.data, req->summary.len) == 0)
        r->nattrs += n;
}

static void compute(const pdt_request *req, pdt_breakdown *bd)
{
    uint64_t a = req->a, e = req->e;
    double nan = NAN;

    bd->present = 0;
    bd->queue_ms = bd->prefill_ms = bd->kv_transfer_overhead_ms = nan;
    bd->decode_ttft_ms = bd->true_ttft_ms = bd->decode_duration_ms = nan;
    bd->total_ms = bd->tpot_ms = nan;
    bd->mode = req->mode;
    bd->error = req->error;
    bd->output_tokens = req->usage_out >= 0 ? req->usage_out
                        : req->tokens_seen ? req->tokens_counted : -1;

    if (req->ps != 0) {
        bd->queue_ms = ms(a, req->ps);
        bd->present |= PDT_BD_QUEUE;
        if (req->pe != 0) {
            bd->prefill_ms = ms(req->ps, req->pe);
            bd->present |= PDT_BD_PREFILL;
        }
    }
    if (req->mode == PDT_MODE_SEQUENTIAL && req->pe != 0 && req->ds != 0) {
        bd->kv_transfer_overhead_ms = ms(req->pe, req->ds);
        bd->present |= PDT_BD_KV_TRANSFER;
    }
    if (req->ds != 0 && req->f != 0) {
        bd->decode_ttft_ms = ms(req->ds, req->f);
        bd->present |= PDT_BD_DECODE_TTFT;
    }
    if (req->f != 0) {
        bd->true_ttft_ms = ms(a, req->f);
        bd->present |= PDT_BD_TRUE_TTFT;
    }
    if (req->ds != 0) {
        bd->decode_duration_ms = ms(req->ds, e);
        bd->present |= PDT_BD_DECODE_DURATION;
    }
    bd->total_ms = ms(a, e);
    bd->present |= PDT_BD_TOTAL;
    if (req->f != 0 && bd->output_tokens >= 2) {
        bd->tpot_ms = ms(req->f, req->l) / (double)(bd->output_tokens - 1);
        bd->present |= PDT_BD_TPOT;
    }
}

static void record_summary(pdt_request *req, const pdt_breakdown *bd)
{
    pdti_rec *root = req->root.rec, *dec = req->decode.rec;
    unsigned n = 0;

    if (root == NULL && dec == NULL)
        return;
    pdti_buf_reset(&req->summary);
    if (bd->present & PDT_BD_QUEUE)
        summary_double(req, &n, PDTI_LIT(PFX "queue_ms"), bd->queue_ms);
    if (bd->present & PDT_BD_PREFILL)
        summary_double(req, &n, PDTI_LIT(PFX "prefill_duration_ms"),
                       bd->prefill_ms);
    if (bd->present & PDT_BD_KV_TRANSFER)
        summary_double(req, &n, PDTI_LIT(PFX "kv_transfer_overhead_ms"),
                       bd->kv_transfer_overhead_ms);
    if (bd->present & PDT_BD_DECODE_TTFT)
        summary_double(req, &n, PDTI_LIT(PFX "decode_ttft_ms"),
                       bd->decode_ttft_ms);
    if (bd->present & PDT_BD_TRUE_TTFT)
        summary_double(req, &n, PDTI_LIT(PFX "true_ttft_ms"),
                       bd->true_ttft_ms);
    if (bd->present & PDT_BD_DECODE_DURATION)
        summary_double(req, &n, PDTI_LIT(PFX "decode_duration_ms"),
                       bd->decode_duration_ms);
    summary_double(req, &n, PDTI_LIT(PFX "total_duration_ms"), bd->total_ms);
    if (bd->present & PDT_BD_TPOT)
        summary_double(req, &n, PDTI_LIT(PFX "tpot_ms"), bd->tpot_ms);

    if (root != NULL) {
        add_summary(req, root, n);
        put_str(req->tracer, root, PDTI_LIT(PFX "request_id"), req->request_id);
        if (req->connector[0] != '\0')
            put_str(req->tracer, root, PDTI_LIT(PFX "connector"), req->connector);
        if (req->model[0] != '\0')
            put_str(req->tracer, root, PDTI_LIT("gen_ai.request.model"),
                    req->model);
        put_bool(req->tracer, root, PDTI_LIT(PFX "disaggregation_enabled"),
                      req->mode != PDT_MODE_DECODE_ONLY);
        put_bool(req->tracer, root, PDTI_LIT(PFX "concurrent_pd"),
                      req->mode == PDT_MODE_CONCURRENT);
        if (req->reason[0] != '\0')
            put_str(req->tracer, root, PDTI_LIT(PFX "reason"), req->reason);
        if (req->usage_in >= 0)
            put_int(req->tracer, root, PDTI_LIT("gen_ai.usage.input_tokens"),
                         req->usage_in);
        if (bd->output_tokens >= 0)
            put_int(req->tracer, root, PDTI_LIT("gen_ai.usage.output_tokens"),
                         bd->output_tokens);
        if (req->usage_cached >= 0)
            put_int(req->tracer, root, PDTI_LIT("gen_ai.usage.cache_read.input_tokens"),
                         req->usage_cached);
        if (req->error) {
            if (root->status_code != PDT_SPAN_STATUS_ERROR)
                pdt_span_set_status(&req->root, PDT_SPAN_STATUS_ERROR,
                                    "request failed");
        }
    }
    if (dec != NULL) {
        add_summary(req, dec, n);
        put_str(req->tracer, dec, PDTI_LIT(PFX "request_id"), req->request_id);
        if (bd->output_tokens >= 0)
            put_int(req->tracer, dec, PDTI_LIT("gen_ai.usage.output_tokens"),
                         bd->output_tokens);
    }
}

int pdt_request_end(pdt_request *req, uint64_t end_ns, pdt_breakdown *out)
{
    pdt_tracer *t;
    pdt_breakdown bd;
    pdti_rec *list[PDTI_MAX_PREFILL_ATTEMPTS + 2];
    uint64_t latest;
    size_t n = 0, i;
    int rc = usable(req), keep;

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

    compute(req, &bd);
    pdti_metrics_observe(t->metrics, req->connector, req->model, &bd);
    record_summary(req, &bd);

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
                pdti_rec_release(t, list[i]);
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
    if (!req->ended) {
        if (!req->response_set)
            pdt_request_set_response(req, 0, "abandoned");
        else if (!req->response_error_type && req->root.rec != NULL)
            put_str(req->tracer, req->root.rec, PDTI_LIT("error.type"),
                    "abandoned");
        req->error = 1;
        pdt_request_end(req, 0, NULL);
    }
    t = req->tracer;
    req_recycle(t, req, NULL);
    pdti_tracer_unref(t);
}
