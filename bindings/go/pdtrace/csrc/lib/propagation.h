/* Internal: W3C trace context (traceparent, tracestate) and UTF-8. */
#ifndef PDTI_PROPAGATION_H
#define PDTI_PROPAGATION_H

#include <stddef.h>
#include <stdint.h>

/* trace-flags of W3C Trace Context Level 2; other bits are cleared on the
 * way out. */
#define PDTI_FLAG_SAMPLED 0x01
#define PDTI_FLAG_RANDOM 0x02

/*
 * Parses a traceparent value of `len` bytes (leading/trailing spaces and
 * tabs allowed). Rules: lowercase hex only; version 00 must be exactly 55
 * characters; version ff is invalid; a higher version is parsed by the
 * fixed offsets of version 00 and must have either exactly 55 characters
 * or a '-' right after the flags; all-zero trace or span id is invalid;
 * a value with a ',' (several header lines joined: a duplicated
 * traceparent) is invalid whatever its version. Flags are returned as
 * received.
 * Returns PDT_OK or PDT_EPARSE (outputs untouched on failure).
 */
int pdti_traceparent_parse(const char *s, size_t len, uint8_t trace_id[16],
                           uint8_t span_id[8], uint8_t *flags);

/* Writes "00-<32 hex>-<16 hex>-<2 hex>" and a NUL into out[56]. */
void pdti_traceparent_format(char out[56], const uint8_t trace_id[16],
                             const uint8_t span_id[8], uint8_t flags);

/* Lowercase hex of n bytes into out (2n chars + NUL). */
void pdti_hex(char *out, const uint8_t *bytes, size_t n);
/* The two lowercase hex digits of every byte value, in order. */
extern const char pdti_hex_pairs[513];

/*
 * Normalises a tracestate value per W3C Trace Context Level 2: list
 * members separated by ',' (optional whitespace around them, empty members
 * allowed and skipped); each member `key=value` with key = (lcalpha /
 * DIGIT) then up to 255 of [a-z0-9_-*\/@], value = 1 to 256 printable
 * ASCII characters except ',' and '=', not ending in a space. A header with
 * an invalid member, a duplicated key or more than 32 members is discarded
 * whole (returns 0). The members are joined by ',' into out
 * (NUL-terminated); if they do not fit in outcap - 1 characters, members
 * longer than 128 characters are dropped first (rightmost first), then
 * members from the end. Returns the result length (0: nothing kept).
 */
size_t pdti_tracestate_normalize(const char *s, size_t len, char *out,
                                 size_t outcap);

/*
 * UTF-8 validation and repair (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF).
 * pdti_utf8_valid: returns n if s[0..n) is valid, else the offset of the
 * first invalid byte. Fast on ASCII.
 * pdti_utf8_sanitized_len: length after replacing every maximal invalid
 * subsequence with U+FFFD (EF BF BD).
 * pdti_utf8_sanitize: writes that repaired string into out (which has
 * room for pdti_utf8_sanitized_len bytes) and returns the length written.
 * pdti_utf8_truncate: the largest length <= max that does not cut a
 * character of the valid string s[0..n).
 */
size_t pdti_utf8_valid(const uint8_t *s, size_t n);
size_t pdti_utf8_sanitized_len(const uint8_t *s, size_t n);
size_t pdti_utf8_sanitize(const uint8_t *s, size_t n, uint8_t *out);
size_t pdti_utf8_truncate(const uint8_t *s, size_t n, size_t max);

#endif
