/*
 * The span record and its pool: acquire, release, reset, grow.
 * See rec.h for who owns a record when.
 */
#include <stdlib.h>

#include "pdtrace/common.h"
#include "error.h"
#include "rec.h"

/* Records with buffers grown past this are freed instead of pooled. */
#define PDTI_POOL_REC_MAX_BYTES (64u << 10)

int pdti_pool_init(pdti_pool *p, uint64_t cap)
{
    p->len = 0;
    p->cap = cap;
    p->count = 0;
    p->is_short = 0;
    p->free = calloc((size_t)cap, sizeof(*p->free));
    if (p->free == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory for the record pool");
    pthread_mutex_init(&p->mu, NULL);
    return PDT_OK;
}

void pdti_pool_destroy(pdti_pool *p)
{
    if (p->free == NULL)
        return;
    while (p->len > 0)
        pdti_rec_destroy(p, p->free[--p->len]);
    free(p->free);
    p->free = NULL;
    pthread_mutex_destroy(&p->mu);
}

void pdti_pool_after_fork(pdti_pool *p)
{
    pthread_mutex_init(&p->mu, NULL);
}

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

pdti_rec *pdti_rec_new(pdti_pool *p)
{
    pdti_rec *r = calloc(1, sizeof(*r));

    /* Room for a request span's attributes from the start: a pooled record
     * serves any span, and one that had to grow on a later use would make
     * the calling thread allocate in steady state. */
    if (r != NULL) {
        (void)pdti_buf_reserve(&r->attrs, PDTI_ATTRS_START);
        __atomic_add_fetch(&p->count, 1, __ATOMIC_RELAXED);
    }
    return r;
}

void pdti_rec_destroy(pdti_pool *p, pdti_rec *r)
{
    __atomic_sub_fetch(&p->count, 1, __ATOMIC_RELAXED);
    pdti_buf_free(&r->name);
    pdti_buf_free(&r->tracestate);
    pdti_buf_free(&r->status_msg);
    pdti_buf_free(&r->attrs);
    pdti_buf_free(&r->events);
    pdti_buf_free(&r->ev_cur);
    free(r);
}

size_t pdti_rec_take_locked(pdti_pool *p, pdti_rec **out, size_t n)
{
    size_t k = 0;

    while (k < n && p->len > 0)
        out[k++] = p->free[--p->len];
    if (k < n)
        p->is_short = 1;
    return k;
}

void pdti_rec_put_locked(pdti_pool *p, pdti_rec *r)
{
    if (p->len < p->cap)
        p->free[p->len++] = r;
    else
        pdti_rec_destroy(p, r);
}

pdti_rec *pdti_rec_acquire(pdti_pool *p)
{
    pdti_rec *r = NULL;

    pthread_mutex_lock(&p->mu);
    if (p->len > 0)
        r = p->free[--p->len];
    else
        p->is_short = 1;
    pthread_mutex_unlock(&p->mu);
    return r != NULL ? r : pdti_rec_new(p);
}

/* 1 if r is worth pooling, and then cleaned for its next use. */
static int rec_recycle(pdti_pool *p, pdti_rec *r)
{
    if (r->attrs.cap + r->events.cap + r->ev_cur.cap + r->status_msg.cap +
            r->name.cap + r->tracestate.cap > PDTI_POOL_REC_MAX_BYTES) {
        pdti_rec_destroy(p, r);
        return 0;
    }
    rec_clean(r);
    return 1;
}

void pdti_rec_release(pdti_pool *p, pdti_rec *r)
{
    if (!rec_recycle(p, r))
        return;
    pthread_mutex_lock(&p->mu);
    pdti_rec_put_locked(p, r);
    pthread_mutex_unlock(&p->mu);
}

void pdti_rec_release_list(pdti_pool *p, pdti_rec *list)
{
    while (list != NULL) {
        pdti_rec *next = list->next;
        pdti_rec_release(p, list);
        list = next;
    }
}

void pdti_rec_release_many(pdti_pool *p, pdti_rec **recs, size_t n)
{
    size_t i, kept = 0;
    uint64_t grow = 0;

    if (n == 0)
        return;
    /* Clean outside the lock (the records are still in this thread's
     * cache), keeping the ones worth pooling at the front. */
    for (i = 0; i < n; i++)
        if (rec_recycle(p, recs[i]))
            recs[kept++] = recs[i];
    pthread_mutex_lock(&p->mu);
    for (i = 0; i < kept && p->len < p->cap; i++)
        p->free[p->len++] = recs[i];
    if (p->is_short) {
        /* A caller had to make records: more spans are in flight than
         * ever before. Grow the pool here, by a quarter of what exists,
         * so that the next peak finds records waiting rather than making
         * callers allocate again. */
        p->is_short = 0;
        grow = __atomic_load_n(&p->count, __ATOMIC_RELAXED) / 4;
        if (grow < 64)
            grow = 64;
        if (grow > p->cap - p->len)
            grow = p->cap - p->len;
    }
    pthread_mutex_unlock(&p->mu);
    for (; i < kept; i++)
        pdti_rec_destroy(p, recs[i]);
    while (grow > 0) {
        pdti_rec *more[64];
        size_t m = 0, j;
        while (m < 64 && m < grow && (more[m] = pdti_rec_new(p)) != NULL)
            m++;
        if (m == 0)
            break;
        grow -= m;
        pthread_mutex_lock(&p->mu);
        for (j = 0; j < m; j++)
            pdti_rec_put_locked(p, more[j]);
        pthread_mutex_unlock(&p->mu);
    }
}
