/*
 * The text parsers behind the configuration: numbers, booleans, percent
 * escapes and names, in ASCII only so that the result does not depend on
 * the process locale (except for the decimal point strtod() expects, which
 * pdti_parse_double() translates to).
 *
 * Memory: malloc and free only; every function frees what it allocated
 * before returning an error.
 */
#include <locale.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/common.h"
#include "config_text.h"

/* Longest number pdti_parse_double() accepts, in characters. */
#define PDTI_DOUBLE_TEXT_MAX 255

/* ---------------------------------------------------------------------
 * Small text helpers.
 */

int pdti_text_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

static int to_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/* Narrows [*s, *s + *len) to exclude leading and trailing whitespace. */
void pdti_text_trim(const char **s, size_t *len)
{
    while (*len > 0 && pdti_text_is_space((*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && pdti_text_is_space((*s)[*len - 1]))
        (*len)--;
}

/* 1 if s[0..len) equals the NUL-terminated word, ignoring ASCII case. */
int pdti_text_eq_nocase(const char *s, size_t len, const char *word)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (word[i] == '\0' || to_lower((unsigned char)s[i]) !=
                                   to_lower((unsigned char)word[i]))
            return 0;
    }
    return word[len] == '\0';
}

char *pdti_text_dup_n(const char *s, size_t n)
{
    char *p;

    if (n == SIZE_MAX)
        return NULL;
    p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n > 0)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *pdti_text_dup(const char *s)
{
    return pdti_text_dup_n(s, strlen(s));
}

int pdti_text_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pdti_text_lookup(const pdti_name_value *table, const char *s, size_t len,
                     int *out)
{
    for (; table->name != NULL; table++) {
        if (pdti_text_eq_nocase(s, len, table->name)) {
            *out = table->value;
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * Parsers.
 */

int pdti_percent_decode(const char *src, size_t len, char **out)
{
    char *dst;
    size_t i, n = 0;
    int hi, lo;

    if (out == NULL)
        return PDT_EINVAL;
    *out = NULL;
    if (src == NULL && len != 0)
        return PDT_EINVAL;
    if (len == SIZE_MAX)
        return PDT_ENOMEM;
    dst = malloc(len + 1);
    if (dst == NULL)
        return PDT_ENOMEM;
    for (i = 0; i < len; i++) {
        char c = src[i];

        if (c == '%') {
            if (len - i < 3)
                goto bad;
            hi = pdti_text_hex_value(src[i + 1]);
            lo = pdti_text_hex_value(src[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                goto bad;
            c = (char)(unsigned char)(hi * 16 + lo);
            i += 2;
        } else if (c == '\0') {
            goto bad;
        }
        dst[n++] = c;
    }
    dst[n] = '\0';
    *out = dst;
    return PDT_OK;

bad:
    free(dst);
    return PDT_EPARSE;
}

int pdti_parse_bool(const char *text, int *out)
{
    const char *s = text;
    size_t len;

    if (text == NULL || out == NULL)
        return PDT_EPARSE;
    len = strlen(text);
    pdti_text_trim(&s, &len);
    if (pdti_text_eq_nocase(s, len, "true")) {
        *out = 1;
        return PDT_OK;
    }
    if (pdti_text_eq_nocase(s, len, "false")) {
        *out = 0;
        return PDT_OK;
    }
    return PDT_EPARSE;
}

int pdti_parse_int(const char *text, int64_t min, int64_t max, int64_t *out)
{
    const char *s = text;
    size_t len, i = 0;
    uint64_t mag = 0, limit;
    int neg = 0, overflow = 0;
    int64_t v;

    if (text == NULL || out == NULL)
        return PDT_EPARSE;
    len = strlen(text);
    pdti_text_trim(&s, &len);
    if (len == 0)
        return PDT_EPARSE;
    if (s[0] == '+' || s[0] == '-') {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == len)
        return PDT_EPARSE;
    limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    /* Junk anywhere makes the text malformed, even after an overflow. */
    for (; i < len; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return PDT_EPARSE;
        d = (unsigned)(s[i] - '0');
        if (!overflow) {
            if (mag > (limit - d) / 10u)
                overflow = 1;
            else
                mag = mag * 10u + d;
        }
    }
    if (overflow)
        return PDT_ERANGE;
    if (!neg)
        v = (int64_t)mag;
    else if (mag == (uint64_t)INT64_MAX + 1u)
        v = INT64_MIN;
    else
        v = -(int64_t)mag;
    if (v < min || v > max)
        return PDT_ERANGE;
    *out = v;
    return PDT_OK;
}

/*
 * Accepts [+-] digits [. digits] [(e|E) [+-] digits], with at least one
 * digit before the exponent; nothing else (no nan, inf or hex floats).
 */
static int double_syntax_ok(const char *s, size_t len)
{
    size_t i = 0, mant = 0, exp = 0;

    if (i < len && (s[i] == '+' || s[i] == '-'))
        i++;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        i++;
        mant++;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
            mant++;
        }
    }
    if (mant == 0)
        return 0;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
            exp++;
        }
        if (exp == 0)
            return 0;
    }
    return i == len;
}

int pdti_parse_double(const char *text, double min, double max, double *out)
{
    char buf[PDTI_DOUBLE_TEXT_MAX * 4 + 1];
    const char *s = text, *point;
    char *end;
    size_t len, i, n = 0, plen;
    double v;

    if (text == NULL || out == NULL)
        return PDT_EPARSE;
    len = strlen(text);
    pdti_text_trim(&s, &len);
    if (len == 0 || len > PDTI_DOUBLE_TEXT_MAX || !double_syntax_ok(s, len))
        return PDT_EPARSE;

    /*
     * strtod() follows the process locale's decimal point; the syntax is
     * already checked, so translate '.' to whatever the locale expects.
     */
    point = localeconv()->decimal_point;
    if (point == NULL || point[0] == '\0')
        point = ".";
    plen = strlen(point);
    if (plen > 4)
        return PDT_EPARSE;
    for (i = 0; i < len; i++) {
        if (s[i] == '.') {
            memcpy(buf + n, point, plen);
            n += plen;
        } else {
            buf[n++] = s[i];
        }
    }
    buf[n] = '\0';

    /* An underflow (ERANGE with a tiny or zero result) is a fine value. */
    v = strtod(buf, &end);
    if (end != buf + n)
        return PDT_EPARSE;
    if (!isfinite(v))
        return PDT_ERANGE;
    if (!(v >= min && v <= max))
        return PDT_ERANGE;
    *out = v;
    return PDT_OK;
}
