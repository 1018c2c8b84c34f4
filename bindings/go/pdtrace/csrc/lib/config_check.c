/*
 * Validation of the endpoint URL and of HTTP headers. Header values may
 * carry credentials and URLs user:password: nothing here logs or sets the
 * last error; callers report a failure without the value.
 */
#include <stddef.h>
#include <string.h>

#include "pdtrace/common.h"
#include "config_check.h"
#include "config_text.h"

/* 1 if s[0..len) starts with the NUL-terminated prefix, ignoring case. */
static int starts_nocase(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    return len >= n && pdti_text_eq_nocase(s, n, prefix);
}

size_t pdti_url_check(const char *s, size_t len)
{
    size_t i, skip;

    if (starts_nocase(s, len, "http://"))
        skip = 7;
    else if (starts_nocase(s, len, "https://"))
        skip = 8;
    else
        return 0;
    if (len == skip || s[skip] == '/' || s[skip] == '?' || s[skip] == '#')
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c <= 0x20 || c == 0x7f)
            return 0;
    }
    return skip;
}

/* An HTTP token character (RFC 9110 tchar). */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * Header names must be tokens and values free of control characters
 * (a decoded CR or LF would let one header inject another).
 */
static int headers_ok(const pdti_kvlist *l)
{
    size_t i;
    const unsigned char *p;

    for (i = 0; i < l->count; i++) {
        for (p = (const unsigned char *)l->items[i].key; *p; p++) {
            if (!is_tchar(*p))
                return 0;
        }
        for (p = (const unsigned char *)l->items[i].value; *p; p++) {
            if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
                return 0;
        }
    }
    return 1;
}

int pdti_headers_parse(const char *text, pdti_kvlist *out)
{
    int st = pdti_kvlist_parse(text, strlen(text), out);

    if (st == PDT_OK && !headers_ok(out)) {
        pdti_kvlist_free(out);
        st = PDT_EPARSE;
    }
    return st;
}
