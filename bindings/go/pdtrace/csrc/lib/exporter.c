/*
 * The exporter thread: takes batches off the queue by size or delay,
 * encodes them and delivers them (OTLP/HTTP or OTLP JSON lines), counts
 * every outcome, and stops within the deadline it is given.
 *
 * OTLP/HTTP exports are asynchronous: up to cfg.max_concurrent requests
 * are in flight at once, each in an export slot holding its encoded body.
 * While a slot is free and a full batch waits (or the delay passed, or a
 * flush or close asks), the thread encodes the next batch and starts it;
 * between starts it drives the transport and finishes the exports that
 * completed. A batch's spans count as processed (for flush and close)
 * only once its export is finished, so flush and close wait for every
 * request in flight. The spool's probe and replay run only with no export
 * in flight, one request at a time.
 *
 * With a spool (cfg.spool_dir), a batch that cannot be delivered is written
 * to it instead of being dropped, and spooled batches are replayed oldest
 * first whenever the collector answers; see exporter_spool.c and
 * docs/spool.md.
 *
 * Why this file is a little over the 800 lines we aim for: it is the
 * thread's loop and the batch it owns (take, encode, deliver, finish,
 * split halves, stop, fork recovery), all over the private state in
 * exporter_int.h; the spool side is already apart (exporter_spool.c).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "error.h"
#include "exporter.h"
#include "exporter_int.h"
#include "ids.h"
#include "json.h"
#include "queue.h"
#include "rec.h"
#include "spool.h"
#include "tracer_data.h"
#include "transport.h"

/* How long close waits past its deadline for an aborted thread to stop. */
#define STOP_GRACE_NS 2000000000ull

static void ts_at(uint64_t mono_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(mono_ns / 1000000000u);
    ts->tv_nsec = (long)(mono_ns % 1000000000u);
}

static void release_all(pdt_tracer *t, pdti_rec **recs, size_t n)
{
    pdti_rec_release_many(&t->pool, recs, n);
}

/* Spans done with: their share of the queue's memory budget is free. */
static void uncharge(pdt_tracer *t, uint64_t charge)
{
    pdti_queue_uncharge(&t->queue, charge);
}

void pdti_exporter_wake(pdt_tracer *t)
{
    exporter *x = t->exporter_state;

    if (x != NULL && x->transport != NULL)
        pdti_transport_wakeup(x->transport);
}

/* ---- delivery ---------------------------------------------------------- */

/* Encodes x->batch[0..n) into x->body. PDT_OK, or counts the spans as
 * dropped (dropped_counter_shutdown selects the counter). */
static int encode_batch(pdt_tracer *t, exporter *x, size_t n, int shutdown)
{
    int rc = pdti_encode_request(t->preamble.data, t->scope_off,
                                 t->preamble.data + t->scope_off,
                                 t->preamble.len - t->scope_off, x->batch, n,
                                 &x->body);
    if (rc != PDT_OK) {
        if (shutdown)
            PDTI_COUNT(t, dropped_shutdown, n);
        else
            PDTI_COUNT(t, dropped_export_failed, n);
        pdti_log(&t->log, PDT_LOG_ERROR, "encoding a batch of %zu spans "
                 "failed: %s", n, pdt_last_error());
    }
    return rc;
}

/* At close, out of time: the batch goes to the spool or is dropped. */
static void deliver_shutdown(pdt_tracer *t, exporter *x, size_t n)
{
    if (x->spool == NULL) {
        PDTI_COUNT(t, dropped_shutdown, n);
        return;
    }
    if (encode_batch(t, x, n, 1) == PDT_OK)
        pdti_exp_spool_or_drop(t, x, &x->body, n, 1, "shutdown deadline");
}

/* 1 if the collector refused a request for its size: 413 always, 400 for
 * more than one span (some receivers answer 400 to a body over their
 * limit). */
static int too_large(const pdti_export_result *res, size_t n)
{
    return res->outcome != PDTI_DELIVERED &&
           (res->http_status == 413 || (res->http_status == 400 && n > 1));
}

