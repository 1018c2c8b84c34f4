/*
 * The benchmark's workload, shared by every C program that measures it so
 * that they all measure the same thing: one traced P/D request under an
 * inbound traceparent (request, prefill and decode spans), 6 caller
 * attributes, 2 injects, 5 marks, both legs' outcomes, usage, response.
 */
#ifndef PDTB_WORKLOAD_H
#define PDTB_WORKLOAD_H

#include <stdint.h>
#include <string.h>

#include <pdtrace.h>

/* The inbound traceparent of every request, unless a fresh one is made. */
#define PDTB_INBOUND "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/*
 * One request. a == 0: the library reads the clock for the arrival, each
 * mark and the end; otherwise `a` is the arrival and the caller's own
 * timestamps follow it 1 µs apart (no clock read in the library).
 * Returns the status of pdt_request_end(), or of pdt_request_begin() if
 * that failed.
 */
static inline int pdtb_request(pdt_tracer *t, const char *traceparent,
                               uint64_t a)
{
    pdt_request *req;
    pdt_propagation prop = PDT_PROPAGATION_INIT;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    int rc;
#define PDTB_TS(k) (a != 0 ? a + (uint64_t)(k) * 1000u : 0)

    rc = pdt_request_begin(&req, t, traceparent, NULL, a);
    if (rc != PDT_OK)
        return rc;
    pdt_request_set_connector(req, "nixlv2");
    pdt_request_set_str(req, "http.request.method", "POST");
    pdt_request_set_str(req, "url.path", "/v1/chat/completions");
    pdt_request_set_str(req, "gen_ai.request.model", "llama-3.1-8b");
    pdt_request_set_str(req, "gen_ai.operation.name", "chat");
    pdt_request_set_int(req, "gen_ai.request.max_tokens", 128);
    pdt_request_set_bool(req, "gen_ai.request.stream", 1);
    pdt_request_inject(req, PDT_LEG_PREFILL, &prop);
    pdt_request_mark(req, PDT_MARK_PREFILL_SENT, PDTB_TS(1));
    pdt_request_mark(req, PDT_MARK_PREFILL_DONE, PDTB_TS(2));
    pdt_request_set_leg(req, PDT_LEG_PREFILL, "10.0.0.1:8000", 200, NULL);
    pdt_request_inject(req, PDT_LEG_DECODE, &prop);
    pdt_request_mark(req, PDT_MARK_DECODE_SENT, PDTB_TS(3));
    pdt_request_mark(req, PDT_MARK_FIRST_TOKEN, PDTB_TS(4));
    pdt_request_mark(req, PDT_MARK_LAST_TOKEN, PDTB_TS(5));
    pdt_request_set_leg(req, PDT_LEG_DECODE, "10.0.0.2:8000", 200, NULL);
    pdt_request_set_usage(req, 1024, 128, 512);
    pdt_request_set_response(req, 200, NULL);
    rc = pdt_request_end(req, PDTB_TS(6), &bd);
    pdt_request_free(req);
    return rc;
#undef PDTB_TS
}

/* Writes the next of a sequence of inbound traceparents with new trace
 * ids into tp (PDTB_INBOUND's shape); *state is the sequence's state. */
static inline void pdtb_fresh_traceparent(char tp[sizeof(PDTB_INBOUND)],
                                          uint64_t *state)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t x = *state;
    int i;

    memcpy(tp, PDTB_INBOUND, sizeof(PDTB_INBOUND));
    for (i = 0; i < 32; i++) {
        if ((i & 15) == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        tp[3 + i] = hex[(x >> ((i & 15) * 4)) & 15];
    }
    *state = x;
}

#endif
