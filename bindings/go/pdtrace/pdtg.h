/*
 * pdtg.h: the C shims of the Go binding.
 *
 * Every libpdtrace function that can fail is called from Go through a shim
 * declared here, which on failure copies pdt_last_error() into a malloc'd
 * string inside the same C call, so the message is the one of that failure
 * even if the goroutine moves to another OS thread right after (the Go side
 * frees it). Go strings arrive as pdtg_str, pointer and length borrowed for
 * the duration of the call only; the shims copy them to NUL-terminated
 * storage where the C API needs it. No shim keeps a Go pointer after it
 * returns.
 */
#ifndef PDTG_H
#define PDTG_H

#include <stddef.h>
#include <stdint.h>
#include <pdtrace.h>

#if PDT_VERSION_MAJOR != 0 || PDT_VERSION_MINOR < 1
#error "this Go binding needs libpdtrace 0.x with x >= 1 (pdtrace/version.h)"
#endif

/* A Go string as the shims take it: not NUL-terminated, p may be NULL when
 * n is 0. */
typedef struct pdtg_str {
    const char *p;
    size_t n;
} pdtg_str;

/* Attribute kinds for the typed setters (pdtg_*_attr). */
enum { PDTG_STR = 0, PDTG_INT = 1, PDTG_DOUBLE = 2, PDTG_BOOL = 3 };

/* The result of a shim: a status and, on failure, the message read from
 * pdt_last_error() in the same call (malloc'd; the Go side frees it). */
typedef struct pdtg_res {
    int rc;
    char *msg;
} pdtg_res;

typedef struct pdtg_open_res {
    int rc;
    char *msg;
    pdt_tracer *tracer;
} pdtg_open_res;

typedef struct pdtg_count_res {
    int rc;
    char *msg;
    uint64_t count;
} pdtg_count_res;

typedef struct pdtg_stats_res {
    int rc;
    char *msg;
    pdt_stats st;
} pdtg_stats_res;

typedef struct pdtg_begin_res {
    int rc;
    char *msg;
    pdt_request *req;
    int id_rc; /* status of pdt_request_set_id, if an id was given */
    char *id_msg;
} pdtg_begin_res;

typedef struct pdtg_inject_res {
    int rc;
    char *msg;
    char traceparent[PDT_TRACEPARENT_SIZE];
    const char *tracestate;
    const char *request_id;
} pdtg_inject_res;

typedef struct pdtg_end_res {
    int rc;
    char *msg;
    pdt_breakdown bd;
} pdtg_end_res;

typedef struct pdtg_ids {
    char trace_id[33];
    char span_id[17];
    int sampled;
} pdtg_ids;

/* A C-allocated pdt_attr array and byte arena that the Go side fills before */
/* a batch call (Go strings are copied into the arena, so C never sees Go */
/* memory). Pooled on the Go side; grown here. */
typedef struct pdtg_attrbuf {
    pdt_attr *attrs;
    size_t cap;
    char *arena;
    size_t arena_cap;
} pdtg_attrbuf;

typedef struct pdtg_begin_with_res {
    pdtg_begin_res b;
    int set_rc; /* the first failure of the settings after begin */
    char *set_msg;
} pdtg_begin_with_res;

typedef struct pdtg_finish_res {
    int rc;
    char *msg;
    pdt_breakdown bd;
    int end_rc; /* the status of pdt_request_end itself */
} pdtg_finish_res;

typedef struct pdtg_metrics_res {
    int rc;
    char *msg;
    size_t len;
} pdtg_metrics_res;

typedef struct pdtg_start_res {
    int rc;
    char *msg;
    pdt_span *span;
} pdtg_start_res;

typedef struct pdtg_parse_res {
    int rc;
    char *msg;
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;
} pdtg_parse_res;

/* ---- tracer ------------------------------------------------------- */

pdtg_open_res pdtg_tracer_open(pdt_tracer_options *opts, uintptr_t log_handle);
pdt_tracer_options *pdtg_options_new(void);
void pdtg_options_free(pdt_tracer_options *o);
pdtg_count_res pdtg_tracer_flush(pdt_tracer *t, int64_t timeout_ms);
pdtg_count_res pdtg_tracer_close(pdt_tracer *t, int64_t timeout_ms);
pdtg_stats_res pdtg_tracer_stats(pdt_tracer *t);
pdtg_metrics_res pdtg_tracer_metrics(pdt_tracer *t, char *buf, size_t cap);

