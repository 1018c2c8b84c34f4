/*
 * metrics_dump: traces a fixed mix of P/D requests with the console
 * exporter writing to /dev/null, then prints pdt_tracer_metrics() text on
 * stdout. Used by the Python tests, which parse it with prometheus_client.
 *
 *   metrics_dump [ROUNDS [EXTRA_CONNECTORS]]
 *
 * ROUNDS (default 10) repeats the mix; EXTRA_CONNECTORS (default 0) adds
 * one request for each of that many distinct connector names, to push the
 * label-set table into overflow. Every timestamp is derived from one
 * arrival time, so the expected sums are known exactly: see
 * test_prom_parse.py.
 */
#include <stdio.h>
#include <stdlib.h>

#include <pdtrace.h>

#define MS 1000000ull

static int check(int rc, const char *what)
{
    if (rc != PDT_OK) {
        fprintf(stderr, "metrics_dump: %s: %s\n", what, pdt_last_error());
        exit(1);
    }
    return rc;
}

/* Sequential (nixlv2, lmcache): queue 2 ms, prefill 120 ms, KV 3 ms,
 * decode TTFT 25 ms, 11 tokens 10 ms apart, E = L + 1 ms. */
static void sequential(pdt_tracer *t, uint64_t a, const char *conn,
                       const char *model, int fail)
{
    pdt_request *r = NULL;
    uint64_t ps = a + 2 * MS, pe = ps + 120 * MS, ds = pe + 3 * MS,
             f = ds + 25 * MS, l = f + 100 * MS;

    check(pdt_request_begin(&r, t, NULL, NULL, a), "begin");
    check(pdt_request_set_connector(r, conn), "connector");
    check(pdt_request_set_model(r, model), "model");
    check(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, ps), "ps");
    check(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, pe), "pe");
    check(pdt_request_mark(r, PDT_MARK_DECODE_SENT, ds), "ds");
    check(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, f), "f");
    check(pdt_request_mark(r, PDT_MARK_LAST_TOKEN, l), "l");
    check(pdt_request_set_usage(r, 2000, 11, 0), "usage");
    if (fail)
        check(pdt_request_set_response(r, 503, "upstream_unavailable"),
              "response");
    check(pdt_request_end(r, l + MS, NULL), "end");
    pdt_request_free(r);
}

/* Concurrent (sglang): both legs at A + 1 ms, prefill done at +80 ms,
 * first token at +90 ms, end at +300 ms, 51 tokens over 200 ms. */
static void concurrent(pdt_tracer *t, uint64_t a, const char *model)
{
    pdt_request *r = NULL;

    check(pdt_request_begin(&r, t, NULL, NULL, a), "begin");
    check(pdt_request_set_connector(r, "sglang"), "connector");
    check(pdt_request_set_model(r, model), "model");
    check(pdt_request_set_tenant(r, "team-a"), "tenant");
    check(pdt_request_set_mode(r, PDT_MODE_CONCURRENT, NULL), "mode");
    check(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1 * MS), "ps");
    check(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 1 * MS), "ds");
    check(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 80 * MS), "pe");
    check(pdt_request_tokens(r, a + 90 * MS, 1), "tokens");
    check(pdt_request_tokens(r, a + 290 * MS, 50), "tokens");
    check(pdt_request_end(r, a + 300 * MS, NULL), "end");
    pdt_request_free(r);
}

/* Decode-only: decode sent at +1 ms, first token at +40 ms, end +500 ms. */
static void decode_only(pdt_tracer *t, uint64_t a, const char *model)
{
    pdt_request *r = NULL;

    check(pdt_request_begin(&r, t, NULL, NULL, a), "begin");
    check(pdt_request_set_connector(r, "nixlv2"), "connector");
    check(pdt_request_set_model(r, model), "model");
    check(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, "short prompt"),
          "mode");
    check(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 1 * MS), "ds");
    check(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 40 * MS), "f");
    check(pdt_request_end(r, a + 500 * MS, NULL), "end");
    pdt_request_free(r);
}

int main(int argc, char **argv)
{
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t = NULL;
    int rounds = argc > 1 ? atoi(argv[1]) : 10;
    int extra = argc > 2 ? atoi(argv[2]) : 0;
    uint64_t a = pdt_now_ns() - 10000 * MS; /* all marks in the past */
    size_t need = 0, len = 0;
    char *buf = NULL;
    int i, rc;

    o.ignore_environment = 1;
    o.exporter = PDT_EXPORTER_CONSOLE;
    o.console_path = "/dev/null";
    o.service_name = "llm-d-pd-proxy";
    o.metrics_tenants = "team-a,team-b";
    check(pdt_tracer_open(&t, &o), "open");
    for (i = 0; i < rounds; i++) {
        sequential(t, a, "nixlv2", "meta-llama/Llama-3.1-8B-Instruct", 0);
        sequential(t, a, "lmcache", "Qwen/Qwen3-8B", i % 5 == 0);
        concurrent(t, a, "Qwen/Qwen3-8B");
        decode_only(t, a, "meta-llama/Llama-3.1-8B-Instruct");
    }
    for (i = 0; i < extra; i++) {
        char conn[32];
        snprintf(conn, sizeof(conn), "conn-%d", i);
        sequential(t, a, conn, "m\"odel\\x", 0);
    }
    check(pdt_tracer_flush(t, 10000, NULL), "flush");

    /* The size protocol: ask, allocate, retry while counters grow. */
    rc = pdt_tracer_metrics(t, NULL, 0, &need);
    while (rc == PDT_EBUFSIZE) {
        char *nb = realloc(buf, need);
        if (nb == NULL)
            return 1;
        buf = nb;
        rc = pdt_tracer_metrics(t, buf, need, &len);
        if (rc == PDT_EBUFSIZE)
            need = len;
    }
    check(rc, "metrics");
    fwrite(buf, 1, len, stdout);
    free(buf);
    check(pdt_tracer_close(t, 10000, NULL), "close");
    return 0;
}
