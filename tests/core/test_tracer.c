/*
 * The tracer: options, disabled and "none" modes, statistics, a full queue
 * and an unreachable collector (flush and close bounded in time), many
 * threads at once, and fork.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pdtrace.h"
#include "tutil.h"

static int one_request(pdt_tracer *t, pdt_breakdown *bd)
{
    pdt_request *r;
    uint64_t a = pdt_now_ns() - 1000000000ull;
    int rc = pdt_request_begin(&r, t, NULL, NULL, a);

    if (rc != PDT_OK)
        return rc;
    if ((rc = pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1000)) ||
        (rc = pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 2000)) ||
        (rc = pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 3000)) ||
        (rc = pdt_request_tokens(r, a + 4000, 1)) ||
        (rc = pdt_request_tokens(r, a + 6000, 2)) ||
        (rc = pdt_request_end(r, a + 7000, bd))) {
        pdt_request_free(r);
        return rc;
    }
    pdt_request_free(r);
    return PDT_OK;
}

static void test_open_null_options(void **state)
{
    pdt_tracer *t = NULL;
    pdt_stats st = PDT_STATS_INIT;
    uint64_t dropped = 9;
    (void)state;

    assert_int_equal(pdt_tracer_open(&t, NULL), PDT_OK);
    assert_non_null(t);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_started, 0);
    /* Nothing to send: close does not wait for the collector. */
    assert_int_equal(pdt_tracer_close(t, 2000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
}

typedef struct bad_case {
    const char *what;
    int expect;
    void (*set)(pdt_tracer_options *o);
} bad_case;

static void s_size(pdt_tracer_options *o) { o->size = 8; }
static void s_exporter(pdt_tracer_options *o) { o->exporter = 9; }
static void s_exporter_neg(pdt_tracer_options *o) { o->exporter = -1; }
static void s_compression(pdt_tracer_options *o) { o->compression = 7; }
static void s_sampler(pdt_tracer_options *o) { o->sampler = 42; }
static void s_ratio(pdt_tracer_options *o)
{
    o->sampler = PDT_SAMPLER_TRACEIDRATIO;
    o->sampler_ratio = 1.5;
    o->sampler_ratio_set = 1;
}
static void s_tail(pdt_tracer_options *o) { o->tail_ttft_threshold_ms = -1; }
static void s_keep(pdt_tracer_options *o) { o->tail_keep_errors = 2; }
static void s_disabled(pdt_tracer_options *o) { o->disabled = 5; }
static void s_queue(pdt_tracer_options *o) { o->max_queue_size = -1; }
static void s_delay(pdt_tracer_options *o) { o->schedule_delay_ms = -5; }
static void s_timeout(pdt_tracer_options *o) { o->timeout_ms = -1; }
static void s_batch(pdt_tracer_options *o)
{
    o->max_queue_size = 10;
    o->max_export_batch_size = 20;
}
static void s_count(pdt_tracer_options *o) { o->attribute_count_limit = -3; }
static void s_endpoint(pdt_tracer_options *o) { o->endpoint = "not a url"; }
static void s_headers(pdt_tracer_options *o) { o->headers = "novalue"; }
static void s_service(pdt_tracer_options *o) { o->service_name = ""; }
static void s_resource(pdt_tracer_options *o)
{
    o->resource_attributes = "k=%zz";
}
static void s_console(pdt_tracer_options *o)
{
    o->exporter = PDT_EXPORTER_CONSOLE;
    o->console_path = "/nonexistent-dir-pdtrace/x/spans.jsonl";
}

static void test_bad_options(void **state)
{
    static const bad_case cases[] = {
        { "size", PDT_EINVAL, s_size },
        { "exporter", PDT_EINVAL, s_exporter },
        { "exporter<0", PDT_EINVAL, s_exporter_neg },
        { "compression", PDT_EINVAL, s_compression },
        { "sampler", PDT_EINVAL, s_sampler },
        { "ratio", PDT_EINVAL, s_ratio },
        { "tail", PDT_EINVAL, s_tail },
        { "keep", PDT_EINVAL, s_keep },
        { "disabled", PDT_EINVAL, s_disabled },
        { "queue", PDT_EINVAL, s_queue },
        { "delay", PDT_EINVAL, s_delay },
        { "timeout", PDT_EINVAL, s_timeout },
        { "batch", PDT_EINVAL, s_batch },
        { "count", PDT_EINVAL, s_count },
        { "endpoint", PDT_EPARSE, s_endpoint },
        { "headers", PDT_EPARSE, s_headers },
        { "service", PDT_EINVAL, s_service },
        { "resource", PDT_EPARSE, s_resource },
        { "console", PDT_EIO, s_console },
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
        pdt_tracer *t = (pdt_tracer *)&o;
        int rc;
        o.ignore_environment = 1;
        o.exporter = PDT_EXPORTER_NONE;
        cases[i].set(&o);
        pdt_clear_error();
        rc = pdt_tracer_open(&t, &o);
        if (rc != cases[i].expect)
            fail_msg("%s: got %d (%s), want %d", cases[i].what, rc,
                     pdt_last_error(), cases[i].expect);
        assert_null(t);
        assert_int_equal(pdt_last_error_code(), rc);
        if (pdt_last_error()[0] == '\0')
            fail_msg("%s: no message", cases[i].what);
    }
}

static void check_disabled(pdt_tracer *t, const char *path)
{
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    pdt_stats st = PDT_STATS_INIT;
    pdt_span *sp;
    uint64_t pending = 9;
    struct stat sb;

    assert_int_equal(one_request(t, &bd), PDT_OK);
    assert_true(bd.present & PDT_BD_TRUE_TTFT);
    assert_true(bd.true_ttft_ms == 0.004);
    assert_true(bd.tpot_ms == 0.001);
    assert_false(bd.sampled);
    assert_int_equal(pdt_span_start(&sp, t, "x", 1, NULL, NULL, NULL, 0),
                     PDT_OK);
    assert_int_equal(pdt_span_set_str(sp, "k", "v"), PDT_OK);
    pdt_span_free(sp);
    assert_int_equal(pdt_tracer_flush(t, 1000, &pending), PDT_OK);
    assert_int_equal(pending, 0);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_started, 4);
    assert_int_equal(st.spans_ended, 4);
    assert_int_equal(st.dropped_disabled, 4);
    assert_int_equal(st.spans_not_sampled, 0);
    assert_int_equal(st.spans_exported, 0);
    assert_int_equal(st.requests_completed, 1);
    assert_int_equal(pdt_tracer_close(t, 1000, NULL), PDT_OK);
    if (path != NULL)
        assert_true(stat(path, &sb) != 0 || sb.st_size == 0);
}

