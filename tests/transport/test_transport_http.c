/*
 * Integration test of the OTLP/HTTP transport against a real HTTP peer on
 * loopback: tests/transport/scripted_server.py, started per scenario as a
 * child process, answers from a script and logs every request it gets
 * (one flat JSON object per line), which the checks below read.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pdtrace/common.h"
#include "pdtrace/tracer.h"
#include "transport.h"

#ifndef PDT_TEST_PYTHON
#define PDT_TEST_PYTHON "python3"
#endif
#ifndef PDT_TEST_SERVER
#error "PDT_TEST_SERVER must name scripted_server.py"
#endif

#define SECRET "secret-value-123"
#define MAX_LOG 64

static char tmpdir[64];
static unsigned scenario_no;

/* ---- time ---------------------------------------------------------------- */

static double now_ms(void)
{
    return (double)pdt_now_ns() / 1e6;
}

static uint64_t deadline_in(double ms)
{
    return pdt_now_ns() + (uint64_t)(ms * 1e6);
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- the scripted server ------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
    char log_path[128];
    char *lines[MAX_LOG]; /* the log, after log_read() */
    size_t nlines;
    char *text;
} server;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* Starts the server with a JSON script; returns once it printed its port. */
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
        if (n <= 0)
            break;
        if (line[got] == '\n')
            break;
        got++;
    }
    line[got] = '\0';
    close(fds[0]);
    s->port = atoi(line);
    if (s->port <= 0)
        fail_msg("scripted server did not start (got \"%s\")", line);
}

static void log_free(server *s)
{
    free(s->text);
    s->text = NULL;
    s->nlines = 0;
}

static void server_stop(server *s)
{
    int st, i;

    log_free(s);
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    for (i = 0; i < 200; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
}

/* Reads the request log into s->lines. */
static void log_read(server *s)
{
    FILE *f;
    long size;
    char *p;

    log_free(s);
    f = fopen(s->log_path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    assert_true(size >= 0);
    rewind(f);
    s->text = malloc((size_t)size + 1);
    assert_non_null(s->text);
    assert_int_equal(fread(s->text, 1, (size_t)size, f), (size_t)size);
    s->text[size] = '\0';
    fclose(f);
    for (p = s->text; *p != '\0' && s->nlines < MAX_LOG;) {
        char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        *nl = '\0';
        s->lines[s->nlines++] = p;
        p = nl + 1;
    }
}

/* Waits up to ms for the log to hold at least n entries. */
static void log_wait(server *s, size_t n, long ms)
{
    double until = now_ms() + (double)ms;

    for (;;) {
        log_read(s);
        if (s->nlines >= n || now_ms() >= until)
            return;
        sleep_ms(10);
    }
}

/* The raw value text after "key": in a flat JSON line, or NULL. */
static const char *json_raw(const char *line, const char *key)
{
    char pat[96];
    const char *p;

    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    p = strstr(line, pat);
    return p != NULL ? p + strlen(pat) : NULL;
}

static double json_num(const char *line, const char *key)
{
    const char *p = json_raw(line, key);
    if (p == NULL)
        fail_msg("no \"%s\" in %.200s", key, line);
    return strtod(p, NULL);
}

/* Copies a string value (escapes left as they are); 0 if absent. */
static int json_str(const char *line, const char *key, char *out, size_t cap)
{
    const char *p = json_raw(line, key), *e;
    size_t n;

    if (p == NULL || *p != '"')
        return 0;
    p++;
    for (e = p; *e != '\0' && !(*e == '"' && e[-1] != '\\'); e++)
        ;
    n = (size_t)(e - p);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 1;
}

static void assert_json_str(const char *line, const char *key,
                            const char *want)
{
    char got[512];
    if (!json_str(line, key, got, sizeof(got)))
        fail_msg("no \"%s\" in %.300s", key, line);
    assert_string_equal(got, want);
}

/* ---- configuration and bodies -------------------------------------------- */

typedef struct fixture {
    pdti_config cfg;
    pdti_kv kv[4];
    char endpoint[96];
    pdti_transport *t;
} fixture;

static void fixture_init(fixture *f, int port, int compression,
                         int64_t timeout_ms)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->endpoint, sizeof(f->endpoint),
             "http://127.0.0.1:%d/v1/traces", port);
    f->kv[0].key = "x-api-key";
    f->kv[0].value = SECRET;
    f->kv[1].key = "X-Tenant";
    f->kv[1].value = "acme";
    f->kv[2].key = "x-injected";
    f->kv[2].value = "a\r\nEvil: 1"; /* must not be sent */
    f->kv[3].key = "x-empty";
    f->kv[3].value = "";
    f->cfg.endpoint = f->endpoint;
    f->cfg.headers.items = f->kv;
    f->cfg.headers.count = 4;
    f->cfg.compression = compression;
    f->cfg.timeout_ms = timeout_ms;
    f->cfg.exporter = PDT_EXPORTER_OTLP;
    assert_int_equal(pdti_transport_new(&f->t, &f->cfg), PDT_OK);
    assert_non_null(f->t);
}

