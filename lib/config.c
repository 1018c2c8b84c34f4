/*
 * The resolved tracer configuration: options set in code win over the
 * OTEL_* (and PDTRACE_*) environment, which wins over the defaults of
 * docs/configuration.md.
 *
 * Two kinds of bad input are treated differently. A bad environment value
 * is the operator's mistake discovered at run time: it is reported once at
 * WARN through the logger and ignored. A bad option is the programmer's
 * mistake: it fails pdti_config_resolve() with a status and a last-error
 * message. The environment readers (config_env.c) and the text parsers
 * (config_text.c, config_kvlist.c, config_check.c) never touch the last
 * error, so that an ignored environment value leaves no trace there.
 *
 * Header values may carry credentials: they never appear in a log message
 * or an error message, and neither do endpoint URLs (user:password@host).
 *
 * Memory: malloc and free only; every function frees what it allocated
 * before returning an error.
 *
 * Why this file is longer than the 800 lines we aim for: it is the one
 * place where each setting's precedence (option, then environment, then
 * default) is spelled out, one resolve_*() function a setting group, all
 * over the private resolver that knows which option fields the caller's
 * struct has. The parsers, validators and environment readers are apart
 * (config_text.c, config_kvlist.c, config_check.c, config_env.c); what is
 * left reads top to bottom in the order of docs/configuration.md.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pdtrace/version.h"
#include "config.h"
#include "config_check.h"
#include "config_env.h"
#include "config_kvlist.h"
#include "config_text.h"
#include "error.h"
#include "log.h"

/* Ranges accepted for numbers, from the options or the environment. */
#define PDTI_MS_MIN 1
#define PDTI_MS_MAX 3600000
#define PDTI_QUEUE_MAX 1048576
#define PDTI_COUNT_LIMIT_MAX 65536
#define PDTI_TAIL_TTFT_MAX_MS 86400000.0
#define PDTI_SPOOL_DEFAULT_BYTES ((int64_t)256 * 1024 * 1024)
#define PDTI_QUEUE_BYTES_MIN ((int64_t)64 * 1024)

/* ---------------------------------------------------------------------
 * Options over environment over defaults.
 */

typedef struct resolver {
    const pdt_tracer_options *o; /* NULL: no options */
    pdti_env env;                /* env.use 0: ignore_environment */
    int has_spool_dir;           /* o->size covers spool_dir */
    int has_spool_max;           /* o->size covers spool_max_bytes */
    int has_max_concurrent;      /* o->size covers max_concurrent_exports */
    int has_comp_level;          /* o->size covers compression_level */
    int has_protocol;            /* o->size covers protocol */
    int has_tenants;             /* o->size covers metrics_tenants */
    int has_queue_bytes;         /* o->size covers max_queue_bytes */
} resolver;

static const pdti_name_value exporter_names[] = {
    { "otlp", PDT_EXPORTER_OTLP },
    { "console", PDT_EXPORTER_CONSOLE },
    { "none", PDT_EXPORTER_NONE },
    { NULL, 0 }
};

static const pdti_name_value compression_names[] = {
    { "none", PDT_COMPRESSION_NONE },
    { "gzip", PDT_COMPRESSION_GZIP },
    { "zstd", PDT_COMPRESSION_ZSTD },
    { NULL, 0 }
};

static const pdti_name_value protocol_names[] = {
    { "http/protobuf", PDT_PROTOCOL_HTTP_PROTOBUF },
    { "grpc", PDT_PROTOCOL_GRPC },
    { "http/json", PDT_PROTOCOL_HTTP_JSON },
    { NULL, 0 }
};

static const pdti_name_value sampler_names[] = {
    { "always_on", PDT_SAMPLER_ALWAYS_ON },
    { "always_off", PDT_SAMPLER_ALWAYS_OFF },
    { "traceidratio", PDT_SAMPLER_TRACEIDRATIO },
    { "parentbased_always_on", PDT_SAMPLER_PARENTBASED_ALWAYS_ON },
    { "parentbased_always_off", PDT_SAMPLER_PARENTBASED_ALWAYS_OFF },
    { "parentbased_traceidratio", PDT_SAMPLER_PARENTBASED_TRACEIDRATIO },
    { NULL, 0 }
};

/* ---------------------------------------------------------------------
 * Resolving each setting.
 */

static int oom(void)
{
    return pdti_err(PDT_ENOMEM, "out of memory while resolving the tracer "
                                "configuration");
}

/* A copied option string, which must not be empty when set. */
static int opt_string(const char *value, const char *field, char **out)
{
    *out = NULL;
    if (value == NULL)
        return PDT_OK;
    if (value[0] == '\0')
        return pdti_err(PDT_EINVAL, "pdt_tracer_options.%s is empty; use "
                                    "NULL for the default", field);
    *out = pdti_text_dup(value);
    return *out != NULL ? PDT_OK : oom();
}