/* pdt_tracer_options_init writes the caller's size, not the library's: a
 * program built against an older header has a smaller struct, a newer one
 * a larger struct whose unknown fields must come out zero. */
static void test_options_init_sizes(void **state)
{
    unsigned char buf[sizeof(pdt_tracer_options) + 64];
    pdt_tracer_options *o = (pdt_tracer_options *)(void *)buf;
    size_t old = offsetof(pdt_tracer_options, spool_dir), i;
    pdt_tracer *t;
    (void)state;

    memset(buf, 0xa5, sizeof(buf));
    assert_int_equal(pdt_tracer_options_init(o, old), PDT_OK);
    assert_int_equal(o->size, old);
    assert_null(o->endpoint);
    assert_int_equal(o->compression, 0);
    for (i = old; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0xa5); /* nothing past the caller's size */
    o->ignore_environment = 1;
    o->exporter = PDT_EXPORTER_NONE;
    assert_int_equal(pdt_tracer_open(&t, o), PDT_OK);
    pdt_tracer_close(t, 1000, NULL);

    memset(buf, 0xa5, sizeof(buf));
    assert_int_equal(pdt_tracer_options_init(o, sizeof(buf) - 8), PDT_OK);
    assert_int_equal(o->size, sizeof(buf) - 8);
    assert_int_equal(o->compression_level, 0);
    for (i = sizeof(pdt_tracer_options); i < sizeof(buf) - 8; i++)
        assert_int_equal(buf[i], 0);
    for (; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0xa5);
    o->ignore_environment = 1;
    o->exporter = PDT_EXPORTER_NONE;
    assert_int_equal(pdt_tracer_open(&t, o), PDT_OK);
    pdt_tracer_close(t, 1000, NULL);

    assert_int_equal(pdt_tracer_options_init(o, old - 1), PDT_EINVAL);
    assert_int_equal(pdt_last_error_code(), PDT_EINVAL);
}