static void fixture_free(fixture *f)
{
    pdti_transport_free(f->t);
    f->t = NULL;
}

/* A protobuf-looking body: repetitive, with some noise. */
static uint8_t *make_body(size_t n, uint32_t seed)
{
    uint8_t *b = malloc(n);
    size_t i;

    assert_non_null(b);
    for (i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (i % 64) < 48 ? (uint8_t)("span.llm_d.pd_proxy.decode"[i % 26])
                             : (uint8_t)(seed >> 16);
    }
    return b;
}

static void to_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int do_export(fixture *f, const uint8_t *body, size_t len,
                     double deadline_ms, const int *abort_flag,
                     pdti_export_result *res)
{
    return pdti_transport_export(f->t, body, len, deadline_in(deadline_ms),
                                 abort_flag, res);
}

static const uint8_t small_body[] = { 0x0a, 0x03, 0x0a, 0x01, 0x00 };

/* ---- scenarios ------------------------------------------------------------ */

static void test_delivered_and_headers(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    char ua[64];

    (void)state;
    server_start(&s, "{\"responses\": [{\"status\": 200}]}");
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                               NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_int_equal(res.http_status, 200);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(res.rejected_spans, 0);
    assert_string_equal(res.message, "");
    assert_true(res.bytes_sent >= sizeof(small_body) + 50);

    log_read(&s);
    assert_int_equal(s.nlines, 1);
    assert_json_str(s.lines[0], "method", "POST");
    assert_json_str(s.lines[0], "path", "/v1/traces");
    assert_json_str(s.lines[0], "h_content-type", "application/x-protobuf");
    assert_null(json_raw(s.lines[0], "h_content-encoding"));
    snprintf(ua, sizeof(ua), "libpdtrace/%s", PDT_VERSION_STRING);
    assert_json_str(s.lines[0], "h_user-agent", ua);
    assert_json_str(s.lines[0], "h_x-api-key", SECRET);
    assert_json_str(s.lines[0], "h_x-tenant", "acme");
    assert_json_str(s.lines[0], "h_x-empty", "");
    assert_null(json_raw(s.lines[0], "h_x-injected"));
    assert_null(json_raw(s.lines[0], "h_evil"));
    assert_null(json_raw(s.lines[0], "h_expect"));
    assert_int_equal((int)json_num(s.lines[0], "body_len"),
                     (int)sizeof(small_body));
    assert_json_str(s.lines[0], "body_hex", "0a030a0100");
    fixture_free(&f);
    server_stop(&s);
}

static void test_partial_success(void **state)
{
    static const char text[] = "3 spans rejected, key " SECRET " is fine";
    server s;
    fixture f;
    pdti_export_result res;
    uint8_t pb[128];
    char hex[300], script[512];
    size_t n = 0, tl = strlen(text);

    (void)state;
    pb[n++] = 0x0a;
    pb[n++] = (uint8_t)(2 + 2 + tl);
    pb[n++] = 0x08;
    pb[n++] = 0x03;
    pb[n++] = 0x12;
    pb[n++] = (uint8_t)tl;
    memcpy(pb + n, text, tl);
    n += tl;
    to_hex(pb, n, hex);
    snprintf(script, sizeof(script),
             "{\"responses\": [{\"status\": 200, \"body_hex\": \"%s\"}]}", hex);
    server_start(&s, script);
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                               NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(res.rejected_spans, 3);
    assert_non_null(strstr(res.message, "3 spans rejected, key "));
    /* A configured header value never shows in the message. */
    assert_null(strstr(res.message, SECRET));
    fixture_free(&f);
    server_stop(&s);
}

