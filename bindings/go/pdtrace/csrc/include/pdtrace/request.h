/*
 * libpdtrace P/D requests: one object per client request seen by the
 * coordinator. It owns the root span (llm_d.pd_proxy.request, SERVER) and
 * the prefill and decode child spans (CLIENT, siblings), records the stage
 * marks, and at the end computes the true-TTFT breakdown, writes it as
 * attributes on the request span and mirrors it on the decode span.
 *
 * Timestamps are pdt_now_ns() nanoseconds; 0 means "now".
 *
 * Thread rules: a request is used by one thread at a time and may move
 * between threads. Ownership: pdt_request_begin() gives a handle the caller
 * releases with pdt_request_free(); borrowed pointers obtained from it
 * (pdt_request_span(), pdt_request_id(), pdt_propagation fields) live until
 * then. Strings passed in are copied.
 */
#ifndef PDTRACE_REQUEST_H
#define PDTRACE_REQUEST_H

#include "common.h"
#include "tracer.h"
#include "span.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pdt_request pdt_request;

/* How prefill and decode relate. */
typedef enum pdt_pd_mode {
    PDT_MODE_SEQUENTIAL = 0,  /* prefill, KV transfer, then decode (default) */
    PDT_MODE_CONCURRENT = 1,  /* both legs start together (sglang, mooncake) */
    PDT_MODE_DECODE_ONLY = 2  /* prefill skipped (selective P/D) */
} pdt_pd_mode;

/* The spans of a request. */
typedef enum pdt_leg {
    PDT_LEG_REQUEST = 0,
    PDT_LEG_PREFILL = 1,
    PDT_LEG_DECODE = 2
} pdt_leg;

/* Stage marks (docs/spans.md). Arrival (A) is given to begin. */
typedef enum pdt_mark {
    PDT_MARK_PREFILL_SENT = 1, /* Ps: starts a prefill attempt and its span */
    PDT_MARK_PREFILL_DONE = 2, /* Pe: prefill response fully read */
    PDT_MARK_DECODE_SENT = 3,  /* Ds: starts the decode span */
    PDT_MARK_FIRST_TOKEN = 4,  /* F: first token forwarded to the client */
    PDT_MARK_LAST_TOKEN = 5    /* L: last token forwarded */
} pdt_mark;

/*
 * Begins a P/D request.
 *
 * traceparent, tracestate: the inbound W3C headers, or NULL. A malformed
 *     traceparent is not an error: a new trace starts (documented fallback).
 *     Pass every line of a repeated header joined with ',': a duplicated
 *     traceparent then starts a new trace, as W3C Trace Context Level 2
 *     requires. The tracestate rules are those of pdt_span_start()
 *     (docs/propagation.md).
 * arrival_ns: mark A; 0 for now, or an earlier time such as the gateway's
 *     receive time (it must not be in the future).
 *
 * Errors: PDT_EINVAL, PDT_ERANGE (arrival in the future), PDT_ECLOSED,
 * PDT_ENOMEM. Since 0.1.0.
 */
PDT_API int pdt_request_begin(pdt_request **out, pdt_tracer *tracer,
                              const char *traceparent, const char *tracestate,
                              uint64_t arrival_ns);

/*
 * Sets the request id (x-request-id) sent to both legs and recorded as
 * `request_id`, stored exactly as given. If never set, a random one is
 * generated at begin.
 * Errors: PDT_EINVAL (NULL or empty), PDT_ESTATE (ended). Since 0.1.0.
 */
PDT_API int pdt_request_set_id(pdt_request *req, const char *request_id);

/* Returns the request id (borrowed), or NULL for a NULL request. */
PDT_API const char *pdt_request_id(const pdt_request *req);

/*
 * Sets the P/D mode (a pdt_pd_mode) and, for decode-only, an optional
 * reason (recorded as `reason`). Must be called before the first prefill
 * or decode mark. Errors: PDT_EINVAL, PDT_ESTATE. Since 0.1.0.
 */
PDT_API int pdt_request_set_mode(pdt_request *req, int mode,
                                 const char *reason);

/*
 * Sets the KV connector name (`connector`): "nixlv2", "lmcache",
 * "shared-storage", "sglang", "mooncake" or any other non-empty name.
 * Errors: PDT_EINVAL, PDT_ESTATE. Since 0.1.0.
 */
