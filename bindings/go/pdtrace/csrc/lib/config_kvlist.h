/*
 * Internal: "k=v,k=v" lists, as in OTEL_RESOURCE_ATTRIBUTES and
 * OTEL_EXPORTER_OTLP_HEADERS, and the ordered key/value lists the
 * configuration keeps them in.
 */
#ifndef PDTI_CONFIG_KVLIST_H
#define PDTI_CONFIG_KVLIST_H

#include <stddef.h>

typedef struct pdti_kv {
    char *key;   /* NUL-terminated, owned */
    char *value; /* NUL-terminated, owned, percent-decoded */
} pdti_kv;

typedef struct pdti_kvlist {
    pdti_kv *items;
    size_t count;
} pdti_kvlist;

/*
 * "k=v" lists: entries separated by ',', optional whitespace around keys
 * and values is trimmed, values (and keys) are percent-decoded, empty
 * entries skipped. A missing '=', an empty key or a bad percent escape
 * makes the whole text invalid: returns PDT_EPARSE and *out is empty.
 * Later duplicates replace earlier ones. Returns PDT_OK, PDT_EPARSE or
 * PDT_ENOMEM.
 */
int pdti_kvlist_parse(const char *text, size_t len, pdti_kvlist *out);
void pdti_kvlist_free(pdti_kvlist *l);
/* Sets key to value (copies), replacing an existing key. PDT_OK/ENOMEM. */
int pdti_kvlist_set(pdti_kvlist *l, const char *key, const char *value);
/*
 * Adds or replaces key, taking ownership of the malloc'd key and value in
 * every case (both are freed on failure). A replaced entry keeps its
 * position. PDT_OK/PDT_ENOMEM.
 */
int pdti_kvlist_put(pdti_kvlist *l, char *key, char *value);
const char *pdti_kvlist_get(const pdti_kvlist *l, const char *key);

#endif