/* A 2xx whose body is not protobuf is still delivered. */
static void test_2xx_garbage_body(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;

    (void)state;
    /* "<html>oops</html>" */
    server_start(&s, "{\"responses\": [{\"status\": 202, \"body_hex\": "
                     "\"3c68746d6c3e6f6f70733c2f68746d6c3e\"}]}");
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                               NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_int_equal(res.http_status, 202);
    assert_int_equal(res.rejected_spans, 0);
    assert_non_null(strstr(res.message, "not an ExportTraceServiceResponse"));
    fixture_free(&f);
    server_stop(&s);
}

static void check_not_retried(int status)
{
    server s;
    fixture f;
    pdti_export_result res;
    char script[256];
    double t0;

    snprintf(script, sizeof(script),
             "{\"responses\": [{\"status\": %d, \"headers\": "
             "{\"Retry-After\": \"0\"}}, {\"status\": 200}]}",
             status);
    server_start(&s, script);
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    t0 = now_ms();
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                               NULL, &res), PDT_OK);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(res.outcome, PDTI_FAILED);
    assert_int_equal(res.http_status, status);
    assert_int_equal(res.attempts, 1);
    assert_non_null(strstr(res.message, "not retryable"));
    sleep_ms(100); /* a stray retry would have arrived by now */
    log_read(&s);
    assert_int_equal(s.nlines, 1);
    fixture_free(&f);
    server_stop(&s);
}

static void test_4xx_5xx_not_retried(void **state)
{
    (void)state;
    check_not_retried(400);
    check_not_retried(401);
    check_not_retried(404);
    check_not_retried(413);
    check_not_retried(500);
    check_not_retried(501);
}

/* Status then 200; Retry-After in seconds. Returns the measured gap. */
static void check_retry_after_seconds(int status, int secs)
{
    server s;
    fixture f;
    pdti_export_result res;
    char script[256];
    double gap;

    snprintf(script, sizeof(script),
             "{\"responses\": [{\"status\": %d, \"headers\": "
             "{\"Retry-After\": \"%d\"}}, {\"status\": 200}]}",
             status, secs);
    server_start(&s, script);
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 8000,
                               NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_int_equal(res.http_status, 200);
    assert_int_equal(res.attempts, 2);
    log_read(&s);
    assert_int_equal(s.nlines, 2);
    gap = json_num(s.lines[1], "t") - json_num(s.lines[0], "t");
    if (gap < secs - 0.01 || gap > secs + 0.5)
        fail_msg("HTTP %d, Retry-After %d: retried after %.3f s", status,
                 secs, gap);
    /* Both attempts on one kept-alive connection. */
    assert_int_equal((int)json_num(s.lines[0], "client_port"),
                     (int)json_num(s.lines[1], "client_port"));
    fixture_free(&f);
    server_stop(&s);
}

static void test_retry_after_seconds(void **state)
{
    (void)state;
    check_retry_after_seconds(429, 1);
    check_retry_after_seconds(503, 1);
}

/* Retry-After as an HTTP date: no retry before that instant. */
static void check_retry_after_date(int status)
{
    server s;
    fixture f;
    pdti_export_result res;
    char script[256];
    double gap, t1, when;

    snprintf(script, sizeof(script),
             "{\"responses\": [{\"status\": %d, \"retry_after_in\": 1}, "
             "{\"status\": 200}]}",
             status);
    server_start(&s, script);
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 8000,
                               NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_int_equal(res.attempts, 2);
    log_read(&s);
    assert_int_equal(s.nlines, 2);
    when = json_num(s.lines[0], "retry_after_epoch");
    t1 = json_num(s.lines[1], "t");
    gap = t1 - json_num(s.lines[0], "t");
    /* The date is whole seconds 1 to 2 s ahead; same clock on loopback. */
    if (t1 < when - 0.01 || gap < 0.99 || gap > 2.5)
        fail_msg("HTTP %d: date %.3f, retried at %.3f (gap %.3f s)", status,
                 when, t1, gap);
    fixture_free(&f);
    server_stop(&s);
}