/*
 * A string setting: the option if set, else the signal-specific variable,
 * else the generic one, else NULL.
 */
static int resolve_string(const resolver *r, const char *opt,
                          const char *field, const char *env_traces,
                          const char *env_generic, char **out)
{
    int st;

    if (opt != NULL)
        return opt_string(opt, field, out);
    st = pdti_env_string(&r->env, env_traces, out);
    if (st == PDT_OK && *out == NULL)
        st = pdti_env_string(&r->env, env_generic, out);
    return st == PDT_OK ? PDT_OK : oom();
}

typedef struct int_setting {
    const char *field;       /* option name, for error messages */
    const char *env_traces;  /* signal-specific variable, or NULL */
    const char *env_generic; /* variable, or NULL */
    int64_t min, max, def;
} int_setting;

/* Where a resolved value came from. */
enum { FROM_DEFAULT = 0, FROM_ENV = 1, FROM_OPTION = 2 };

/*
 * opt 0 means unset; a set option outside [min, max] is an error. *from,
 * if not NULL, receives FROM_DEFAULT, FROM_ENV or FROM_OPTION.
 */
static int resolve_int(const resolver *r, const int_setting *s, int64_t opt,
                       int64_t *out, int *from)
{
    int src = FROM_DEFAULT;

    if (opt != 0) {
        if (opt < s->min || opt > s->max)
            return pdti_err(PDT_EINVAL, "pdt_tracer_options.%s must be from "
                            "%lld to %lld (got %lld)", s->field,
                            (long long)s->min, (long long)s->max,
                            (long long)opt);
        *out = opt;
        src = FROM_OPTION;
    } else if (pdti_env_int(&r->env, s->env_traces, s->min, s->max, out) ||
               pdti_env_int(&r->env, s->env_generic, s->min, s->max, out)) {
        src = FROM_ENV;
    } else {
        *out = s->def;
    }
    if (from != NULL)
        *from = src;
    return PDT_OK;
}

/* An enum option: 0 means unset, first..last valid, anything else bad. */
static int resolve_enum(const resolver *r, int opt, const char *field,
                        int last, const char *env_traces,
                        const char *env_generic, const pdti_name_value *table,
                        int def, int *out)
{
    if (opt != 0) {
        if (opt < 1 || opt > last)
            return pdti_err(PDT_EINVAL, "pdt_tracer_options.%s has an "
                            "unknown value %d", field, opt);
        *out = opt;
        return PDT_OK;
    }
    if (pdti_env_enum(&r->env, env_traces, table, out) ||
        pdti_env_enum(&r->env, env_generic, table, out))
        return PDT_OK;
    *out = def;
    return PDT_OK;
}

/*
 * The compression level, once the codec is known: options.compression_level
 * if set (out of the codec's range is an error), else
 * PDTRACE_COMPRESSION_LEVEL (out of range or malformed: a warning and the
 * default), else the codec's default. 0 anywhere means the default. Without
 * compression the level is 0 and neither source is looked at.
 */
static int resolve_compression_level(const resolver *r, pdti_config *cfg)
{
    const char *name = cfg->compression == PDT_COMPRESSION_GZIP ? "gzip"
                                                                : "zstd";
    int opt = r->has_comp_level ? r->o->compression_level : 0;
    int64_t min, max, def, v;
    const char *env;

    cfg->compression_level = 0;
    if (cfg->compression == PDT_COMPRESSION_GZIP) {
        min = PDTI_GZIP_LEVEL_MIN;
        max = PDTI_GZIP_LEVEL_MAX;
        def = PDTI_GZIP_LEVEL_DEFAULT;
    } else if (cfg->compression == PDT_COMPRESSION_ZSTD) {
        min = PDTI_ZSTD_LEVEL_MIN;
        max = PDTI_ZSTD_LEVEL_MAX;
        def = PDTI_ZSTD_LEVEL_DEFAULT;
    } else {
        return PDT_OK;
    }
    if (opt != 0) {
        if (opt < min || opt > max)
            return pdti_err(PDT_EINVAL, "pdt_tracer_options.compression_level "
                            "must be from %lld to %lld for %s, or 0 for the "
                            "default (got %d)", (long long)min,
                            (long long)max, name, opt);
        cfg->compression_level = opt;
        return PDT_OK;
    }
    cfg->compression_level = (int)def;
    env = pdti_env_get(&r->env, "PDTRACE_COMPRESSION_LEVEL");
    if (env == NULL)
        return PDT_OK;
    if (pdti_parse_int(env, min, max, &v) == PDT_OK) {
        if (v != 0)
            cfg->compression_level = (int)v;
    } else if (pdti_parse_int(env, 0, 0, &v) != PDT_OK) {
        pdti_log(r->env.lg, PDT_LOG_WARN, "ignoring PDTRACE_COMPRESSION_LEVEL="
                 "\"%.64s\": expected a whole number from %lld to %lld for "
                 "%s (0 for the default); using %lld", env, (long long)min,
                 (long long)max, name, (long long)def);
    }
    return PDT_OK;
}

