/*
 * k=v lists: parsing "k=v,k=v" text with percent-decoded keys and values,
 * and the small ordered lists the configuration keeps them in (a replaced
 * key keeps its place, so the resource keeps a stable order).
 *
 * Memory: malloc and free only; every function frees what it allocated
 * before returning an error.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/common.h"
#include "config_kvlist.h"
#include "config_text.h"

int pdti_kvlist_put(pdti_kvlist *l, char *key, char *value)
{
    pdti_kv *items;
    size_t i;

    for (i = 0; i < l->count; i++) {
        if (strcmp(l->items[i].key, key) == 0) {
            free(l->items[i].value);
            l->items[i].value = value;
            free(key);
            return PDT_OK;
        }
    }
    if (l->count >= SIZE_MAX / sizeof(*items) - 1)
        goto oom;
    items = malloc((l->count + 1) * sizeof(*items));
    if (items == NULL)
        goto oom;
    if (l->count > 0)
        memcpy(items, l->items, l->count * sizeof(*items));
    free(l->items);
    l->items = items;
    l->items[l->count].key = key;
    l->items[l->count].value = value;
    l->count++;
    return PDT_OK;

oom:
    free(key);
    free(value);
    return PDT_ENOMEM;
}

int pdti_kvlist_set(pdti_kvlist *l, const char *key, const char *value)
{
    char *k, *v;

    if (l == NULL || key == NULL || value == NULL)
        return PDT_EINVAL;
    k = pdti_text_dup(key);
    v = pdti_text_dup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return PDT_ENOMEM;
    }
    return pdti_kvlist_put(l, k, v);
}

const char *pdti_kvlist_get(const pdti_kvlist *l, const char *key)
{
    size_t i;

    if (l == NULL || key == NULL)
        return NULL;
    for (i = 0; i < l->count; i++) {
        if (strcmp(l->items[i].key, key) == 0)
            return l->items[i].value;
    }
    return NULL;
}

void pdti_kvlist_free(pdti_kvlist *l)
{
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < l->count; i++) {
        free(l->items[i].key);
        free(l->items[i].value);
    }
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

/* Parses one trimmed, non-empty "k=v" entry into list. */
static int kvlist_parse_entry(pdti_kvlist *list, const char *e, size_t elen)
{
    const char *eq = memchr(e, '=', elen);
    const char *k = e, *v;
    size_t klen, vlen;
    char *key = NULL, *value = NULL;
    int st;

    if (eq == NULL)
        return PDT_EPARSE;
    klen = (size_t)(eq - e);
    v = eq + 1;
    vlen = elen - klen - 1;
    pdti_text_trim(&k, &klen);
    pdti_text_trim(&v, &vlen);
    if (klen == 0)
        return PDT_EPARSE;
    st = pdti_percent_decode(k, klen, &key);
    if (st != PDT_OK)
        return st;
    st = pdti_percent_decode(v, vlen, &value);
    if (st != PDT_OK) {
        free(key);
        return st;
    }
    return pdti_kvlist_put(list, key, value);
}

int pdti_kvlist_parse(const char *text, size_t len, pdti_kvlist *out)
{
    pdti_kvlist list = { NULL, 0 };
    size_t pos = 0;
    int st;

    if (out == NULL)
        return PDT_EINVAL;
    out->items = NULL;
    out->count = 0;
    if (text == NULL)
        return len == 0 ? PDT_OK : PDT_EINVAL;
    while (pos < len) {
        const char *e = text + pos;
        const char *comma = memchr(e, ',', len - pos);
        size_t elen = comma != NULL ? (size_t)(comma - e) : len - pos;

        pos += elen + 1;
        pdti_text_trim(&e, &elen);
        if (elen == 0)
            continue;
        st = kvlist_parse_entry(&list, e, elen);
        if (st != PDT_OK) {
            pdti_kvlist_free(&list);
            return st;
        }
    }
    *out = list;
    return PDT_OK;
}