static void test_retry_after_date(void **state)
{
    (void)state;
    check_retry_after_date(503);
    check_retry_after_date(429);
}

/* A Retry-After that does not fit before the deadline: give up now. */
static void test_retry_after_past_deadline(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    double t0, el;

    (void)state;
    server_start(&s, "{\"responses\": [{\"status\": 503, \"headers\": "
                     "{\"Retry-After\": \"100\"}}]}");
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    t0 = now_ms();
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 2000,
                               NULL, &res), PDT_OK);
    el = now_ms() - t0;
    assert_int_equal(res.outcome, PDTI_FAILED);
    assert_int_equal(res.http_status, 503);
    assert_int_equal(res.attempts, 1);
    assert_true(el < 500);
    assert_non_null(strstr(res.message, "30000 ms")); /* capped at 30 s */
    fixture_free(&f);
    server_stop(&s);
}

static void test_502_504_then_success(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    double g1, g2;

    (void)state;
    server_start(&s, "{\"responses\": [{\"status\": 502}, {\"status\": 504}, "
                     "{\"status\": 200}]}");
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                               NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_int_equal(res.http_status, 200);
    assert_int_equal(res.attempts, 3);
    log_read(&s);
    assert_int_equal(s.nlines, 3);
    /* Backoff: 1st retry in [50, 100] ms, 2nd in [100, 200] ms. */
    g1 = json_num(s.lines[1], "t") - json_num(s.lines[0], "t");
    g2 = json_num(s.lines[2], "t") - json_num(s.lines[1], "t");
    if (g1 < 0.045 || g1 > 0.4 || g2 < 0.095 || g2 > 0.5)
        fail_msg("backoff gaps %.3f s, %.3f s", g1, g2);
    fixture_free(&f);
    server_stop(&s);
}

/* A port nobody listens on. */
static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void test_connection_refused(void **state)
{
    fixture f;
    pdti_export_result res;
    double t0, el;

    (void)state;
    fixture_init(&f, closed_port(), PDT_COMPRESSION_NONE, 5000);
    t0 = now_ms();
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 1500,
                               NULL, &res), PDT_OK);
    el = now_ms() - t0;
    assert_int_equal(res.outcome, PDTI_FAILED);
    assert_int_equal(res.http_status, 0);
    /* 0, ~0.1, ~0.3, ~0.7 s, then the next wait no longer fits. */
    if (res.attempts < 3 || res.attempts > 6)
        fail_msg("%u attempts", res.attempts);
    assert_true(el <= 1500 + 50);
    assert_non_null(strstr(res.message, "gave up"));
    fixture_free(&f);
}

/* A server that reads the request and never answers. */
static void test_hang_request_timeout(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    double t0, el;

    (void)state;
    server_start(&s, "{\"responses\": [{\"hang\": true}]}");
    /* Request timeout 300 ms, deadline 1200 ms: timeouts are retried. */
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 300);
    t0 = now_ms();
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 1200,
                               NULL, &res), PDT_OK);
    el = now_ms() - t0;
    assert_true(res.outcome == PDTI_ABORTED || res.outcome == PDTI_FAILED);
    assert_int_equal(res.http_status, 0);
    assert_true(res.attempts >= 2);
    if (el > 1200 + 60)
        fail_msg("returned after %.1f ms", el);
    log_wait(&s, res.attempts, 1000);
    assert_int_equal(s.nlines, res.attempts);
    fixture_free(&f);
    server_stop(&s);
}

static void test_hang_deadline(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    double t0, el;

    (void)state;
    server_start(&s, "{\"responses\": [{\"hang\": true}]}");
    /* The request timeout is longer than the deadline: the deadline wins. */
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 10000);
    t0 = now_ms();
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 800,
                               NULL, &res), PDT_OK);
    el = now_ms() - t0;
    assert_int_equal(res.outcome, PDTI_ABORTED);
    assert_int_equal(res.attempts, 1);
    if (el < 790 || el > 800 + 60)
        fail_msg("returned after %.1f ms", el);
    fixture_free(&f);
    server_stop(&s);
}