static int resolve_disabled(const resolver *r, pdti_config *cfg)
{
    const pdt_tracer_options *o = r->o;
    const char *v;
    int b;

    if (o != NULL && o->disabled != 0) {
        if (o->disabled != 1 && o->disabled != -1)
            return pdti_err(PDT_EINVAL, "pdt_tracer_options.disabled must "
                            "be 1, -1 or 0 (got %d)", o->disabled);
        cfg->disabled = o->disabled == 1;
        return PDT_OK;
    }
    cfg->disabled = 0;
    v = pdti_env_get(&r->env, "OTEL_SDK_DISABLED");
    if (v == NULL)
        return PDT_OK;
    if (pdti_parse_bool(v, &b) == PDT_OK)
        cfg->disabled = b;
    else
        pdti_log(r->env.lg, PDT_LOG_WARN, "ignoring OTEL_SDK_DISABLED="
                 "\"%.64s\": expected true or false", v);
    return PDT_OK;
}

/*
 * OTEL_TRACES_EXPORTER may name a list; only one exporter is supported, so
 * the first entry is used and the rest reported.
 */
static int resolve_exporter(const resolver *r, pdti_config *cfg)
{
    static const char name[] = "OTEL_TRACES_EXPORTER";
    int opt = r->o != NULL ? r->o->exporter : 0;
    const char *v, *s, *comma;
    size_t len;

    if (opt != 0)
        return resolve_enum(r, opt, "exporter", PDT_EXPORTER_NONE, NULL,
                            NULL, exporter_names, PDT_EXPORTER_OTLP,
                            &cfg->exporter);
    cfg->exporter = PDT_EXPORTER_OTLP;
    v = pdti_env_get(&r->env, name);
    if (v == NULL)
        return PDT_OK;
    s = v;
    comma = strchr(v, ',');
    len = comma != NULL ? (size_t)(comma - v) : strlen(v);
    pdti_text_trim(&s, &len);
    if (!pdti_text_lookup(exporter_names, s, len, &cfg->exporter)) {
        pdti_log(r->env.lg, PDT_LOG_WARN, "ignoring %s=\"%.64s\": unknown "
                 "exporter; using otlp", name, v);
        return PDT_OK;
    }
    if (comma != NULL)
        pdti_log(r->env.lg, PDT_LOG_WARN, "%s=\"%.64s\": only one exporter is "
                 "supported; using the first", name, v);
    return PDT_OK;
}

/*
 * The protocol: the option, else the signal's variable, else the generic
 * one, else http/protobuf. Unlike the other variables, an unknown value is
 * an error and not a warning: exporting over another transport than the
 * one asked for would reach no collector.
 */
static int resolve_protocol(const resolver *r, pdti_config *cfg)
{
    static const char *const vars[] = {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
    };
    int opt = r->has_protocol ? r->o->protocol : 0;
    size_t i;

    if (opt != 0) {
        if (opt < PDT_PROTOCOL_HTTP_PROTOBUF || opt > PDT_PROTOCOL_HTTP_JSON)
            return pdti_err(PDT_EINVAL, "pdt_tracer_options.protocol has an "
                            "unknown value %d", opt);
        cfg->protocol = opt;
        return PDT_OK;
    }
    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = pdti_env_get(&r->env, vars[i]), *s = v;
        size_t len;

        if (v == NULL)
            continue;
        len = strlen(v);
        pdti_text_trim(&s, &len);
        if (!pdti_text_lookup(protocol_names, s, len, &cfg->protocol))
            return pdti_err(PDT_EINVAL, "%s=\"%.64s\" is not a supported "
                            "protocol (use http/protobuf, grpc or http/json)",
                            vars[i], v);
        return PDT_OK;
    }
    cfg->protocol = PDT_PROTOCOL_HTTP_PROTOBUF;
    return PDT_OK;
}