static void test_disabled(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    (void)state;

    /* OTEL_SDK_DISABLED=true from the environment. */
    topts_console(&o, path);
    o.ignore_environment = 0;
    setenv("OTEL_SDK_DISABLED", "true", 1);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    unsetenv("OTEL_SDK_DISABLED");
    check_disabled(t, path);

    /* disabled = 1 in the options. */
    o.ignore_environment = 1;
    o.disabled = 1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    check_disabled(t, path);

    /* disabled = -1 wins over the environment. */
    setenv("OTEL_SDK_DISABLED", "true", 1);
    o.ignore_environment = 0;
    o.disabled = -1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    unsetenv("OTEL_SDK_DISABLED");
    {
        pdt_breakdown bd = PDT_BREAKDOWN_INIT;
        tspans s;
        assert_int_equal(one_request(t, &bd), PDT_OK);
        tclose_and_load(t, path, &s);
        assert_int_equal(s.n, 3);
        tspans_free(&s);
    }
    tpath_remove(path);

    /* Exporter "none". */
    assert_int_equal(pdt_tracer_options_init(&o, sizeof(o)), PDT_OK);
    o.ignore_environment = 1;
    o.exporter = PDT_EXPORTER_NONE;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    check_disabled(t, NULL);
}

/* Closing the tracer while a request and a span are still open: both stay
 * usable, what they record is dropped (not exported), and freeing them
 * afterwards releases the tracer (ASan and valgrind see no use after free
 * and no leak). */
static void test_close_with_open_handles(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    pdt_request *req;
    pdt_span *sp;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    char path[256];
    tspans s;
    uint64_t dropped = 0;
    (void)state;

    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_request_begin(&req, t, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "open", PDT_SPAN_KIND_INTERNAL,
                                    NULL, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_request_mark(req, PDT_MARK_PREFILL_SENT, 0), PDT_OK);
    assert_int_equal(pdt_tracer_close(t, 2000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);

    /* Still valid after close. */
    assert_int_equal(pdt_request_mark(req, PDT_MARK_PREFILL_DONE, 0), PDT_OK);
    assert_int_equal(pdt_request_set_str(req, "k", "v"), PDT_OK);
    assert_int_equal(pdt_request_end(req, 0, &bd), PDT_OK);
    assert_true(bd.present & PDT_BD_PREFILL);
    assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
    /* New work on a closed tracer is refused. */
    {
        pdt_request *r2 = NULL;
        assert_int_equal(pdt_request_begin(&r2, t, NULL, NULL, 0),
                         PDT_ECLOSED);
        assert_null(r2);
    }
    pdt_span_free(sp);
    pdt_request_free(req); /* the last handle: the tracer goes with it */

    /* Nothing recorded after close reached the output. */
    tspans_load_file(path, &s);
    assert_int_equal(s.n, 0);
    tspans_free(&s);
    tpath_remove(path);
}

static void test_stats_consistency(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_stats st = PDT_STATS_INIT;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    pdt_span *sp;
    pdt_request *r;
    tspans s;
    struct stat sb;
    int i;
    (void)state;

    topts_console(&o, path);
    o.tail_keep_errors = -1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    for (i = 0; i < 10; i++)
        assert_int_equal(one_request(t, &bd), PDT_OK);
    for (i = 0; i < 5; i++) {
        assert_int_equal(pdt_span_start(&sp, t, "g", 1, NULL, NULL, NULL, 0),
                         PDT_OK);
        pdt_span_free(sp);
    }
    /* Unsampled: a remote parent with flags 00. */
    for (i = 0; i < 4; i++) {
        assert_int_equal(pdt_request_begin(&r, t,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", NULL,
            0), PDT_OK);
        assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                         PDT_OK);
        assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, 0),
                         PDT_OK);
        assert_int_equal(pdt_request_end(r, 0, NULL), PDT_OK);
        pdt_request_free(r);
    }
    assert_int_equal(pdt_tracer_flush(t, 10000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_started, 10 * 3 + 5 + 4 * 2);
    assert_int_equal(st.spans_ended, st.spans_started);
    assert_int_equal(st.spans_not_sampled, 8);
    assert_int_equal(st.spans_exported, 35);
    assert_int_equal(st.spans_ended,
                     st.spans_exported + st.spans_not_sampled +
                         st.spans_rejected + st.dropped_queue_full +
                         st.dropped_export_failed + st.dropped_shutdown +
                         st.dropped_disabled);
    assert_int_equal(st.requests_completed, 14);
    assert_int_equal(st.queue_depth, 0);
    assert_true(st.export_requests >= 1);
    assert_int_equal(st.export_failures, 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(st.bytes_sent, (uint64_t)sb.st_size);
    /* A smaller stats struct (an older caller) gets only its fields. */
    {
        pdt_stats small;
        memset(&small, 0xab, sizeof(small));
        small.size = offsetof(pdt_stats, spans_ended) + sizeof(uint64_t);
        assert_int_equal(pdt_tracer_stats(t, &small), PDT_OK);
        assert_int_equal(small.spans_ended, st.spans_ended);
        assert_true(small.spans_not_sampled == 0xababababababababull);
    }
    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 35);
    tspans_free(&s);
    tpath_remove(path);
}

