/*
 * libpdtrace generic spans: any name, kind and parent, with attributes,
 * events and a status (for example the EPP decision span).
 *
 * Thread rules: one span is used by one thread at a time, but may move
 * between threads (asyncio tasks, goroutines) with the usual happens-before
 * synchronisation. Different spans may be used concurrently.
 *
 * Ownership: pdt_span_start() gives the caller a handle that it releases
 * with pdt_span_free(). pdt_span_end() records the span; the handle stays
 * valid (for pdt_span_inject(), for instance) until freed. All strings
 * passed in are copied before the call returns.
 */
#ifndef PDTRACE_SPAN_H
#define PDTRACE_SPAN_H

#include "common.h"
#include "tracer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pdt_span pdt_span;

typedef enum pdt_span_kind {
    PDT_SPAN_KIND_INTERNAL = 1,
    PDT_SPAN_KIND_SERVER = 2,
    PDT_SPAN_KIND_CLIENT = 3,
    PDT_SPAN_KIND_PRODUCER = 4,
    PDT_SPAN_KIND_CONSUMER = 5
} pdt_span_kind;

typedef enum pdt_span_status {
    PDT_SPAN_STATUS_UNSET = 0,
    PDT_SPAN_STATUS_OK = 1,
    PDT_SPAN_STATUS_ERROR = 2
} pdt_span_status;

/* Length of a traceparent header value plus its terminating NUL. */
#define PDT_TRACEPARENT_SIZE 56

/*
 * Outbound propagation headers for one span: what to send upstream so the
 * next hop's spans join this trace as children of this span.
 */
typedef struct pdt_propagation {
    size_t size;                            /* sizeof(pdt_propagation) */
    char traceparent[PDT_TRACEPARENT_SIZE]; /* "00-<trace>-<span>-<flags>" */
    const char *tracestate; /* borrowed, NULL if none; valid while the span
                               (or request) handle lives */
    const char *request_id; /* borrowed; the x-request-id (P/D requests
                               only, else NULL) */
} pdt_propagation;

#define PDT_PROPAGATION_INIT { sizeof(pdt_propagation), { 0 }, NULL, NULL }

/*
 * Starts a span.
 *
 * out:         receives the span handle (NULL on failure).
 * name:        span name, non-empty; invalid UTF-8 is repaired.
 * kind:        a pdt_span_kind.
 * parent:      parent span, or NULL. Wins over traceparent.
 * traceparent: W3C traceparent of a remote parent, or NULL. A malformed
 *              value is not an error: the span starts a new trace and
 *              the value is ignored (counted in the log). Several header
 *              lines joined with ',' are a duplicated traceparent: also
 *              ignored. W3C Trace Context Level 2 (docs/propagation.md).
 * tracestate:  W3C tracestate that goes with traceparent, or NULL (only
 *              used with a valid traceparent). A tracestate with an invalid
 *              member, a duplicated key or more than 32 members is
 *              discarded whole; over 512 characters, members longer than
 *              128 characters are dropped first, then members from the end.
 * start_ns:    pdt_now_ns() clock, or 0 for now.
 *
 * The sampling decision is taken here (parent-based by default). An
 * unsampled span costs little and all calls on it still succeed.
 * Errors: PDT_EINVAL (NULL tracer/out/name, bad kind), PDT_ERANGE (start_ns
 * in the far future), PDT_ECLOSED, PDT_ENOMEM.
 * Thread rules: any thread. Since 0.1.0.
 */
PDT_API int pdt_span_start(pdt_span **out, pdt_tracer *tracer,
                           const char *name, int kind, const pdt_span *parent,
                           const char *traceparent, const char *tracestate,
                           uint64_t start_ns);

/*
 * Typed attributes. The key must be non-empty. Setting a key again
 * replaces nothing: the OTLP receiver sees both and keeps the last; use
 * each key once. Invalid UTF-8 in keys and values is repaired; values
 * longer than the value length limit are truncated at a character
 * boundary (PDT_OK, counted); attributes over the count limit are dropped
 * and PDT_ELIMIT is returned. pdt_span_set_strn() takes a length and
 * accepts embedded NUL bytes (they are kept).
 * Errors: PDT_EINVAL, PDT_ESTATE (span already ended), PDT_ELIMIT,
 * PDT_ENOMEM. Since 0.1.0.
 */
PDT_API int pdt_span_set_str(pdt_span *span, const char *key,
                             const char *value);
PDT_API int pdt_span_set_strn(pdt_span *span, const char *key,
                              const char *value, size_t len);
PDT_API int pdt_span_set_int(pdt_span *span, const char *key, int64_t value);
PDT_API int pdt_span_set_double(pdt_span *span, const char *key,
                                double value);
PDT_API int pdt_span_set_bool(pdt_span *span, const char *key, int value);

/* Type of a pdt_attr value. */
typedef enum pdt_attr_type {
    PDT_ATTR_STRING = 1,
    PDT_ATTR_INT = 2,
    PDT_ATTR_DOUBLE = 3,
    PDT_ATTR_BOOL = 4
} pdt_attr_type;