/* ---- requests ----------------------------------------------------- */

pdtg_begin_res pdtg_request_begin(pdt_tracer *t, pdtg_str tp, pdtg_str ts,
                                  uint64_t arrival, pdtg_str id,
                                  pdtg_str method, pdtg_str path);
pdtg_res pdtg_request_set_id(pdt_request *req, pdtg_str id);
pdtg_res pdtg_request_set_mode(pdt_request *req, int mode, pdtg_str reason);
pdtg_res pdtg_request_set_connector(pdt_request *req, pdtg_str name);
pdtg_res pdtg_request_mark(pdt_request *req, int mark, uint64_t ts);
pdtg_res pdtg_request_tokens(pdt_request *req, uint64_t ts, uint32_t count);
pdtg_res pdtg_request_set_usage(pdt_request *req, int64_t in, int64_t out,
                                int64_t cached);
pdtg_res pdtg_request_set_leg(pdt_request *req, int leg, pdtg_str target,
                              int status, pdtg_str error_type);
pdtg_res pdtg_request_set_response(pdt_request *req, int status,
                                   pdtg_str error_type);
pdtg_res pdtg_request_attr(pdt_request *req, int leg, pdtg_str key, int kind,
                           pdtg_str sv, int64_t iv, double dv);
pdtg_res pdtg_request_event(pdt_request *req, int leg, pdtg_str name,
                            uint64_t ts);
pdtg_res pdtg_request_status(pdt_request *req, int leg, int code,
                             pdtg_str msg);
pdtg_inject_res pdtg_request_inject(pdt_request *req, int leg);
pdtg_end_res pdtg_request_end(pdt_request *req, uint64_t ts);
pdtg_ids pdtg_request_ids(pdt_request *req, int leg);
pdtg_res pdtg_request_set_attrs(pdt_request *req, int leg,
                                const pdtg_attrbuf *b, size_t n);
pdtg_res pdtg_request_set_model(pdt_request *req, pdtg_str model);
pdtg_res pdtg_request_set_tenant(pdt_request *req, pdtg_str tenant);
pdtg_begin_with_res pdtg_request_begin_with(
    pdt_tracer *t, pdtg_str tp, pdtg_str ts, uint64_t arrival, pdtg_str id,
    pdtg_str method, pdtg_str path, pdtg_str connector, pdtg_str model,
    const pdtg_attrbuf *b, size_t n);
pdtg_inject_res pdtg_request_send(pdt_request *req, int leg, int mark,
                                  uint64_t ts);
pdtg_res pdtg_request_leg_done(pdt_request *req, int leg, int mark,
                               uint64_t ts, pdtg_str target, int status,
                               pdtg_str error_type);
pdtg_finish_res pdtg_request_finish(pdt_request *req, uint64_t end_ns,
                                    int status, pdtg_str error_type,
                                    int leg_set, pdtg_str target,
                                    int leg_status, pdtg_str leg_error,
                                    int usage_set, int64_t in, int64_t out,
                                    int64_t cached);

/* ---- attribute buffers for the batched calls ---------------------- */

pdtg_attrbuf *pdtg_attrbuf_new(void);
void pdtg_attrbuf_free(pdtg_attrbuf *b);
int pdtg_attrbuf_reserve(pdtg_attrbuf *b, size_t n, size_t bytes);

/* ---- generic spans ------------------------------------------------ */

pdtg_ids pdtg_span_ids(const pdt_span *s);
pdtg_res pdtg_span_set_attrs(pdt_span *s, const pdtg_attrbuf *b, size_t n);
pdtg_start_res pdtg_span_start(pdt_tracer *t, pdtg_str name, int kind,
                               pdt_span *parent, pdtg_str tp, pdtg_str ts,
                               uint64_t start);
pdtg_res pdtg_span_attr_set(pdt_span *s, int event, pdtg_str key, int kind,
                            pdtg_str sv, int64_t iv, double dv);
pdtg_res pdtg_span_add_event(pdt_span *s, pdtg_str name, uint64_t ts);
pdtg_res pdtg_span_set_status(pdt_span *s, int code, pdtg_str msg);
pdtg_inject_res pdtg_span_inject(pdt_span *s);
pdtg_res pdtg_span_end(pdt_span *s, uint64_t ts);
pdtg_parse_res pdtg_traceparent_parse(pdtg_str v);

#endif /* PDTG_H */
