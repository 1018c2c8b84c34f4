/*
 * Internal: the OTLP/HTTP transport. Runs only on the exporter thread
 * (except pdti_transport_wakeup()). One transport keeps a pool of
 * connections, reused between exports, and runs several exports at once
 * when asked to (pdti_xfer).
 */
#ifndef PDTI_TRANSPORT_H
#define PDTI_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "buf.h"

typedef struct pdti_transport pdti_transport;
/* One export in flight, with its own connection; owned by its transport. */
typedef struct pdti_xfer pdti_xfer;

/* Exports one transport can have in flight at once (pdti_xfer_new()). */
#define PDTI_TRANSPORT_MAX_XFERS 64

typedef enum pdti_outcome {
    PDTI_DELIVERED = 0, /* 2xx; rejected_spans may be > 0 (partial success) */
    PDTI_FAILED = 1,    /* non-retryable status, or retries exhausted */
    PDTI_ABORTED = 2    /* *abort became nonzero, or the deadline passed */
} pdti_outcome;

typedef struct pdti_export_result {
    int outcome;            /* pdti_outcome */
    long http_status;       /* last HTTP status, 0 if none */
    int grpc_status;        /* gRPC: last grpc-status, -1 if none (HTTP) */
    int retryable;          /* gRPC: the last status is one the OTLP
                               rules retry (a later try may succeed) */
    int64_t rejected_spans; /* from ExportTraceServiceResponse.partial_success */
    unsigned attempts;      /* HTTP requests made (1 + retries) */
    uint64_t bytes_sent;    /* request bytes on the wire, all attempts */
    char message[256];      /* last error or partial-success message */
} pdti_export_result;

/*
 * Creates a transport for cfg->protocol (OTLP/HTTP with protobuf or JSON,
 * or OTLP/gRPC), cfg->endpoint, cfg->headers, cfg->compression
 * and cfg->compression_level,
 * cfg->timeout_ms and the TLS files. cfg must outlive the transport.
 * Returns PDT_OK, PDT_ENOMEM or PDT_EINTERNAL (libcurl init).
 */
int pdti_transport_new(pdti_transport **out, const pdti_config *cfg);
void pdti_transport_free(pdti_transport *t);

/*
 * POSTs one ExportTraceServiceRequest body (uncompressed protobuf),
 * compressing it as configured, with retries: only 429, 502, 503, 504 and
 * connection failures are retried (gRPC: the codes of
 * pdti_grpc_code_retryable(), transport_grpc.h), with exponential backoff (100 ms doubling,
 * capped at 5 s) and random jitter, honouring Retry-After
 * (capped at 30 s). Everything stays before `deadline_ns` (pdt_now_ns
 * clock) and stops promptly (within about 10 ms) once *abort != 0
 * (read with __atomic_load_n). A 2xx response body is decoded for
 * partial_success; at most 4 MiB of any response is read.
 * Returns PDT_OK and fills *res in every case but misuse (PDT_EINVAL).
 */
int pdti_transport_export(pdti_transport *t, const uint8_t *body, size_t len,
                          uint64_t deadline_ns, const int *abort_flag,
                          pdti_export_result *res);

/*
 * Exports that run side by side. pdti_xfer_new() adds one to the transport
 * (at most PDTI_TRANSPORT_MAX_XFERS; freed with the transport).
 * pdti_xfer_start() begins an export with the same policy as
 * pdti_transport_export(); `body` must stay valid until the export is
 * done (the compressed copy is the xfer's own). Nothing happens unless
 * pdti_transport_run() is called, which moves every export of the
 * transport forward: it waits at most wait_ms (and at most one poll slice
 * of about 5 ms, or less when an export finishes or pdti_transport_wakeup()
 * is called) and returns the number of exports still busy. Once
 * pdti_xfer_busy() is 0 after a start, pdti_xfer_take() copies the result
 * and makes the xfer ready for the next start.
 * pdti_xfer_new: PDT_OK, PDT_EINVAL (NULL, too many), PDT_ENOMEM,
 * PDT_EINTERNAL. pdti_xfer_start: PDT_OK, PDT_EINVAL (NULL body with a
 * length, or the xfer is busy).
 */