PDT_API int pdt_request_set_connector(pdt_request *req, const char *connector);

/*
 * Records a stage mark at ts_ns (0: now).
 * PREFILL_SENT may be repeated after PREFILL_DONE to record a retried
 * prefill: each attempt gets its own span, queue_ms counts to the first
 * attempt and prefill_duration_ms to the end of the last.
 * Errors: PDT_EINVAL (bad mark, or a prefill mark on a decode-only
 * request), PDT_ESTATE (mark repeated, out of order, or after end),
 * PDT_ERANGE (before arrival or before the mark it follows, so that no
 * duration could be negative; in the future). A refused mark changes
 * nothing. Since 0.1.0.
 */
PDT_API int pdt_request_mark(pdt_request *req, int mark, uint64_t ts_ns);

/*
 * Records `count` generated tokens forwarded at ts_ns (0: now). The first
 * call sets FIRST_TOKEN if it is not set yet; every call moves LAST_TOKEN
 * and adds to the output token count. count may be 0 (a chunk without
 * tokens still moves the marks). Errors as pdt_request_mark().
 * Since 0.1.0.
 */
PDT_API int pdt_request_tokens(pdt_request *req, uint64_t ts_ns,
                               uint32_t count);

/*
 * Sets the output token count from the upstream's usage (wins over the
 * count from pdt_request_tokens()) and the input and cached input token
 * counts (negative: unknown, not recorded). Errors: PDT_EINVAL,
 * PDT_ESTATE. Since 0.1.0.
 */
PDT_API int pdt_request_set_usage(pdt_request *req, int64_t input_tokens,
                                  int64_t output_tokens,
                                  int64_t cached_input_tokens);

/*
 * Records the outcome of one upstream leg (PDT_LEG_PREFILL or
 * PDT_LEG_DECODE): the HTTP status (0 if no response arrived) and, for a
 * failure, an error type (e.g. "timeout", "connection_refused",
 * "stream_interrupted"; NULL for none). An error type, or a status >= 500,
 * marks that leg's span ERROR, and only that span (a 200 whose stream
 * broke off is recorded as 200 with an error type): whether the request
 * failed is what pdt_request_set_response() says the client got. Only
 * when no response status is ever given does a failed leg also fail the
 * request at end (docs/spans.md, Status). Also sets server.address /
 * server.port from `target` ("host:port" or a URL of at most 4096 bytes;
 * NULL to skip) as `prefill_target` or `decode_target`. Errors:
 * PDT_EINVAL, PDT_ESTATE, PDT_ELIMIT (target too long). Since 0.1.0.
 */
PDT_API int pdt_request_set_leg(pdt_request *req, int leg, const char *target,
                                int http_status, const char *error_type);

/*
 * Records the status code sent to the client (http.response.status_code)
 * and, if the client got an error, its type (error.type). >= 500 or an
 * error type marks the request ERROR; anything else (a 2xx, a 4xx without
 * an error type, or 0 without an error type) means the client got its
 * answer, so the request stays ok even if a leg failed and was retried or
 * worked around. Errors: PDT_EINVAL, PDT_ESTATE. Since 0.1.0.
 */
PDT_API int pdt_request_set_response(pdt_request *req, int http_status,
                                     const char *error_type);

/*
 * Typed attributes on the request span. See pdt_span_set_str().
 * pdt_request_set_str() with the key "gen_ai.request.model" acts as
 * pdt_request_set_model(): the model is recorded once at end on the
 * request and decode spans and labels the metrics (PDT_EINVAL for an
 * empty value or one longer than 255 bytes).
 */
PDT_API int pdt_request_set_str(pdt_request *req, const char *key,
                                const char *value);
PDT_API int pdt_request_set_int(pdt_request *req, const char *key,
                                int64_t value);
PDT_API int pdt_request_set_double(pdt_request *req, const char *key,
                                   double value);
PDT_API int pdt_request_set_bool(pdt_request *req, const char *key,
                                 int value);

