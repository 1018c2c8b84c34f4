/*
 * The tracer: open, flush, close, stats; the record pool and the bounded
 * queue between callers and the exporter thread; sampling; clocks.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pdtrace/tracer.h"
#include "core.h"
#include "error.h"
#include "ids.h"
#include "metrics.h"

void pdti_request_pool_free(pdt_tracer *t);

/* ---- clocks ------------------------------------------------------------- */

static int64_t wall_offset(void)
{
    struct timespec rt;
    uint64_t mono = pdt_now_ns();

    clock_gettime(CLOCK_REALTIME, &rt);
    return (int64_t)((uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec)
           - (int64_t)mono;
}

uint64_t pdti_unix_ns(const pdt_tracer *t, uint64_t mono_ns)
{
    return (uint64_t)((int64_t)mono_ns + t->wall_offset_ns);
}

/* ---- sampling ----------------------------------------------------------- */

/* The ratio rule of the OpenTelemetry Go SDK: the low 8 bytes of the trace
 * id, big-endian, shifted right by one, compared with ratio * 2^63. */
static int ratio_sampled(const pdt_tracer *t, const uint8_t id[16])
{
    uint64_t x = 0;
    int i;

    for (i = 8; i < 16; i++)
        x = (x << 8) | id[i];
    return (x >> 1) < t->ratio_bound;
}

int pdti_sample_root(const pdt_tracer *t, const uint8_t trace_id[16])
{
    switch (t->cfg.sampler) {
    case PDT_SAMPLER_ALWAYS_OFF:
    case PDT_SAMPLER_PARENTBASED_ALWAYS_OFF:
        return 0;
    case PDT_SAMPLER_TRACEIDRATIO:
    case PDT_SAMPLER_PARENTBASED_TRACEIDRATIO:
        return ratio_sampled(t, trace_id);
    default:
        return 1;
    }
}

int pdti_sample_with_parent(const pdt_tracer *t, const uint8_t trace_id[16],
                            int parent_sampled, int parent_remote)
{
    (void)parent_remote;
    switch (t->cfg.sampler) {
    case PDT_SAMPLER_ALWAYS_ON:
        return 1;
    case PDT_SAMPLER_ALWAYS_OFF:
        return 0;
    case PDT_SAMPLER_TRACEIDRATIO:
        return ratio_sampled(t, trace_id);
    default: /* the parent-based samplers follow the parent */
        return parent_sampled;
    }
}

static uint64_t ratio_bound(double ratio)
{
    if (!(ratio > 0))
        return 0;
    if (ratio >= 1)
        return UINT64_MAX;
    return (uint64_t)(ratio * 9223372036854775808.0);
}

/* ---- records and the queue ---------------------------------------------- */

/* Back to the state of a new record, keeping the buffers' memory. */
static void rec_clean(pdti_rec *r)
{
    r->next = NULL;
    r->has_parent = 0;
    r->parent_remote = 0;
    r->status_code = 0;
    r->ev_open = 0;
    r->nattrs = r->dropped_attrs = r->ev_nattrs = r->ev_dropped_attrs = 0;
    r->nevents = r->dropped_events = 0;
    pdti_buf_reset(&r->name);
    pdti_buf_reset(&r->tracestate);
    pdti_buf_reset(&r->status_msg);
    pdti_buf_reset(&r->attrs);
    pdti_buf_reset(&r->events);
    pdti_buf_reset(&r->ev_cur);
}

pdti_rec *pdti_rec_new(pdt_tracer *t)
{
    pdti_rec *r = calloc(1, sizeof(*r));

    /* Room for a request span's attributes from the start: a pooled record
     * serves any span, and one that had to grow on a later use would make
     * the calling thread allocate in steady state. */
    if (r != NULL) {
        (void)pdti_buf_reserve(&r->attrs, PDTI_ATTRS_START);
        __atomic_add_fetch(&t->rec_count, 1, __ATOMIC_RELAXED);
    }
    return r;
}

size_t pdti_rec_take_locked(pdt_tracer *t, pdti_rec **out, size_t n)
{
    size_t k = 0;

    while (k < n && t->free_len > 0)
        out[k++] = t->free_recs[--t->free_len];
    if (k < n)
        t->pool_short = 1;
    return k;
}

static void rec_destroy(pdt_tracer *t, pdti_rec *r);

void pdti_rec_put_locked(pdt_tracer *t, pdti_rec *r)
{
    if (t->free_len < t->free_cap)
        t->free_recs[t->free_len++] = r;
    else
        rec_destroy(t, r);
}

pdti_rec *pdti_rec_acquire(pdt_tracer *t)
{
    pdti_rec *r = NULL;

    pdti_fork_check(t);
    pthread_mutex_lock(&t->mu);
    if (t->free_len > 0)
        r = t->free_recs[--t->free_len];
    else
        t->pool_short = 1;
    pthread_mutex_unlock(&t->mu);
    return r != NULL ? r : pdti_rec_new(t);
}

static void rec_destroy(pdt_tracer *t, pdti_rec *r)
{
    __atomic_sub_fetch(&t->rec_count, 1, __ATOMIC_RELAXED);
    pdti_buf_free(&r->name);
    pdti_buf_free(&r->tracestate);
    pdti_buf_free(&r->status_msg);
    pdti_buf_free(&r->attrs);
    pdti_buf_free(&r->events);
    pdti_buf_free(&r->ev_cur);
    free(r);
}

/* Records with buffers grown past this are freed instead of pooled. */
#define PDTI_POOL_REC_MAX_BYTES (64u << 10)

/* 1 if r is worth pooling, and then cleaned for its next use. */
static int rec_recycle(pdt_tracer *t, pdti_rec *r)
{
    if (r->attrs.cap + r->events.cap + r->ev_cur.cap + r->status_msg.cap +
            r->name.cap + r->tracestate.cap > PDTI_POOL_REC_MAX_BYTES) {
        rec_destroy(t, r);
        return 0;
    }
    rec_clean(r);
    return 1;
}

void pdti_rec_release_locked(pdt_tracer *t, pdti_rec *r)
{
    if (rec_recycle(t, r))
        pdti_rec_put_locked(t, r);
}

void pdti_rec_release(pdt_tracer *t, pdti_rec *r)
{
    if (!rec_recycle(t, r))
        return;
    pthread_mutex_lock(&t->mu);
    pdti_rec_put_locked(t, r);
    pthread_mutex_unlock(&t->mu);
}

void pdti_rec_release_many(pdt_tracer *t, pdti_rec **recs, size_t n)
{
    size_t i, kept = 0;
    uint64_t grow = 0;

    if (n == 0)
        return;
    /* Clean outside the lock (the records are still in this thread's
     * cache), keeping the ones worth pooling at the front. */
    for (i = 0; i < n; i++)
        if (rec_recycle(t, recs[i]))
            recs[kept++] = recs[i];
    pthread_mutex_lock(&t->mu);
    for (i = 0; i < kept && t->free_len < t->free_cap; i++)
        t->free_recs[t->free_len++] = recs[i];
    if (t->pool_short) {
        /* A caller had to make records: more spans are in flight than
         * ever before. Grow the pool here, by a quarter of what exists,
         * so that the next peak finds records waiting rather than making
         * callers allocate again. */
        t->pool_short = 0;
        grow = __atomic_load_n(&t->rec_count, __ATOMIC_RELAXED) / 4;
        if (grow < 64)
            grow = 64;
        if (grow > t->free_cap - t->free_len)
            grow = t->free_cap - t->free_len;
    }
    pthread_mutex_unlock(&t->mu);
    for (; i < kept; i++)
        rec_destroy(t, recs[i]);
    while (grow > 0) {
        pdti_rec *more[64];
        size_t m = 0, j;
        while (m < 64 && m < grow && (more[m] = pdti_rec_new(t)) != NULL)
            m++;
        if (m == 0)
            break;
        grow -= m;
        pthread_mutex_lock(&t->mu);
        for (j = 0; j < m; j++)
            pdti_rec_put_locked(t, more[j]);
        pthread_mutex_unlock(&t->mu);
    }
}

void pdti_enqueue(pdt_tracer *t, pdti_rec *list, uint64_t n)
{
    pdti_rec *tail = list;
    int wake;

    if (n == 0)
        return;
    if (!t->export_enabled) {
        while (list != NULL) {
            pdti_rec *next = list->next;
            pdti_rec_release(t, list);
            list = next;
        }
        PDTI_COUNT(t, dropped_disabled, n);
        return;
    }
    while (tail->next != NULL)
        tail = tail->next;
    pdti_exporter_ensure(t);
    pthread_mutex_lock(&t->mu);
    if (t->q_len + n > (uint64_t)t->cfg.max_queue_size || t->stopping) {
        int stopping = t->stopping;
        if (!stopping) /* under the lock: the exporter state is alive */
            pdti_exporter_pressure(t); /* spool: unblock the exporter */
        pthread_mutex_unlock(&t->mu);
        while (list != NULL) {
            pdti_rec *next = list->next;
            pdti_rec_release(t, list);
            list = next;
        }
        if (stopping) {
            PDTI_COUNT(t, dropped_shutdown, n);
        } else {
            PDTI_COUNT(t, dropped_queue_full, n);
        }
        pdti_log(&t->log, PDT_LOG_WARN,
                 "export queue full (%lld spans): %llu spans dropped",
                 (long long)t->cfg.max_queue_size, (unsigned long long)n);
        return;
    }
    if (t->q_tail != NULL)
        t->q_tail->next = list;
    else
        t->q_head = list;
    t->q_tail = tail;
    wake = t->q_len < (uint64_t)t->cfg.max_export_batch_size &&
           t->q_len + n >= (uint64_t)t->cfg.max_export_batch_size;
    t->q_len += n;
    t->enqueued_total += n;
    if (wake) {
        pthread_cond_signal(&t->cv_work);
        pdti_exporter_wake(t);
    }
    if (t->q_len * 4 >= (uint64_t)t->cfg.max_queue_size * 3)
        pdti_exporter_pressure(t); /* spool: unblock the exporter */
    pthread_mutex_unlock(&t->mu);
}

static void tracer_destroy(pdt_tracer *t);

/* ---- public API --------------------------------------------------------- */

int pdt_tracer_options_init(pdt_tracer_options *opts, size_t size)
{
    pdt_tracer_options init = PDT_TRACER_OPTIONS_INIT;

    if (opts == NULL)
        return pdti_err(PDT_EINVAL, "opts is NULL");
    if (size < PDTI_OPTIONS_V0_1_SIZE)
        return pdti_err(PDT_EINVAL, "size %lu is smaller than any "
                        "pdt_tracer_options (%lu)", (unsigned long)size,
                        (unsigned long)PDTI_OPTIONS_V0_1_SIZE);
    /* Fields newer than this library: zero, their documented default. */
    if (size > sizeof(init))
        memset((char *)opts + sizeof(init), 0, size - sizeof(init));
    memcpy(opts, &init, size < sizeof(init) ? size : sizeof(init));
    opts->size = size;
    return PDT_OK;
}

int pdt_tracer_open(pdt_tracer **out, const pdt_tracer_options *opts)
{
    pdt_tracer *t;
    int rc;

    if (out == NULL)
        return pdti_err(PDT_EINVAL, "out is NULL");
    *out = NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory for the tracer");
    pdti_logger_init(&t->log, opts != NULL ? opts->log_fn : NULL,
                     opts != NULL ? opts->log_userdata : NULL);
    rc = pdti_config_resolve(&t->cfg, opts, &t->log);
    if (rc != PDT_OK) {
        pdti_logger_destroy(&t->log);
        free(t);
        return rc;
    }
    t->refs = 1;
    pdti_fork_handler_install();
    t->fork_gen = pdti_fork_generation();
    t->wall_offset_ns = wall_offset();
    t->pid = (long)getpid();
    t->ratio_bound = ratio_bound(t->cfg.sampler_ratio);
    t->export_enabled = !t->cfg.disabled &&
                        t->cfg.exporter != PDT_EXPORTER_NONE;
    /* The pool holds at most a queue's worth of records and some. */
    t->free_cap = (uint64_t)t->cfg.max_queue_size + 64;
    t->free_recs = calloc((size_t)t->free_cap, sizeof(*t->free_recs));
    if (t->free_recs == NULL) {
        pdti_config_free(&t->cfg);
        pdti_logger_destroy(&t->log);
        free(t);
        return pdti_err(PDT_ENOMEM, "out of memory for the record pool");
    }
    pthread_mutex_init(&t->mu, NULL);
    {
        /* Timed waits use the monotonic clock (see abs_time()). */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&t->cv_work, &ca);
        pthread_cond_init(&t->cv_done, &ca);
        pthread_condattr_destroy(&ca);
    }
    rc = pdti_encode_preamble(t);
    if (rc == PDT_OK)
        rc = pdti_metrics_new(&t->metrics);
    if (rc == PDT_OK && t->export_enabled)
        rc = pdti_exporter_start(t);
    if (rc != PDT_OK) {
        tracer_destroy(t);
        return rc;
    }
    *out = t;
    return PDT_OK;
}

