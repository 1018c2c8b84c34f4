/*
 * Decoding of the collector's ExportTraceServiceResponse, for
 * partial_success. The error message is read through a nanopb callback
 * (see otlp_trace.options): what fits in the caller's buffer is kept, cut
 * at a UTF-8 character boundary, and the rest is skipped, so a long
 * message never fails the decode.
 */
#include <stdint.h>
#include <string.h>

#include <pb_decode.h>

#include "otlp_trace.pb.h"
#include "transport.h"

typedef struct msg_sink {
    char *buf;
    size_t cap; /* >= 1 */
} msg_sink;

/*
 * s[0..n) is the start of a longer string: returns the largest m <= n such
 * that s[0..m) does not end inside a multi-byte UTF-8 character.
 */
static size_t utf8_cut(const char *s, size_t n)
{
    size_t i = n, need;
    unsigned char c;

    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80 && n - i < 3)
        i--;
    if (i == 0)
        return n;
    c = (unsigned char)s[i - 1];
    if (c < 0xC0)
        return n; /* ASCII, or stray continuation bytes kept as they are */
    need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    return (i - 1 + need <= n) ? n : i - 1;
}

static bool read_message(pb_istream_t *stream, const pb_field_t *field,
                         void **arg)
{
    msg_sink *sink = *arg;
    size_t total = stream->bytes_left, keep;

    (void)field;
    if (sink == NULL || sink->buf == NULL)
        return pb_read(stream, NULL, total);
    /* A repeated field keeps the last value, as protobuf merging does. */
    keep = total < sink->cap - 1 ? total : sink->cap - 1;
    if (!pb_read(stream, (pb_byte_t *)sink->buf, keep))
        return false;
    if (keep < total) {
        keep = utf8_cut(sink->buf, keep);
        if (!pb_read(stream, NULL, stream->bytes_left))
            return false;
    }
    sink->buf[keep] = '\0';
    return true;
}

int pdti_decode_export_response(const uint8_t *data, size_t len,
                                int64_t *rejected, char *msg, size_t msgcap)
{
    pdtrace_otlp_ExportTraceServiceResponse resp;
    msg_sink sink;
    pb_istream_t in;

    if (rejected != NULL)
        *rejected = 0;
    if (msg != NULL && msgcap > 0)
        msg[0] = '\0';
    if (data == NULL && len != 0)
        return PDT_EINVAL;

    memset(&resp, 0, sizeof(resp));
    sink.buf = (msg != NULL && msgcap > 0) ? msg : NULL;
    sink.cap = msgcap;
    resp.partial_success.error_message.funcs.decode = read_message;
    resp.partial_success.error_message.arg = &sink;

    in = pb_istream_from_buffer(data != NULL ? data : (const pb_byte_t *)"",
                                len);
    if (!pb_decode(&in, pdtrace_otlp_ExportTraceServiceResponse_fields,
                   &resp)) {
        if (msg != NULL && msgcap > 0)
            msg[0] = '\0';
        return PDT_EPARSE;
    }
    if (resp.has_partial_success && rejected != NULL)
        *rejected = resp.partial_success.rejected_spans > 0
                        ? resp.partial_success.rejected_spans
                        : 0;
    return PDT_OK;
}

/* ---- OTLP JSON (http/json) ----------------------------------------------- */

#define JSON_DEPTH_MAX 32

typedef struct jin {
    const char *p, *end;
} jin;

static void jws(jin *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

/* A string at j->p: its raw contents (escapes kept) in s, n. 0 or -1. */
static int jstring(jin *j, const char **s, size_t *n)
{
    const char *q;

    if (j->p >= j->end || *j->p != '"')
        return -1;
    for (q = j->p + 1; q < j->end; q++) {
        if (*q == '\\') {
            q++;
            continue;
        }
        if (*q == '"') {
            *s = j->p + 1;
            *n = (size_t)(q - *s);
            j->p = q + 1;
            return 0;
        }
    }
    return -1;
}

/* Skips one value of any kind. 0 or -1. */
static int jskip(jin *j, int depth)
{
    const char *s;
    size_t n;

    jws(j);
    if (j->p >= j->end || depth > JSON_DEPTH_MAX)
        return -1;
    if (*j->p == '"')
        return jstring(j, &s, &n);
    if (*j->p == '{' || *j->p == '[') {
        char close = *j->p == '{' ? '}' : ']';
        int obj = close == '}';

        j->p++;
        jws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 0;
        }
        for (;;) {
            if (obj) {
                jws(j);
                if (jstring(j, &s, &n) != 0)
                    return -1;
                jws(j);
                if (j->p >= j->end || *j->p++ != ':')
                    return -1;
            }
            if (jskip(j, depth + 1) != 0)
                return -1;
            jws(j);
            if (j->p >= j->end)
                return -1;
            if (*j->p == close) {
                j->p++;
                return 0;
            }
            if (*j->p++ != ',')
                return -1;
        }
    }
    /* number, true, false, null */
    s = j->p;
    while (j->p < j->end && strchr(",}] \t\r\n", *j->p) == NULL)
        j->p++;
    return j->p > s ? 0 : -1;
}

