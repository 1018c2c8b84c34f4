/*
 * Internal: reading the OTEL_* and PDTRACE_* environment variables. A
 * variable that is set but malformed is reported once at WARN through the
 * logger and ignored; nothing here touches the last error. Endpoint URLs
 * and header values are never logged: they may carry credentials.
 */
#ifndef PDTI_CONFIG_ENV_H
#define PDTI_CONFIG_ENV_H

#include <stdint.h>

#include "config_kvlist.h"
#include "config_text.h"
#include "log.h"

typedef struct pdti_env {
    int use;         /* 0: every variable reads as unset */
    pdti_logger *lg; /* for the warnings; may be NULL */
} pdti_env;

/* The variable's value, or NULL when unset, empty or only whitespace. */
const char *pdti_env_get(const pdti_env *e, const char *name);

/*
 * One variable each; name may be NULL (unset). The enum, int and double
 * readers return 1 and *out if the variable is set and valid, else 0
 * (*out untouched). The enum reader looks the trimmed value up in table
 * (ignoring case).
 */
int pdti_env_enum(const pdti_env *e, const char *name,
                  const pdti_name_value *table, int *out);
int pdti_env_int(const pdti_env *e, const char *name, int64_t min,
                 int64_t max, int64_t *out);
int pdti_env_double(const pdti_env *e, const char *name, double min,
                    double max, double *out);

/*
 * A string variable, trimmed and copied into *out. Returns PDT_OK (with
 * *out NULL when unset) or PDT_ENOMEM.
 */
int pdti_env_string(const pdti_env *e, const char *name, char **out);

/*
 * An endpoint variable: an absolute http:// or https:// URL, with
 * "/v1/traces" appended when join is set. Returns PDT_OK with *out set
 * (valid), PDT_OK with *out NULL (unset or ignored), or PDT_ENOMEM.
 */
int pdti_env_endpoint(const pdti_env *e, const char *name, int join,
                      char **out);

/* A header list variable: 1 if set and valid (*out filled), 0, or -1
 * (out of memory). */
int pdti_env_headers(const pdti_env *e, const char *name, pdti_kvlist *out);

#endif
