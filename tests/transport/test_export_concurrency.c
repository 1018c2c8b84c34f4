/*
 * Several export requests in flight at once (max_concurrent_exports),
 * through the public API against tests/transport/scripted_server.py on
 * loopback: the server delays each answer and logs, per request, how many
 * requests it was serving at that moment. With 4 in flight the requests
 * overlap; with 1 they never do; either way every span arrives exactly
 * once, and flush and close wait for (or bound) what is in flight.
 */
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <pdtrace.h>

#ifndef PDT_TEST_PYTHON
#define PDT_TEST_PYTHON "python3"
#endif
#ifndef PDT_TEST_SERVER
#error "PDT_TEST_SERVER must name scripted_server.py"
#endif

#define BATCH 10
#define BATCHES 8
#define SPANS (BATCH * BATCHES)

static char tmpdir[64];
static unsigned scenario_no;

static double now_ms(void)
{
    return (double)pdt_now_ns() / 1e6;
}

/* ---- the scripted server ------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
    char log_path[128];
    char url[64];
} server;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void server_start(server *s, const char *script)
{
    char script_path[128], line[32];
    int fds[2];
    size_t got = 0;
    double until = now_ms() + 15000;

    memset(s, 0, sizeof(*s));
    scenario_no++;
    snprintf(script_path, sizeof(script_path), "%s/script-%u.json", tmpdir,
             scenario_no);
    snprintf(s->log_path, sizeof(s->log_path), "%s/log-%u.jsonl", tmpdir,
             scenario_no);
    write_file(script_path, script);
    write_file(s->log_path, "");
    assert_int_equal(pipe(fds), 0);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(PDT_TEST_PYTHON, "python3", PDT_TEST_SERVER, script_path,
              s->log_path, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (got < sizeof(line) - 1 && now_ms() < until) {
        struct pollfd p = { fds[0], POLLIN, 0 };
        ssize_t n;
        if (poll(&p, 1, 200) <= 0)
            continue;
        n = read(fds[0], line + got, 1);
        if (n <= 0 || line[got] == '\n')
            break;
        got++;
    }
    line[got] = '\0';
    close(fds[0]);
    s->port = atoi(line);
    if (s->port <= 0)
        fail_msg("scripted server did not start (got \"%s\")", line);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d/v1/traces",
             s->port);
}

static void server_stop(server *s)
{
    int st, i;

    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    for (i = 0; i < 200; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        struct timespec ts = { 0, 10000000L };
        nanosleep(&ts, NULL);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    long size;
    char *text;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    assert_true(size >= 0);
    rewind(f);
    text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    return text;
}

/* What the server saw: requests, the most it served at once, and the
 * request bodies (decoded from body_hex) one after the other. */
typedef struct seen {
    int requests;
    int max_concurrent;
    unsigned char *bodies;
    size_t len;
} seen;

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void seen_read(const server *s, seen *out)
{
    char *text = read_all(s->log_path), *line = text;

    memset(out, 0, sizeof(*out));
    out->bodies = malloc(strlen(text) / 2 + 1);
    assert_non_null(out->bodies);
    while (*line != '\0') {
        char *nl = strchr(line, '\n'), *p;
        if (nl == NULL)
            break;
        *nl = '\0';
        out->requests++;
        p = strstr(line, "\"concurrent\": ");
        assert_non_null(p);
        if (atoi(p + 14) > out->max_concurrent)
            out->max_concurrent = atoi(p + 14);
        p = strstr(line, "\"body_hex\": \"");
        assert_non_null(p);
        for (p += 13; hexval(p[0]) >= 0 && hexval(p[1]) >= 0; p += 2)
            out->bodies[out->len++] =
                (unsigned char)(hexval(p[0]) * 16 + hexval(p[1]));
        line = nl + 1;
    }
    free(text);
}