/*
 * One typed attribute for the batch setters. Plain fields, no union, so
 * that bindings can fill arrays of them directly.
 *   key:     NUL-terminated, non-empty.
 *   type:    a pdt_attr_type; selects the value field that is read.
 *   str, str_len: the PDT_ATTR_STRING value; str_len (size_t)-1 means
 *            "NUL-terminated", anything else is the byte length.
 *   i:       the PDT_ATTR_INT value, or the PDT_ATTR_BOOL value (0/1).
 *   d:       the PDT_ATTR_DOUBLE value.
 */
typedef struct pdt_attr {
    const char *key;
    int type;
    const char *str;
    size_t str_len;
    int64_t i;
    double d;
} pdt_attr;

/*
 * Sets n attributes in one call, with the rules of pdt_span_set_str() and
 * friends. Every entry is applied even if an earlier one fails; the
 * return value is PDT_OK or the status of the last entry that failed
 * (PDT_EINVAL for a bad key or type, PDT_ELIMIT, PDT_ENOMEM), and
 * pdt_last_error() describes the last entry that failed. n == 0 is PDT_OK; attrs may be
 * NULL only then. Errors: also PDT_EINVAL (NULL span), PDT_ESTATE (ended).
 * Thread rules and ownership as the single setters. Since 0.1.0.
 */
PDT_API int pdt_span_set_attrs(pdt_span *span, const pdt_attr *attrs,
                               size_t n);

/*
 * Adds an event named `name` at time_ns (0: now). At most 128 events a
 * span; more give PDT_ELIMIT. Attributes for the event are added with
 * the pdt_span_event_set_* calls, which apply to the most recent event.
 * Errors: PDT_EINVAL, PDT_ESTATE, PDT_ELIMIT, PDT_ERANGE, PDT_ENOMEM.
 * Since 0.1.0.
 */
PDT_API int pdt_span_add_event(pdt_span *span, const char *name,
                               uint64_t time_ns);
PDT_API int pdt_span_event_set_str(pdt_span *span, const char *key,
                                   const char *value);
PDT_API int pdt_span_event_set_int(pdt_span *span, const char *key,
                                   int64_t value);
PDT_API int pdt_span_event_set_double(pdt_span *span, const char *key,
                                      double value);
PDT_API int pdt_span_event_set_bool(pdt_span *span, const char *key,
                                    int value);

/*
 * Sets the span status (a pdt_span_status) and, for ERROR, an optional
 * message (copied; NULL for none). Errors: PDT_EINVAL, PDT_ESTATE.
 * Since 0.1.0.
 */
PDT_API int pdt_span_set_status(pdt_span *span, int code,
                                const char *message);

/*
 * Writes the outbound propagation headers for this span into *out
 * (out->size must be set). Works before and after pdt_span_end().
 * Errors: PDT_EINVAL. Since 0.1.0.
 */
PDT_API int pdt_span_inject(const pdt_span *span, pdt_propagation *out);

/*
 * Copies the span's trace id (32 lowercase hex digits + NUL) into trace_buf
 * (at least 33 bytes) and span id (16 hex + NUL) into span_buf (at least
 * 17 bytes). Either buffer may be NULL. Errors: PDT_EINVAL. Since 0.1.0.
 */
PDT_API int pdt_span_ids(const pdt_span *span, char *trace_buf,
                         char *span_buf);

/* Nonzero if the span is sampled (will be exported). NULL gives 0. */
PDT_API int pdt_span_is_sampled(const pdt_span *span);

/*
 * Ends the span at end_ns (0: now) and hands it to the exporter queue.
 * An end before the start is clamped to the start (PDT_ERANGE is
 * returned, the span is still recorded). A full queue drops the span and
 * counts it; that is not an error for the caller.
 * Errors: PDT_EINVAL, PDT_ESTATE (already ended), PDT_ERANGE.
 * Since 0.1.0.
 */
PDT_API int pdt_span_end(pdt_span *span, uint64_t end_ns);

/*
 * Releases the handle. A span not yet ended is ended now. NULL is
 * accepted. The handle must not be used afterwards. Since 0.1.0.
 */
PDT_API void pdt_span_free(pdt_span *span);

/*
 * Parses a W3C traceparent value. On success writes the 16-byte trace id,
 * 8-byte parent id and the flags byte (each pointer may be NULL).
 * Versions above 00 are parsed by their fixed offsets. Errors:
 * PDT_EINVAL (NULL value), PDT_EPARSE (malformed, version ff, zero ids).
 * Thread rules: any thread, no tracer needed. Since 0.1.0.
 */
PDT_API int pdt_traceparent_parse(const char *value, uint8_t trace_id[16],
                                  uint8_t span_id[8], uint8_t *flags);

#ifdef __cplusplus
}
#endif

#endif /* PDTRACE_SPAN_H */