/* Cuts body (n spans) in two halves pushed on x->split, the first half on
 * top. 1 if it did; 0 if it cannot (one span, no room, not parseable). */
static int split_push(pdt_tracer *t, exporter *x, const pdti_buf *body,
                      size_t n, uint64_t charge)
{
    split_part *a, *b;
    size_t got = 0;

    if (n < 2 || x->nsplit + 2 > SPLIT_MAX)
        return 0;
    /* The second half goes under the first. */
    b = &x->split[x->nsplit];
    a = &x->split[x->nsplit + 1];
    if (pdti_encode_split(body->data, body->len, &got, n / 2, &a->body,
                          &b->body) != PDT_OK || got != n) {
        pdti_log(&t->log, PDT_LOG_ERROR, "cannot split a refused batch of "
                 "%zu spans: %s", n, pdt_last_error());
        return 0;
    }
    a->n = n / 2;
    b->n = n - n / 2;
    a->charge = charge / 2;
    b->charge = charge - charge / 2;
    x->nsplit += 2;
    return 1;
}

/* What became of an OTLP export of n spans (`body`, holding `charge` of
 * the queue's memory budget): counted, and on failure split and sent
 * again, spooled or dropped. Returns 1 if the spans are done with (their
 * charge given back), 0 if they wait on x->split (which holds the charge;
 * counted when those finish). Runs without the lock. */
static int export_done(pdt_tracer *t, exporter *x, const pdti_buf *body,
                       size_t n, uint64_t charge,
                       const pdti_export_result *res)
{
    pdti_exp_counts(t, res);
    if (too_large(res, n) && split_push(t, x, body, n, charge)) {
        PDTI_COUNT(t, export_failures, 1);
        pdti_log(&t->log, PDT_LOG_INFO, "collector refused %zu spans "
                 "(HTTP %ld): sending them again in two halves", n,
                 res->http_status);
        return 0;
    }
    uncharge(t, charge);
    if (res->outcome == PDTI_DELIVERED) {
        uint64_t rej = res->rejected_spans < 0 ? 0
                       : (uint64_t)res->rejected_spans > n ? n
                       : (uint64_t)res->rejected_spans;
        PDTI_COUNT(t, spans_exported, n - rej);
        if (rej != 0) {
            PDTI_COUNT(t, spans_rejected, rej);
            pdti_log(&t->log, PDT_LOG_WARN, "collector rejected %llu of %zu "
                     "spans: %s", (unsigned long long)rej, n, res->message);
        }
        pdti_exp_spool_mark_up(x);
        return 1;
    }
    PDTI_COUNT(t, export_failures, 1);
    if (x->spool != NULL && pdti_exp_spool_worthy(res)) {
        int shutdown = res->outcome == PDTI_ABORTED &&
                       __atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE);
        char why[320];
        snprintf(why, sizeof(why), "export of %zu spans failed (HTTP %ld): "
                 "%s", n, res->http_status, res->message);
        if (!shutdown)
            pdti_exp_spool_mark_down(x);
        pdti_exp_spool_or_drop(t, x, body, n, shutdown, why);
        return 1;
    }
    if (res->outcome == PDTI_ABORTED &&
        __atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE)) {
        PDTI_COUNT(t, dropped_shutdown, n);
        pdti_log(&t->log, PDT_LOG_WARN, "shutdown deadline: %zu spans "
                 "dropped", n);
    } else {
        PDTI_COUNT(t, dropped_export_failed, n);
        pdti_log(&t->log, PDT_LOG_ERROR, "export of %zu spans failed "
                 "(HTTP %ld): %s", n, res->http_status, res->message);
    }
    return 1;
}