static uint64_t deadline_after(pdt_tracer *t, int64_t timeout_ms)
{
    if (timeout_ms < 0)
        timeout_ms = t->cfg.export_timeout_ms;
    return pdt_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

static void abs_time(uint64_t mono_deadline, struct timespec *ts)
{
    /* The condition variables wait on CLOCK_MONOTONIC (see exporter.c). */
    ts->tv_sec = (time_t)(mono_deadline / 1000000000u);
    ts->tv_nsec = (long)(mono_deadline % 1000000000u);
}

int pdt_tracer_flush(pdt_tracer *t, int64_t timeout_ms, uint64_t *pending_out)
{
    uint64_t deadline, target;
    struct timespec ts;
    int rc = PDT_OK;

    if (pending_out != NULL)
        *pending_out = 0;
    if (t == NULL)
        return pdti_err(PDT_EINVAL, "tracer is NULL");
    if (__atomic_load_n(&t->stopping, __ATOMIC_ACQUIRE))
        return pdti_err(PDT_ECLOSED, "tracer is closing");
    if (!t->export_enabled)
        return PDT_OK;
    pdti_exporter_ensure(t);
    deadline = deadline_after(t, timeout_ms);
    abs_time(deadline, &ts);
    pthread_mutex_lock(&t->mu);
    target = t->enqueued_total;
    if (t->flush_target < target)
        t->flush_target = target;
    pthread_cond_signal(&t->cv_work);
    pdti_exporter_wake(t);
    while (t->processed_total < target && !t->exited) {
        if (pthread_cond_timedwait(&t->cv_done, &t->mu, &ts) != 0 &&
            pdt_now_ns() >= deadline)
            break;
    }
    if (t->processed_total < target) {
        if (pending_out != NULL)
            *pending_out = target - t->processed_total;
        rc = PDT_ETIMEOUT;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != PDT_OK)
        return pdti_err(rc, "flush timed out with spans still pending");
    return PDT_OK;
}

/* Frees everything; runs once, when the last reference goes. */
static void tracer_destroy(pdt_tracer *t)
{
    pdti_rec *r;

    pdti_exporter_free(t);
    while ((r = t->q_head) != NULL) {
        t->q_head = r->next;
        rec_destroy(t, r);
    }
    while (t->free_len > 0)
        rec_destroy(t, t->free_recs[--t->free_len]);
    free(t->free_recs);
    pdti_request_pool_free(t);
    pdti_metrics_free(t->metrics);
    pdti_buf_free(&t->preamble);
    pthread_cond_destroy(&t->cv_done);
    pthread_cond_destroy(&t->cv_work);
    pthread_mutex_destroy(&t->mu);
    pdti_config_free(&t->cfg);
    pdti_logger_destroy(&t->log);
    free(t);
}

void pdti_tracer_ref(pdt_tracer *t)
{
    __atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
}

void pdti_tracer_unref(pdt_tracer *t)
{
    if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0)
        tracer_destroy(t);
}

