/*
 * Reading the environment: each OTEL_* or PDTRACE_* variable through one
 * typed reader. A bad value is the operator's mistake discovered at run
 * time: it is reported once at WARN through the logger and ignored, and
 * the last error is left alone. URLs and header values never appear in a
 * message (they may carry credentials).
 *
 * Memory: malloc and free only; every function frees what it allocated
 * before returning an error.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/common.h"
#include "config_check.h"
#include "config_env.h"
#include "config_kvlist.h"
#include "config_text.h"
#include "log.h"

const char *pdti_env_get(const pdti_env *e, const char *name)
{
    const char *v, *p;

    if (!e->use || name == NULL)
        return NULL;
    v = getenv(name);
    if (v == NULL)
        return NULL;
    for (p = v; *p != '\0'; p++) {
        if (!pdti_text_is_space(*p))
            return v;
    }
    return NULL;
}

int pdti_env_enum(const pdti_env *e, const char *name,
                  const pdti_name_value *table, int *out)
{
    const char *v = pdti_env_get(e, name), *s = v;
    size_t len;

    if (v == NULL)
        return 0;
    len = strlen(v);
    pdti_text_trim(&s, &len);
    if (pdti_text_lookup(table, s, len, out))
        return 1;
    pdti_log(e->lg, PDT_LOG_WARN, "ignoring %s=\"%.64s\": unknown value",
             name, v);
    return 0;
}

int pdti_env_int(const pdti_env *e, const char *name, int64_t min,
                 int64_t max, int64_t *out)
{
    const char *v = pdti_env_get(e, name);

    if (v == NULL)
        return 0;
    if (pdti_parse_int(v, min, max, out) == PDT_OK)
        return 1;
    pdti_log(e->lg, PDT_LOG_WARN, "ignoring %s=\"%.64s\": expected a whole "
             "number from %lld to %lld", name, v, (long long)min,
             (long long)max);
    return 0;
}

int pdti_env_double(const pdti_env *e, const char *name, double min,
                    double max, double *out)
{
    const char *v = pdti_env_get(e, name);

    if (v == NULL)
        return 0;
    if (pdti_parse_double(v, min, max, out) == PDT_OK)
        return 1;
    pdti_log(e->lg, PDT_LOG_WARN, "ignoring %s=\"%.64s\": expected a number "
             "from %.10g to %.10g", name, v, min, max);
    return 0;
}

int pdti_env_string(const pdti_env *e, const char *name, char **out)
{
    const char *v = pdti_env_get(e, name);
    size_t len;

    *out = NULL;
    if (v == NULL)
        return PDT_OK;
    len = strlen(v);
    pdti_text_trim(&v, &len);
    *out = pdti_text_dup_n(v, len);
    return *out != NULL ? PDT_OK : PDT_ENOMEM;
}

/* base + "/v1/traces", without doubling a trailing slash. */
static char *join_traces_path(const char *base, size_t len)
{
    static const char path[] = "/v1/traces";
    char *url;

    while (len > 0 && base[len - 1] == '/')
        len--;
    if (len > SIZE_MAX - sizeof(path))
        return NULL;
    url = malloc(len + sizeof(path));
    if (url == NULL)
        return NULL;
    memcpy(url, base, len);
    memcpy(url + len, path, sizeof(path));
    return url;
}

int pdti_env_endpoint(const pdti_env *e, const char *name, int join,
                      char **out)
{
    const char *v = pdti_env_get(e, name);
    size_t len;

    *out = NULL;
    if (v == NULL)
        return PDT_OK;
    len = strlen(v);
    pdti_text_trim(&v, &len);
    if (pdti_url_check(v, len) == 0) {
        pdti_log(e->lg, PDT_LOG_WARN, "ignoring %s: not an absolute http:// "
                 "or https:// URL (value not shown)", name);
        return PDT_OK;
    }
    *out = join ? join_traces_path(v, len) : pdti_text_dup_n(v, len);
    return *out != NULL ? PDT_OK : PDT_ENOMEM;
}

int pdti_env_headers(const pdti_env *e, const char *name, pdti_kvlist *out)
{
    const char *v = pdti_env_get(e, name);
    int st;

    if (v == NULL)
        return 0;
    st = pdti_headers_parse(v, out);
    if (st == PDT_OK)
        return 1;
    if (st == PDT_ENOMEM)
        return -1;
    pdti_log(e->lg, PDT_LOG_WARN, "ignoring %s: malformed header list "
             "(value not shown)", name);
    return 0;
}
