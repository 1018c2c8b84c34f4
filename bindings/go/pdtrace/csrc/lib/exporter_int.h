/*
 * Internal to the exporter (exporter.c, exporter_spool.c): the exporter
 * thread's state. Everything in it belongs to the exporter thread except
 * where a field says otherwise. exporter_spool.c is the lower half: the
 * spool, the single waited-for export it replays with, and the outcome
 * counting; exporter.c, the thread's loop and the batches, calls it and is
 * never called back.
 */
#ifndef PDTI_EXPORTER_INT_H
#define PDTI_EXPORTER_INT_H

#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "rec.h"
#include "spool.h"
#include "tracer_data.h"
#include "transport.h"

/* One export in flight. */
typedef struct export_slot {
    pdti_xfer *xfer;
    pdti_buf body;             /* the encoded request (must outlive it) */
    size_t n;                  /* spans in it; 0: the slot is free */
    uint64_t charge;           /* queue memory budget its spans hold */
    uint64_t started_ns;
} export_slot;

/* Halves of a batch the collector refused as too large (413, or 400 for
 * more than one span), waiting to be sent; see export_done(). Halving a
 * batch of b spans needs at most log2(b) + 1 parts at once. */
#define SPLIT_MAX 40
typedef struct split_part {
    pdti_buf body;
    size_t n;
    uint64_t charge;           /* queue memory budget it holds */
} split_part;

typedef struct exporter {
    pdti_transport *transport; /* OTLP exporter */
    export_slot *slots;        /* cfg.max_concurrent of them (OTLP only) */
    unsigned nslots;
    unsigned inflight;         /* slots in use */
    FILE *out;                 /* console exporter */
    int out_owned;
    int out_fd;                /* descriptor of an owned `out` */
    pdti_buf body;
    pdti_buf json;
    pdti_rec **batch;
    size_t batch_cap;
    uint64_t batch_charge;     /* queue memory budget x->batch holds, until
                                  an export slot takes it or it is given
                                  back */
    split_part split[SPLIT_MAX]; /* a stack: the last pushed goes first */
    unsigned nsplit;

    /* Spool state; see exporter_spool.c. Touched by the exporter thread
     * only, except where noted. */
    pdti_spool *spool;         /* NULL: no spool */
    int spool_wanted;          /* open the spool when the thread starts */
    int has_spool;             /* spool configured (read by callers) */
    pdti_buf replay;           /* a frame read back from the spool */
    int down;                  /* the collector failed: spool, then probe */
    uint64_t next_probe_ns;    /* no replay before this */
    uint64_t probe_ms;         /* current probe backoff */
    uint64_t busy_since_ns;    /* an export is in progress since (atomic) */
    uint64_t close_deadline;   /* spooling at close stops here (atomic) */
    int yield;                 /* the transport's abort flag (atomic): set
                                  at close */
    int pressure;              /* the queue is 3/4 full (atomic; set by a
                                  calling thread, cleared by the exporter) */
} exporter;

/* ---- the spool -------------------------------------------------------------
 *
 * A batch goes to the spool when its export fails in a way a later attempt
 * may fix (connection failures, retryable statuses, retries exhausted, the
 * deadline) or is cut short at close. After such a failure the exporter is
 * "down": fresh batches go straight to the spool, and the oldest spooled
 * frame is sent as a probe after a backoff (1 s doubling to 15 s). Once a
 * probe or any batch is delivered, up to SPOOL_REPLAY_PER_ROUND frames are
 * replayed per round of the loop, so fresh spans are never starved.
 *
 * Queue pressure (the queue 3/4 full, by count or bytes) aborts nothing:
 * the exports in flight, and a probe, go on; while no export slot is free,
 * the exporter writes the oldest queued batches to the spool instead, so
 * the queue drains at disk speed and no span is sent twice. The caller's
 * thread never touches the spool: it only raises the pressure flag.
 */

#define SPOOL_REPLAY_PER_ROUND 4
#define SPOOL_PROBE_MIN_MS 1000u
#define SPOOL_PROBE_MAX_MS 15000u
/* Share of the close timeout kept for spooling what is left (at most 1 s). */
#define SPOOL_CLOSE_RESERVE_DIV 4
#define SPOOL_CLOSE_RESERVE_MAX_NS 1000000000ull

/* Takes the spool's drop and corruption counts into the tracer's. */
void pdti_exp_spool_counts(pdt_tracer *t, exporter *x);
/* The collector failed: spool fresh batches, probe after a backoff. */
void pdti_exp_spool_mark_down(exporter *x);
/* The collector answers again. */
void pdti_exp_spool_mark_up(exporter *x);
/* 1 if a failed export is worth keeping: a later attempt may succeed. */
int pdti_exp_spool_worthy(const pdti_export_result *res);
/* Writes body (n spans) to the spool, or counts them as dropped. */
void pdti_exp_spool_or_drop(pdt_tracer *t, exporter *x, const pdti_buf *body,
                            size_t n, int shutdown, const char *why);
/* The flag the transport watches for this export. */
const int *pdti_exp_abort_flag(pdt_tracer *t, exporter *x);
/* Counts an export's requests, retries and bytes. */
void pdti_exp_counts(pdt_tracer *t, const pdti_export_result *res);
/* Marks the exporter busy since its oldest export in flight. */
void pdti_exp_update_busy(exporter *x);
/* Replays spooled frames, oldest first (without the queue's lock). */
void pdti_exp_spool_replay(pdt_tracer *t, exporter *x);
/* 1 if replaying is due (queue.mu held, exporter thread). */
int pdti_exp_spool_replay_due(pdt_tracer *t, exporter *x, uint64_t now);

#endif
