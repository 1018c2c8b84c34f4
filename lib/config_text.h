/*
 * Internal: the text parsers behind the configuration. ASCII only, so no
 * result depends on the process locale; none of them touches the last
 * error (an ignored environment value must leave no trace there).
 */
#ifndef PDTI_CONFIG_TEXT_H
#define PDTI_CONFIG_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* 1 for ' ', '\t', '\n', '\r', '\v' and '\f'. */
int pdti_text_is_space(char c);

/* The value 0..15 of one hex digit (either case), -1 if c is not one. */
int pdti_text_hex_value(char c);
/* Narrows [*s, *s + *len) to exclude leading and trailing whitespace. */
void pdti_text_trim(const char **s, size_t *len);
/* 1 if s[0..len) equals the NUL-terminated word, ignoring ASCII case. */
int pdti_text_eq_nocase(const char *s, size_t len, const char *word);
/* A malloc'd NUL-terminated copy of s[0..n), or NULL. */
char *pdti_text_dup_n(const char *s, size_t n);
/* A malloc'd copy of the NUL-terminated s, or NULL. */
char *pdti_text_dup(const char *s);

/* One entry of a table of names; a NULL name ends the table. */
typedef struct pdti_name_value {
    const char *name;
    int value;
} pdti_name_value;

/* Finds s[0..len) in table (ignoring case); 1 and *out if found. */
int pdti_text_lookup(const pdti_name_value *table, const char *s, size_t len,
                     int *out);

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
