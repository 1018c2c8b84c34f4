/*
 * Internal, floor 2: the exporter thread (exporter.c). It consumes the
 * tracer's queue, encodes, compresses (through the transport) and sends
 * or spools, and gives the records back to the pool. It never calls into
 * tracer.c: the tracer owns it and starts it.
 */
#ifndef PDTI_EXPORTER_H
#define PDTI_EXPORTER_H

#include <stdint.h>

#include "tracer_data.h"

/* Creates the exporter state and starts the thread. */
int pdti_exporter_start(pdt_tracer *t);
/* Stops the thread within the deadline (monotonic ns); returns the number
 * of spans dropped because time ran out. */
uint64_t pdti_exporter_stop(pdt_tracer *t, uint64_t deadline_ns);
void pdti_exporter_free(pdt_tracer *t);
/* Makes sure the exporter thread runs in this process (after fork). */
int pdti_exporter_ensure(pdt_tracer *t);
/*
 * Call before taking the queue's or the pool's lock on an entry path: in
 * a forked child, the exporter thread may have held one at the fork;
 * pdti_exporter_ensure() re-creates the locks (and the thread) before
 * anyone waits on them.
 */
static inline void pdti_fork_check(pdt_tracer *t)
{
    pdti_exporter_ensure(t); /* also repairs the locks of a tracer that
                                does not export */
}
/* The queue is nearly full: with a spool, the exporter is woken (once per
 * episode) to write queued batches to the spool while every export slot is
 * busy; nothing in flight is aborted. An atomic exchange; callable with
 * queue.mu held. */
void pdti_exporter_pressure(pdt_tracer *t);
/* Work for the exporter (with queue.mu held): wakes it also while it
 * waits on exports in flight rather than on cv_work. */
void pdti_exporter_wake(pdt_tracer *t);

#endif
