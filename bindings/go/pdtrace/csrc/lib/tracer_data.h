/*
 * Internal, floor 1: the tracer's data. Declares no function: the floors
 * that work on a tracer (the attribute and span encoders, the exporter,
 * the tracer itself, spans and requests) share its fields through this
 * header, and each calls only functions of its own floor or below.
 *
 * Threads: cfg, log, preamble (but see update_pid() in exporter.c after
 * a fork), wall_offset_ns, ratio_bound and export_enabled are written by
 * pdt_tracer_open() and read-only afterwards. The queue and the fields
 * marked "queue.mu" are guarded by the queue's lock; the pool by its own.
 * Counters are atomic. exporter_state belongs to the exporter thread
 * (exporter.c says which of its fields others may touch).
 */
#ifndef PDTI_TRACER_DATA_H
#define PDTI_TRACER_DATA_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "pdtrace/tracer.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "queue.h"
#include "rec.h"

typedef struct pdti_stats_counters {
    uint64_t spans_started, spans_ended, spans_not_sampled, spans_exported,
        spans_rejected, dropped_queue_full, dropped_export_failed,
        dropped_shutdown, dropped_disabled, export_requests, export_retries,
        export_failures, bytes_sent, attributes_dropped, values_truncated,
        strings_sanitized, requests_completed, spans_spooled, spans_replayed,
        spool_dropped, spool_corrupt;
} pdti_stats_counters;

#define PDTI_COUNT(t, field, n) \
    __atomic_add_fetch(&(t)->counters.field, (uint64_t)(n), __ATOMIC_RELAXED)

struct pdt_tracer {
    uint32_t magic;          /* PDTI_MAGIC_TRACER, _CLOSED once closed,
                                _FREED once destroyed (handle.h) */
    pdti_config cfg;
    pdti_logger log;
    int64_t wall_offset_ns;  /* unix time = monotonic + wall_offset_ns */
    int export_enabled;      /* 0: disabled or exporter none */
    uint64_t ratio_bound;    /* trace-id ratio threshold */
    pdti_buf preamble;       /* framed Resource, then framed
                                InstrumentationScope at scope_off */
    size_t scope_off;

    pdti_queue queue;        /* finished records for the exporter */
    pdti_pool pool;          /* clean records for the callers */

    /* The exporter's run state, under queue.mu. */
    uint64_t flush_target;    /* exporter exports without delay up to this */
    int stopping;             /* also read atomically without the lock */
    int exited;
    int thread_started;
    int stuck;                /* the exporter thread was abandoned */
    pthread_t thread;

    int abort_flag;           /* read by the transport, atomically */
    unsigned fork_gen;        /* fork generation the thread belongs to */
    long pid;                 /* process the resource's process.pid names */
    int fork_claim;           /* serialises the restart after a fork */

    uint64_t refs;            /* 1 for the tracer + 1 per live request or
                                 span handle; the last release frees it */
    /* Recycled pdt_request objects (request.c), under pool.mu, and how
     * the tracer frees them when it goes (set by request.c). */
    void *free_reqs;
    uint64_t free_reqs_len;
    void (*free_reqs_fn)(void *list);

    pdti_stats_counters counters;
    void *exporter_state;     /* exporter.c private */
    struct pdti_metrics *metrics; /* metrics.c: Prometheus histograms */
};

#endif
