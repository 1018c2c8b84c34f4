/*
 * The exporter thread: takes batches off the queue by size or delay,
 * encodes them and delivers them (OTLP/HTTP or OTLP JSON lines), counts
 * every outcome, and stops within the deadline it is given.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "error.h"
#include "ids.h"
#include "json.h"
#include "transport.h"

typedef struct exporter {
    pdti_transport *transport; /* OTLP exporter */
    FILE *out;                 /* console exporter */
    int out_owned;
    pdti_buf body;
    pdti_buf json;
    pdti_rec **batch;
    size_t batch_cap;
} exporter;

static void ts_at(uint64_t mono_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(mono_ns / 1000000000u);
    ts->tv_nsec = (long)(mono_ns % 1000000000u);
}

static void release_all(pdt_tracer *t, pdti_rec **recs, size_t n)
{
    pdti_rec_release_many(t, recs, n);
}

/* Delivers one batch; counts the outcome. Runs without the lock. */
static void deliver(pdt_tracer *t, exporter *x, size_t n)
{
    pdti_export_result res;
    uint64_t deadline;
    int rc;

    rc = pdti_encode_request(t->preamble.data, t->scope_off,
                             t->preamble.data + t->scope_off,
                             t->preamble.len - t->scope_off, x->batch, n,
                             &x->body);
    if (rc != PDT_OK) {
        PDTI_COUNT(t, dropped_export_failed, n);
        pdti_log(&t->log, PDT_LOG_ERROR, "encoding a batch of %zu spans "
                 "failed: %s", n, pdt_last_error());
        return;
    }
    if (x->out != NULL) {
        rc = pdti_otlp_to_json(x->body.data, x->body.len, &x->json);
        if (rc == PDT_OK &&
            (fwrite(x->json.data, 1, x->json.len, x->out) != x->json.len ||
             fputc('\n', x->out) == EOF || fflush(x->out) != 0))
            rc = PDT_EIO;
        if (rc != PDT_OK) {
            PDTI_COUNT(t, dropped_export_failed, n);
            PDTI_COUNT(t, export_failures, 1);
            pdti_log(&t->log, PDT_LOG_ERROR, "console exporter: writing "
                     "%zu spans failed (%s)", n, strerror(errno));
        } else {
            PDTI_COUNT(t, spans_exported, n);
            PDTI_COUNT(t, export_requests, 1);
            PDTI_COUNT(t, bytes_sent, x->json.len + 1);
        }
        return;
    }

    deadline = pdt_now_ns() + (uint64_t)t->cfg.export_timeout_ms * 1000000u;
    memset(&res, 0, sizeof(res));
    pdti_transport_export(x->transport, x->body.data, x->body.len, deadline,
                          &t->abort_flag, &res);
    PDTI_COUNT(t, export_requests, res.attempts);
    if (res.attempts > 1)
        PDTI_COUNT(t, export_retries, res.attempts - 1);
    PDTI_COUNT(t, bytes_sent, res.bytes_sent);
    if (res.outcome == PDTI_DELIVERED) {
        uint64_t rej = res.rejected_spans < 0 ? 0
                       : (uint64_t)res.rejected_spans > n ? n
                       : (uint64_t)res.rejected_spans;
        PDTI_COUNT(t, spans_exported, n - rej);
        if (rej != 0) {
            PDTI_COUNT(t, spans_rejected, rej);
            pdti_log(&t->log, PDT_LOG_WARN, "collector rejected %llu of %zu "
                     "spans: %s", (unsigned long long)rej, n, res.message);
        }
        return;
    }
    PDTI_COUNT(t, export_failures, 1);
    if (res.outcome == PDTI_ABORTED &&
        __atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE)) {
        PDTI_COUNT(t, dropped_shutdown, n);
        pdti_log(&t->log, PDT_LOG_WARN, "shutdown deadline: %zu spans "
                 "dropped", n);
    } else {
        PDTI_COUNT(t, dropped_export_failed, n);
        pdti_log(&t->log, PDT_LOG_ERROR, "export of %zu spans failed "
                 "(HTTP %ld): %s", n, res.http_status, res.message);
    }
}

/* Takes up to one batch off the queue (lock held). */
static size_t take_batch(pdt_tracer *t, exporter *x)
{
    size_t n = 0, bytes = 0, limit = (size_t)t->cfg.max_export_batch_size;

    while (t->q_head != NULL && n < limit) {
        pdti_rec *r = t->q_head;
        size_t sz = pdti_span_body_size(r) + 16;
        if (n > 0 && bytes + sz > PDTI_MAX_REQUEST_BYTES)
            break;
        t->q_head = r->next;
        if (t->q_head == NULL)
            t->q_tail = NULL;
        t->q_len--;
        r->next = NULL;
        if (sz > PDTI_MAX_SPAN_BYTES) {
            /* Too big for any collector to accept: drop it here. */
            t->processed_total++;
            PDTI_COUNT(t, dropped_export_failed, 1);
            pdti_rec_release(t, r);
            continue;
        }
        x->batch[n++] = r;
        bytes += sz;
    }
    return n;
}