static void test_deadline_already_passed(void **state)
{
    fixture f;
    pdti_export_result res;

    (void)state;
    fixture_init(&f, closed_port(), PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(pdti_transport_export(f.t, small_body,
                                           sizeof(small_body),
                                           pdt_now_ns() - 1, NULL, &res),
                     PDT_OK);
    assert_int_equal(res.outcome, PDTI_ABORTED);
    assert_int_equal(res.attempts, 0);
    fixture_free(&f);
}

typedef struct aborter {
    int *flag;
    long after_ms;
    double set_at;
} aborter;

static void *abort_later(void *arg)
{
    aborter *a = arg;

    sleep_ms(a->after_ms);
    a->set_at = now_ms();
    __atomic_store_n(a->flag, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void check_abort(const char *script, const char *what)
{
    server s;
    fixture f;
    pdti_export_result res;
    pthread_t th;
    int flag = 0;
    aborter a = { &flag, 300, 0 };
    double late;

    server_start(&s, script);
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 10000);
    assert_int_equal(pthread_create(&th, NULL, abort_later, &a), 0);
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 10000,
                               &flag, &res), PDT_OK);
    late = now_ms() - a.set_at;
    pthread_join(th, NULL);
    assert_int_equal(res.outcome, PDTI_ABORTED);
    if (late > 100)
        fail_msg("%s: stopped %.1f ms after the abort flag", what, late);
    fixture_free(&f);
    server_stop(&s);
}

static void test_abort_from_thread(void **state)
{
    (void)state;
    /* While a request hangs... */
    check_abort("{\"responses\": [{\"hang\": true}]}", "hanging request");
    /* ... and while waiting out a Retry-After. */
    check_abort("{\"responses\": [{\"status\": 503, \"headers\": "
                "{\"Retry-After\": \"5\"}}]}",
                "retry wait");
}

static void check_compressed(int kind, const char *encoding)
{
    server s;
    fixture f;
    pdti_export_result res;
    size_t n = 100000;
    uint8_t *body = make_body(n, 7u + (unsigned)kind);
    char *hex = malloc(2 * n + 1), *got = malloc(2 * n + 1);

    assert_non_null(hex);
    assert_non_null(got);
    to_hex(body, n, hex);
    server_start(&s, "{\"responses\": [{\"status\": 200}]}");
    fixture_init(&f, s.port, kind, 5000);
    assert_int_equal(do_export(&f, body, n, 5000, NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    log_read(&s);
    assert_int_equal(s.nlines, 1);
    assert_json_str(s.lines[0], "h_content-encoding", encoding);
    assert_json_str(s.lines[0], "h_content-type", "application/x-protobuf");
    assert_json_str(s.lines[0], "decode_error", "");
    assert_int_equal((size_t)json_num(s.lines[0], "body_len"), n);
    assert_true(json_num(s.lines[0], "raw_len") < (double)n / 2);
    assert_true(res.bytes_sent < n / 2 + 1000);
    assert_true(json_str(s.lines[0], "body_hex", got, 2 * n + 1));
    assert_string_equal(got, hex);
    free(hex);
    free(got);
    free(body);
    fixture_free(&f);
    server_stop(&s);
}

static void test_gzip(void **state)
{
    (void)state;
    check_compressed(PDT_COMPRESSION_GZIP, "gzip");
}

static void test_zstd(void **state)
{
    (void)state;
    check_compressed(PDT_COMPRESSION_ZSTD, "zstd");
}

/* An uncompressed body too large to go out with the headers. */
static void test_large_plain_body(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    size_t n = 300000;
    uint8_t *body = make_body(n, 99);

    (void)state;
    server_start(&s, "{\"responses\": [{\"status\": 200}]}");
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    assert_int_equal(do_export(&f, body, n, 5000, NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_true(res.bytes_sent > n && res.bytes_sent < n + 2000);
    log_read(&s);
    assert_int_equal(s.nlines, 1);
    assert_null(json_raw(s.lines[0], "h_content-encoding"));
    assert_int_equal((size_t)json_num(s.lines[0], "raw_len"), n);
    assert_int_equal((size_t)json_num(s.lines[0], "body_len"), n);
    free(body);
    fixture_free(&f);
    server_stop(&s);
}

/* 8 MiB answer: only 4 MiB are read, the export still counts, and the
 * transport works afterwards. */
static void test_huge_response(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    double t0;

    (void)state;
    server_start(&s, "{\"responses\": [{\"status\": 200, \"body_size\": "
                     "8388608}, {\"status\": 200}]}");
    fixture_init(&f, s.port, PDT_COMPRESSION_NONE, 5000);
    t0 = now_ms();
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                               NULL, &res), PDT_OK);
    assert_true(now_ms() - t0 < 3000);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_int_equal(res.http_status, 200);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(res.rejected_spans, 0);
    assert_non_null(strstr(res.message, "not decoded"));
    assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                               NULL, &res), PDT_OK);
    assert_int_equal(res.outcome, PDTI_DELIVERED);
    assert_string_equal(res.message, "");
    fixture_free(&f);
    server_stop(&s);
}

