/*
 * libpdtrace tracer: configuration, the background exporter, flush, close
 * and statistics.
 *
 * Thread rules: a pdt_tracer may be used from any number of threads at
 * once, except pdt_tracer_close(), which must be the last call on it and
 * must not race with other calls on the same tracer. The tracer owns one
 * background thread that batches and exports spans; the caller's thread
 * never does network or file I/O and never waits for the exporter, except
 * inside pdt_tracer_flush() and pdt_tracer_close(), which are bounded by
 * their timeout.
 */
#ifndef PDTRACE_TRACER_H
#define PDTRACE_TRACER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pdt_tracer pdt_tracer;

/* Where finished spans go. */
typedef enum pdt_exporter_kind {
    PDT_EXPORTER_DEFAULT = 0, /* OTEL_TRACES_EXPORTER, else OTLP */
    PDT_EXPORTER_OTLP = 1,    /* OTLP/HTTP protobuf to the endpoint */
    PDT_EXPORTER_CONSOLE = 2, /* OTLP JSON lines to a file or stdout */
    PDT_EXPORTER_NONE = 3     /* spans are built and dropped (counted) */
} pdt_exporter_kind;

typedef enum pdt_compression {
    PDT_COMPRESSION_DEFAULT = 0, /* OTEL_EXPORTER_OTLP_*_COMPRESSION, else none */
    PDT_COMPRESSION_NONE = 1,
    PDT_COMPRESSION_GZIP = 2,
    PDT_COMPRESSION_ZSTD = 3
} pdt_compression;

/* The OTLP transport (OTEL_EXPORTER_OTLP_PROTOCOL). */
typedef enum pdt_protocol {
    PDT_PROTOCOL_DEFAULT = 0,       /* OTEL_EXPORTER_OTLP_*_PROTOCOL, else
                                       http/protobuf */
    PDT_PROTOCOL_HTTP_PROTOBUF = 1, /* OTLP/HTTP, protobuf body */
    PDT_PROTOCOL_GRPC = 2,          /* OTLP/gRPC over HTTP/2 */
    PDT_PROTOCOL_HTTP_JSON = 3      /* OTLP/HTTP, JSON body */
} pdt_protocol;

typedef enum pdt_sampler_kind {
    PDT_SAMPLER_DEFAULT = 0, /* OTEL_TRACES_SAMPLER, else parentbased_always_on */
    PDT_SAMPLER_ALWAYS_ON = 1,
    PDT_SAMPLER_ALWAYS_OFF = 2,
    PDT_SAMPLER_TRACEIDRATIO = 3,
    PDT_SAMPLER_PARENTBASED_ALWAYS_ON = 4,
    PDT_SAMPLER_PARENTBASED_ALWAYS_OFF = 5,
    PDT_SAMPLER_PARENTBASED_TRACEIDRATIO = 6
} pdt_sampler_kind;

typedef enum pdt_log_level {
    PDT_LOG_ERROR = 1,
    PDT_LOG_WARN = 2,
    PDT_LOG_INFO = 3,
    PDT_LOG_DEBUG = 4
} pdt_log_level;

/*
 * Log callback for background events (export failures, dropped spans,
 * ignored environment values). Called from the exporter thread or from
 * pdt_tracer_open(); never with a lock held that the callback could need.
 * The message is valid only during the call. Messages are rate-limited and
 * never contain header values. Must not call pdt_tracer_close().
 */
typedef void (*pdt_log_fn)(void *userdata, int level, const char *message);

/*
 * Options for pdt_tracer_open(). Initialise with PDT_TRACER_OPTIONS_INIT or
 * pdt_tracer_options_init(); fields left at their zero/NULL value mean
 * "take it from the OTEL_* environment, else the default". Options set here
 * win over the environment. New fields are only ever added at the end; the
 * library reads `size` to know which fields the caller's header had.
 * Strings are copied by pdt_tracer_open(); the caller keeps ownership.
 */