static int resolve_endpoint(const resolver *r, pdti_config *cfg)
{
    const char *opt = r->o != NULL ? r->o->endpoint : NULL;
    int grpc = cfg->protocol == PDT_PROTOCOL_GRPC;
    int st;

    if (opt != NULL) {
        if (pdti_url_check(opt, strlen(opt)) == 0)
            return pdti_err(PDT_EPARSE, "pdt_tracer_options.endpoint is not "
                            "an absolute http:// or https:// URL");
        cfg->endpoint = pdti_text_dup(opt);
        return cfg->endpoint != NULL ? PDT_OK : oom();
    }
    st = pdti_env_endpoint(&r->env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", 0,
                           &cfg->endpoint);
    if (st == PDT_OK && cfg->endpoint == NULL)
        st = pdti_env_endpoint(&r->env, "OTEL_EXPORTER_OTLP_ENDPOINT",
                               !grpc, &cfg->endpoint);
    if (st == PDT_OK && cfg->endpoint == NULL) {
        cfg->endpoint = pdti_text_dup(grpc ? PDTI_DEFAULT_GRPC_ENDPOINT
                                           : PDTI_DEFAULT_ENDPOINT);
        if (cfg->endpoint == NULL)
            st = PDT_ENOMEM;
    }
    return st == PDT_OK ? PDT_OK : oom();
}

static int resolve_headers(const resolver *r, pdti_config *cfg)
{
    const char *opt = r->o != NULL ? r->o->headers : NULL;
    int st, found;

    if (opt != NULL) {
        st = pdti_headers_parse(opt, &cfg->headers);
        if (st == PDT_EPARSE)
            return pdti_err(PDT_EPARSE, "pdt_tracer_options.headers is "
                            "malformed: expected k=v,k=v with percent-encoded "
                            "values, token names and no control characters");
        return st == PDT_OK ? PDT_OK : oom();
    }
    found = pdti_env_headers(&r->env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                             &cfg->headers);
    if (found == 0)
        found = pdti_env_headers(&r->env, "OTEL_EXPORTER_OTLP_HEADERS",
                                 &cfg->headers);
    return found >= 0 ? PDT_OK : oom();
}

static int resolve_sampler(const resolver *r, pdti_config *cfg)
{
    const pdt_tracer_options *o = r->o;
    int st;

    st = resolve_enum(r, o != NULL ? o->sampler : 0, "sampler",
                      PDT_SAMPLER_PARENTBASED_TRACEIDRATIO, NULL,
                      "OTEL_TRACES_SAMPLER", sampler_names,
                      PDT_SAMPLER_PARENTBASED_ALWAYS_ON, &cfg->sampler);
    if (st != PDT_OK)
        return st;
    cfg->sampler_ratio = 1.0;
    if (o != NULL && o->sampler_ratio_set) {
        if (!(o->sampler_ratio >= 0.0 && o->sampler_ratio <= 1.0))
            return pdti_err(PDT_EINVAL, "pdt_tracer_options.sampler_ratio "
                            "must be from 0 to 1 (got %g)", o->sampler_ratio);
        cfg->sampler_ratio = o->sampler_ratio;
        return PDT_OK;
    }
    /* The argument means something only to the ratio samplers. */
    if (cfg->sampler == PDT_SAMPLER_TRACEIDRATIO ||
        cfg->sampler == PDT_SAMPLER_PARENTBASED_TRACEIDRATIO)
        pdti_env_double(&r->env, "OTEL_TRACES_SAMPLER_ARG", 0.0, 1.0,
                        &cfg->sampler_ratio);
    return PDT_OK;
}

static int resolve_batching(const resolver *r, pdti_config *cfg)
{
    static const int_setting delay = { "schedule_delay_ms", NULL,
        "OTEL_BSP_SCHEDULE_DELAY", PDTI_MS_MIN, PDTI_MS_MAX, 5000 };
    static const int_setting export_timeout = { "export_timeout_ms", NULL,
        "OTEL_BSP_EXPORT_TIMEOUT", PDTI_MS_MIN, PDTI_MS_MAX, 30000 };
    static const int_setting queue = { "max_queue_size", NULL,
        "OTEL_BSP_MAX_QUEUE_SIZE", 1, PDTI_QUEUE_MAX, 2048 };
    static const int_setting batch = { "max_export_batch_size", NULL,
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, PDTI_QUEUE_MAX, 512 };
    const pdt_tracer_options *o = r->o;
    int st, queue_from = FROM_DEFAULT, batch_from = FROM_DEFAULT;

    st = resolve_int(r, &delay, o != NULL ? o->schedule_delay_ms : 0,
                     &cfg->schedule_delay_ms, NULL);
    if (st == PDT_OK)
        st = resolve_int(r, &export_timeout,
                         o != NULL ? o->export_timeout_ms : 0,
                         &cfg->export_timeout_ms, NULL);
    if (st == PDT_OK)
        st = resolve_int(r, &queue, o != NULL ? o->max_queue_size : 0,
                         &cfg->max_queue_size, &queue_from);
    if (st == PDT_OK)
        st = resolve_int(r, &batch, o != NULL ? o->max_export_batch_size : 0,
                         &cfg->max_export_batch_size, &batch_from);
    if (st != PDT_OK)
        return st;
    if (cfg->max_export_batch_size <= cfg->max_queue_size)
        return PDT_OK;
    if (queue_from == FROM_OPTION && batch_from == FROM_OPTION)
        return pdti_err(PDT_EINVAL, "pdt_tracer_options.max_export_batch_size "
                        "(%lld) exceeds max_queue_size (%lld)",
                        (long long)cfg->max_export_batch_size,
                        (long long)cfg->max_queue_size);
    /* The default batch size follows a small queue silently. */
    if (batch_from != FROM_DEFAULT)
        pdti_log(r->env.lg, PDT_LOG_WARN, "max export batch size %lld exceeds "
                 "the max queue size %lld; using %lld",
                 (long long)cfg->max_export_batch_size,
                 (long long)cfg->max_queue_size,
                 (long long)cfg->max_queue_size);
    cfg->max_export_batch_size = cfg->max_queue_size;
    return PDT_OK;
}

