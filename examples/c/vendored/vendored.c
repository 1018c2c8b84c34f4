/*
 * vendored: the smallest C service that links libpdtrace statically.
 *
 * It traces one sequential P/D request the way a coordinator would (begin,
 * prefill sent/done, decode sent, tokens, end), prints the true-TTFT
 * breakdown and closes the tracer. Export goes where the OTEL_* environment
 * says; OTEL_TRACES_EXPORTER=console writes OTLP JSON lines to stdout or to
 * PDTRACE_CONSOLE_PATH.
 *
 * Build: make (uses pkg-config --static libpdtrace); see docs/guide-c.md.
 */
#include <stdio.h>
#include <time.h>

#include <pdtrace.h>

/* Stands in for an upstream HTTP call. */
static void wait_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "vendored: %s: %s (%s)\n", what, pdt_status_str(rc),
            pdt_last_error());
    return 1;
}

int main(void)
{
    pdt_tracer *tracer = NULL;
    pdt_request *req = NULL;
    pdt_propagation hdr = PDT_PROPAGATION_INIT;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t dropped = 0;
    int rc, i;

    if (pdt_version_number() >> 16 != PDT_VERSION_MAJOR) {
        fprintf(stderr, "vendored: built against %s, running %s\n",
                PDT_VERSION_STRING, pdt_version());
        return 1;
    }
    rc = pdt_tracer_open(&tracer, NULL); /* configured by OTEL_* */
    if (rc != PDT_OK)
        return fail("pdt_tracer_open", rc);

    rc = pdt_request_begin(&req, tracer, NULL, NULL, 0);
    if (rc != PDT_OK)
        return fail("pdt_request_begin", rc);
    pdt_request_set_connector(req, "nixlv2");
    pdt_request_set_str(req, "gen_ai.operation.name", "chat");

    /* Prefill leg: headers first, then the request. */
    pdt_request_inject(req, PDT_LEG_PREFILL, &hdr);
    printf("prefill traceparent: %s, x-request-id: %s\n", hdr.traceparent,
           hdr.request_id);
    pdt_request_mark(req, PDT_MARK_PREFILL_SENT, 0);
    wait_ms(20);
    pdt_request_mark(req, PDT_MARK_PREFILL_DONE, 0);
    pdt_request_set_leg(req, PDT_LEG_PREFILL, "http://127.0.0.1:8100", 200,
                        NULL);

    /* Decode leg, streamed back token by token. */
    wait_ms(2);
    pdt_request_inject(req, PDT_LEG_DECODE, &hdr);
    pdt_request_mark(req, PDT_MARK_DECODE_SENT, 0);
    wait_ms(10);
    for (i = 0; i < 8; i++) {
        pdt_request_tokens(req, 0, 1);
        wait_ms(1);
    }
    pdt_request_set_leg(req, PDT_LEG_DECODE, "http://127.0.0.1:8200", 200,
                        NULL);
    pdt_request_set_response(req, 200, NULL);

    rc = pdt_request_end(req, 0, &bd);
    if (rc != PDT_OK)
        return fail("pdt_request_end", rc);
    printf("true_ttft_ms=%.3f queue_ms=%.3f prefill_ms=%.3f "
           "kv_transfer_overhead_ms=%.3f decode_ttft_ms=%.3f tpot_ms=%.3f\n",
           bd.true_ttft_ms, bd.queue_ms, bd.prefill_ms,
           bd.kv_transfer_overhead_ms, bd.decode_ttft_ms, bd.tpot_ms);
    pdt_request_free(req);

    rc = pdt_tracer_close(tracer, 5000, &dropped);
    if (rc != PDT_OK)
        return fail("pdt_tracer_close", rc);
    return 0;
}