typedef struct pdt_tracer_options {
    size_t size;                 /* sizeof(pdt_tracer_options) */
    const char *service_name;    /* default "llm-d-pd-proxy" */
    const char *resource_attributes; /* "k=v,k=v", percent-encoded, merged
                                        over OTEL_RESOURCE_ATTRIBUTES */
    int exporter;                /* pdt_exporter_kind */
    const char *endpoint;        /* full traces URL, e.g.
                                    "http://localhost:4318/v1/traces";
                                    with grpc, scheme://host:port */
    const char *headers;         /* "k=v,k=v", percent-encoded values */
    int compression;             /* pdt_compression */
    int64_t timeout_ms;          /* one export request; default 10000 */
    const char *console_path;    /* console exporter file (appended);
                                    NULL: PDTRACE_CONSOLE_PATH, else stdout;
                                    "-" is stdout */
    const char *ca_file;         /* TLS trust anchors (PEM) */
    const char *client_cert;     /* mutual TLS certificate (PEM) */
    const char *client_key;      /* mutual TLS key (PEM) */
    int64_t schedule_delay_ms;   /* batch delay; default 5000 */
    int64_t export_timeout_ms;   /* one batch incl. retries; default 30000 */
    int64_t max_queue_size;      /* spans waiting; default 2048 */
    int64_t max_export_batch_size; /* spans per request; default 512 */
    int64_t attribute_count_limit; /* per span; default 128 */
    int64_t attribute_value_length_limit; /* bytes; <0 or 0 = env/unlimited */
    int sampler;                 /* pdt_sampler_kind */
    double sampler_ratio;        /* with the ratio samplers: 0..1 */
    int sampler_ratio_set;       /* nonzero: sampler_ratio is meaningful */
    double tail_ttft_threshold_ms; /* export unsampled requests whose true
                                      TTFT exceeds this; 0 = off */
    int tail_keep_errors;        /* 1: export unsampled failed requests (the
                                    default), -1: don't, 0: default */
    int disabled;                /* 1: no export at all, -1: enabled even if
                                    OTEL_SDK_DISABLED=true, 0: environment */
    int ignore_environment;      /* nonzero: read no OTEL_* variable */
    pdt_log_fn log_fn;           /* optional background log */
    void *log_userdata;
    const char *spool_dir;       /* persistent spool (PDTRACE_SPOOL_DIR);
                                    NULL: none */
    int64_t spool_max_bytes;     /* spool cap; default 256 MiB */
    int64_t max_concurrent_exports; /* export requests in flight at once,
                                       1..64; 0: PDTRACE_EXPORT_MAX_CONCURRENT,
                                       else 4. Since 0.1.0. */
    int compression_level;       /* 0: PDTRACE_COMPRESSION_LEVEL, else the
                                    codec's default (gzip 1, zstd 1); gzip
                                    1..9, zstd -131072..22; ignored without
                                    compression. Since 0.1.0. */
    int protocol;                /* pdt_protocol; 0: OTEL_EXPORTER_OTLP_
                                    TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_
                                    PROTOCOL, else http/protobuf. With grpc,
                                    `endpoint` is the server's URL
                                    (default "http://localhost:4317").
                                    Since 0.1.0. */
    const char *metrics_tenants; /* tenants that get their own `tenant`
                                    label in the metrics, comma-separated
                                    (at most 32 names of 1..63 bytes, not
                                    "other"); any other tenant is counted
                                    as "other". NULL:
                                    PDTRACE_METRICS_TENANTS, else none.
                                    Since 0.1.0. */
    int64_t max_queue_bytes;     /* memory for spans queued or being
                                    exported, 65536..2^63-1 bytes; 0:
                                    PDTRACE_MAX_QUEUE_BYTES, else 64 MiB.
                                    Unless a value length limit is set, it
                                    also caps a string value at 1/8 of it,
                                    at most 1 MiB. Since 0.1.0. */
} pdt_tracer_options;

#define PDT_TRACER_OPTIONS_INIT { sizeof(pdt_tracer_options), NULL, NULL, 0, \
    NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0.0, 0, \
    0.0, 0, 0, 0, NULL, NULL, NULL, 0, 0, 0, 0, NULL, 0 }

/*
 * Sets *opts to PDT_TRACER_OPTIONS_INIT, for bindings that cannot use the
 * macro. `size` is sizeof(pdt_tracer_options) as the caller was compiled:
 * only that many bytes are written and opts->size is set to it, so a
 * program built against an older (smaller) or newer (larger) header gets
 * its own layout, with the fields this library does not know zeroed.
 * Returns PDT_OK, or PDT_EINVAL if opts is NULL or size is smaller than the
 * 0.1.0 struct. Since 0.1.0.
 */
PDT_API int pdt_tracer_options_init(pdt_tracer_options *opts, size_t size);

