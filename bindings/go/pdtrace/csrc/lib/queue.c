/* The queue between the calling threads and the exporter: see queue.h. */
#include <time.h>

#include "queue.h"

static void sync_init(pdti_queue *q)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&q->mu, NULL);
    /* Timed waits use the monotonic clock. */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv_work, &ca);
    pthread_cond_init(&q->cv_done, &ca);
    pthread_condattr_destroy(&ca);
}

void pdti_queue_init(pdti_queue *q, uint64_t max_len, uint64_t max_mem)
{
    q->head = q->tail = NULL;
    q->own_head = q->own_tail = NULL;
    q->len = q->bytes = 0;
    q->mem = 0;
    q->max_mem = max_mem;
    q->enqueued_total = q->processed_total = 0;
    q->max_len = max_len;
    sync_init(q);
}

uint64_t pdti_queue_clear_locked(pdti_queue *q, pdti_pool *pool)
{
    uint64_t n = 0;
    pdti_rec *r;

    pdti_queue_detach_locked(q); /* no consumer runs: one list */
    while ((r = q->own_head) != NULL) {
        q->own_head = r->next;
        pdti_queue_uncharge(q, r->charge);
        pdti_rec_destroy(pool, r);
        n++;
    }
    q->own_tail = NULL;
    q->len = q->bytes = 0;
    return n;
}

void pdti_queue_destroy(pdti_queue *q, pdti_pool *pool)
{
    pdti_queue_clear_locked(q, pool);
    pthread_cond_destroy(&q->cv_done);
    pthread_cond_destroy(&q->cv_work);
    pthread_mutex_destroy(&q->mu);
}

void pdti_queue_after_fork(pdti_queue *q, pdti_pool *pool)
{
    sync_init(q);
    pdti_rec_release_list(pool, q->own_head);
    pdti_rec_release_list(pool, q->head);
    q->head = q->tail = NULL;
    q->own_head = q->own_tail = NULL;
    q->len = q->bytes = 0;
    /* The parent's exports in flight are not the child's either. */
    q->mem = 0;
    q->enqueued_total = q->processed_total = 0;
}