static int resolve_limits(const resolver *r, pdti_config *cfg)
{
    static const int_setting queue_bytes = { "max_queue_bytes", NULL,
        "PDTRACE_MAX_QUEUE_BYTES", PDTI_QUEUE_BYTES_MIN, INT64_MAX,
        PDTI_QUEUE_BYTES_DEFAULT };
    static const int_setting count = { "attribute_count_limit", NULL,
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", 0, PDTI_COUNT_LIMIT_MAX, 128 };
    static const int_setting length = { "attribute_value_length_limit", NULL,
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", 0, INT64_MAX, -1 };
    const pdt_tracer_options *o = r->o;
    int64_t len_opt = 0;
    int st;

    st = resolve_int(r, &count, o != NULL ? o->attribute_count_limit : 0,
                     &cfg->attr_count_limit, NULL);
    if (st != PDT_OK)
        return st;
    st = resolve_int(r, &queue_bytes,
                     r->has_queue_bytes ? o->max_queue_bytes : 0,
                     &cfg->max_queue_bytes, NULL);
    if (st != PDT_OK)
        return st;
    /* For the length limit, a negative option also means "unset". */
    if (o != NULL && o->attribute_value_length_limit > 0)
        len_opt = o->attribute_value_length_limit;
    st = resolve_int(r, &length, len_opt, &cfg->attr_value_len_limit, NULL);
    /* One value may not fill the queue's memory. */
    cfg->value_cap = cfg->max_queue_bytes / 8;
    if (cfg->value_cap > PDTI_VALUE_CAP_DEFAULT)
        cfg->value_cap = PDTI_VALUE_CAP_DEFAULT;
    if (st == PDT_OK && cfg->attr_value_len_limit < 0)
        cfg->attr_value_len_limit = cfg->value_cap;
    return st;
}

static int resolve_tail(const resolver *r, pdti_config *cfg)
{
    const pdt_tracer_options *o = r->o;
    double t = o != NULL ? o->tail_ttft_threshold_ms : 0.0;
    int keep = o != NULL ? o->tail_keep_errors : 0;

    if (!(t >= 0.0 && t <= PDTI_TAIL_TTFT_MAX_MS))
        return pdti_err(PDT_EINVAL, "pdt_tracer_options.tail_ttft_threshold_ms"
                        " must be from 0 to %.0f (got %g)",
                        PDTI_TAIL_TTFT_MAX_MS, t);
    cfg->tail_ttft_threshold_ms = 0.0;
    if (t > 0.0)
        cfg->tail_ttft_threshold_ms = t;
    else
        pdti_env_double(&r->env, "PDTRACE_TAIL_TTFT_MS", 0.0,
                        PDTI_TAIL_TTFT_MAX_MS, &cfg->tail_ttft_threshold_ms);
    if (keep != 0 && keep != 1 && keep != -1)
        return pdti_err(PDT_EINVAL, "pdt_tracer_options.tail_keep_errors "
                        "must be 1, -1 or 0 (got %d)", keep);
    cfg->tail_keep_errors = keep != -1;
    return PDT_OK;
}

int pdti_config_tenants(const char *list, char **out, const char **why)
{
    const char *p = list, *names[PDTI_TENANTS_MAX];
    size_t lens[PDTI_TENANTS_MAX], n = 0, i, total = 0;
    char *w;

    *out = NULL;
    *why = NULL;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ','), *a = p, *b;
        size_t len, j;
        int dup = 0;

        if (end == NULL)
            end = p + strlen(p);
        b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        len = (size_t)(b - a);
        p = *end == ',' ? end + 1 : end;
        if (len == 0)
            continue;
        if (len > PDTI_TENANT_NAME_MAX) {
            *why = "a tenant name is longer than 63 bytes";
            return PDT_EINVAL;
        }
        if (len == 5 && memcmp(a, "other", 5) == 0) {
            *why = "\"other\" is the label of the tenants not listed";
            return PDT_EINVAL;
        }
        for (j = 0; j < len; j++) {
            if ((unsigned char)a[j] < 0x20 || a[j] == 0x7f) {
                *why = "a tenant name has a control byte";
                return PDT_EINVAL;
            }
        }
        for (j = 0; j < n && !dup; j++)
            dup = lens[j] == len && memcmp(names[j], a, len) == 0;
        if (dup)
            continue;
        if (n == PDTI_TENANTS_MAX) {
            *why = "more than 32 tenants";
            return PDT_EINVAL;
        }
        names[n] = a;
        lens[n++] = len;
        total += len + 1;
    }
    if (n == 0)
        return PDT_OK;
    if ((*out = w = malloc(total)) == NULL)
        return PDT_ENOMEM;
    for (i = 0; i < n; i++) {
        memcpy(w, names[i], lens[i]);
        w += lens[i];
        *w++ = i + 1 < n ? ',' : '\0';
    }
    return PDT_OK;
}

