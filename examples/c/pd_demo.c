/*
 * pd_demo: traces simulated prefill/decode requests the way a coordinator
 * would, and exports them with libpdtrace. Timings are drawn from a small
 * model (prefill grows with the prompt, a KV transfer pause, per-token
 * decode) and passed as caller timestamps, so the run is fast and
 * reproducible for a given --seed.
 *
 * Prints one JSON line per request on stdout: its id, trace id and the
 * breakdown libpdtrace computed. Export goes where the OTEL_* environment
 * says (OTLP/HTTP by default, or OTEL_TRACES_EXPORTER=console).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pdtrace.h>

static uint64_t rng_state = 42;

static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pd_demo [--requests N] [--mode sequential|concurrent|"
            "decode-only]\n"
            "               [--traceparent VALUE] [--connector NAME] "
            "[--seed S] [--fail-every K]\n");
}

static void print_field(const char *name, double v, int present, int *first)
{
    if (!present)
        return;
    printf("%s\"%s\":%.6f", *first ? "" : ",", name, v);
    *first = 0;
}

static int check(int rc, const char *what)
{
    if (rc != PDT_OK)
        fprintf(stderr, "pd_demo: %s: %s (%s)\n", what, pdt_status_str(rc),
                pdt_last_error());
    return rc;
}

int main(int argc, char **argv)
{
    long requests = 20, fail_every = 0;
    int mode = PDT_MODE_SEQUENTIAL;
    const char *traceparent = NULL, *connector = "nixlv2";
    pdt_tracer *tracer = NULL;
    pdt_stats st = PDT_STATS_INIT;
    uint64_t dropped = 0, base;
    double sum_ttft = 0;
    long i, done = 0;
    int rc, a;

    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--requests") == 0 && a + 1 < argc)
            requests = strtol(argv[++a], NULL, 10);
        else if (strcmp(argv[a], "--traceparent") == 0 && a + 1 < argc)
            traceparent = argv[++a];
        else if (strcmp(argv[a], "--connector") == 0 && a + 1 < argc)
            connector = argv[++a];
        else if (strcmp(argv[a], "--seed") == 0 && a + 1 < argc)
            rng_state = strtoull(argv[++a], NULL, 10) | 1;
        else if (strcmp(argv[a], "--fail-every") == 0 && a + 1 < argc)
            fail_every = strtol(argv[++a], NULL, 10);
        else if (strcmp(argv[a], "--mode") == 0 && a + 1 < argc) {
            const char *m = argv[++a];
            if (strcmp(m, "sequential") == 0)
                mode = PDT_MODE_SEQUENTIAL;
            else if (strcmp(m, "concurrent") == 0)
                mode = PDT_MODE_CONCURRENT;
            else if (strcmp(m, "decode-only") == 0)
                mode = PDT_MODE_DECODE_ONLY;
            else {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (requests < 0 || requests > 10000000) {
        usage();
        return 2;
    }

    rc = pdt_tracer_open(&tracer, NULL);
    if (check(rc, "pdt_tracer_open") != PDT_OK)
        return 1;

    /* All simulated marks lie in the recent past. */
    base = pdt_now_ns() - 60ull * 1000000000ull;
    for (i = 0; i < requests; i++) {
        pdt_request *req = NULL;
        pdt_breakdown bd = PDT_BREAKDOWN_INIT;
        pdt_propagation prop = PDT_PROPAGATION_INIT;
        char trace_id[33];
        int prompt = 200 + (int)(uniform() * 3800);
        int out_tokens = 50 + (int)(uniform() * 150);
        int failing = fail_every > 0 && (i + 1) % fail_every == 0;
        uint64_t t = base + (uint64_t)i * 1000ull; /* 1 us apart */
        uint64_t A = t, ps, pe, ds, f, l, e;
        double queue = 0.2 + uniform() * 3.0;
        double prefill = 5.0 + prompt * 0.03 * (0.8 + uniform() * 0.4);
        double kv = 1.0 + prompt * 0.002 + uniform() * 2.0;
        double dttft = 8.0 + uniform() * 12.0;
        double tpot = 9.0 + uniform() * 4.0;

        if (check(pdt_request_begin(&req, tracer, traceparent, NULL, A),
                  "pdt_request_begin") != PDT_OK)
            break;
        pdt_request_set_connector(req, connector);
        pdt_request_set_mode(req, mode, mode == PDT_MODE_DECODE_ONLY
                                            ? "short prompt" : NULL);
        pdt_request_set_str(req, "http.request.method", "POST");
        pdt_request_set_str(req, "url.path", "/v1/chat/completions");
        pdt_request_set_str(req, "gen_ai.operation.name", "chat");
        pdt_request_set_str(req, "gen_ai.request.model",
                            "meta-llama/Llama-3.1-8B-Instruct");
        pdt_request_set_int(req, "gen_ai.request.max_tokens", out_tokens);
        pdt_request_set_bool(req, "gen_ai.request.stream", 1);
        pdt_request_inject(req, PDT_LEG_PREFILL, &prop); /* what goes out */

        ps = A + (uint64_t)(queue * 1e6);
        pe = ps + (uint64_t)(prefill * 1e6);
        if (mode == PDT_MODE_SEQUENTIAL) {
            check(pdt_request_mark(req, PDT_MARK_PREFILL_SENT, ps), "mark");
            check(pdt_request_mark(req, PDT_MARK_PREFILL_DONE, pe), "mark");
            check(pdt_request_set_leg(req, PDT_LEG_PREFILL,
                                      "http://127.0.0.1:8100", 200, NULL),
                  "leg");
            ds = pe + (uint64_t)(kv * 1e6);
        } else if (mode == PDT_MODE_CONCURRENT) {
            check(pdt_request_mark(req, PDT_MARK_PREFILL_SENT, ps), "mark");
            ds = ps;
            check(pdt_request_mark(req, PDT_MARK_DECODE_SENT, ds), "mark");
            check(pdt_request_mark(req, PDT_MARK_PREFILL_DONE, pe), "mark");
            check(pdt_request_set_leg(req, PDT_LEG_PREFILL,
                                      "http://127.0.0.1:8100", 200, NULL),
                  "leg");
        } else {
            ds = ps;
        }
        if (mode != PDT_MODE_CONCURRENT)
            check(pdt_request_mark(req, PDT_MARK_DECODE_SENT, ds), "mark");
        f = (mode == PDT_MODE_CONCURRENT ? pe : ds) +
            (uint64_t)(dttft * 1e6);
        if (failing) {
            e = f;
            check(pdt_request_set_leg(req, PDT_LEG_DECODE,
                                      "http://127.0.0.1:8200", 503,
                                      "upstream_unavailable"), "leg");
            check(pdt_request_set_response(req, 503, "upstream_unavailable"),
                  "response");
        } else {
            check(pdt_request_tokens(req, f, 1), "tokens");
            l = f + (uint64_t)(tpot * (out_tokens - 1) * 1e6);
            check(pdt_request_tokens(req, l, (uint32_t)out_tokens - 1),
                  "tokens");
            e = l + 200000;
            check(pdt_request_set_leg(req, PDT_LEG_DECODE,
                                      "http://127.0.0.1:8200", 200, NULL),
                  "leg");
            pdt_request_set_usage(req, prompt, out_tokens, prompt / 4);
            check(pdt_request_set_response(req, 200, NULL), "response");
        }
        rc = pdt_request_end(req, e, &bd);
        check(rc, "pdt_request_end");
        pdt_span_ids(pdt_request_span(req, PDT_LEG_REQUEST), trace_id, NULL);

        printf("{\"request_id\":\"%s\",\"trace_id\":\"%s\",\"error\":%s,"
               "\"breakdown\":{", pdt_request_id(req), trace_id,
               bd.error ? "true" : "false");
        {
            int first = 1;
            print_field("queue_ms", bd.queue_ms, bd.present & PDT_BD_QUEUE,
                        &first);
            print_field("prefill_duration_ms", bd.prefill_ms,
                        bd.present & PDT_BD_PREFILL, &first);
            print_field("kv_transfer_overhead_ms", bd.kv_transfer_overhead_ms,
                        bd.present & PDT_BD_KV_TRANSFER, &first);
            print_field("decode_ttft_ms", bd.decode_ttft_ms,
                        bd.present & PDT_BD_DECODE_TTFT, &first);
            print_field("true_ttft_ms", bd.true_ttft_ms,
                        bd.present & PDT_BD_TRUE_TTFT, &first);
            print_field("decode_duration_ms", bd.decode_duration_ms,
                        bd.present & PDT_BD_DECODE_DURATION, &first);
            print_field("total_duration_ms", bd.total_ms,
                        bd.present & PDT_BD_TOTAL, &first);
            print_field("tpot_ms", bd.tpot_ms, bd.present & PDT_BD_TPOT,
                        &first);
        }
        printf("}}\n");
        if (bd.present & PDT_BD_TRUE_TTFT) {
            sum_ttft += bd.true_ttft_ms;
            done++;
        }
        pdt_request_free(req);
    }
    fflush(stdout);

    rc = pdt_tracer_flush(tracer, 10000, NULL);
    check(rc, "pdt_tracer_flush");
    pdt_tracer_stats(tracer, &st);
    rc = pdt_tracer_close(tracer, 5000, &dropped);
    fprintf(stderr,
            "pd_demo: %ld requests, avg true TTFT %.3f ms; spans: %llu "
            "started, %llu exported, %llu dropped, %llu failed; %llu HTTP "
            "requests, %llu bytes\n",
            requests, done ? sum_ttft / (double)done : NAN,
            (unsigned long long)st.spans_started,
            (unsigned long long)st.spans_exported,
            (unsigned long long)(st.dropped_queue_full + dropped),
            (unsigned long long)st.dropped_export_failed,
            (unsigned long long)st.export_requests,
            (unsigned long long)st.bytes_sent);
    return rc == PDT_OK ? 0 : 1;
}