static void test_connection_reuse(void **state)
{
    server s;
    fixture f;
    pdti_export_result res;
    int i, port0;

    (void)state;
    server_start(&s, "{\"responses\": [{\"status\": 200}]}");
    fixture_init(&f, s.port, PDT_COMPRESSION_GZIP, 5000);
    for (i = 0; i < 5; i++) {
        assert_int_equal(do_export(&f, small_body, sizeof(small_body), 5000,
                                   NULL, &res), PDT_OK);
        assert_int_equal(res.outcome, PDTI_DELIVERED);
    }
    log_read(&s);
    assert_int_equal(s.nlines, 5);
    port0 = (int)json_num(s.lines[0], "client_port");
    for (i = 1; i < 5; i++)
        assert_int_equal((int)json_num(s.lines[i], "client_port"), port0);
    fixture_free(&f);
    server_stop(&s);
}

static void test_misuse(void **state)
{
    fixture f;
    pdti_export_result res;
    pdti_transport *t = (pdti_transport *)&res;
    pdti_config empty;

    (void)state;
    memset(&empty, 0, sizeof(empty));
    assert_int_equal(pdti_transport_new(NULL, &empty), PDT_EINVAL);
    assert_int_equal(pdti_transport_new(&t, NULL), PDT_EINVAL);
    assert_null(t);
    assert_int_equal(pdti_transport_new(&t, &empty), PDT_EINVAL);
    pdti_transport_free(NULL);
    fixture_init(&f, closed_port(), PDT_COMPRESSION_NONE, 100);
    assert_int_equal(pdti_transport_export(NULL, small_body, 1, 0, NULL,
                                           &res), PDT_EINVAL);
    assert_int_equal(pdti_transport_export(f.t, NULL, 1, 0, NULL, &res),
                     PDT_EINVAL);
    assert_int_equal(pdti_transport_export(f.t, small_body, 1, 0, NULL,
                                           NULL), PDT_EINVAL);
    fixture_free(&f);
}

static int setup(void **state)
{
    (void)state;
    /* Loopback only: no proxy from the environment. */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    setenv("no_proxy", "*", 1);
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pdt-transport-XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivered_and_headers),
        cmocka_unit_test(test_partial_success),
        cmocka_unit_test(test_2xx_garbage_body),
        cmocka_unit_test(test_4xx_5xx_not_retried),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_date),
        cmocka_unit_test(test_retry_after_past_deadline),
        cmocka_unit_test(test_502_504_then_success),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_hang_request_timeout),
        cmocka_unit_test(test_hang_deadline),
        cmocka_unit_test(test_deadline_already_passed),
        cmocka_unit_test(test_abort_from_thread),
        cmocka_unit_test(test_gzip),
        cmocka_unit_test(test_zstd),
        cmocka_unit_test(test_large_plain_body),
        cmocka_unit_test(test_huge_response),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_misuse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