/* options.metrics_tenants, else PDTRACE_METRICS_TENANTS (a bad variable
 * is reported and ignored). */
static int resolve_tenants(const resolver *r, pdti_config *cfg)
{
    const char *why = NULL;
    char *env = NULL;
    int st;

    if (r->has_tenants && r->o->metrics_tenants != NULL) {
        st = pdti_config_tenants(r->o->metrics_tenants, &cfg->metrics_tenants,
                                 &why);
        if (st == PDT_EINVAL)
            return pdti_err(PDT_EINVAL, "pdt_tracer_options.metrics_tenants: "
                                        "%s", why);
        return st == PDT_OK ? PDT_OK : oom();
    }
    if (pdti_env_string(&r->env, "PDTRACE_METRICS_TENANTS", &env) != PDT_OK)
        return oom();
    if (env == NULL)
        return PDT_OK;
    st = pdti_config_tenants(env, &cfg->metrics_tenants, &why);
    free(env);
    if (st == PDT_EINVAL) {
        pdti_log(r->env.lg, PDT_LOG_WARN, "ignoring PDTRACE_METRICS_TENANTS: "
                 "%s", why);
        return PDT_OK;
    }
    return st == PDT_OK ? PDT_OK : oom();
}

static int resolve_console_and_spool(const resolver *r, pdti_config *cfg)
{
    static const int_setting spool_max = { "spool_max_bytes", NULL,
        "PDTRACE_SPOOL_MAX_BYTES", 1, INT64_MAX, PDTI_SPOOL_DEFAULT_BYTES };
    const pdt_tracer_options *o = r->o;
    int st;

    st = resolve_string(r, o != NULL ? o->console_path : NULL, "console_path",
                        NULL, "PDTRACE_CONSOLE_PATH", &cfg->console_path);
    if (st != PDT_OK)
        return st;
    if (cfg->console_path != NULL && strcmp(cfg->console_path, "-") == 0) {
        free(cfg->console_path);
        cfg->console_path = NULL;
    }
    st = resolve_string(r, r->has_spool_dir ? o->spool_dir : NULL,
                        "spool_dir", NULL, "PDTRACE_SPOOL_DIR",
                        &cfg->spool_dir);
    if (st != PDT_OK)
        return st;
    return resolve_int(r, &spool_max,
                       r->has_spool_max ? o->spool_max_bytes : 0,
                       &cfg->spool_max_bytes, NULL);
}

/* ---------------------------------------------------------------------
 * Resource.
 */