int pdti_xfer_new(pdti_transport *t, pdti_xfer **out);
int pdti_xfer_start(pdti_xfer *x, const uint8_t *body, size_t len,
                    uint64_t deadline_ns, const int *abort_flag);
int pdti_xfer_busy(const pdti_xfer *x);
/* 1 while a busy export has had a failed attempt: waiting to retry, or
 * retrying. */
int pdti_xfer_retrying(const pdti_xfer *x);
/* 1 and *res (if not NULL) when the export is done, else 0. */
int pdti_xfer_take(pdti_xfer *x, pdti_export_result *res);
unsigned pdti_transport_run(pdti_transport *t, int wait_ms);
/* Cuts the current wait of pdti_transport_run() short; any thread. */
void pdti_transport_wakeup(pdti_transport *t);

/* Pieces exposed for unit tests and fuzzing. */

/*
 * Parses a Retry-After value: delta-seconds or an HTTP-date (IMF-fixdate,
 * RFC 850 and asctime forms). Returns the delay in ms (>= 0, a date in
 * the past gives 0), or -1 if the value is malformed. `now` is the
 * current wall-clock time.
 */
int64_t pdti_parse_retry_after(const char *value, time_t now);

/* 1 if an HTTP status is retryable per OTLP (429, 502, 503, 504). */
int pdti_status_retryable(long http_status);

/*
 * Backoff before retry number `attempt` (1-based), in ms: 100 * 2^(a-1)
 * capped at 5000, with jitter uniformly in [50%, 100%] drawn from *rng.
 */
int64_t pdti_backoff_ms(unsigned attempt, uint64_t *rng);

/*
 * Decodes an ExportTraceServiceResponse (protobuf) with the nanopb
 * descriptors. Writes rejected spans (0 if absent) and the error message
 * (truncated, NUL-terminated; "" if absent). Returns PDT_OK or PDT_EPARSE.
 */
int pdti_decode_export_response(const uint8_t *data, size_t len,
                                int64_t *rejected, char *msg, size_t msgcap);

/*
 * The same for an ExportTraceServiceResponse in OTLP JSON: reads
 * partialSuccess.rejectedSpans (a number or a string) and
 * partialSuccess.errorMessage (escapes other than \" and \\ are kept as
 * written). An empty body is an empty response. Returns PDT_OK or
 * PDT_EPARSE (not a JSON object).
 */
int pdti_decode_export_response_json(const uint8_t *data, size_t len,
                                     int64_t *rejected, char *msg,
                                     size_t msgcap);

/*
 * The levels a codec accepts and its default (config.h: gzip 1..9, zstd
 * -131072..22, narrowed to what the zstd in use supports). Any pointer may
 * be NULL. Returns
 * PDT_OK, or PDT_EINVAL for a kind other than PDT_COMPRESSION_GZIP or _ZSTD.
 */
int pdti_compress_level_range(int kind, int *min, int *max, int *def);

/*
 * A reusable compressor for one codec and level (0: the codec's default).
 * Its memory is allocated once; pdti_compressor_run() compresses one whole
 * body per call. Not thread-safe: one thread at a time.
 * Returns PDT_OK, PDT_EINVAL (unknown kind, level out of range) or
 * PDT_ENOMEM.
 */
typedef struct pdti_compressor pdti_compressor;
int pdti_compressor_new(pdti_compressor **out, int kind, int level);
void pdti_compressor_free(pdti_compressor *c);
int pdti_compressor_kind(const pdti_compressor *c);
/* The level in use (the default resolved), 0 for NULL. */
int pdti_compressor_level(const pdti_compressor *c);

/*
 * Compresses in[0..n) into out (appended) as one gzip member or one zstd
 * frame. Returns PDT_OK, PDT_ENOMEM (out is left as it was) or PDT_EINVAL.
 */
int pdti_compressor_run(pdti_compressor *c, const uint8_t *in, size_t n,
                        pdti_buf *out);

/*
 * One-shot: compresses in[0..n) into out (appended) with
 * PDT_COMPRESSION_GZIP (gzip format) or PDT_COMPRESSION_ZSTD at the codec's
 * default level. Returns PDT_OK, PDT_ENOMEM or PDT_EINVAL (unknown kind).
 */
int pdti_compress(int kind, const uint8_t *in, size_t n, pdti_buf *out);

#endif