/* 1 if an OTLP export may start now (console: always). */
static int slot_free(exporter *x)
{
    unsigned i;

    if (x->transport == NULL)
        return 1;
    if (x->inflight >= x->nslots)
        return 0;
    /* An export being retried means the collector throttles (429,
     * Retry-After) or fails: no other request joins it until it is over,
     * so the collector sees one request at a time, paced by the retries. */
    for (i = 0; i < x->nslots; i++)
        if (x->slots[i].n != 0 && pdti_xfer_retrying(x->slots[i].xfer))
            return 0;
    /* A raised yield flag stops the exports in flight: no new one joins
     * them before they have finished. */
    return x->inflight == 0 || x->spool == NULL ||
           !__atomic_load_n(&x->yield, __ATOMIC_SEQ_CST);
}

/* Starts the export of x->body (n spans, `charge` of the memory budget)
 * in a free slot, which takes the encoded body; x->body gets the slot's
 * previous buffer. Returns 1 if the spans are in flight (or wait on
 * x->split), 0 if the export could not start and the spans are done with
 * (counted): the caller then counts them as processed. */
static int export_start(pdt_tracer *t, exporter *x, size_t n,
                        uint64_t charge)
{
    export_slot *sl = NULL;
    const int *flag = pdti_exp_abort_flag(t, x);
    uint64_t now = pdt_now_ns();
    pdti_buf tmp;
    unsigned i;

    for (i = 0; i < x->nslots && sl == NULL; i++)
        if (x->slots[i].n == 0)
            sl = &x->slots[i];
    tmp = sl->body;
    sl->body = x->body;
    x->body = tmp;
    sl->n = n;
    sl->charge = charge;
    sl->started_ns = now;
    x->inflight++;
    pdti_exp_update_busy(x);
    if (pdti_xfer_start(sl->xfer, sl->body.data, sl->body.len,
                        now + (uint64_t)t->cfg.export_timeout_ms * 1000000u,
                        flag) != PDT_OK) {
        /* Not expected (the slot is free); counted like any failure. */
        pdti_export_result res;
        memset(&res, 0, sizeof(res));
        res.outcome = PDTI_FAILED;
        snprintf(res.message, sizeof(res.message), "cannot start the "
                 "export");
        sl->n = 0;
        x->inflight--;
        pdti_exp_update_busy(x);
        return !export_done(t, x, &sl->body, n, charge, &res);
    }
    return 1;
}

/* Finishes the exports that completed. Returns their spans. Runs without
 * the lock. */
static uint64_t reap(pdt_tracer *t, exporter *x)
{
    uint64_t done = 0;
    unsigned i;

    for (i = 0; i < x->nslots; i++) {
        export_slot *sl = &x->slots[i];
        pdti_export_result res;

        if (sl->n == 0 || !pdti_xfer_take(sl->xfer, &res))
            continue;
        if (export_done(t, x, &sl->body, sl->n, sl->charge, &res))
            done += sl->n;
        sl->n = 0;
        x->inflight--;
        pdti_exp_update_busy(x);
    }
    return done;
}

/* Delivers one batch: console and spool at once, OTLP by starting its
 * export. Returns 1 if the export is in flight, 0 if the batch is done
 * (and counted). Runs without the lock. */
static int deliver(pdt_tracer *t, exporter *x, size_t n)
{
    int rc, started;

    if (encode_batch(t, x, n, 0) != PDT_OK)
        return 0;
    if (x->out != NULL) {
        rc = pdti_otlp_to_json(x->body.data, x->body.len, &x->json);
        if (rc == PDT_OK && pdti_buf_append(&x->json, "\n", 1) != 0)
            rc = PDT_ENOMEM;
        if (rc == PDT_OK &&
            (fwrite(x->json.data, 1, x->json.len, x->out) != x->json.len ||
             fflush(x->out) != 0))
            rc = PDT_EIO;
        if (rc != PDT_OK) {
            PDTI_COUNT(t, dropped_export_failed, n);
            PDTI_COUNT(t, export_failures, 1);
            pdti_log(&t->log, PDT_LOG_ERROR, "console exporter: writing "
                     "%zu spans failed (%s)", n, strerror(errno));
        } else {
            PDTI_COUNT(t, spans_exported, n);
            PDTI_COUNT(t, export_requests, 1);
            PDTI_COUNT(t, bytes_sent, x->json.len);
        }
        return 0;
    }

    if (x->spool != NULL && x->down) {
        /* The collector is down: straight to the spool; the probe of
         * pdti_exp_spool_replay() finds out when it is back. */
        pdti_exp_spool_or_drop(t, x, &x->body, n,
                      __atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE),
                      "collector unreachable");
        return 0;
    }
    started = export_start(t, x, n, x->batch_charge);
    x->batch_charge = 0; /* the slot holds it, or it was given back */
    return started;
}

