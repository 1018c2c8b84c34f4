/*
 * The tracer: open, flush, close, stats; the way into the queue; sampling;
 * clocks. It owns the record pool (rec.c), the queue (queue.c) and the
 * exporter (exporter.c), and starts the exporter.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pdtrace/tracer.h"
#include "encode.h"
#include "error.h"
#include "exporter.h"
#include "handle.h"
#include "ids.h"
#include "metrics.h"
#include "queue.h"
#include "rec.h"
#include "tracer.h"
#include "tracer_data.h"

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

/* ---- the way into the queue ------------------------------------------ */

void pdti_enqueue(pdt_tracer *t, pdti_rec *list, uint64_t n)
{
    pdti_queue *q = &t->queue;
    pdti_rec *tail = list;
    uint64_t bytes, mem, batch = (uint64_t)t->cfg.max_export_batch_size;
    int wake, stopping, over_mem = 0;

    if (n == 0)
        return;
    if (!t->export_enabled) {
        pdti_rec_release_list(&t->pool, list);
        PDTI_COUNT(t, dropped_disabled, n);
        return;
    }
    bytes = pdti_rec_bytes(tail);
    mem = tail->charge = pdti_rec_mem(tail);
    while (tail->next != NULL) {
        tail = tail->next;
        bytes += pdti_rec_bytes(tail);
        mem += tail->charge = pdti_rec_mem(tail);
    }
    pdti_exporter_ensure(t);
    pthread_mutex_lock(&q->mu);
    stopping = t->stopping;
    if (stopping || !pdti_queue_fits_locked(q, n) ||
        (over_mem = !pdti_queue_charge(q, mem)) != 0) {
        if (!stopping) /* under the lock: the exporter state is alive */
            pdti_exporter_pressure(t); /* spool: unblock the exporter */
        pthread_mutex_unlock(&q->mu);
        pdti_rec_release_list(&t->pool, list);
        if (stopping) {
            PDTI_COUNT(t, dropped_shutdown, n);
        } else {
            PDTI_COUNT(t, dropped_queue_full, n);
        }
        if (stopping)
            pdti_log(&t->log, PDT_LOG_WARN, "tracer closing: %llu spans "
                     "ended after close began dropped",
                     (unsigned long long)n);
        else if (over_mem)
            pdti_log(&t->log, PDT_LOG_WARN, "export queue memory full (%lld "
                     "bytes): %llu spans of %llu bytes dropped",
                     (long long)t->cfg.max_queue_bytes, (unsigned long long)n,
                     (unsigned long long)mem);
        else
            pdti_log(&t->log, PDT_LOG_WARN, "export queue full (%lld "
                     "spans): %llu spans dropped",
                     (long long)t->cfg.max_queue_size, (unsigned long long)n);
        return;
    }
    /* Wake the exporter when a batch is full, by count or by size. */
    wake = (q->len < batch && q->len + n >= batch) ||
           (q->bytes < PDTI_MAX_REQUEST_BYTES &&
            q->bytes + bytes >= PDTI_MAX_REQUEST_BYTES);
    pdti_queue_push_locked(q, list, tail, n, bytes);
    if (wake) {
        pthread_cond_signal(&q->cv_work);
        pdti_exporter_wake(t);
    }
    if (pdti_queue_pressed_locked(q))
        pdti_exporter_pressure(t); /* spool: unblock the exporter */
    pthread_mutex_unlock(&q->mu);
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
    t->magic = PDTI_MAGIC_TRACER;
    pdti_fork_handler_install();
    t->fork_gen = pdti_fork_generation();
    t->wall_offset_ns = wall_offset();
    t->pid = (long)getpid();
    t->ratio_bound = ratio_bound(t->cfg.sampler_ratio);
    t->export_enabled = !t->cfg.disabled &&
                        t->cfg.exporter != PDT_EXPORTER_NONE;
    /* The pool holds at most a queue's worth of records and some. */
    rc = pdti_pool_init(&t->pool, (uint64_t)t->cfg.max_queue_size + 64);
    if (rc != PDT_OK) {
        pdti_config_free(&t->cfg);
        pdti_logger_destroy(&t->log);
        free(t);
        return rc;
    }
    pdti_queue_init(&t->queue, (uint64_t)t->cfg.max_queue_size,
                    (uint64_t)t->cfg.max_queue_bytes);
    rc = pdti_encode_preamble(t);
    if (rc == PDT_OK)
        rc = pdti_metrics_new(&t->metrics, t->cfg.metrics_tenants);
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
    pdti_queue *q;
    uint64_t deadline, target;
    struct timespec ts;
    int rc = PDT_OK;

    if (pending_out != NULL)
        *pending_out = 0;
    if ((rc = pdti_tracer_live(t, "pdt_tracer_flush")) != PDT_OK)
        return rc;
    if (__atomic_load_n(&t->stopping, __ATOMIC_ACQUIRE))
        return pdti_err(PDT_ECLOSED, "tracer is closing");
    if (!t->export_enabled)
        return PDT_OK;
    pdti_exporter_ensure(t);
    q = &t->queue;
    deadline = deadline_after(t, timeout_ms);
    abs_time(deadline, &ts);
    pthread_mutex_lock(&q->mu);
    target = q->enqueued_total;
    if (t->flush_target < target)
        t->flush_target = target;
    pthread_cond_signal(&q->cv_work);
    pdti_exporter_wake(t);
    while (q->processed_total < target && !t->exited) {
        if (pthread_cond_timedwait(&q->cv_done, &q->mu, &ts) != 0 &&
            pdt_now_ns() >= deadline)
            break;
    }
    if (q->processed_total < target) {
        if (pending_out != NULL)
            *pending_out = target - q->processed_total;
        rc = PDT_ETIMEOUT;
    }
    pthread_mutex_unlock(&q->mu);
    if (rc != PDT_OK)
        return pdti_err(rc, "flush timed out with spans still pending");
    return PDT_OK;
}

