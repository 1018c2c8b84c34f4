/*
 * libpdtrace metrics: Prometheus histograms and counters kept by a tracer
 * for every finished P/D request, sampled or not, and rendered in the
 * Prometheus text exposition format (version 0.0.4) for a /metrics
 * endpoint the caller serves. The metric names, labels and buckets are
 * listed in docs/metrics.md.
 *
 * Recording costs the caller's thread a few atomic additions inside
 * pdt_request_end() and never allocates; there is nothing to enable.
 *
 * Thread rules: every function here may be called from any thread, at the
 * same time as requests end on other threads. Ownership: nothing is
 * retained; strings passed in are copied.
 */
#ifndef PDTRACE_METRICS_H
#define PDTRACE_METRICS_H

#include <stddef.h>

#include "common.h"
#include "tracer.h"
#include "request.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Sets the model of a request: recorded as `gen_ai.request.model` on the
 * request span and used as the `model` label of its metrics. Calling it
 * again replaces the value. The string (at most 255 bytes) is copied.
 * Requests without a model are labelled model="unknown".
 *
 * Errors: PDT_EINVAL (req or model NULL, model empty or longer than 255
 * bytes), PDT_ESTATE (request already ended).
 * Thread rules: as every pdt_request_* call, one thread at a time per
 * request. Since 0.1.0.
 */
PDT_API int pdt_request_set_model(pdt_request *req, const char *model);

/*
 * Sets the tenant of a request (the application or user it is served
 * for, typically taken from a request header the caller chooses): recorded
 * as `llm_d.tenant` on the request span, and used as the `tenant` label of
 * the request and token counters in the metrics when it is one of the
 * tracer's metrics_tenants (PDTRACE_METRICS_TENANTS); any other tenant is
 * counted as tenant="other", and a request without a tenant as
 * tenant="", so the label's values stay bounded by the configuration.
 * The label is resolved here, once. Calling it again replaces the value.
 * The string (at most 255 bytes) is copied.
 *
 * Errors: PDT_EINVAL (req or tenant NULL, tenant empty or longer than 255
 * bytes), PDT_ESTATE (request already ended).
 * Thread rules: as every pdt_request_* call, one thread at a time per
 * request. Since 0.1.0.
 */
PDT_API int pdt_request_set_tenant(pdt_request *req, const char *tenant);

/*
 * Renders the tracer's metrics as Prometheus text (exposition format
 * 0.0.4, Content-Type "text/plain; version=0.0.4; charset=utf-8") into
 * the caller's buffer, NUL-terminated.
 *
 * buf, cap: the caller's buffer and its size in bytes. buf may be NULL
 *     when cap is 0, to ask for the size only.
 * len_out: optional. On PDT_OK, the length of the text without the NUL.
 *     On PDT_EBUFSIZE, the buffer size needed (text and NUL).
 *
 * Returns PDT_OK, or PDT_EBUFSIZE when cap is too small: buf then holds
 * "" (if cap > 0) and *len_out the size needed. Counters keep moving, so
 * a retry with exactly that size can in rare cases need a few bytes more:
 * retry in a loop, or add some headroom. Sizes: about 4 KB without
 * requests, about 22 KB per (connector, model, mode) label set with short
 * model names, plus about 1 KB per tenant label in use in that set, under
 * 10 MB in the worst case (docs/metrics.md).
 *
 * Values are read with atomic loads while requests keep ending, so one
 * rendering is not a snapshot across series; within each histogram
 * series, the buckets and _count always agree.
 *
 * Errors: PDT_EINVAL (tracer NULL, buf NULL with cap > 0), PDT_EBUFSIZE.
 * Thread rules: any thread, concurrently with anything but
 * pdt_tracer_close(). Ownership: writes only into buf; allocates nothing.
 * Since 0.1.0.
 */
PDT_API int pdt_tracer_metrics(pdt_tracer *tracer, char *buf, size_t cap,
                               size_t *len_out);

#ifdef __cplusplus
}
#endif

#endif /* PDTRACE_METRICS_H */
