/*
 * The exporter's lower half: the spool (what goes to it, when it is
 * replayed, the queue pressure that sends batches to it), the single
 * waited-for export a replay uses, and the counting of an export's
 * outcome. See exporter_int.h; exporter.c is the thread's loop.
 */
#include <string.h>

#include "pdtrace/common.h"
#include "error.h"
#include "exporter.h"
#include "exporter_int.h"
#include "queue.h"
#include "spool.h"
#include "tracer_data.h"
#include "transport.h"

void pdti_exp_spool_counts(pdt_tracer *t, exporter *x)
{
    pdti_spool_counts c;

    pdti_spool_take_counts(x->spool, &c);
    /* Spans of frames evicted by the cap and of corrupt frames are both
     * lost from the spool: spool_dropped counts them (spool_corrupt counts
     * the frames). */
    if (c.dropped_spans + c.corrupt_spans != 0)
        PDTI_COUNT(t, spool_dropped, c.dropped_spans + c.corrupt_spans);
    if (c.corrupt_frames != 0)
        PDTI_COUNT(t, spool_corrupt, c.corrupt_frames);
}

static void spool_backoff(exporter *x)
{
    x->next_probe_ns = pdt_now_ns() + (uint64_t)x->probe_ms * 1000000u;
    x->probe_ms = x->probe_ms * 2 > SPOOL_PROBE_MAX_MS ? SPOOL_PROBE_MAX_MS
                                                       : x->probe_ms * 2;
}

void pdti_exp_spool_mark_down(exporter *x)
{
    if (x->spool == NULL)
        return;
    x->down = 1;
    spool_backoff(x);
}

void pdti_exp_spool_mark_up(exporter *x)
{
    x->down = 0;
    x->probe_ms = SPOOL_PROBE_MIN_MS;
    x->next_probe_ns = 0;
}

/* 1 if a failed export is worth keeping: a later attempt may succeed. */
int pdti_exp_spool_worthy(const pdti_export_result *res)
{
    return res->outcome == PDTI_ABORTED || res->http_status == 0 ||
           res->retryable || pdti_status_retryable(res->http_status);
}

/* Writes body (n spans) to the spool, or counts them as dropped
 * (dropped_shutdown if `shutdown`, else dropped_export_failed). At close,
 * nothing is written after the close deadline. */
void pdti_exp_spool_or_drop(pdt_tracer *t, exporter *x, const pdti_buf *body,
                          size_t n, int shutdown, const char *why)
{
    if (x->spool != NULL &&
        (!shutdown || pdt_now_ns() < __atomic_load_n(&x->close_deadline,
                                                     __ATOMIC_ACQUIRE))) {
        int rc = pdti_spool_write(x->spool, body->data, body->len,
                                  (uint32_t)n);
        pdti_exp_spool_counts(t, x);
        if (rc == PDT_OK) {
            PDTI_COUNT(t, spans_spooled, n);
            return;
        }
        pdti_log(&t->log, PDT_LOG_ERROR, "%s; spooling %zu spans failed: %s",
                 why, n, pdt_last_error());
    }
    if (shutdown) {
        PDTI_COUNT(t, dropped_shutdown, n);
        pdti_log(&t->log, PDT_LOG_WARN, "shutdown deadline: %zu spans "
                 "dropped", n);
    } else {
        PDTI_COUNT(t, dropped_export_failed, n);
        pdti_log(&t->log, PDT_LOG_ERROR, "%s: %zu spans dropped", why, n);
    }
}

/* The flag the transport watches: with a spool, x->yield (close), re-armed when no export is in flight (a raised flag stops
 * every export in flight, and none starts until they have all finished);
 * else the tracer's abort flag. */
const int *pdti_exp_abort_flag(pdt_tracer *t, exporter *x)
{
    if (x->spool == NULL)
        return &t->abort_flag;
    if (x->inflight > 0)
        return &x->yield;
    __atomic_store_n(&x->yield, 0, __ATOMIC_SEQ_CST);
    /* pdti_exporter_stop() sets abort_flag, then yield: whatever the
     * interleaving, a close is never missed. */
    if (__atomic_load_n(&t->abort_flag, __ATOMIC_SEQ_CST))
        __atomic_store_n(&x->yield, 1, __ATOMIC_SEQ_CST);
    return &x->yield;
}

void pdti_exp_counts(pdt_tracer *t, const pdti_export_result *res)
{
    PDTI_COUNT(t, export_requests, res->attempts);
    if (res->attempts > 1)
        PDTI_COUNT(t, export_retries, res->attempts - 1);
    PDTI_COUNT(t, bytes_sent, res->bytes_sent);
}

/* Marks the exporter busy since its oldest export in flight (0: none),
 * for queue pressure. */
void pdti_exp_update_busy(exporter *x)
{
    uint64_t since = 0;
    unsigned i;

    for (i = 0; i < x->nslots; i++)
        if (x->slots[i].n != 0 &&
            (since == 0 || x->slots[i].started_ns < since))
            since = x->slots[i].started_ns;
    __atomic_store_n(&x->busy_since_ns, since, __ATOMIC_RELEASE);
}