static const char *non_empty(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* Sets key only if the list does not have it yet. */
static int set_default(pdti_kvlist *l, const char *key, const char *value)
{
    if (pdti_kvlist_get(l, key) != NULL)
        return PDT_OK;
    return pdti_kvlist_set(l, key, value);
}

/*
 * service.name: options->service_name, else service.name in
 * options->resource_attributes, else OTEL_SERVICE_NAME, else service.name
 * in OTEL_RESOURCE_ATTRIBUTES, else the default. The resource list keeps
 * the order in which keys first appeared (environment first), then the
 * attributes the library adds.
 */
static int resolve_resource(const resolver *r, pdti_config *cfg)
{
    const pdt_tracer_options *o = r->o;
    pdti_kvlist env_res = { NULL, 0 }, opt_res = { NULL, 0 };
    char *env_name = NULL;
    const char *name, *v;
    char pid[32];
    char host[256];
    size_t i;
    int st;

    if (o != NULL && o->service_name != NULL && o->service_name[0] == '\0')
        return pdti_err(PDT_EINVAL, "pdt_tracer_options.service_name is "
                        "empty; use NULL for the default");
    if (o != NULL && o->resource_attributes != NULL) {
        st = pdti_kvlist_parse(o->resource_attributes,
                               strlen(o->resource_attributes), &opt_res);
        if (st == PDT_EPARSE)
            return pdti_err(PDT_EPARSE, "pdt_tracer_options."
                            "resource_attributes is malformed: expected "
                            "k=v,k=v with percent-encoded values");
        if (st != PDT_OK)
            return oom();
    }
    v = pdti_env_get(&r->env, "OTEL_RESOURCE_ATTRIBUTES");
    if (v != NULL) {
        st = pdti_kvlist_parse(v, strlen(v), &env_res);
        if (st == PDT_EPARSE)
            pdti_log(r->env.lg, PDT_LOG_WARN, "ignoring "
                     "OTEL_RESOURCE_ATTRIBUTES: malformed k=v list or "
                     "percent escape; the whole variable is discarded");
        else if (st != PDT_OK)
            goto nomem;
    }
    if (pdti_env_string(&r->env, "OTEL_SERVICE_NAME", &env_name) != PDT_OK)
        goto nomem;

    name = o != NULL ? o->service_name : NULL;
    if (name == NULL)
        name = non_empty(pdti_kvlist_get(&opt_res, "service.name"));
    if (name == NULL)
        name = env_name;
    if (name == NULL)
        name = non_empty(pdti_kvlist_get(&env_res, "service.name"));
    if (name == NULL)
        name = PDTI_DEFAULT_SERVICE_NAME;
    cfg->service_name = pdti_text_dup(name);
    if (cfg->service_name == NULL)
        goto nomem;

    /* Options over environment; the merged list becomes the resource. */
    cfg->resource = env_res;
    env_res.items = NULL;
    env_res.count = 0;
    for (i = 0; i < opt_res.count; i++) {
        if (pdti_kvlist_put(&cfg->resource, opt_res.items[i].key,
                       opt_res.items[i].value) != PDT_OK) {
            opt_res.items[i].key = NULL;
            opt_res.items[i].value = NULL;
            goto nomem_after;
        }
        opt_res.items[i].key = NULL;
        opt_res.items[i].value = NULL;
    }

    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    host[0] = '\0';
    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    host[sizeof(host) - 1] = '\0';

    if (pdti_kvlist_set(&cfg->resource, "service.name", cfg->service_name) ||
        set_default(&cfg->resource, "telemetry.sdk.name", "libpdtrace") ||
        set_default(&cfg->resource, "telemetry.sdk.language", "c") ||
        set_default(&cfg->resource, "telemetry.sdk.version",
                    PDT_VERSION_STRING) ||
        set_default(&cfg->resource, "process.pid", pid) ||
        (host[0] != '\0' &&
         set_default(&cfg->resource, "host.name", host)))
        goto nomem_after;
    for (i = 0; i < opt_res.count; i++) {
        free(opt_res.items[i].key);
        free(opt_res.items[i].value);
    }
    free(opt_res.items);
    free(env_name);
    return PDT_OK;

nomem_after:
    /* Entries already moved into the resource were nulled above. */
    for (i = 0; i < opt_res.count; i++) {
        free(opt_res.items[i].key);
        free(opt_res.items[i].value);
    }
    free(opt_res.items);
    free(env_name);
    return oom();

nomem:
    pdti_kvlist_free(&opt_res);
    pdti_kvlist_free(&env_res);
    free(env_name);
    return oom();
}

/* ---------------------------------------------------------------------
 * Entry points.
 */

int pdti_config_resolve(pdti_config *cfg, const pdt_tracer_options *opts,
                        pdti_logger *lg)
{
    static const int_setting timeout = { "timeout_ms",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT",
        PDTI_MS_MIN, PDTI_MS_MAX, 10000 };
    /* Export requests in flight at once; see docs/configuration.md for
     * why 4. */
    static const int_setting max_concurrent = { "max_concurrent_exports",
        NULL, "PDTRACE_EXPORT_MAX_CONCURRENT", 1, PDTI_MAX_CONCURRENT_MAX,
        PDTI_MAX_CONCURRENT_DEFAULT };
    resolver r;
    int st;

    if (cfg == NULL)
        return pdti_err(PDT_EINVAL, "pdti_config_resolve: cfg is NULL");
    memset(cfg, 0, sizeof(*cfg));
    if (opts != NULL &&
        opts->size < offsetof(pdt_tracer_options, spool_dir))
        return pdti_err(PDT_EINVAL, "pdt_tracer_options.size is %lu; at "
                        "least %lu expected (initialise the options with "
                        "PDT_TRACER_OPTIONS_INIT)",
                        (unsigned long)opts->size,
                        (unsigned long)offsetof(pdt_tracer_options,
                                                spool_dir));
    r.o = opts;
    r.env.use = opts == NULL || !opts->ignore_environment;
    r.has_spool_dir = opts != NULL &&
        opts->size >= offsetof(pdt_tracer_options, spool_dir) +
                      sizeof(opts->spool_dir);
    r.has_spool_max = opts != NULL &&
        opts->size >= offsetof(pdt_tracer_options, spool_max_bytes) +
                      sizeof(opts->spool_max_bytes);
    r.has_max_concurrent = opts != NULL &&
        opts->size >= offsetof(pdt_tracer_options, max_concurrent_exports) +
                      sizeof(opts->max_concurrent_exports);
    r.has_comp_level = opts != NULL &&
        opts->size >= offsetof(pdt_tracer_options, compression_level) +
                      sizeof(opts->compression_level);
    r.has_protocol = opts != NULL &&
        opts->size >= offsetof(pdt_tracer_options, protocol) +
                      sizeof(opts->protocol);
    r.has_tenants = opts != NULL &&
        opts->size >= offsetof(pdt_tracer_options, metrics_tenants) +
                      sizeof(opts->metrics_tenants);
    r.has_queue_bytes = opts != NULL &&
        opts->size >= offsetof(pdt_tracer_options, max_queue_bytes) +
                      sizeof(opts->max_queue_bytes);
    r.env.lg = lg;

    st = resolve_disabled(&r, cfg);
    if (st == PDT_OK)
        st = resolve_exporter(&r, cfg);
    if (st == PDT_OK)
        st = resolve_protocol(&r, cfg);
    if (st == PDT_OK)
        st = resolve_endpoint(&r, cfg);
    if (st == PDT_OK)
        st = resolve_headers(&r, cfg);
    if (st == PDT_OK)
        st = resolve_enum(&r, opts != NULL ? opts->compression : 0,
                          "compression", PDT_COMPRESSION_ZSTD,
                          "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                          "OTEL_EXPORTER_OTLP_COMPRESSION", compression_names,
                          PDT_COMPRESSION_NONE, &cfg->compression);
    if (st == PDT_OK)
        st = resolve_compression_level(&r, cfg);
    if (st == PDT_OK)
        st = resolve_int(&r, &timeout, opts != NULL ? opts->timeout_ms : 0,
                         &cfg->timeout_ms, NULL);
    if (st == PDT_OK)
        st = resolve_string(&r, opts != NULL ? opts->ca_file : NULL,
                            "ca_file",
                            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                            "OTEL_EXPORTER_OTLP_CERTIFICATE", &cfg->ca_file);
    if (st == PDT_OK)
        st = resolve_string(&r, opts != NULL ? opts->client_cert : NULL,
                            "client_cert",
                            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                            &cfg->client_cert);
    if (st == PDT_OK)
        st = resolve_string(&r, opts != NULL ? opts->client_key : NULL,
                            "client_key",
                            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                            &cfg->client_key);
    if (st == PDT_OK)
        st = resolve_batching(&r, cfg);
    if (st == PDT_OK)
        st = resolve_int(&r, &max_concurrent,
                         r.has_max_concurrent ? opts->max_concurrent_exports
                                              : 0,
                         &cfg->max_concurrent, NULL);
    if (st == PDT_OK)
        st = resolve_limits(&r, cfg);
    if (st == PDT_OK)
        st = resolve_sampler(&r, cfg);
    if (st == PDT_OK)
        st = resolve_tail(&r, cfg);
    if (st == PDT_OK)
        st = resolve_console_and_spool(&r, cfg);
    if (st == PDT_OK)
        st = resolve_resource(&r, cfg);
    if (st == PDT_OK)
        st = resolve_tenants(&r, cfg);
    if (st != PDT_OK)
        pdti_config_free(cfg);
    return st;
}

void pdti_config_free(pdti_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->endpoint);
    pdti_kvlist_free(&cfg->headers);
    free(cfg->console_path);
    free(cfg->ca_file);
    free(cfg->client_cert);
    free(cfg->client_key);
    free(cfg->service_name);
    pdti_kvlist_free(&cfg->resource);
    free(cfg->spool_dir);
    free(cfg->metrics_tenants);
    memset(cfg, 0, sizeof(*cfg));
}