/* Iterates the members of the object at j->p, calling fn for each. */
typedef int (*member_fn)(jin *j, const char *key, size_t klen, void *ud);

static int jobject(jin *j, member_fn fn, void *ud)
{
    const char *k;
    size_t kn;

    jws(j);
    if (j->p >= j->end || *j->p++ != '{')
        return -1;
    jws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        jws(j);
        if (jstring(j, &k, &kn) != 0)
            return -1;
        jws(j);
        if (j->p >= j->end || *j->p++ != ':')
            return -1;
        jws(j);
        if (fn(j, k, kn, ud) != 0)
            return -1;
        jws(j);
        if (j->p >= j->end)
            return -1;
        if (*j->p == '}') {
            j->p++;
            return 0;
        }
        if (*j->p++ != ',')
            return -1;
    }
}

typedef struct json_result {
    int64_t rejected;
    char *msg;
    size_t cap;
} json_result;

static int key_is(const char *k, size_t kn, const char *want)
{
    return kn == strlen(want) && memcmp(k, want, kn) == 0;
}

static int partial_member(jin *j, const char *k, size_t kn, void *ud)
{
    json_result *r = ud;
    const char *s;
    size_t n, i, o = 0;

    if (key_is(k, kn, "rejectedSpans")) {
        int64_t v = 0;
        int quoted = j->p < j->end && *j->p == '"';
        if (quoted)
            j->p++;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
            if (v < INT64_MAX / 10)
                v = v * 10 + (*j->p - '0');
            j->p++;
        }
        if (quoted && (j->p >= j->end || *j->p++ != '"'))
            return -1;
        r->rejected = v;
        return 0;
    }
    if (key_is(k, kn, "errorMessage") && j->p < j->end && *j->p == '"') {
        if (jstring(j, &s, &n) != 0)
            return -1;
        if (r->msg == NULL)
            return 0;
        for (i = 0; i < n && o + 1 < r->cap; i++) {
            if (s[i] == '\\' && i + 1 < n &&
                (s[i + 1] == '"' || s[i + 1] == '\\'))
                i++;
            r->msg[o++] = s[i];
        }
        o = utf8_cut(r->msg, o);
        r->msg[o] = '\0';
        return 0;
    }
    return jskip(j, 1);
}

static int top_member(jin *j, const char *k, size_t kn, void *ud)
{
    if (key_is(k, kn, "partialSuccess") && j->p < j->end && *j->p == '{')
        return jobject(j, partial_member, ud);
    return jskip(j, 1);
}

int pdti_decode_export_response_json(const uint8_t *data, size_t len,
                                     int64_t *rejected, char *msg,
                                     size_t msgcap)
{
    json_result r;
    jin j;

    r.rejected = 0;
    r.msg = msg != NULL && msgcap > 0 ? msg : NULL;
    r.cap = msgcap;
    if (r.msg != NULL)
        r.msg[0] = '\0';
    if (rejected != NULL)
        *rejected = 0;
    if (data == NULL && len != 0)
        return PDT_EINVAL;
    j.p = (const char *)data;
    j.end = j.p + len;
    jws(&j);
    if (j.p == j.end)
        return PDT_OK;
    if (jobject(&j, top_member, &r) != 0) {
        if (r.msg != NULL)
            r.msg[0] = '\0';
        return PDT_EPARSE;
    }
    if (rejected != NULL)
        *rejected = r.rejected;
    return PDT_OK;
}
