/*
 * Fuzz target for the W3C trace context parsers in lib/propagation.c.
 *
 * The input is used whole as a traceparent and as a tracestate. Checks:
 * a parsed traceparent formats to 55 characters that parse back to the same
 * ids and flags; a normalised tracestate normalises to itself; a smaller
 * output buffer gives a prefix of the full result, cut at a member boundary.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/common.h"
#include "propagation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_traceparent(const char *s, size_t size)
{
    uint8_t tid[16], sid[8], fl, t2[16], s2[8], f2;
    char out[56];

    if (pdti_traceparent_parse(s, size, tid, sid, &fl) != PDT_OK)
        return;
    pdti_traceparent_format(out, tid, sid, fl);
    if (strlen(out) != 55)
        abort();
    if (pdti_traceparent_parse(out, 55, t2, s2, &f2) != PDT_OK)
        abort();
    if (memcmp(tid, t2, 16) != 0 || memcmp(sid, s2, 8) != 0 || fl != f2)
        abort();
}

/* Normalises into a buffer of exactly cap bytes so overruns are caught. */
static size_t normalize_exact(const char *s, size_t len, size_t cap,
                              char **out)
{
    size_t n;

    *out = malloc(cap > 0 ? cap : 1);
    if (*out == NULL)
        abort();
    n = pdti_tracestate_normalize(s, len, *out, cap);
    if (cap == 0) {
        if (n != 0)
            abort();
        (*out)[0] = '\0';
        return 0;
    }
    if (n >= cap || (*out)[n] != '\0' || strlen(*out) != n)
        abort();
    return n;
}

/* 1 when every ','-separated member of a[0..na) is a member of b[0..nb),
 * met in the same order. */
static int members_in_order(const char *a, size_t na, const char *b,
                            size_t nb)
{
    size_t i = 0, j = 0;

    while (i < na) {
        size_t ie = i, je;

        while (ie < na && a[ie] != ',')
            ie++;
        for (;;) {
            if (j >= nb)
                return 0;
            je = j;
            while (je < nb && b[je] != ',')
                je++;
            if (je - j == ie - i && memcmp(a + i, b + j, ie - i) == 0) {
                j = je + 1;
                break;
            }
            j = je + 1;
        }
        i = ie + 1;
    }
    return 1;
}

static void check_tracestate(const char *s, size_t size, size_t small_cap)
{
    char *full, *again, *part;
    size_t n, n2, np;

    /* The result is never longer than the input, so size + 1 always fits. */
    n = normalize_exact(s, size, size + 1, &full);
    n2 = normalize_exact(full, n, n + 1, &again);
    if (n2 != n || memcmp(full, again, n) != 0)
        abort();

    /* Truncated to a smaller buffer, the result keeps whole members of
     * the full one in their order (long members go first, so it need not
     * be a prefix). */
    np = normalize_exact(s, size, small_cap, &part);
    if (np > n || !members_in_order(part, np, full, n))
        abort();

    free(full);
    free(again);
    free(part);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;

    check_traceparent(s, size);
    check_tracestate(s, size, size > 0 ? data[0] : 0);
    return 0;
}