/* Times `name` occurs in the bodies. */
static int occurrences(const seen *sn, const char *name)
{
    size_t n = strlen(name), i;
    int count = 0;

    for (i = 0; i + n <= sn->len; i++)
        if (memcmp(sn->bodies + i, name, n) == 0)
            count++;
    return count;
}

/* ---- the tracer ---------------------------------------------------------- */

static pdt_tracer *open_tracer(const server *s, int64_t max_concurrent)
{
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t = NULL;

    o.ignore_environment = 1;
    o.exporter = PDT_EXPORTER_OTLP;
    o.endpoint = s->url;
    o.compression = PDT_COMPRESSION_NONE;
    o.sampler = PDT_SAMPLER_ALWAYS_ON;
    o.max_export_batch_size = BATCH;
    o.max_queue_size = 1000;
    o.schedule_delay_ms = 60000; /* only full batches, flush and close */
    o.max_concurrent_exports = max_concurrent;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    return t;
}

static void end_spans(pdt_tracer *t, int count)
{
    int i;

    for (i = 0; i < count; i++) {
        char name[32];
        pdt_span *sp = NULL;
        snprintf(name, sizeof(name), "cc-span-%04d", i);
        assert_int_equal(pdt_span_start(&sp, t, name, 1, NULL, NULL, NULL,
                                        0), PDT_OK);
        assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
        pdt_span_free(sp);
    }
}

/* Exports SPANS spans in BATCHES requests, each answered after 200 ms.
 * Returns the most requests the server served at once. */
static int export_delayed(int64_t max_concurrent)
{
    server s;
    pdt_tracer *t;
    pdt_stats st = PDT_STATS_INIT;
    uint64_t pending = 1, dropped = 1;
    seen sn;
    int i, most;

    server_start(&s, "{\"responses\": [{\"status\": 200, "
                     "\"delay_ms\": 200}]}");
    t = open_tracer(&s, max_concurrent);
    end_spans(t, SPANS);
    /* Flush returns only once every request in flight has been answered. */
    assert_int_equal(pdt_tracer_flush(t, 20000, &pending), PDT_OK);
    assert_int_equal(pending, 0);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_exported, SPANS);
    assert_int_equal(st.export_requests, BATCHES);
    assert_int_equal(st.export_failures, 0);
    assert_int_equal(st.dropped_queue_full + st.dropped_export_failed +
                     st.dropped_shutdown, 0);
    assert_int_equal(pdt_tracer_close(t, 5000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);

    seen_read(&s, &sn);
    assert_int_equal(sn.requests, BATCHES);
    for (i = 0; i < SPANS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "cc-span-%04d", i);
        if (occurrences(&sn, name) != 1)
            fail_msg("%s arrived %d times", name, occurrences(&sn, name));
    }
    most = sn.max_concurrent;
    free(sn.bodies);
    server_stop(&s);
    return most;
}

static void test_four_in_flight_overlap(void **state)
{
    int most;

    (void)state;
    most = export_delayed(4);
    if (most < 2 || most > 4)
        fail_msg("at most %d requests served at once, expected 2 to 4",
                 most);
}

static void test_one_in_flight_never_overlaps(void **state)
{
    (void)state;
    assert_int_equal(export_delayed(1), 1);
}

/* A collector that never answers: close stops every export in flight
 * within its timeout and counts their spans as dropped. */
static void test_close_bounded_with_exports_in_flight(void **state)
{
    server s;
    pdt_tracer *t;
    uint64_t dropped = 0;
    double t0;

    (void)state;
    server_start(&s, "{\"responses\": [{\"hang\": true}]}");
    t = open_tracer(&s, 4);
    end_spans(t, SPANS);
    /* Let the first requests start and hang. */
    {
        struct timespec ts = { 0, 300000000L };
        nanosleep(&ts, NULL);
    }
    t0 = now_ms();
    assert_int_equal(pdt_tracer_close(t, 800, &dropped), PDT_ETIMEOUT);
    if (now_ms() - t0 > 800 + 1500)
        fail_msg("close took %.0f ms", now_ms() - t0);
    assert_int_equal(dropped, SPANS);
    server_stop(&s);
}

