/*
 * Span records and request objects under many short-lived threads and two
 * tracers: waves of threads that each run requests on both tracers
 * (sampled, unsampled, abandoned, and one handed to another thread to
 * end), then exit; a request still open when its tracer closes; every
 * span is exported or counted, no record or request object is lost or
 * shared between the tracers, and close frees everything (this test runs
 * under ThreadSanitizer and valgrind).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pdtrace.h"
#include "tutil.h"

#define NWAVES 3
#define NTHREADS 4
#define NREQ 60 /* per thread and wave, on each tracer */

/* An inbound parent with the sampled flag off. */
#define UNSAMPLED "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"

typedef struct {
    pdt_tracer *t[2];
    pdt_request *handed[2]; /* left open for the main thread to end */
    int failures;
} worker;

/* Per tracer and per wave-thread: what the spans must add up to. */
typedef struct {
    uint64_t exported;     /* spans that must reach the console file */
    uint64_t not_sampled;
    uint64_t requests;
} expect;

/* Warnings logged (a span ended on a closed tracer is dropped, and said). */
static int warnings;

static void count_log(void *ud, int level, const char *msg)
{
    (void)ud;
    (void)msg;
    if (level == PDT_LOG_WARN)
        __atomic_add_fetch(&warnings, 1, __ATOMIC_RELAXED);
}

static int full_request(pdt_tracer *t)
{
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a = pdt_now_ns() - 1000000000ull;
    int rc = pdt_request_begin(&r, t, NULL, NULL, a);

    if (rc != PDT_OK)
        return rc;
    if ((rc = pdt_request_set_id(r, "pool-threads")) ||
        (rc = pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1000)) ||
        (rc = pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 2000)) ||
        (rc = pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 3000)) ||
        (rc = pdt_request_tokens(r, a + 4000, 1)) ||
        (rc = pdt_request_end(r, a + 7000, &bd))) {
        pdt_request_free(r);
        return rc;
    }
    pdt_request_free(r);
    return bd.sampled ? PDT_OK : PDT_ESTATE;
}

static int unsampled_request(pdt_tracer *t)
{
    pdt_request *r;
    int rc = pdt_request_begin(&r, t, UNSAMPLED, NULL, 0);

    if (rc != PDT_OK)
        return rc;
    if ((rc = pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL)) ||
        (rc = pdt_request_mark(r, PDT_MARK_DECODE_SENT, 0)) ||
        (rc = pdt_request_end(r, 0, NULL))) {
        pdt_request_free(r);
        return rc;
    }
    pdt_request_free(r);
    return PDT_OK;
}

/* Freed without end: ended as abandoned, root and prefill exported. */
static int abandoned_request(pdt_tracer *t)
{
    pdt_request *r;
    int rc = pdt_request_begin(&r, t, NULL, NULL, 0);

    if (rc != PDT_OK)
        return rc;
    rc = pdt_request_mark(r, PDT_MARK_PREFILL_SENT, 0);
    pdt_request_free(r);
    return rc;
}

static int plain_span(pdt_tracer *t)
{
    pdt_span *sp;
    int rc = pdt_span_start(&sp, t, "pool.span", PDT_SPAN_KIND_INTERNAL,
                        NULL, NULL, NULL, 0);

    if (rc != PDT_OK)
        return rc;
    rc = pdt_span_set_int(sp, "i", 7);
    if (rc == PDT_OK)
        rc = pdt_span_end(sp, 0);
    pdt_span_free(sp);
    return rc;
}

static void *work(void *arg)
{
    worker *w = arg;
    int i, k;

    /* The two tracers interleaved request by request, so that a thread
     * holds records of both at once. */
    for (i = 0; i < NREQ; i++) {
        for (k = 0; k < 2; k++) {
            pdt_tracer *t = w->t[k];
            int rc;
            switch (i % 6) {
            case 3: rc = unsampled_request(t); break;
            case 4: rc = abandoned_request(t); break;
            case 5: rc = plain_span(t); break;
            default: rc = full_request(t); break;
            }
            if (rc != PDT_OK)
                w->failures++;
        }
    }
    /* One request per tracer left open, ended by another thread after this
     * one has exited. */
    for (k = 0; k < 2; k++) {
        w->handed[k] = NULL;
        if (pdt_request_begin(&w->handed[k], w->t[k], NULL, NULL, 0) !=
                PDT_OK ||
            pdt_request_mark(w->handed[k], PDT_MARK_PREFILL_SENT, 0) !=
                PDT_OK)
            w->failures++;
    }
    return NULL;
}