/* Takes up to one batch off the queue (queue.mu held). */
static size_t take_batch(pdt_tracer *t, exporter *x)
{
    pdti_queue *q = &t->queue;
    size_t limit = (size_t)t->cfg.max_export_batch_size;

    for (;;) {
        size_t n = 0, bytes = 0;
        uint64_t qbytes = 0, charge = 0;
        pdti_rec *r, *last = NULL, *big = NULL;

        /* O(1) under the lock; the walk below runs without it, so that
         * the calling threads' enqueues never wait for it. */
        r = pdti_queue_detach_locked(q);
        if (r == NULL) {
            x->batch_charge = 0;
            return 0;
        }
        pthread_mutex_unlock(&q->mu);
        for (; r != NULL && n < limit; r = r->next) {
            size_t sz = pdti_span_body_size(r) + 16;
            if (sz > PDTI_MAX_SPAN_BYTES) {
                if (n == 0)
                    big = r; /* taken alone, and dropped below */
                break;
            }
            if (n > 0 && bytes + sz > PDTI_MAX_REQUEST_BYTES)
                break;
            x->batch[n++] = r;
            bytes += sz;
            qbytes += pdti_rec_bytes(r);
            charge += r->charge;
            last = r;
        }
        if (big != NULL) {
            /* Too big for any collector to accept: drop it here. */
            uint64_t big_bytes = pdti_rec_bytes(big), big_charge = big->charge;
            pthread_mutex_lock(&q->mu);
            pdti_queue_cut_locked(q, big, 1, big_bytes);
            q->processed_total++;
            PDTI_COUNT(t, dropped_export_failed, 1);
            uncharge(t, big_charge);
            pdti_rec_release(&t->pool, big); /* pool.mu nests in queue.mu */
            continue;
        }
        pthread_mutex_lock(&q->mu);
        pdti_queue_cut_locked(q, last, n, qbytes);
        x->batch_charge = charge;
        return n;
    }
}

static void spool_open_in_thread(pdt_tracer *t, exporter *x)
{
    int rc;

    x->spool_wanted = 0;
    rc = pdti_spool_open(&x->spool, t->cfg.spool_dir, t->cfg.spool_max_bytes,
                         &t->log);
    if (rc != PDT_OK)
        pdti_log(&t->log, PDT_LOG_ERROR, "spool unusable in this process, "
                 "failed batches will be dropped: %s", pdt_last_error());
}