int pdt_tracer_close(pdt_tracer *t, int64_t timeout_ms, uint64_t *dropped_out)
{
    uint64_t dropped = 0;
    pdti_rec *r;

    if (dropped_out != NULL)
        *dropped_out = 0;
    if (t == NULL)
        return PDT_OK;
    if (t->export_enabled)
        dropped = pdti_exporter_stop(t, deadline_after(t, timeout_ms));
    else
        __atomic_store_n(&t->stopping, 1, __ATOMIC_RELEASE);
    if (t->stuck) {
        /* The abandoned exporter thread may still touch the tracer: its
         * memory is left to it (a one-off leak, reported in the log). */
        if (dropped_out != NULL)
            *dropped_out = dropped;
        return pdti_err(PDT_ETIMEOUT, "close timed out; the exporter thread "
                        "did not stop; %llu spans dropped",
                        (unsigned long long)dropped);
    }
    /* Spans still queued only if the thread never ran. */
    pthread_mutex_lock(&t->mu);
    while ((r = t->q_head) != NULL) {
        t->q_head = r->next;
        rec_destroy(t, r);
        dropped++;
    }
    t->q_tail = NULL;
    t->q_len = 0;
    pthread_mutex_unlock(&t->mu);
    /* Requests and spans still open keep the tracer alive (closed: what
     * they record is dropped and counted) until the last is freed. */
    pdti_tracer_unref(t);
    if (dropped_out != NULL)
        *dropped_out = dropped;
    if (dropped != 0)
        return pdti_err(PDT_ETIMEOUT, "close timed out; %llu spans dropped",
                        (unsigned long long)dropped);
    return PDT_OK;
}