/* A loopback port with nothing listening (connections are refused). */
static int closed_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void end_spans(pdt_tracer *t, int n)
{
    pdt_span *sp;
    int i;
    for (i = 0; i < n; i++) {
        assert_int_equal(pdt_span_start(&sp, t, "q", 1, NULL, NULL, NULL, 0),
                         PDT_OK);
        assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
        pdt_span_free(sp);
    }
}

static void quiet_log(void *ud, int level, const char *msg)
{
    (void)ud;
    (void)level;
    (void)msg;
}

static void test_queue_full_and_timeouts(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_stats st = PDT_STATS_INIT;
    char url[64];
    uint64_t t0, el, pending = 0, dropped = 0;
    struct timespec tick = { 0, 10000000 };
    int i, rc;
    (void)state;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/traces",
             closed_port());
    o.ignore_environment = 1;
    o.exporter = PDT_EXPORTER_OTLP;
    o.endpoint = url;
    o.max_queue_size = 4;
    o.max_export_batch_size = 4;
    o.schedule_delay_ms = 3600000;
    o.export_timeout_ms = 120000;
    o.timeout_ms = 60000;
    o.log_fn = quiet_log;
    /* One export at a time, so that "the exporter is busy" below is exact
     * (with more, later batches start before the first one's retries). */
    o.max_concurrent_exports = 1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);

    /* A full batch: the exporter takes it and keeps retrying. */
    end_spans(t, 4);
    for (i = 0; i < 500; i++) {
        assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
        if (st.queue_depth == 0)
            break;
        nanosleep(&tick, NULL);
    }
    assert_int_equal(st.queue_depth, 0);
    /* The exporter is busy: 4 fit in the queue, 6 are dropped. */
    end_spans(t, 10);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.queue_depth, 4);
    assert_int_equal(st.dropped_queue_full, 6);
    assert_int_equal(st.spans_ended, 14);

    t0 = pdt_now_ns();
    rc = pdt_tracer_flush(t, 300, &pending);
    el = (pdt_now_ns() - t0) / 1000000;
    assert_int_equal(rc, PDT_ETIMEOUT);
    assert_true(pdt_last_error()[0] != '\0');
    assert_int_equal(pending, 8);
    assert_true(el >= 250 && el <= 1300);

    t0 = pdt_now_ns();
    rc = pdt_tracer_close(t, 400, &dropped);
    el = (pdt_now_ns() - t0) / 1000000;
    assert_int_equal(rc, PDT_ETIMEOUT);
    assert_int_equal(dropped, 8);
    if (el > 1400)
        fail_msg("close took %llu ms with a 400 ms timeout",
                 (unsigned long long)el);
}

/* ---- many threads ------------------------------------------------------ */

#define NTHREADS 4
#define NREQ 2000

typedef struct worker {
    pdt_tracer *t;
    int failures;
} worker;