/* What one thread of one wave adds on each tracer. */
static void expect_thread(expect *e)
{
    int i;

    for (i = 0; i < NREQ; i++) {
        switch (i % 6) {
        case 3: e->not_sampled += 2; e->requests++; break;
        case 4: e->exported += 2; e->requests++; break;
        case 5: e->exported += 1; break;
        default: e->exported += 3; e->requests++; break;
        }
    }
    e->exported += 2; /* the handed request: root and prefill */
    e->requests++;
}

static void check_stats(pdt_tracer *t, const expect *e, uint64_t open_spans)
{
    pdt_stats st = PDT_STATS_INIT;

    assert_int_equal(pdt_tracer_flush(t, 60000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_started,
                     e->exported + e->not_sampled + open_spans);
    assert_int_equal(st.spans_exported, e->exported);
    assert_int_equal(st.spans_not_sampled, e->not_sampled);
    assert_int_equal(st.requests_completed, e->requests);
    assert_int_equal(st.spans_ended,
                     st.spans_exported + st.spans_not_sampled +
                         st.spans_rejected + st.dropped_queue_full +
                         st.dropped_export_failed + st.dropped_shutdown +
                         st.dropped_disabled);
    assert_int_equal(st.dropped_queue_full, 0);
    assert_int_equal(st.queue_depth, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* No span appears twice, within a tracer's file or across the two. */
static void assert_unique_ids(const tspans *a, const tspans *b)
{
    size_t n = a->n + b->n, i, j = 0;
    const char **ids = malloc((n ? n : 1) * sizeof(*ids));

    assert_non_null(ids);
    for (i = 0; i < a->n; i++)
        ids[j++] = a->v[i].span_id;
    for (i = 0; i < b->n; i++)
        ids[j++] = b->v[i].span_id;
    qsort(ids, n, sizeof(*ids), cmp_str);
    for (i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("span id %s appears twice", ids[i]);
    free(ids);
}

static void test_waves_two_tracers_close(void **state)
{
    pdt_tracer *t[2];
    pdt_tracer_options o[2];
    char path[2][256];
    pthread_t th[NTHREADS];
    worker w[NTHREADS];
    expect e[2];
    pdt_request *late;
    tspans s[2];
    uint64_t dropped = 1;
    int wave, i, k;
    (void)state;

    memset(e, 0, sizeof(e));
    __atomic_store_n(&warnings, 0, __ATOMIC_RELAXED);
    for (k = 0; k < 2; k++) {
        topts_console(&o[k], path[k]);
        o[k].max_queue_size = 100000;
        o[k].schedule_delay_ms = 20;
        o[k].tail_keep_errors = -1; /* unsampled stays unsampled */
        o[k].log_fn = count_log;
        assert_int_equal(pdt_tracer_open(&t[k], &o[k]), PDT_OK);
    }
    for (wave = 0; wave < NWAVES; wave++) {
        for (i = 0; i < NTHREADS; i++) {
            w[i].t[0] = t[0];
            w[i].t[1] = t[1];
            w[i].failures = 0;
            assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
        }
        for (i = 0; i < NTHREADS; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            assert_int_equal(w[i].failures, 0);
            for (k = 0; k < 2; k++) {
                expect_thread(&e[k]);
                /* Ended here, on another thread than the one that began
                 * it, after that thread has exited. */
                assert_int_equal(pdt_request_mark(w[i].handed[k],
                                                  PDT_MARK_PREFILL_DONE, 0),
                                 PDT_OK);
                assert_int_equal(pdt_request_end(w[i].handed[k], 0, NULL),
                                 PDT_OK);
                pdt_request_free(w[i].handed[k]);
            }
        }
        /* Between waves, the main thread uses both tracers too. */
        for (k = 0; k < 2; k++) {
            assert_int_equal(full_request(t[k]), PDT_OK);
            e[k].exported += 3;
            e[k].requests++;
        }
    }
    /* A request open on tracer 1 when it closes: the tracer stays alive
     * for it, and its spans are counted as dropped at shutdown. */
    assert_int_equal(pdt_request_begin(&late, t[1], NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_request_mark(late, PDT_MARK_PREFILL_SENT, 0),
                     PDT_OK);
    check_stats(t[0], &e[0], 0);
    check_stats(t[1], &e[1], 2);

    tclose_and_load(t[0], path[0], &s[0]);
    assert_int_equal(pdt_tracer_close(t[1], 10000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
    /* Closed: the request's spans are dropped, not exported. */
    assert_int_equal(pdt_request_end(late, 0, NULL), PDT_OK);
    pdt_request_free(late);
    assert_int_equal(__atomic_load_n(&warnings, __ATOMIC_RELAXED), 1);
    assert_int_equal(tspans_load_file(path[1], &s[1]), 0);

    for (k = 0; k < 2; k++) {
        assert_int_equal(s[k].n, e[k].exported);
        assert_int_equal(tspans_count_name(&s[k], "pool.span"),
                         NWAVES * NTHREADS * (NREQ / 6));
        assert_int_equal(tspans_count_name(&s[k], "llm_d.pd_proxy.request"),
                         e[k].requests - NWAVES * NTHREADS * (NREQ / 6));
    }
    assert_unique_ids(&s[0], &s[1]);
    for (k = 0; k < 2; k++) {
        tspans_free(&s[k]);
        tpath_remove(path[k]);
    }
}

/* A thread that exits with requests of a tracer that was closed while it
 * ran: nothing it held is lost or used after the tracer goes. */
typedef struct {
    pdt_tracer *t;
    pthread_barrier_t *bar;
    int failures;
} closer_arg;

static void *run_across_close(void *arg)
{
    closer_arg *c = arg;
    pdt_request *r[4];
    int i;

    for (i = 0; i < 20; i++)
        if (full_request(c->t) != PDT_OK)
            c->failures++;
    for (i = 0; i < 4; i++)
        if (pdt_request_begin(&r[i], c->t, NULL, NULL, 0) != PDT_OK)
            c->failures++;
    pthread_barrier_wait(c->bar); /* the main thread closes the tracer */
    pthread_barrier_wait(c->bar);
    for (i = 0; i < 4; i++) {
        if (pdt_request_end(r[i], 0, NULL) != PDT_OK)
            c->failures++;
        pdt_request_free(r[i]);
    }
    return NULL;
}

static void test_close_while_threads_hold_requests(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pthread_t th[NTHREADS];
    closer_arg c[NTHREADS];
    pthread_barrier_t bar;
    tspans s;
    uint64_t dropped = 1;
    int i;
    (void)state;

    topts_console(&o, path);
    o.max_queue_size = 100000;
    o.log_fn = count_log;
    __atomic_store_n(&warnings, 0, __ATOMIC_RELAXED);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pthread_barrier_init(&bar, NULL, NTHREADS + 1), 0);
    for (i = 0; i < NTHREADS; i++) {
        c[i].t = t;
        c[i].bar = &bar;
        c[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, run_across_close,
                                        &c[i]), 0);
    }
    pthread_barrier_wait(&bar);
    assert_int_equal(pdt_tracer_close(t, 30000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
    pthread_barrier_wait(&bar);
    for (i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(c[i].failures, 0);
    }
    pthread_barrier_destroy(&bar);
    /* Each request ended after the close was dropped, and said so. */
    assert_int_equal(__atomic_load_n(&warnings, __ATOMIC_RELAXED),
                     NTHREADS * 4);
    /* Only what ended before the close was exported. */
    assert_int_equal(tspans_load_file(path, &s), 0);
    assert_int_equal(s.n, NTHREADS * 20 * 3);
    tspans_free(&s);
    tpath_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waves_two_tracers_close),
        cmocka_unit_test(test_close_while_threads_hold_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