static void *exporter_main(void *arg)
{
    pdt_tracer *t = arg;
    exporter *x = t->exporter_state;
    uint64_t next_due, delay_ns;
    struct timespec ts;

    if (x->spool_wanted) /* a forked child reopens the spool here */
        spool_open_in_thread(t, x);
    delay_ns = (uint64_t)t->cfg.schedule_delay_ms * 1000000u;
    pthread_mutex_lock(&t->queue.mu);
    next_due = pdt_now_ns() + delay_ns;
    for (;;) {
        uint64_t now = pdt_now_ns(), wake;
        int replay, urgent, want;
        size_t n;

        replay = pdti_exp_spool_replay_due(t, x, now);
        /* Urgent: close, a full batch, or a flush whose spans are not all
         * taken off the queue yet. */
        urgent = t->stopping ||
                 t->flush_target > t->queue.enqueued_total - t->queue.len ||
                 t->queue.len >= (uint64_t)t->cfg.max_export_batch_size ||
                 t->queue.bytes >= PDTI_MAX_REQUEST_BYTES;
        want = t->queue.len > 0 &&
               (urgent || now >= next_due ||
                __atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE));
        if (x->nsplit > 0 &&
            __atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE)) {
            /* Out of time: the halves waiting go the way of the queue. */
            split_part *sp = &x->split[--x->nsplit];
            size_t pn = sp->n;
            pthread_mutex_unlock(&t->queue.mu);
            pdti_exp_spool_or_drop(t, x, &sp->body, pn, 1,
                                   "shutdown deadline");
            uncharge(t, sp->charge);
            pthread_mutex_lock(&t->queue.mu);
            t->queue.processed_total += pn;
            pthread_cond_broadcast(&t->queue.cv_done);
            continue;
        }
        if (x->nsplit > 0 && slot_free(x)) {
            /* A half of a refused batch goes before fresh batches. */
            split_part *sp = &x->split[--x->nsplit];
            size_t pn = sp->n;
            int started;
            pdti_buf tmp = x->body;
            x->body = sp->body;
            sp->body = tmp;
            pthread_mutex_unlock(&t->queue.mu);
            started = export_start(t, x, pn, sp->charge);
            pthread_mutex_lock(&t->queue.mu);
            if (!started)
                t->queue.processed_total += pn;
            pthread_cond_broadcast(&t->queue.cv_done);
            continue;
        }
        if (want && __atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE)) {
            /* Out of time: spool (if there is one and time left) or drop
             * the rest, counted. The exports in flight stop as well. */
            n = take_batch(t, x);
            pthread_mutex_unlock(&t->queue.mu);
            if (n > 0)
                deliver_shutdown(t, x, n);
            release_all(t, x->batch, n);
            uncharge(t, x->batch_charge);
            pthread_mutex_lock(&t->queue.mu);
            t->queue.processed_total += n;
            pthread_cond_broadcast(&t->queue.cv_done);
            continue;
        }
        /* Spooled frames go out when nothing is in flight: while they are
         * due, a batch started by the delay alone waits for the exports
         * in flight to finish (then it goes first, and the replay after
         * it, as a flush or a full batch would). */
        if (want && slot_free(x) && (urgent || !replay || x->inflight == 0)) {
            int started = 0;
            n = take_batch(t, x);
            pthread_mutex_unlock(&t->queue.mu);
            if (n > 0)
                started = deliver(t, x, n);
            release_all(t, x->batch, n);
            if (!started)
                uncharge(t, x->batch_charge);
            pthread_mutex_lock(&t->queue.mu);
            if (!started)
                t->queue.processed_total += n;
            next_due = pdt_now_ns() + delay_ns;
            pthread_cond_broadcast(&t->queue.cv_done);
            continue;
        }
        if (want && x->spool != NULL && !slot_free(x) &&
            pdti_queue_pressed_locked(&t->queue)) {
            /* Queue pressure with every slot busy: the oldest batch goes
             * to the spool, and the exports in flight go on. */
            n = take_batch(t, x);
            pthread_mutex_unlock(&t->queue.mu);
            if (n > 0 && encode_batch(t, x, n, 0) == PDT_OK)
                pdti_exp_spool_or_drop(t, x, &x->body, n, 0,
                                       "queue pressure");
            release_all(t, x->batch, n);
            uncharge(t, x->batch_charge);
            pthread_mutex_lock(&t->queue.mu);
            t->queue.processed_total += n;
            pthread_cond_broadcast(&t->queue.cv_done);
            continue;
        }
        if (!pdti_queue_pressed_locked(&t->queue))
            __atomic_store_n(&x->pressure, 0, __ATOMIC_RELEASE);
        if (x->inflight > 0) {
            /* Drive the exports in flight: the transport returns within a
             * poll slice, or at once when one of them finishes. */
            uint64_t done;
            int wait_ms = 1000;
            if (!want && next_due > now && (next_due - now) / 1000000u <
                                               (uint64_t)wait_ms)
                wait_ms = (int)((next_due - now) / 1000000u) + 1;
            pthread_mutex_unlock(&t->queue.mu);
            pdti_transport_run(x->transport, wait_ms);
            done = reap(t, x);
            pthread_mutex_lock(&t->queue.mu);
            if (done != 0) {
                t->queue.processed_total += done;
                pthread_cond_broadcast(&t->queue.cv_done);
            }
            continue;
        }
        if (t->queue.len == 0) {
            if (t->stopping)
                break;
            if (t->flush_target > t->queue.processed_total) {
                /* A flush with nothing left to do: bring the target
                 * level. */
                t->flush_target = t->queue.processed_total;
                pthread_cond_broadcast(&t->queue.cv_done);
            }
        }
        if (replay) {
            pthread_mutex_unlock(&t->queue.mu);
            pdti_exp_spool_replay(t, x);
            pthread_mutex_lock(&t->queue.mu);
            continue;
        }
        if (now >= next_due)
            next_due = now + delay_ns;
        wake = next_due;
        if (x->spool != NULL && x->next_probe_ns < wake &&
            pdti_spool_pending(x->spool))
            wake = x->next_probe_ns;
        ts_at(wake, &ts);
        pthread_cond_timedwait(&t->queue.cv_work, &t->queue.mu, &ts);
    }
    t->exited = 1;
    pthread_cond_broadcast(&t->queue.cv_done);
    pthread_mutex_unlock(&t->queue.mu);
    return NULL;
}