/* One export through the transport, waited for (no export in flight),
 * marked busy for queue pressure. */
static void transport_export(pdt_tracer *t, exporter *x, const pdti_buf *body,
                             uint64_t deadline, pdti_export_result *res)
{
    const int *flag = pdti_exp_abort_flag(t, x);

    memset(res, 0, sizeof(*res));
    __atomic_store_n(&x->busy_since_ns, pdt_now_ns(), __ATOMIC_RELEASE);
    pdti_transport_export(x->transport, body->data, body->len, deadline, flag,
                          res);
    __atomic_store_n(&x->busy_since_ns, 0, __ATOMIC_RELEASE);
    pdti_exp_counts(t, res);
}

/* 1 if the exporter has fresh work or is stopping (lock not held). */
static int fresh_work(pdt_tracer *t)
{
    int busy;

    pthread_mutex_lock(&t->queue.mu);
    busy = t->stopping || t->flush_target > t->queue.processed_total ||
           t->queue.len >= (uint64_t)t->cfg.max_export_batch_size;
    pthread_mutex_unlock(&t->queue.mu);
    return busy;
}

/*
 * Replays up to SPOOL_REPLAY_PER_ROUND frames, oldest first; stops at the
 * first failure (and backs off) or when fresh work is waiting. Runs
 * without the lock.
 */
void pdti_exp_spool_replay(pdt_tracer *t, exporter *x)
{
    int i;

    for (i = 0; i < SPOOL_REPLAY_PER_ROUND; i++) {
        pdti_spool_item item;
        pdti_export_result res;
        uint32_t n = 0;
        uint64_t deadline, tmo_ms;
        int rc;

        if (fresh_work(t))
            return;
        rc = pdti_spool_next(x->spool, &x->replay, &n, &item);
        pdti_exp_spool_counts(t, x);
        if (rc != PDT_OK) {
            pdti_log(&t->log, PDT_LOG_ERROR, "spool: reading a frame "
                     "failed: %s", pdt_last_error());
            spool_backoff(x);
            return;
        }
        if (!item.active) {
            /* Nothing to probe with: the next batch will tell. */
            if (x->down)
                pdti_exp_spool_mark_up(x);
            return;
        }
        /* A frame already failed once: one request timeout is enough. */
        tmo_ms = (uint64_t)t->cfg.export_timeout_ms;
        if (t->cfg.timeout_ms > 0 && (uint64_t)t->cfg.timeout_ms < tmo_ms)
            tmo_ms = (uint64_t)t->cfg.timeout_ms;
        deadline = pdt_now_ns() + tmo_ms * 1000000u;
        transport_export(t, x, &x->replay, deadline, &res);
        if (res.outcome == PDTI_DELIVERED) {
            uint64_t rej = res.rejected_spans < 0 ? 0
                           : (uint64_t)res.rejected_spans > n ? n
                           : (uint64_t)res.rejected_spans;
            /* Counted before the frame leaves the directory: whoever sees
             * the spool empty also sees its spans replayed. */
            PDTI_COUNT(t, spans_replayed, n - rej);
            if (rej != 0)
                PDTI_COUNT(t, spans_rejected, rej);
            pdti_spool_done(x->spool, &item, 1);
            pdti_exp_spool_mark_up(x);
            continue;
        }
        PDTI_COUNT(t, export_failures, 1);
        if (!pdti_exp_spool_worthy(&res)) {
            /* The collector refuses this frame for good. */
            PDTI_COUNT(t, dropped_export_failed, n);
            pdti_spool_done(x->spool, &item, 1);
            pdti_log(&t->log, PDT_LOG_ERROR, "spool: replay of %u spans "
                     "refused (HTTP %ld), frame dropped: %s", (unsigned)n,
                     res.http_status, res.message);
            continue;
        }
        pdti_spool_done(x->spool, &item, 0);
        pdti_exp_spool_mark_down(x);
        pdti_log(&t->log, PDT_LOG_INFO, "spool: replay failed (HTTP %ld), "
                 "next try in %llu ms: %s", res.http_status,
                 (unsigned long long)(x->next_probe_ns > pdt_now_ns()
                     ? (x->next_probe_ns - pdt_now_ns()) / 1000000u : 0),
                 res.message);
        return;
    }
}

/* 1 if replaying is due (lock held, exporter thread). */
int pdti_exp_spool_replay_due(pdt_tracer *t, exporter *x, uint64_t now)
{
    return x->spool != NULL && !t->stopping &&
           !__atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE) &&
           now >= x->next_probe_ns && pdti_spool_pending(x->spool);
}

void pdti_exporter_pressure(pdt_tracer *t)
{
    exporter *x = t->exporter_state;

    if (x == NULL || !x->has_spool)
        return;
    /* The exports in flight go on; the exporter, woken once, writes
     * queued batches to the spool while no slot is free. */
    if (__atomic_exchange_n(&x->pressure, 1, __ATOMIC_ACQ_REL) == 0) {
        pthread_cond_signal(&t->queue.cv_work);
        if (x->transport != NULL) /* as pdti_exporter_wake() */
            pdti_transport_wakeup(x->transport);
    }
}
