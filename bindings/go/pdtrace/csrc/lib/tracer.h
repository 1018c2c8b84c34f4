/*
 * Internal, floor 3: what tracer.c gives spans and requests: handle
 * references, sampling, clocks, records from the pool, and the way into
 * the queue.
 */
#ifndef PDTI_TRACER_H
#define PDTI_TRACER_H

#include <stddef.h>
#include <stdint.h>

#include "pdtrace/tracer.h"
#include "error.h"
#include "exporter.h"
#include "handle.h"
#include "rec.h"
#include "tracer_data.h"

/* The options before spool_dir: the smallest pdt_tracer_open accepts. */
#define PDTI_OPTIONS_V0_1_SIZE offsetof(pdt_tracer_options, spool_dir)

/* Handle references: taken by pdt_request_begin / pdt_span_start, dropped
 * by the matching free; the tracer is destroyed at the last release. */
void pdti_tracer_ref(pdt_tracer *t);
void pdti_tracer_unref(pdt_tracer *t);

/* The entry check of a function that takes a tracer: one compare for an
 * open tracer. PDT_EINVAL for NULL or a freed handle, PDT_ECLOSED for a
 * closed tracer (handle.h). fn names the caller for the message. */
static inline int pdti_tracer_live(const pdt_tracer *t, const char *fn)
{
    uint32_t m;

    if (t == NULL)
        return pdti_err(PDT_EINVAL, "%s: tracer is NULL", fn);
    m = __atomic_load_n(&t->magic, __ATOMIC_RELAXED);
    if (m != PDTI_MAGIC_TRACER)
        return pdti_handle_bad(fn, "tracer", m);
    return PDT_OK;
}

/* Monotonic to unix nanoseconds. */
uint64_t pdti_unix_ns(const pdt_tracer *t, uint64_t mono_ns);

/* Sampling decision for a new root (no parent): 1 = sample. */
int pdti_sample_root(const pdt_tracer *t, const uint8_t trace_id[16]);
/* Decision with a parent whose sampled flag is given. */
int pdti_sample_with_parent(const pdt_tracer *t, const uint8_t trace_id[16],
                            int parent_sampled, int parent_remote);

/* A clean record from t's pool, on a calling thread (NULL when out of
 * memory). */
static inline pdti_rec *pdti_tracer_rec(pdt_tracer *t)
{
    pdti_fork_check(t);
    return pdti_rec_acquire(&t->pool);
}

/* Hands finished records (linked by ->next) to the exporter, or drops and
 * counts them if the queue is full. Never blocks on the exporter. The
 * records belong to the queue (or the pool) afterwards. */
void pdti_enqueue(pdt_tracer *t, pdti_rec *list, uint64_t n);

#endif
