/*
 * Internal, floor 1: the bounded queue of finished records between the
 * calling threads (producers, through pdti_enqueue() in tracer.c) and the
 * exporter thread (the one consumer).
 *
 * The queue has its own lock and the two condition variables its users
 * wait on: cv_work (the consumer: work arrived, or stop) and cv_done
 * (flush and close: progress). It counts what it holds in records and in
 * span bytes (pdti_rec_bytes()), and what ever went through it, which is
 * what flush and close wait on.
 *
 * The memory budget (`mem`, at most `max_mem`) counts what the spans take
 * (pdti_rec_mem()) from the moment they are queued until the exporter is
 * done with them: taken off the queue, encoded, and their export finished
 * (delivered, spooled or dropped), since an export in flight holds their
 * encoded bytes. A calling thread charges a list with one atomic add
 * (pdti_queue_charge()); the exporter gives it back with one atomic
 * subtraction per batch (pdti_queue_uncharge()). The exporter's run state (stopping,
 * exited, the flush target; see tracer_data.h) is kept under the same lock,
 * since the exporter waits on it together with the queue.
 *
 * The queue is two linked lists. Producers append to the shared list
 * (head..tail). The consumer moves the whole shared list to the end of its
 * own list (own_head..own_tail) in O(1) under q->mu
 * (pdti_queue_detach_locked()), walks its own list without the lock to
 * make a batch, and cuts the batch off under the lock again
 * (pdti_queue_cut_locked()). `len` and `bytes` count both lists, so a
 * record counts as queued until the consumer takes it into a batch.
 *
 * Only the holder of q->mu may follow the ->next links of the shared
 * list. The consumer's own list is the consumer thread's: it follows those
 * links without the lock, and only it changes them (under the lock). Other
 * threads touch the consumer's list only when no consumer runs (close,
 * destroy, a forked child).
 */
#ifndef PDTI_QUEUE_H
#define PDTI_QUEUE_H

#include <pthread.h>
#include <stdint.h>

#include "rec.h"

typedef struct pdti_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv_work;   /* consumer: work or stop */
    pthread_cond_t cv_done;   /* flushers and close: progress */
    pdti_rec *head, *tail;    /* shared list: producers append here */
    pdti_rec *own_head, *own_tail; /* the consumer's list (see above) */
    uint64_t len;             /* records queued */
    uint64_t bytes;           /* their pdti_rec_bytes() */
    uint64_t max_len;         /* what pdti_queue_fits_locked() allows */
    uint64_t enqueued_total;  /* records ever queued */
    uint64_t processed_total; /* records taken off and finished (the
                                 consumer counts them) */
    uint64_t mem;             /* memory budget in use (atomic) */
    uint64_t max_mem;         /* budget: cfg.max_queue_bytes */
} pdti_queue;

/* An empty queue of at most max_len records and max_mem bytes of memory
 * budget; its condition variables wait on CLOCK_MONOTONIC. */
void pdti_queue_init(pdti_queue *q, uint64_t max_len, uint64_t max_mem);
/* Frees the records still queued and the lock (no thread uses it). */
void pdti_queue_destroy(pdti_queue *q, pdti_pool *pool);
/* In a forked child: re-creates the lock and the condition variables and
 * gives the records queued by the parent (the parent's to export) back to
 * the pool; the totals start over. */
void pdti_queue_after_fork(pdti_queue *q, pdti_pool *pool);
/* Frees every queued record (q->mu held); returns how many. */
uint64_t pdti_queue_clear_locked(pdti_queue *q, pdti_pool *pool);

/* 1 if n more records fit (q->mu held). */
static inline int pdti_queue_fits_locked(const pdti_queue *q, uint64_t n)
{
    return q->len + n <= q->max_len;
}

/* 1 if the queue is 3/4 full by count, or 3/4 of the memory budget is in
 * use (q->mu held): the exporter should make room (see exporter_int.h). */
static inline int pdti_queue_pressed_locked(const pdti_queue *q)
{
    return q->len * 4 >= q->max_len * 3 ||
           __atomic_load_n(&q->mem, __ATOMIC_RELAXED) >= q->max_mem / 4 * 3;
}

/* Takes `bytes` of the memory budget: 1 if they fit, else 0 and nothing
 * is taken. Any thread. */
static inline int pdti_queue_charge(pdti_queue *q, uint64_t bytes)
{
    uint64_t now = __atomic_add_fetch(&q->mem, bytes, __ATOMIC_RELAXED);

    if (now <= q->max_mem)
        return 1;
    __atomic_sub_fetch(&q->mem, bytes, __ATOMIC_RELAXED);
    return 0;
}

/* Gives back `bytes` taken by pdti_queue_charge(). Any thread. */
static inline void pdti_queue_uncharge(pdti_queue *q, uint64_t bytes)
{
    if (bytes != 0)
        __atomic_sub_fetch(&q->mem, bytes, __ATOMIC_RELAXED);
}

/* Appends the list head..tail of n records, `bytes` of span data
 * (q->mu held). */
static inline void pdti_queue_push_locked(pdti_queue *q, pdti_rec *head,
                                          pdti_rec *tail, uint64_t n,
                                          uint64_t bytes)
{
    if (q->tail != NULL)
        q->tail->next = head;
    else
        q->head = head;
    q->tail = tail;
    q->len += n;
    q->bytes += bytes;
    q->enqueued_total += n;
}

/* The consumer: moves the shared list to the end of its own (q->mu held).
 * O(1): no record is touched but the last of the consumer's list. Returns
 * the first record of the consumer's list, NULL if nothing is queued. */
static inline pdti_rec *pdti_queue_detach_locked(pdti_queue *q)
{
    if (q->head != NULL) {
        if (q->own_tail != NULL)
            q->own_tail->next = q->head;
        else
            q->own_head = q->head;
        q->own_tail = q->tail;
        q->head = q->tail = NULL;
    }
    return q->own_head;
}

/* The consumer: takes the first n records of its own list, the last of
 * which is `last`, holding `bytes` of pdti_rec_bytes() (q->mu held). The
 * records keep their ->next links; the taker does not follow them. */
static inline void pdti_queue_cut_locked(pdti_queue *q, pdti_rec *last,
                                         uint64_t n, uint64_t bytes)
{
    q->own_head = last->next;
    if (q->own_head == NULL)
        q->own_tail = NULL;
    q->len -= n;
    q->bytes -= bytes;
}

#endif
