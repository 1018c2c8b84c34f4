/*
 * OTLP/gRPC pieces: framing, the status of a response, the retry rules
 * and RetryInfo. transport.c sends the request and calls these.
 *
 * A gRPC response reports its outcome in the grpc-status header: in the
 * trailers after the body, or, for a "trailers-only" response, in the
 * headers themselves. libcurl hands both to the header callback, so one
 * parser sees every line in order and keeps the last value.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config_text.h"
#include "transport_grpc.h"

#define RETRY_INFO_TYPE "type.googleapis.com/google.rpc.RetryInfo"
#define DETAILS_MAX 4096 /* grpc-status-details-bin decoded, at most */
#define MS_MAX ((int64_t)1 << 52)

void pdti_grpc_reply_reset(pdti_grpc_reply *r)
{
    r->status = -1;
    r->retry_delay_ms = -1;
    r->message[0] = '\0';
}

/* ---- header values ------------------------------------------------------ */

/* grpc-message: percent-encoded UTF-8; control bytes become '?'. */
static void percent_decode(char *dst, size_t cap, const char *v, size_t n)
{
    size_t i = 0, o = 0;

    while (i < n && o + 1 < cap) {
        unsigned char c = (unsigned char)v[i];
        int hi = -1, lo = -1;

        if (c == '%' && i + 2 < n) {
            hi = pdti_text_hex_value(v[i + 1]);
            lo = pdti_text_hex_value(v[i + 2]);
        }
        if (hi >= 0 && lo >= 0) {
            c = (unsigned char)(hi * 16 + lo);
            i += 3;
        } else {
            i++;
        }
        dst[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[o] = '\0';
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Base64 (padded or not, standard or URL alphabet) into out; returns the
 * bytes written, or -1 if malformed or longer than cap. */
static long b64_decode(const char *v, size_t n, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t i, o = 0;

    while (n > 0 && v[n - 1] == '=')
        n--;
    for (i = 0; i < n; i++) {
        int d = b64val(v[i]);
        if (d < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

static void status_details(pdti_grpc_reply *r, const char *v, size_t n)
{
    uint8_t buf[DETAILS_MAX];
    long len = b64_decode(v, n, buf, sizeof(buf));
    int64_t ms;

    if (len >= 0 && pdti_grpc_retry_info(buf, (size_t)len, &ms) == 1)
        r->retry_delay_ms = ms;
}

static int parse_status(const char *v, size_t n)
{
    int code = 0;
    size_t i;

    if (n == 0 || n > 3)
        return PDTI_GRPC_UNKNOWN;
    for (i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return PDTI_GRPC_UNKNOWN;
        code = code * 10 + (v[i] - '0');
    }
    return code;
}

void pdti_grpc_reply_header(pdti_grpc_reply *r, const char *line, size_t n)
{
    static const struct {
        const char *name;
        int which;
    } keep[] = {
        { "grpc-status", 1 },
        { "grpc-message", 2 },
        { "grpc-status-details-bin", 3 }
    };
    const char *colon, *v;
    size_t i, vn, kn;

    if (line == NULL)
        return;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        pdti_grpc_reply_reset(r); /* a new response */
        return;
    }
    colon = memchr(line, ':', n);
    if (colon == NULL)
        return;
    kn = (size_t)(colon - line);
    v = colon + 1;
    vn = n - kn - 1;
    while (vn > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vn--;
    }
    while (vn > 0 && (v[vn - 1] == '\r' || v[vn - 1] == '\n' ||
                      v[vn - 1] == ' ' || v[vn - 1] == '\t'))
        vn--;
    for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        if (strlen(keep[i].name) != kn ||
            strncasecmp(line, keep[i].name, kn) != 0)
            continue;
        if (keep[i].which == 1)
            r->status = parse_status(v, vn);
        else if (keep[i].which == 2)
            percent_decode(r->message, sizeof(r->message), v, vn);
        else
            status_details(r, v, vn);
        return;
    }
}

/* ---- codes --------------------------------------------------------------- */

const char *pdti_grpc_code_name(int code)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
        "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"
    };

    if (code < 0 || (size_t)code >= sizeof(names) / sizeof(names[0]))
        return "UNKNOWN";
    return names[code];
}

int pdti_grpc_code_retryable(int code, int has_retry_info)
{
    switch (code) {
    case PDTI_GRPC_CANCELLED:
    case PDTI_GRPC_DEADLINE_EXCEEDED:
    case PDTI_GRPC_ABORTED:
    case PDTI_GRPC_OUT_OF_RANGE:
    case PDTI_GRPC_UNAVAILABLE:
    case PDTI_GRPC_DATA_LOSS:
        return 1;
    case PDTI_GRPC_RESOURCE_EXHAUSTED:
        return has_retry_info != 0;
    default:
        return 0;
    }
}

int pdti_grpc_code_from_http(long http_status)
{
    switch (http_status) {
    case 200:
    case 400:
        return PDTI_GRPC_INTERNAL;
    case 401:
        return PDTI_GRPC_UNAUTHENTICATED;
    case 403:
        return PDTI_GRPC_PERMISSION_DENIED;
    case 404:
        return PDTI_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return PDTI_GRPC_UNAVAILABLE;
    default:
        return PDTI_GRPC_UNKNOWN;
    }
}

/* ---- framing ------------------------------------------------------------- */

void pdti_grpc_frame_header(uint8_t hdr[PDTI_GRPC_FRAME_HEADER],
                            int compressed, uint32_t len)
{
    hdr[0] = compressed ? 1 : 0;
    hdr[1] = (uint8_t)(len >> 24);
    hdr[2] = (uint8_t)(len >> 16);
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
}

int pdti_grpc_unframe(const uint8_t *body, size_t len, const uint8_t **msg,
                      size_t *mlen)
{
    uint32_t n;

    *msg = NULL;
    *mlen = 0;
    if (len == 0)
        return 0;
    if (body == NULL || len < PDTI_GRPC_FRAME_HEADER || body[0] != 0)
        return -1;
    n = ((uint32_t)body[1] << 24) | ((uint32_t)body[2] << 16) |
        ((uint32_t)body[3] << 8) | (uint32_t)body[4];
    if ((size_t)n > len - PDTI_GRPC_FRAME_HEADER)
        return -1;
    *msg = body + PDTI_GRPC_FRAME_HEADER;
    *mlen = n;
    return 1;
}

/* ---- google.rpc.Status and RetryInfo -------------------------------------- */

typedef struct pb_in {
    const uint8_t *p, *end;
} pb_in;

static int get_varint(pb_in *in, uint64_t *v)
{
    unsigned shift = 0;

    *v = 0;
    while (in->p < in->end && shift < 64) {
        uint8_t b = *in->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
        shift += 7;
    }
    return -1;
}

/*
 * Next field: its number and wire type; for length-delimited fields the
 * bytes (data, dlen), for varints the value (v); fixed-size fields are
 * skipped. 1 field read, 0 at end,
 * -1 malformed.
 */
static int next_field(pb_in *in, uint32_t *field, int *wire, uint64_t *v,
                      const uint8_t **data, size_t *dlen)
{
    uint64_t key, n;

    if (in->p == in->end)
        return 0;
    if (get_varint(in, &key) != 0 || (key >> 3) == 0 || (key >> 3) > 0xffff)
        return -1;
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    switch (*wire) {
    case 0:
        return get_varint(in, v) == 0 ? 1 : -1;
    case 1:
        if (in->end - in->p < 8)
            return -1;
        in->p += 8;
        return 1;
    case 2:
        if (get_varint(in, &n) != 0 || n > (uint64_t)(in->end - in->p))
            return -1;
        *data = in->p;
        *dlen = (size_t)n;
        in->p += n;
        return 1;
    case 5:
        if (in->end - in->p < 4)
            return -1;
        in->p += 4;
        return 1;
    default:
        return -1;
    }
}

/* RetryInfo { Duration retry_delay = 1; } Duration { int64 seconds = 1;
 * int32 nanos = 2; } */
static int retry_delay(const uint8_t *p, size_t len, int64_t *ms)
{
    pb_in in = { p, p + len }, d;
    const uint8_t *data = NULL;
    size_t dlen = 0;
    uint32_t f;
    int wire, rc;
    uint64_t v = 0;
    int64_t secs = 0, nanos = 0;

    while ((rc = next_field(&in, &f, &wire, &v, &data, &dlen)) == 1) {
        if (f != 1 || wire != 2)
            continue;
        d.p = data;
        d.end = data + dlen;
        while ((rc = next_field(&d, &f, &wire, &v, &data, &dlen)) == 1) {
            if (f == 1 && wire == 0)
                secs = (int64_t)v;
            else if (f == 2 && wire == 0)
                nanos = (int64_t)(int32_t)(uint32_t)v;
        }
        if (rc < 0)
            return -1;
    }
    if (rc < 0)
        return -1;
    if (secs < 0 || (secs == 0 && nanos < 0)) {
        *ms = 0;
    } else if (secs > MS_MAX / 1000) {
        *ms = MS_MAX;
    } else {
        *ms = secs * 1000 + nanos / 1000000;
        if (*ms < 0)
            *ms = 0;
    }
    return 1;
}

int pdti_grpc_retry_info(const uint8_t *status, size_t len,
                         int64_t *delay_ms)
{
    pb_in in;
    const uint8_t *data = NULL;
    size_t dlen = 0;
    uint32_t f;
    int wire, rc, found = 0;
    uint64_t v = 0;

    *delay_ms = -1;
    if (status == NULL)
        return len == 0 ? 0 : -1;
    in.p = status;
    in.end = status + len;
    /* Status { int32 code = 1; string message = 2; repeated Any details
     * = 3; } Any { string type_url = 1; bytes value = 2; } */
    while ((rc = next_field(&in, &f, &wire, &v, &data, &dlen)) == 1) {
        pb_in any;
        const uint8_t *type = NULL, *value = NULL;
        size_t tlen = 0, vlen = 0;

        if (f != 3 || wire != 2)
            continue;
        any.p = data;
        any.end = data + dlen;
        while ((rc = next_field(&any, &f, &wire, &v, &data, &dlen)) == 1) {
            if (f == 1 && wire == 2) {
                type = data;
                tlen = dlen;
            } else if (f == 2 && wire == 2) {
                value = data;
                vlen = dlen;
            }
        }
        if (rc < 0)
            goto bad;
        if (found || type == NULL || tlen != strlen(RETRY_INFO_TYPE) ||
            memcmp(type, RETRY_INFO_TYPE, tlen) != 0)
            continue;
        if (retry_delay(value != NULL ? value : (const uint8_t *)"", vlen,
                        delay_ms) != 1)
            goto bad;
        found = 1;
    }
    if (rc < 0)
        goto bad;
    return found;
bad:
    *delay_ms = -1; /* a delay read before the bad part does not count */
    return -1;
}

/* ---- grpc-timeout ---------------------------------------------------------- */

void pdti_grpc_timeout_value(char *dst, size_t cap, int64_t ms)
{
    if (ms < 1)
        ms = 1;
    if (ms <= 99999999)
        snprintf(dst, cap, "%lldm", (long long)ms);
    else if (ms / 1000 <= 99999999)
        snprintf(dst, cap, "%lldS", (long long)(ms / 1000));
    else
        snprintf(dst, cap, "99999999S");
}
