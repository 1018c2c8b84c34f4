/*
 * Internal: the resolved tracer configuration (options over OTEL_*
 * environment over defaults) and the parsers behind it.
 */
#ifndef PDTI_CONFIG_H
#define PDTI_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "pdtrace/tracer.h"
#include "log.h"

typedef struct pdti_kv {
    char *key;   /* NUL-terminated, owned */
    char *value; /* NUL-terminated, owned, percent-decoded */
} pdti_kv;

typedef struct pdti_kvlist {
    pdti_kv *items;
    size_t count;
} pdti_kvlist;

#define PDTI_DEFAULT_ENDPOINT "http://localhost:4318/v1/traces"
#define PDTI_DEFAULT_SERVICE_NAME "llm-d-pd-proxy"
/* Export requests in flight at once: default and limit. */
#define PDTI_MAX_CONCURRENT_DEFAULT 4
#define PDTI_MAX_CONCURRENT_MAX 64

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

typedef struct pdti_config {
    int disabled;               /* 1: export nothing */
    int exporter;               /* PDT_EXPORTER_OTLP, _CONSOLE or _NONE */
    char *endpoint;             /* full traces URL */
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
    int64_t attr_value_len_limit;  /* -1: unlimited */
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
} pdti_config;

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
 * Resource attributes get service.name, telemetry.sdk.name=libpdtrace,
 * telemetry.sdk.language=c, telemetry.sdk.version, process.pid and
 * host.name unless the user set them.
 */
int pdti_config_resolve(pdti_config *cfg, const pdt_tracer_options *opts,
                        pdti_logger *lg);
void pdti_config_free(pdti_config *cfg);

/*
 * "k=v,k=v" lists (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS):
 * entries separated by ',', optional whitespace around keys and values is
 * trimmed, values (and keys) are percent-decoded, empty entries skipped.
 * A missing '=', an empty key or a bad percent escape makes the whole
 * text invalid: returns PDT_EPARSE and *out is empty. Later duplicates
 * replace earlier ones. Returns PDT_OK, PDT_EPARSE or PDT_ENOMEM.
 */
int pdti_kvlist_parse(const char *text, size_t len, pdti_kvlist *out);
void pdti_kvlist_free(pdti_kvlist *l);
/* Sets key to value (copies), replacing an existing key. PDT_OK/ENOMEM. */
int pdti_kvlist_set(pdti_kvlist *l, const char *key, const char *value);
const char *pdti_kvlist_get(const pdti_kvlist *l, const char *key);

/*
 * Decodes %XX escapes of src[0..len) into a new NUL-terminated string
 * (*out, malloc'd). Returns PDT_OK, PDT_EPARSE (bad escape, or a decoded
 * NUL byte) or PDT_ENOMEM.
 */
int pdti_percent_decode(const char *src, size_t len, char **out);

/* "true"/"false" case-insensitively, after trimming. PDT_OK/PDT_EPARSE. */
int pdti_parse_bool(const char *text, int *out);
/* A whole decimal integer in [min, max], trimmed. PDT_OK/PDT_EPARSE/ERANGE. */
int pdti_parse_int(const char *text, int64_t min, int64_t max, int64_t *out);
/* A finite decimal number in [min, max]. PDT_OK/PDT_EPARSE/PDT_ERANGE. */
int pdti_parse_double(const char *text, double min, double max, double *out);

#endif