/* Frees everything; runs once, when the last reference goes. */
static void tracer_destroy(pdt_tracer *t)
{
    pdti_exporter_free(t);
    pdti_queue_destroy(&t->queue, &t->pool);
    if (t->free_reqs_fn != NULL)
        t->free_reqs_fn(t->free_reqs);
    t->free_reqs = NULL;
    t->free_reqs_len = 0;
    pdti_pool_destroy(&t->pool);
    pdti_metrics_free(t->metrics);
    pdti_buf_free(&t->preamble);
    pdti_config_free(&t->cfg);
    pdti_logger_destroy(&t->log);
    /* The struct stays readable in the quarantine for a while, so that a
     * second close through the same pointer is refused (handle.h). */
    __atomic_store_n(&t->magic, PDTI_MAGIC_FREED, __ATOMIC_RELAXED);
    pdti_quarantine(t, free);
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
    uint32_t live = PDTI_MAGIC_TRACER;

    if (dropped_out != NULL)
        *dropped_out = 0;
    if (t == NULL)
        return PDT_OK;
    /* Exactly one close wins; a second one (or a close of a freed
     * tracer) is refused before it touches anything else. */
    if (!__atomic_compare_exchange_n(&t->magic, &live,
                                     PDTI_MAGIC_TRACER_CLOSED, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        if (live == PDTI_MAGIC_TRACER_CLOSED)
            live = PDTI_MAGIC_FREED; /* same message: closed twice */
        return pdti_handle_bad("pdt_tracer_close", "tracer", live);
    }
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
    pthread_mutex_lock(&t->queue.mu);
    dropped += pdti_queue_clear_locked(&t->queue, &t->pool);
    pthread_mutex_unlock(&t->queue.mu);
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

    uint32_t m;

    if (t == NULL)
        return pdti_err(PDT_EINVAL, "tracer is NULL");
    /* A closed tracer that handles keep alive still has its counters. */
    m = __atomic_load_n(&t->magic, __ATOMIC_RELAXED);
    if (m != PDTI_MAGIC_TRACER && m != PDTI_MAGIC_TRACER_CLOSED)
        return pdti_handle_bad("pdt_tracer_stats", "tracer", m);
    if (out == NULL)
        return pdti_err(PDT_EINVAL, "out is NULL");
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
    pthread_mutex_lock(&t->queue.mu);
    s.queue_depth = t->queue.len;
    pthread_mutex_unlock(&t->queue.mu);
    memcpy(out, &s, size < sizeof(s) ? size : sizeof(s));
    return PDT_OK;
}
