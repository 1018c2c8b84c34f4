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