int pdt_tracer_stats(pdt_tracer *t, pdt_stats *out)
{
    pdt_stats s;
    const pdti_stats_counters *c;
    size_t size;

    if (t == NULL || out == NULL)
        return pdti_err(PDT_EINVAL, "tracer or out is NULL");
    size = out->size;
    if (size < offsetof(pdt_stats, spans_started) + sizeof(uint64_t))
        return pdti_err(PDT_EINVAL, "out->size is too small");
    c = &t->counters;
#define LOAD(f) __atomic_load_n(&c->f, __ATOMIC_RELAXED)
    s.size = size;
    s.spans_started = LOAD(spans_started);
    s.spans_ended = LOAD(spans_ended);
    s.spans_not_sampled = LOAD(spans_not_sampled);
    s.spans_exported = LOAD(spans_exported);
    s.spans_rejected = LOAD(spans_rejected);
    s.dropped_queue_full = LOAD(dropped_queue_full);
    s.dropped_export_failed = LOAD(dropped_export_failed);
    s.dropped_shutdown = LOAD(dropped_shutdown);
    s.dropped_disabled = LOAD(dropped_disabled);
    s.export_requests = LOAD(export_requests);
    s.export_retries = LOAD(export_retries);
    s.export_failures = LOAD(export_failures);
    s.bytes_sent = LOAD(bytes_sent);
    s.attributes_dropped = LOAD(attributes_dropped);
    s.values_truncated = LOAD(values_truncated);
    s.strings_sanitized = LOAD(strings_sanitized);
    s.requests_completed = LOAD(requests_completed);
    s.spans_spooled = LOAD(spans_spooled);
    s.spans_replayed = LOAD(spans_replayed);
    s.spool_dropped = LOAD(spool_dropped);
    s.spool_corrupt = LOAD(spool_corrupt);
#undef LOAD
    pdti_fork_check(t);
    pthread_mutex_lock(&t->mu);
    s.queue_depth = t->q_len;
    pthread_mutex_unlock(&t->mu);
    memcpy(out, &s, size < sizeof(s) ? size : sizeof(s));
    return PDT_OK;
}