static void *exporter_main(void *arg)
{
    pdt_tracer *t = arg;
    exporter *x = t->exporter_state;
    uint64_t next_due;
    struct timespec ts;

    pthread_mutex_lock(&t->mu);
    next_due = pdt_now_ns() + (uint64_t)t->cfg.schedule_delay_ms * 1000000u;
    for (;;) {
        size_t n;
        int due;

        for (;;) {
            uint64_t now = pdt_now_ns();
            due = t->stopping || t->flush_target > t->processed_total ||
                  t->q_len >= (uint64_t)t->cfg.max_export_batch_size ||
                  (now >= next_due && t->q_len > 0);
            if (due)
                break;
            if (now >= next_due)
                next_due = now + (uint64_t)t->cfg.schedule_delay_ms *
                                     1000000u;
            ts_at(next_due, &ts);
            pthread_cond_timedwait(&t->cv_work, &t->mu, &ts);
        }
        if (t->q_len == 0) {
            if (t->stopping)
                break;
            /* A flush with nothing left to do: bring the target level. */
            if (t->flush_target > t->processed_total)
                t->flush_target = t->processed_total;
            pthread_cond_broadcast(&t->cv_done);
            continue;
        }
        if (__atomic_load_n(&t->abort_flag, __ATOMIC_ACQUIRE)) {
            /* Out of time: drop the rest, counted. */
            n = take_batch(t, x);
            pthread_mutex_unlock(&t->mu);
            PDTI_COUNT(t, dropped_shutdown, n);
            release_all(t, x->batch, n);
            pthread_mutex_lock(&t->mu);
            t->processed_total += n;
            pthread_cond_broadcast(&t->cv_done);
            continue;
        }
        n = take_batch(t, x);
        pthread_mutex_unlock(&t->mu);
        if (n > 0)
            deliver(t, x, n);
        release_all(t, x->batch, n);
        pthread_mutex_lock(&t->mu);
        t->processed_total += n;
        next_due = pdt_now_ns() + (uint64_t)t->cfg.schedule_delay_ms *
                                      1000000u;
        pthread_cond_broadcast(&t->cv_done);
    }
    t->exited = 1;
    pthread_cond_broadcast(&t->cv_done);
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static int state_new(pdt_tracer *t)
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
        }
    } else {
        rc = pdti_transport_new(&x->transport, &t->cfg);
    }
    if (rc != PDT_OK) {
        free(x->batch);
        free(x);
        return rc;
    }
    t->exporter_state = x;
    return PDT_OK;
}

static void state_free(pdt_tracer *t)
{
    exporter *x = t->exporter_state;

    if (x == NULL)
        return;
    if (x->transport != NULL)
        pdti_transport_free(x->transport);
    if (x->out_owned && x->out != NULL)
        fclose(x->out);
    pdti_buf_free(&x->body);
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
    rc = state_new(t);
    if (rc != PDT_OK)
        return rc;
    return thread_start(t);
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
        pthread_condattr_t ca;
        pdti_rec *r = t->q_head, *next;

        pthread_mutex_init(&t->mu, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&t->cv_work, &ca);
        pthread_cond_init(&t->cv_done, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&t->log.lock, NULL);
        while (r != NULL) {
            next = r->next;
            pdti_rec_release(t, r);
            r = next;
        }
        t->q_head = t->q_tail = NULL;
        t->q_len = 0;
        t->enqueued_total = t->processed_total = t->flush_target = 0;
        t->exited = 0;
        t->thread_started = 0;
        state_free(t);
        if (state_new(t) == PDT_OK)
            thread_start(t);
        __atomic_store_n(&t->fork_gen, gen, __ATOMIC_RELEASE);
        __atomic_store_n(&t->fork_claim, 0, __ATOMIC_RELEASE);
    }
    return PDT_OK;
}

uint64_t pdti_exporter_stop(pdt_tracer *t, uint64_t deadline)
{
    uint64_t before = __atomic_load_n(&t->counters.dropped_shutdown,
                                      __ATOMIC_RELAXED);
    struct timespec ts;

    pdti_exporter_ensure(t);
    pthread_mutex_lock(&t->mu);
    __atomic_store_n(&t->stopping, 1, __ATOMIC_RELEASE);
    t->flush_target = t->enqueued_total;
    pthread_cond_signal(&t->cv_work);
    if (t->thread_started) {
        ts_at(deadline, &ts);
        while (!t->exited && pdt_now_ns() < deadline)
            pthread_cond_timedwait(&t->cv_done, &t->mu, &ts);
        if (!t->exited) {
            /* Time is up: the transport stops within milliseconds and the
             * thread drops what is left. */
            __atomic_store_n(&t->abort_flag, 1, __ATOMIC_RELEASE);
            pthread_cond_signal(&t->cv_work);
            while (!t->exited)
                pthread_cond_wait(&t->cv_done, &t->mu);
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (t->thread_started) {
        pthread_join(t->thread, NULL);
        t->thread_started = 0;
    }
    return __atomic_load_n(&t->counters.dropped_shutdown, __ATOMIC_RELAXED) -
           before;
}

void pdti_exporter_free(pdt_tracer *t)
{
    state_free(t);
}
