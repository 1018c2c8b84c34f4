/*
 * Internal: the resolved tracer configuration (options over OTEL_*
 * environment over defaults). The pieces behind it, from the bottom up:
 * config_text.h (text parsers), config_kvlist.h (k=v lists),
 * config_check.h (URL and header validation), config_env.h (reading the
 * environment).
 */
#ifndef PDTI_CONFIG_H
#define PDTI_CONFIG_H

#include <stdint.h>

#include "pdtrace/tracer.h"
#include "config_kvlist.h"
#include "log.h"

#define PDTI_DEFAULT_ENDPOINT "http://localhost:4318/v1/traces"
#define PDTI_DEFAULT_GRPC_ENDPOINT "http://localhost:4317"
#define PDTI_DEFAULT_SERVICE_NAME "llm-d-pd-proxy"
/* Export requests in flight at once: default and limit. */
#define PDTI_MAX_CONCURRENT_DEFAULT 4
#define PDTI_MAX_CONCURRENT_MAX 64
/*
 * Memory for spans queued or being exported (max_queue_bytes,
 * PDTRACE_MAX_QUEUE_BYTES). 64 MiB holds a full default queue (2048 spans)
 * of P/D spans (about 1.1 KiB each) about 25 times over, so it only bites
 * when spans carry large values; and it keeps a process far from the
 * gigabytes that 2048 spans with megabyte values would take.
 */
#define PDTI_QUEUE_BYTES_DEFAULT ((int64_t)64 * 1024 * 1024)
/* A span name, status message or event name, and (with no value length
 * limit set) an attribute's string value, is cut at 1/8 of
 * max_queue_bytes, and at most at this (well under the 8 MiB span and
 * 4 MiB request limits of the exporter, see encode.h). */
#define PDTI_VALUE_CAP_DEFAULT ((int64_t)1024 * 1024)

/*
 * Compression levels (PDTRACE_COMPRESSION_LEVEL, options.compression_level):
 * gzip uses zlib's scale, zstd its own (negative levels are the fast ones;
 * -131072 is ZSTD_minCLevel() of zstd 1.4 and later). The defaults were
 * chosen with tests/bench/bench_compress.c on the benchmark's batches.
 */
#define PDTI_GZIP_LEVEL_MIN 1
#define PDTI_GZIP_LEVEL_MAX 9
#define PDTI_GZIP_LEVEL_DEFAULT 1
#define PDTI_ZSTD_LEVEL_MIN (-131072)
#define PDTI_ZSTD_LEVEL_MAX 22
#define PDTI_ZSTD_LEVEL_DEFAULT 1

/* Tenants with their own metrics label (metrics_tenants,
 * PDTRACE_METRICS_TENANTS): how many, and the longest name. */
#define PDTI_TENANTS_MAX 32
#define PDTI_TENANT_NAME_MAX 63

typedef struct pdti_config {
    int disabled;               /* 1: export nothing */
    int exporter;               /* PDT_EXPORTER_OTLP, _CONSOLE or _NONE */
    int protocol;               /* PDT_PROTOCOL_HTTP_PROTOBUF, _GRPC or
                                   _HTTP_JSON (never _DEFAULT) */
    char *endpoint;             /* full traces URL; with grpc, the
                                   server's URL (no path appended) */
    pdti_kvlist headers;        /* extra HTTP headers; never logged */
    int compression;            /* PDT_COMPRESSION_NONE, _GZIP or _ZSTD */
    int compression_level;      /* the codec's level; 0 with no compression */
    int64_t timeout_ms;         /* one HTTP request */
    char *console_path;         /* NULL: stdout */
    char *ca_file;
    char *client_cert;
    char *client_key;
    int64_t schedule_delay_ms;
    int64_t export_timeout_ms;
    int64_t max_queue_size;
    int64_t max_export_batch_size; /* <= max_queue_size */
    int64_t attr_count_limit;      /* >= 0 */
    int64_t attr_value_len_limit;  /* bytes (PDTI_VALUE_CAP_DEFAULT when
                                      unset; -1 only while the resource
                                      is encoded) */
    int sampler;                   /* never PDT_SAMPLER_DEFAULT */
    double sampler_ratio;          /* 0..1 */
    double tail_ttft_threshold_ms; /* 0: off */
    int tail_keep_errors;          /* 0 or 1 */
    char *service_name;            /* final service.name */
    pdti_kvlist resource;          /* final resource attributes, service.name
                                      included, in a stable order */
    char *spool_dir;               /* NULL: no spool */
    int64_t spool_max_bytes;
    int64_t max_concurrent;        /* export requests in flight, 1..64 */
    char *metrics_tenants;         /* NULL, or "a,b,c": checked, trimmed,
                                      without duplicates */
    int64_t max_queue_bytes;       /* spans queued or being exported */
    int64_t value_cap;             /* longest span name, status message or
                                      event name: max_queue_bytes / 8, at
                                      most PDTI_VALUE_CAP_DEFAULT */
} pdti_config;

/*
 * Checks a tenant list ("a, b,c": names separated by commas, blanks
 * around them ignored, empty items skipped) and writes it to *out as
 * "a,b,c" without duplicates (NULL for an empty list; free() it).
 * Returns PDT_OK, PDT_ENOMEM, or PDT_EINVAL with *why set to a static
 * reason (too many names, a name too long, "other", a control byte).
 * Invalid UTF-8 is not refused: the metrics render it as U+FFFD.
 */
int pdti_config_tenants(const char *list, char **out, const char **why);

/*
 * Fills *cfg from opts (may be NULL) and, unless opts->ignore_environment,
 * from the OTEL_* variables (and PDTRACE_CONSOLE_PATH, PDTRACE_SPOOL_DIR,
 * PDTRACE_EXPORT_MAX_CONCURRENT, PDTRACE_COMPRESSION_LEVEL and the other
 * PDTRACE_* variables).
 * A malformed environment value is logged once through `lg` at WARN and
 * ignored (for OTEL_RESOURCE_ATTRIBUTES and the header lists, the whole
 * variable is discarded). A malformed option is an error: returns
 * PDT_EINVAL or PDT_EPARSE with the last error set, and *cfg is left
 * freed. Returns PDT_OK on success; release with pdti_config_free().
 * An unknown OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL is an error too
 * (PDT_EINVAL): a transport the user asked for is never replaced.
 * Resource attributes get service.name, telemetry.sdk.name=libpdtrace,
 * telemetry.sdk.language=c, telemetry.sdk.version, process.pid and
 * host.name unless the user set them.
 */
int pdti_config_resolve(pdti_config *cfg, const pdt_tracer_options *opts,
                        pdti_logger *lg);
void pdti_config_free(pdti_config *cfg);

#endif