static void *work(void *p)
{
    worker *w = p;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    int i;
    for (i = 0; i < NREQ; i++)
        if (one_request(w->t, &bd) != PDT_OK || !bd.sampled)
            w->failures++;
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void assert_unique_ids(const tspans *s)
{
    const char **ids = malloc(s->n * sizeof(*ids));
    size_t i;

    assert_non_null(ids);
    for (i = 0; i < s->n; i++)
        ids[i] = s->v[i].span_id;
    qsort(ids, s->n, sizeof(*ids), cmp_str);
    for (i = 1; i < s->n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("span id %s appears twice", ids[i]);
    free(ids);
}

static void test_threads(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pthread_t th[NTHREADS];
    worker w[NTHREADS];
    pdt_stats st = PDT_STATS_INIT;
    tspans s;
    int i;
    (void)state;

    topts_console(&o, path);
    o.max_queue_size = 100000;
    o.schedule_delay_ms = 50;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    for (i = 0; i < NTHREADS; i++) {
        w[i].t = t;
        w[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(pdt_tracer_flush(t, 60000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_started, NTHREADS * NREQ * 3);
    assert_int_equal(st.spans_exported, NTHREADS * NREQ * 3);
    assert_int_equal(st.dropped_queue_full, 0);
    assert_int_equal(st.requests_completed, NTHREADS * NREQ);
    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, NTHREADS * NREQ * 3);
    assert_int_equal(tspans_count_name(&s, "llm_d.pd_proxy.decode"),
                     NTHREADS * NREQ);
    assert_unique_ids(&s);
    tspans_free(&s);
    tpath_remove(path);
}

/* ---- fork -------------------------------------------------------------- */

static void test_fork(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    tspans s;
    pid_t child;
    int i, status;
    size_t n_parent = 0, n_child = 0;
    (void)state;

    topts_console(&o, path);
    o.schedule_delay_ms = 20;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    for (i = 0; i < 5; i++)
        assert_int_equal(one_request(t, &bd), PDT_OK);
    assert_int_equal(pdt_tracer_flush(t, 10000, NULL), PDT_OK);
    /* Left in the queue at fork time: the parent's to export, never the
     * child's. */
    for (i = 0; i < 2; i++)
        assert_int_equal(one_request(t, &bd), PDT_OK);

    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        uint64_t dropped = 1;
        int bad = 0;
        for (i = 0; i < 7; i++)
            bad |= one_request(t, &bd) != PDT_OK;
        bad |= pdt_tracer_flush(t, 10000, NULL) != PDT_OK;
        for (i = 0; i < 7; i++)
            bad |= one_request(t, &bd) != PDT_OK;
        bad |= pdt_tracer_close(t, 10000, &dropped) != PDT_OK;
        bad |= dropped != 0;
        _exit(bad ? 3 : 0);
    }
    for (i = 0; i < 3; i++)
        assert_int_equal(one_request(t, &bd), PDT_OK);
    assert_int_equal(pdt_tracer_flush(t, 10000, NULL), PDT_OK);
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, (5 + 2 + 3 + 14) * 3);
    for (i = 0; i < (int)s.n; i++) {
        const tattr *pid = tres_attr(&s, &s.v[i], "process.pid");
        assert_non_null(pid);
        if (pid->i == (int64_t)getpid())
            n_parent++;
        else if (pid->i == (int64_t)child)
            n_child++;
        else
            fail_msg("span with process.pid %lld", (long long)pid->i);
    }
    assert_int_equal(n_parent, (5 + 2 + 3) * 3);
    assert_int_equal(n_child, 14 * 3);
    assert_unique_ids(&s);
    tspans_free(&s);
    tpath_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_null_options),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_options_init_sizes),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_close_with_open_handles),
        cmocka_unit_test(test_stats_consistency),
        cmocka_unit_test(test_queue_full_and_timeouts),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_fork),
    };
    /* The tests set their options; keep the environment from the host out
     * except where a test sets it on purpose. */
    unsetenv("OTEL_SDK_DISABLED");
    unsetenv("OTEL_TRACES_EXPORTER");
    unsetenv("PDTRACE_CONSOLE_PATH");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
