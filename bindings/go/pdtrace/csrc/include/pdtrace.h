/*
 * libpdtrace: true end-to-end latency tracing for prefill/decode
 * disaggregated LLM serving, exported as OTLP.
 *
 * Include this header; it brings every module header under pdtrace/.
 */
#ifndef PDTRACE_H
#define PDTRACE_H

#include "pdtrace/version.h"
#include "pdtrace/common.h"
#include "pdtrace/tracer.h"
#include "pdtrace/span.h"
#include "pdtrace/request.h"
#include "pdtrace/metrics.h"

#endif /* PDTRACE_H */
