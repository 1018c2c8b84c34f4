/*
 * Internal: validation of the configured endpoint URL and HTTP headers.
 * Neither function logs or keeps the text it checks: URLs and header
 * values may carry credentials.
 */
#ifndef PDTI_CONFIG_CHECK_H
#define PDTI_CONFIG_CHECK_H

#include <stddef.h>

#include "config_kvlist.h"

/*
 * An absolute http or https URL with a non-empty authority and no spaces
 * or control characters. Returns the length of the scheme and "://", or 0.
 */
size_t pdti_url_check(const char *s, size_t len);

/*
 * pdti_kvlist_parse() of the NUL-terminated text plus header checks:
 * names must be HTTP tokens and values free of control characters.
 * Returns PDT_OK, PDT_EPARSE (either check failed; *out is then empty)
 * or PDT_ENOMEM.
 */
int pdti_headers_parse(const char *text, pdti_kvlist *out);

#endif