/* n export slots on x->transport. PDT_OK or an error (set). */
static int slots_new(exporter *x, unsigned n)
{
    unsigned i;

    x->slots = calloc(n, sizeof(*x->slots));
    if (x->slots == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    x->nslots = n;
    for (i = 0; i < n; i++) {
        int rc = pdti_xfer_new(x->transport, &x->slots[i].xfer);
        if (rc != PDT_OK)
            return pdti_err(rc, "cannot set up export request %u of %u",
                            i + 1, n);
    }
    return PDT_OK;
}

/* The slots' buffers; their xfers go with the transport. */
static void slots_free(exporter *x)
{
    unsigned i;

    for (i = 0; i < x->nslots; i++)
        pdti_buf_free(&x->slots[i].body);
    free(x->slots);
    x->slots = NULL;
    x->nslots = 0;
}

/* in_child: after a fork, the spool is reopened by the new thread, and a
 * spool that cannot be opened only disables spooling. */
static int state_new(pdt_tracer *t, int in_child)
{
    exporter *x = calloc(1, sizeof(*x));
    int rc = PDT_OK;

    if (x == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    x->batch_cap = (size_t)t->cfg.max_export_batch_size;
    x->batch = calloc(x->batch_cap, sizeof(*x->batch));
    if (x->batch == NULL) {
        free(x);
        return pdti_err(PDT_ENOMEM, "out of memory");
    }
    if (t->cfg.exporter == PDT_EXPORTER_CONSOLE) {
        const char *path = t->cfg.console_path;
        if (path == NULL || strcmp(path, "-") == 0) {
            x->out = stdout;
        } else {
            x->out = fopen(path, "a");
            x->out_owned = 1;
            if (x->out == NULL)
                rc = pdti_err(PDT_EIO, "cannot open console output '%s': %s",
                              path, strerror(errno));
            else {
                /* One write() a line: lines from several processes (after
                 * fork) appending to the same file never interleave. */
                setvbuf(x->out, NULL, _IONBF, 0);
                x->out_fd = fileno(x->out);
            }
        }
    } else {
        rc = pdti_transport_new(&x->transport, &t->cfg);
        if (rc == PDT_OK)
            rc = slots_new(x, (unsigned)t->cfg.max_concurrent);
    }
    /* The spool serves the OTLP exporter only. */
    x->probe_ms = SPOOL_PROBE_MIN_MS;
    if (rc == PDT_OK && x->transport != NULL && t->cfg.spool_dir != NULL) {
        x->has_spool = 1;
        if (in_child)
            x->spool_wanted = 1;
        else
            rc = pdti_spool_open(&x->spool, t->cfg.spool_dir,
                                 t->cfg.spool_max_bytes, &t->log);
    } else if (rc == PDT_OK && t->cfg.spool_dir != NULL) {
        pdti_log(&t->log, PDT_LOG_WARN, "spool_dir is ignored: the spool "
                 "serves the OTLP exporter only");
    }
    if (rc != PDT_OK) {
        slots_free(x);
        if (x->transport != NULL)
            pdti_transport_free(x->transport);
        if (x->out_owned && x->out != NULL)
            fclose(x->out);
        free(x->batch);
        free(x);
        return rc;
    }
    t->exporter_state = x;
    return PDT_OK;
}

/*
 * in_child: called in a forked child for the parent's exporter state. A
 * thread of the parent may have held the console FILE's lock at the fork,
 * so the FILE is not touched: its descriptor is closed and the small
 * structure is left behind.
 */
static void state_free(pdt_tracer *t, int in_child)
{
    exporter *x = t->exporter_state;
    unsigned i;

    if (x == NULL)
        return;
    slots_free(x);
    if (x->transport != NULL)
        pdti_transport_free(x->transport);
    if (x->out_owned && x->out != NULL) {
        if (in_child)
            close(x->out_fd);
        else
            fclose(x->out);
    }
    pdti_spool_close(x->spool); /* touches no file: safe after a fork */
    pdti_buf_free(&x->replay);
    pdti_buf_free(&x->body);
    for (i = 0; i < SPLIT_MAX; i++)
        pdti_buf_free(&x->split[i].body);
    pdti_buf_free(&x->json);
    free(x->batch);
    free(x);
    t->exporter_state = NULL;
}

static int thread_start(pdt_tracer *t)
{
    sigset_t all, old;
    int rc;

    /* The exporter thread takes no signals: they belong to the host. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t->thread, NULL, exporter_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return pdti_err(PDT_EINTERNAL, "cannot start the exporter thread: %s",
                        strerror(rc));
    t->thread_started = 1;
    return PDT_OK;
}

int pdti_exporter_start(pdt_tracer *t)
{
    int rc;

    pdti_fork_handler_install();
    t->fork_gen = pdti_fork_generation();
    rc = state_new(t, 0);
    if (rc != PDT_OK)
        return rc;
    return thread_start(t);
}

/*
 * In a forked child, process.pid must name the child: re-encode the
 * resource if it carries the pid the library filled in (a value the user
 * set is kept).
 */
static void update_pid(pdt_tracer *t)
{
    char was[24], now[24];
    const char *v = pdti_kvlist_get(&t->cfg.resource, "process.pid");
    long pid = (long)getpid();

    snprintf(was, sizeof(was), "%ld", t->pid);
    snprintf(now, sizeof(now), "%ld", pid);
    if (v != NULL && strcmp(v, was) == 0 && pid != t->pid &&
        pdti_kvlist_set(&t->cfg.resource, "process.pid", now) == PDT_OK &&
        pdti_encode_preamble(t) != PDT_OK)
        pdti_log(&t->log, PDT_LOG_WARN, "cannot update process.pid after "
                 "fork");
    t->pid = pid;
}

int pdti_exporter_ensure(pdt_tracer *t)
{
    unsigned gen = pdti_fork_generation();
    int expected = 0;

    if (__atomic_load_n(&t->fork_gen, __ATOMIC_ACQUIRE) == gen)
        return PDT_OK;
    /* First use in a forked child: the exporter thread did not survive the
     * fork, and the queue holds the parent's spans, which are the parent's
     * to export. One caller rebuilds; the others wait for it. */
    if (!__atomic_compare_exchange_n(&t->fork_claim, &expected, 1, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&t->fork_gen, __ATOMIC_ACQUIRE) != gen)
            sched_yield();
        return PDT_OK;
    }
    {
        /* The pool's lock first: the queue gives its records back. */
        pdti_pool_after_fork(&t->pool);
        pdti_queue_after_fork(&t->queue, &t->pool);
        pthread_mutex_init(&t->log.lock, NULL);
        t->flush_target = 0;
        t->exited = 0;
        t->thread_started = 0;
        if (t->export_enabled) {
            update_pid(t);
            state_free(t, 1);
            if (state_new(t, 1) == PDT_OK)
                thread_start(t);
        }
        __atomic_store_n(&t->fork_gen, gen, __ATOMIC_RELEASE);
        __atomic_store_n(&t->fork_claim, 0, __ATOMIC_RELEASE);
    }
    return PDT_OK;
}

uint64_t pdti_exporter_stop(pdt_tracer *t, uint64_t deadline)
{
    uint64_t before = __atomic_load_n(&t->counters.dropped_shutdown,
                                      __ATOMIC_RELAXED);
    uint64_t soft = deadline;
    exporter *x;
    struct timespec ts;

    pdti_exporter_ensure(t);
    x = t->exporter_state;
    pthread_mutex_lock(&t->queue.mu);
    if (x != NULL && x->has_spool) {
        /* Keep part of the time for spooling what is left. */
        uint64_t now = pdt_now_ns(), reserve;
        if (deadline > now) {
            reserve = (deadline - now) / SPOOL_CLOSE_RESERVE_DIV;
            if (reserve > SPOOL_CLOSE_RESERVE_MAX_NS)
                reserve = SPOOL_CLOSE_RESERVE_MAX_NS;
            soft = deadline - reserve;
        }
        __atomic_store_n(&x->close_deadline, deadline, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&t->stopping, 1, __ATOMIC_RELEASE);
    t->flush_target = t->queue.enqueued_total;
    pthread_cond_signal(&t->queue.cv_work);
    if (x != NULL)
        pdti_exporter_wake(t);
    if (t->thread_started) {
        ts_at(soft, &ts);
        while (!t->exited && pdt_now_ns() < soft)
            pthread_cond_timedwait(&t->queue.cv_done, &t->queue.mu, &ts);
        if (!t->exited) {
            /* Time is up: the transport stops within milliseconds and the
             * thread spools (until the deadline) or drops what is left. */
            __atomic_store_n(&t->abort_flag, 1, __ATOMIC_SEQ_CST);
            if (x != NULL)
                __atomic_store_n(&x->yield, 1, __ATOMIC_SEQ_CST);
            pthread_cond_signal(&t->queue.cv_work);
            if (x != NULL)
                pdti_exporter_wake(t);
            /* The thread stops within milliseconds once aborted; a grace
             * period past the deadline covers a slow machine. A thread
             * that still has not stopped is stuck outside our control
             * (seen: an allocator lock left held by a fork): close must
             * still return, so the thread is let go and the tracer's
             * memory is left to it. */
            ts_at(deadline + STOP_GRACE_NS, &ts);
            while (!t->exited && pdt_now_ns() < deadline + STOP_GRACE_NS)
                pthread_cond_timedwait(&t->queue.cv_done, &t->queue.mu, &ts);
            if (!t->exited) {
                PDTI_COUNT(t, dropped_shutdown, t->queue.len);
                t->stuck = 1;
                pthread_mutex_unlock(&t->queue.mu);
                pthread_detach(t->thread);
                t->thread_started = 0;
                pdti_log(&t->log, PDT_LOG_ERROR, "the exporter thread did "
                         "not stop; it is abandoned with its memory");
                return __atomic_load_n(&t->counters.dropped_shutdown,
                                       __ATOMIC_RELAXED) - before;
            }
        }
    }
    pthread_mutex_unlock(&t->queue.mu);
    if (t->thread_started) {
        pthread_join(t->thread, NULL);
        t->thread_started = 0;
    }
    return __atomic_load_n(&t->counters.dropped_shutdown, __ATOMIC_RELAXED) -
           before;
}

void pdti_exporter_free(pdt_tracer *t)
{
    state_free(t, 0);
}