/* Ends `count` spans in one batch of `batch`, flushes, and checks what
 * arrived: every span name in `want_once` exactly once over the requests
 * answered 2xx, the counters as given. */
static void split_scenario(const char *script, int count,
                           int64_t max_concurrent, int want_requests,
                           uint64_t want_exported, uint64_t want_dropped)
{
    server s;
    pdt_tracer *t;
    pdt_stats st = PDT_STATS_INIT;
    uint64_t pending = 1, dropped = 1;
    seen sn;

    server_start(&s, script);
    t = open_tracer(&s, max_concurrent);
    end_spans(t, count);
    assert_int_equal(pdt_tracer_flush(t, 20000, &pending), PDT_OK);
    assert_int_equal(pending, 0);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    if (st.spans_exported != want_exported ||
        st.dropped_export_failed != want_dropped)
        fail_msg("exported %llu (want %llu), dropped %llu (want %llu)",
                 (unsigned long long)st.spans_exported,
                 (unsigned long long)want_exported,
                 (unsigned long long)st.dropped_export_failed,
                 (unsigned long long)want_dropped);
    assert_int_equal(st.export_requests, want_requests);
    assert_int_equal(st.dropped_queue_full + st.dropped_shutdown, 0);
    assert_int_equal(pdt_tracer_close(t, 5000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
    seen_read(&s, &sn);
    assert_int_equal(sn.requests, want_requests);
    free(sn.bodies);
    server_stop(&s);
}

/* 413 for a batch: it is halved and both halves are sent, recursively;
 * nothing is lost. 8 spans: 8 -> 413, 4 -> 413, 2 -> 200, 2 -> 200,
 * 4 -> 200. */
static void test_413_halves_the_batch(void **state)
{
    (void)state;
    split_scenario("{\"responses\": [{\"status\": 413}, "
                   "{\"status\": 413}, {\"status\": 200}]}",
                   8, 1, 5, 8, 0);
}

/* 400 for a batch of several spans halves it too; only the single span
 * still refused is dropped and counted. 2 spans: 2 -> 400, 1 -> 400
 * (dropped), 1 -> 200. */
static void test_400_drops_only_the_refused_span(void **state)
{
    (void)state;
    split_scenario("{\"responses\": [{\"status\": 400}, "
                   "{\"status\": 400}, {\"status\": 200}]}",
                   2, 4, 3, 1, 1);
}

/* A receiver refusing everything: every span ends up dropped exactly once
 * and the halving stops at single spans (10 spans: 19 requests). */
static void test_413_always_terminates(void **state)
{
    (void)state;
    split_scenario("{\"responses\": [{\"status\": 413}]}", BATCH, 4,
                   2 * BATCH - 1, 0, BATCH);
}

static void test_bad_option_refused(void **state)
{
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t = NULL;

    (void)state;
    o.ignore_environment = 1;
    o.exporter = PDT_EXPORTER_NONE;
    o.max_concurrent_exports = 65;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_EINVAL);
    assert_null(t);
    o.max_concurrent_exports = -1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_EINVAL);
    o.max_concurrent_exports = 64;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    pdt_tracer_close(t, 1000, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_four_in_flight_overlap),
        cmocka_unit_test(test_one_in_flight_never_overlaps),
        cmocka_unit_test(test_close_bounded_with_exports_in_flight),
        cmocka_unit_test(test_413_halves_the_batch),
        cmocka_unit_test(test_400_drops_only_the_refused_span),
        cmocka_unit_test(test_413_always_terminates),
        cmocka_unit_test(test_bad_option_refused),
    };
    int rc;

    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pdt-cc-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            rc = rc != 0 ? rc : 1;
    }
    return rc;
}