/*
 * Opens a tracer and starts its exporter thread.
 *
 * out:  receives the new tracer; set to NULL on failure.
 * opts: options, or NULL for "environment and defaults only". Copied.
 *
 * A malformed OTEL_* variable is reported once through the log callback
 * and ignored, never fatal. A malformed option set in `opts` is an error.
 * With OTEL_SDK_DISABLED=true (or disabled=1) the tracer is valid, all
 * calls work and compute breakdowns, and nothing is exported.
 *
 * Errors: PDT_EINVAL (out NULL, opts->size too small, bad enum or value
 * in opts), PDT_EPARSE (malformed string option), PDT_ENOMEM, PDT_EIO
 * (console file or spool directory unusable), PDT_EINTERNAL (thread).
 * Thread rules: any thread. Ownership: the caller closes the tracer with
 * pdt_tracer_close(). Since 0.1.0.
 */
PDT_API int pdt_tracer_open(pdt_tracer **out, const pdt_tracer_options *opts);

/*
 * Exports every span ended before this call and waits for the export to
 * finish, at most timeout_ms milliseconds (<0: the export timeout).
 * Returns PDT_OK when they were all delivered or definitively given up
 * (counted in the stats), PDT_ETIMEOUT when the time ran out first (the
 * spans stay queued and go out later). *pending_out, if not NULL, receives
 * the number of spans still waiting when the call returned.
 * Errors: PDT_EINVAL, PDT_ECLOSED, PDT_ETIMEOUT.
 * Thread rules: any thread; concurrent flushes are allowed. Since 0.1.0.
 */
PDT_API int pdt_tracer_flush(pdt_tracer *tracer, int64_t timeout_ms,
                             uint64_t *pending_out);

/*
 * Flushes, stops the exporter thread and frees the tracer, in at most
 * timeout_ms milliseconds (<0: the export timeout), even when the collector
 * hangs. Spans not delivered by then go to the spool if one is configured,
 * else they are dropped; *dropped_out (if not NULL) receives their number.
 * Returns PDT_OK if nothing was dropped, PDT_ETIMEOUT otherwise. The tracer
 * is closed in every case, and NULL is accepted (PDT_OK). Requests and
 * spans still open stay valid and must still be freed: what they record
 * after close is dropped and counted (dropped_shutdown), and the tracer's
 * memory is released when the last of them is freed. No other call may
 * be made on the tracer itself after this one. Since 0.1.0.
 */
PDT_API int pdt_tracer_close(pdt_tracer *tracer, int64_t timeout_ms,
                             uint64_t *dropped_out);

/*
 * Counters since the tracer was opened. Set `size` before the call (use
 * PDT_STATS_INIT); the library fills the fields it knows up to that size.
 * Every span the library gives up on is counted in exactly one dropped_*
 * field.
 */
typedef struct pdt_stats {
    size_t size;
    uint64_t spans_started;        /* spans begun, sampled or not */
    uint64_t spans_ended;          /* spans ended and handed to the exporter */
    uint64_t spans_not_sampled;    /* ended but not recorded (sampler) */
    uint64_t spans_exported;       /* accepted by the receiver */
    uint64_t spans_rejected;       /* rejected via partial success */
    uint64_t dropped_queue_full;   /* queue full at end time */
    uint64_t dropped_export_failed;/* non-retryable error or retries exhausted */
    uint64_t dropped_shutdown;     /* still queued when close timed out */
    uint64_t dropped_disabled;     /* exporter "none" or SDK disabled */
    uint64_t export_requests;      /* HTTP requests sent (incl. retries) */
    uint64_t export_retries;       /* of which retries */
    uint64_t export_failures;      /* requests that failed */
    uint64_t bytes_sent;           /* request body bytes, after compression */
    uint64_t queue_depth;          /* spans waiting right now */
    uint64_t attributes_dropped;   /* over the count limit */
    uint64_t values_truncated;     /* over the value length limit */
    uint64_t strings_sanitized;    /* invalid UTF-8 repaired */
    uint64_t requests_completed;   /* P/D requests ended */
    uint64_t spans_spooled;        /* written to the spool */
    uint64_t spans_replayed;       /* read back from the spool and delivered */
    uint64_t spool_dropped;        /* evicted from a full spool */
    uint64_t spool_corrupt;        /* corrupt frames skipped */
} pdt_stats;

#define PDT_STATS_INIT { sizeof(pdt_stats), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, \
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/*
 * Copies the tracer's counters into *out (see pdt_stats). out->size must
 * be set. Errors: PDT_EINVAL. Thread rules: any thread. Since 0.1.0.
 */
PDT_API int pdt_tracer_stats(pdt_tracer *tracer, pdt_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* PDTRACE_TRACER_H */
