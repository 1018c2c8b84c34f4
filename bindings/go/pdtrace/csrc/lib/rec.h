/*
 * Internal, floor 1: the span record and its pool.
 *
 * A record is a span frozen (or being filled) in the form the encoder
 * wants: ids and times, and the attributes and events already in their
 * protobuf bytes. Records are recycled through a pool so their buffers
 * keep their capacity and the calling thread does not allocate in steady
 * state.
 *
 * Who owns a record: the pool while it is pooled; the caller's thread
 * from pdti_rec_acquire() (or pdti_rec_take_locked()) until it hands the
 * record to the queue (tracer.c) or gives it back; the queue until the
 * exporter takes it; the exporter thread until pdti_rec_release_many().
 * Pooled records are clean: the thread that releases a record resets it
 * (mostly the exporter, which has just read it), so taking one costs the
 * caller no more than its use.
 *
 * The pool has its own lock (pool->mu). Lock order: the queue's lock, then
 * the pool's; the pool never takes another lock.
 */
#ifndef PDTI_REC_H
#define PDTI_REC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Maximum events a span keeps; more are counted as dropped. */
#define PDTI_MAX_EVENTS 128
/* Tracestate kept per span (W3C asks to propagate at least 512 chars). */
#define PDTI_TRACESTATE_MAX 512
/* Initial room for a record's attributes (a traced P/D request span with
 * a handful of caller attributes needs about 1.1 KiB). */
#define PDTI_ATTRS_START 1536

typedef struct pdti_rec {
    /* What the calling thread writes, together in the first lines. */
    struct pdti_rec *next;
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    uint64_t start_unix_ns;
    uint64_t end_unix_ns;
    int has_parent;
    int parent_remote;
    int kind;
    int status_code;
    uint8_t trace_flags;
    uint32_t nattrs;
    uint32_t dropped_attrs;
    pdti_buf name;        /* UTF-8, not framed */
    pdti_buf attrs;       /* framed Span.attributes fields (tag 9) */
    /* The rest: events, status messages, tracestate. */
    pdti_buf tracestate;  /* not framed */
    pdti_buf status_msg;  /* not framed */
    pdti_buf events;      /* framed Span.events fields (tag 11) */
    pdti_buf ev_cur;      /* body of the event still open for attributes */
    int ev_open;
    uint32_t ev_nattrs;
    uint32_t ev_dropped_attrs;
    uint32_t nevents;
    uint32_t dropped_events;
    uint64_t charge;      /* pdti_rec_mem() when it was queued: what the
                             queue's memory budget holds for it */
} pdti_rec;

/* Bytes of span data a finished record holds (the queue's accounting; the
 * encoder's exact size is pdti_span_body_size()). */
static inline uint64_t pdti_rec_bytes(const pdti_rec *r)
{
    return (uint64_t)(r->name.len + r->attrs.len + r->events.len +
                      r->tracestate.len + r->status_msg.len);
}

/* Memory a finished record takes: its structure and its buffers'
 * capacity (what the queue's memory budget counts). */
static inline uint64_t pdti_rec_mem(const pdti_rec *r)
{
    return (uint64_t)(sizeof(*r) + r->name.cap + r->attrs.cap +
                      r->events.cap + r->ev_cur.cap + r->tracestate.cap +
                      r->status_msg.cap);
}

typedef struct pdti_pool {
    pthread_mutex_t mu;       /* guards free/len/is_short (and, by
                                 request.c, the tracer's parked requests) */
    pdti_rec **free;          /* pooled records, clean (a stack) */
    uint64_t len, cap;
    uint64_t count;           /* records in existence (atomic) */
    int is_short;             /* a caller found the pool empty: the next
                                 batch release grows it by a quarter */
} pdti_pool;

/* A pool that keeps at most cap records. PDT_OK or PDT_ENOMEM (set). */
int pdti_pool_init(pdti_pool *p, uint64_t cap);
/* Frees the pooled records and the pool's memory (no thread uses it). */
void pdti_pool_destroy(pdti_pool *p);
/* In a forked child: the lock may have been held by a thread that is
 * gone. Re-creates it; the records stay. */
void pdti_pool_after_fork(pdti_pool *p);

/* A new, clean record (NULL when out of memory). */
pdti_rec *pdti_rec_new(pdti_pool *p);
/* Frees a record that is not pooled. */
void pdti_rec_destroy(pdti_pool *p, pdti_rec *r);
/* A clean record: pooled, else new (NULL when out of memory). */
pdti_rec *pdti_rec_acquire(pdti_pool *p);
/* Takes up to n pooled records (p->mu held by the caller), ready for use;
 * returns how many it took. */
size_t pdti_rec_take_locked(pdti_pool *p, pdti_rec **out, size_t n);
/* Gives a clean record taken but never used back (p->mu held). */
void pdti_rec_put_locked(pdti_pool *p, pdti_rec *r);
/* Resets r and pools it (or frees it if it grew too big or the pool is
 * full). */
void pdti_rec_release(pdti_pool *p, pdti_rec *r);
/* The same for a list linked by ->next. */
void pdti_rec_release_list(pdti_pool *p, pdti_rec *list);
/* Releases n records under one lock (the exporter's batches); grows the
 * pool when a caller found it empty since the last time. */
void pdti_rec_release_many(pdti_pool *p, pdti_rec **recs, size_t n);

#endif