/*
 * Sets n attributes on the span of a leg (PDT_LEG_REQUEST, or PDT_LEG_PREFILL
 * / PDT_LEG_DECODE once that leg's span exists) in one call: see
 * pdt_span_set_attrs(). Errors: PDT_EINVAL, PDT_ESTATE (ended, or the leg
 * has no span yet), PDT_ELIMIT, PDT_ENOMEM. Since 0.1.0.
 */
PDT_API int pdt_request_set_attrs(pdt_request *req, int leg,
                                  const pdt_attr *attrs, size_t n);

/*
 * Returns the span of a leg (borrowed, valid until pdt_request_free()), to
 * set attributes or events on it with the pdt_span_* calls, or NULL if
 * that leg has no span yet (prefill before PREFILL_SENT, decode before
 * DECODE_SENT) or `leg` is invalid. Do not end or free it.
 */
PDT_API pdt_span *pdt_request_span(pdt_request *req, int leg);

/*
 * Writes the outbound headers for a leg: a traceparent whose parent is
 * that leg's span, the inbound tracestate and the request id. For
 * PDT_LEG_PREFILL and PDT_LEG_DECODE, call after the SENT mark (or
 * before it: the leg's span id is reserved at begin, so headers built
 * before sending are valid). Errors: PDT_EINVAL. Since 0.1.0.
 */
PDT_API int pdt_request_inject(const pdt_request *req, int leg,
                               pdt_propagation *out);

/* Which breakdown fields are present (bits of pdt_breakdown.present). */
#define PDT_BD_QUEUE           (1u << 0)
#define PDT_BD_PREFILL         (1u << 1)
#define PDT_BD_KV_TRANSFER     (1u << 2)
#define PDT_BD_DECODE_TTFT     (1u << 3)
#define PDT_BD_TRUE_TTFT       (1u << 4)
#define PDT_BD_DECODE_DURATION (1u << 5)
#define PDT_BD_TOTAL           (1u << 6)
#define PDT_BD_TPOT            (1u << 7)

/*
 * The computed breakdown, in milliseconds (double, sub-microsecond
 * precision). A field whose marks are missing is NaN and its bit in
 * `present` is clear; it is never zero-filled.
 */
typedef struct pdt_breakdown {
    size_t size;                    /* sizeof(pdt_breakdown) */
    uint32_t present;               /* PDT_BD_* bits */
    double queue_ms;                /* Ps - A */
    double prefill_ms;              /* Pe - Ps */
    double kv_transfer_overhead_ms; /* Ds - Pe (sequential only) */
    double decode_ttft_ms;          /* F - Ds */
    double true_ttft_ms;            /* F - A */
    double decode_duration_ms;      /* E - Ds */
    double total_ms;                /* E - A */
    double tpot_ms;                 /* (L - F) / (output_tokens - 1) */
    int64_t output_tokens;          /* -1 if unknown */
    int mode;                       /* pdt_pd_mode */
    int error;                      /* nonzero if the request failed:
                                       the client got an error, it was
                                       abandoned, or a leg failed and no
                                       response status was given */
    int sampled;                    /* nonzero if its spans were exported */
} pdt_breakdown;

#define PDT_BREAKDOWN_INIT { sizeof(pdt_breakdown), 0, 0, 0, 0, 0, 0, 0, 0, \
    0, -1, 0, 0, 0 }

/*
 * Ends the request at end_ns (mark E; 0: now): ends any open leg span at
 * E, computes the breakdown, records it on the request and decode spans,
 * applies the tail sampling rule and hands the spans to the exporter. If
 * out is not NULL (out->size set) the breakdown is written there.
 * Errors: PDT_EINVAL, PDT_ESTATE (already ended), PDT_ERANGE (E before a
 * recorded mark: E is clamped to the latest mark, the request is still
 * ended and recorded). Since 0.1.0.
 */
PDT_API int pdt_request_end(pdt_request *req, uint64_t end_ns,
                            pdt_breakdown *out);

/*
 * Releases the request. One that was not ended is ended now with status
 * ERROR and error.type "abandoned" (for example a client that went away),
 * so that nothing is lost. NULL is accepted. Since 0.1.0.
 */
PDT_API void pdt_request_free(pdt_request *req);

#ifdef __cplusplus
}
#endif

#endif /* PDTRACE_REQUEST_H */
