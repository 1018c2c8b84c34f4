/*
 * OTLP protobuf to OTLP JSON, driven by a small table of the messages we
 * emit. Used by the console/file exporter, whose lines the Collector's
 * otlpjsonfile receiver can read back.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pdtrace/common.h"
#include "error.h"
#include "json.h"
#include "propagation.h"

typedef enum ftype {
    T_MSG, T_STRING, T_HEX, T_B64, T_FIXED64_STR, T_FIXED32, T_INT32,
    T_UINT32, T_INT64_STR, T_BOOL, T_DOUBLE
} ftype;

typedef struct msg_desc msg_desc;
typedef struct field_desc {
    uint32_t num;
    const char *name;
    ftype type;
    int repeated;
    const msg_desc *sub;
} field_desc;

struct msg_desc {
    const field_desc *fields;
    size_t count;
};

#define MSG(n) static const msg_desc n
#define FIELDS(a) { a, sizeof(a) / sizeof(a[0]) }

static const msg_desc d_anyvalue, d_kv;

static const field_desc f_array[] = {
    { 1, "values", T_MSG, 1, &d_anyvalue } };
MSG(d_array) = FIELDS(f_array);
static const field_desc f_kvlist[] = { { 1, "values", T_MSG, 1, &d_kv } };
MSG(d_kvlist) = FIELDS(f_kvlist);
static const field_desc f_anyvalue[] = {
    { 1, "stringValue", T_STRING, 0, NULL },
    { 2, "boolValue", T_BOOL, 0, NULL },
    { 3, "intValue", T_INT64_STR, 0, NULL },
    { 4, "doubleValue", T_DOUBLE, 0, NULL },
    { 5, "arrayValue", T_MSG, 0, &d_array },
    { 6, "kvlistValue", T_MSG, 0, &d_kvlist },
    { 7, "bytesValue", T_B64, 0, NULL } };
static const msg_desc d_anyvalue = FIELDS(f_anyvalue);
static const field_desc f_kv[] = {
    { 1, "key", T_STRING, 0, NULL },
    { 2, "value", T_MSG, 0, &d_anyvalue } };
static const msg_desc d_kv = FIELDS(f_kv);
static const field_desc f_resource[] = {
    { 1, "attributes", T_MSG, 1, &d_kv },
    { 2, "droppedAttributesCount", T_UINT32, 0, NULL } };
MSG(d_resource) = FIELDS(f_resource);
static const field_desc f_scope[] = {
    { 1, "name", T_STRING, 0, NULL },
    { 2, "version", T_STRING, 0, NULL },
    { 3, "attributes", T_MSG, 1, &d_kv },
    { 4, "droppedAttributesCount", T_UINT32, 0, NULL } };
MSG(d_scope) = FIELDS(f_scope);
static const field_desc f_status[] = {
    { 2, "message", T_STRING, 0, NULL },
    { 3, "code", T_INT32, 0, NULL } };
MSG(d_status) = FIELDS(f_status);
static const field_desc f_event[] = {
    { 1, "timeUnixNano", T_FIXED64_STR, 0, NULL },
    { 2, "name", T_STRING, 0, NULL },
    { 3, "attributes", T_MSG, 1, &d_kv },
    { 4, "droppedAttributesCount", T_UINT32, 0, NULL } };
MSG(d_event) = FIELDS(f_event);
static const field_desc f_link[] = {
    { 1, "traceId", T_HEX, 0, NULL },
    { 2, "spanId", T_HEX, 0, NULL },
    { 3, "traceState", T_STRING, 0, NULL },
    { 4, "attributes", T_MSG, 1, &d_kv },
    { 5, "droppedAttributesCount", T_UINT32, 0, NULL },
    { 6, "flags", T_FIXED32, 0, NULL } };
MSG(d_link) = FIELDS(f_link);
static const field_desc f_span[] = {
    { 1, "traceId", T_HEX, 0, NULL },
    { 2, "spanId", T_HEX, 0, NULL },
    { 3, "traceState", T_STRING, 0, NULL },
    { 4, "parentSpanId", T_HEX, 0, NULL },
    { 16, "flags", T_FIXED32, 0, NULL },
    { 5, "name", T_STRING, 0, NULL },
    { 6, "kind", T_INT32, 0, NULL },
    { 7, "startTimeUnixNano", T_FIXED64_STR, 0, NULL },
    { 8, "endTimeUnixNano", T_FIXED64_STR, 0, NULL },
    { 9, "attributes", T_MSG, 1, &d_kv },
    { 10, "droppedAttributesCount", T_UINT32, 0, NULL },
    { 11, "events", T_MSG, 1, &d_event },
    { 12, "droppedEventsCount", T_UINT32, 0, NULL },
    { 13, "links", T_MSG, 1, &d_link },
    { 14, "droppedLinksCount", T_UINT32, 0, NULL },
    { 15, "status", T_MSG, 0, &d_status } };
MSG(d_span) = FIELDS(f_span);
static const field_desc f_scopespans[] = {
    { 1, "scope", T_MSG, 0, &d_scope },
    { 2, "spans", T_MSG, 1, &d_span },
    { 3, "schemaUrl", T_STRING, 0, NULL } };
MSG(d_scopespans) = FIELDS(f_scopespans);
static const field_desc f_resourcespans[] = {
    { 1, "resource", T_MSG, 0, &d_resource },
    { 2, "scopeSpans", T_MSG, 1, &d_scopespans },
    { 3, "schemaUrl", T_STRING, 0, NULL } };
MSG(d_resourcespans) = FIELDS(f_resourcespans);
static const field_desc f_request[] = {
    { 1, "resourceSpans", T_MSG, 1, &d_resourcespans } };
MSG(d_request) = FIELDS(f_request);

/* One decoded field occurrence. */
typedef struct field {
    uint32_t num;
    unsigned wire;
    uint64_t v;           /* varint / fixed value */
    const uint8_t *p;     /* length-delimited payload */
    size_t len;
} field;

static int get_varint(const uint8_t *p, size_t n, size_t *off, uint64_t *v)
{
    uint64_t r = 0;
    unsigned shift = 0;

    while (*off < n && shift < 64) {
        uint8_t b = p[(*off)++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* Reads the field at *off. Returns 0, or -1 if malformed. */
static int next_field(const uint8_t *p, size_t n, size_t *off, field *f)
{
    uint64_t key, v;
    int i;

    if (get_varint(p, n, off, &key) != 0 || (key >> 3) == 0 ||
        (key >> 3) > 0x1fffffff)
        return -1;
    f->num = (uint32_t)(key >> 3);
    f->wire = (unsigned)(key & 7);
    switch (f->wire) {
    case 0:
        return get_varint(p, n, off, &f->v);
    case 1:
    case 5: {
        int width = f->wire == 1 ? 8 : 4;
        if (n - *off < (size_t)width)
            return -1;
        v = 0;
        for (i = width - 1; i >= 0; i--)
            v = (v << 8) | p[*off + (size_t)i];
        f->v = v;
        *off += (size_t)width;
        return 0;
    }
    case 2:
        if (get_varint(p, n, off, &v) != 0 || v > n - *off)
            return -1;
        f->p = p + *off;
        f->len = (size_t)v;
        *off += (size_t)v;
        return 0;
    default:
        return -1;
    }
}

static int put(pdti_buf *o, const char *s, size_t n)
{
    return pdti_buf_append(o, s, n);
}

static int puts_(pdti_buf *o, const char *s)
{
    return put(o, s, strlen(s));
}

static int put_json_string(pdti_buf *o, const uint8_t *s, size_t n)
{
    size_t i;
    char esc[8];

    if (pdti_utf8_valid(s, n) != n) {
        /* JSON text is UTF-8: repair (U+FFFD) what the encoder did not
         * write itself, e.g. bytes read back from elsewhere. */
        pdti_buf tmp = PDTI_BUF_INIT;
        int rc;
        if (pdti_buf_reserve(&tmp, pdti_utf8_sanitized_len(s, n) + 1))
            return -1;
        tmp.len = pdti_utf8_sanitize(s, n, tmp.data);
        rc = put_json_string(o, tmp.data, tmp.len);
        pdti_buf_free(&tmp);
        return rc;
    }
    if (put(o, "\"", 1))
        return -1;
    for (i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            if (put(o, esc, 2))
                return -1;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            if (put(o, esc, 6))
                return -1;
        } else if (put(o, (const char *)&s[i], 1)) {
            return -1;
        }
    }
    return put(o, "\"", 1);
}

static int put_hex(pdti_buf *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;

    if (pdti_buf_reserve(o, 2 * n + 2))
        return -1;
    o->data[o->len++] = '"';
    for (i = 0; i < n; i++) {
        o->data[o->len++] = (uint8_t)hex[s[i] >> 4];
        o->data[o->len++] = (uint8_t)hex[s[i] & 15];
    }
    o->data[o->len++] = '"';
    return 0;
}

static int put_b64(pdti_buf *o, const uint8_t *s, size_t n)
{
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    if (pdti_buf_reserve(o, 4 * (n / 3 + 1) + 2))
        return -1;
    o->data[o->len++] = '"';
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        o->data[o->len++] = (uint8_t)t[v >> 18];
        o->data[o->len++] = (uint8_t)t[(v >> 12) & 63];
        o->data[o->len++] = (uint8_t)t[(v >> 6) & 63];
        o->data[o->len++] = (uint8_t)t[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        o->data[o->len++] = (uint8_t)t[v >> 18];
        o->data[o->len++] = (uint8_t)t[(v >> 12) & 63];
        o->data[o->len++] = i + 1 < n ? (uint8_t)t[(v >> 6) & 63] : '=';
        o->data[o->len++] = '=';
    }
    o->data[o->len++] = '"';
    return 0;
}

static int walk(const uint8_t *p, size_t n, const msg_desc *d, pdti_buf *o,
                int depth);

static int put_value(const field *f, const field_desc *fd, pdti_buf *o,
                     int depth)
{
    char num[40];
    double dv;

    switch (fd->type) {
    case T_MSG:
        if (f->wire != 2)
            return -1;
        return walk(f->p, f->len, fd->sub, o, depth + 1);
    case T_STRING:
        return f->wire != 2 ? -1 : put_json_string(o, f->p, f->len);
    case T_HEX:
        return f->wire != 2 ? -1 : put_hex(o, f->p, f->len);
    case T_B64:
        return f->wire != 2 ? -1 : put_b64(o, f->p, f->len);
    case T_FIXED64_STR:
    case T_INT64_STR:
        if (f->wire == 2)
            return -1;
        if (fd->type == T_INT64_STR)
            snprintf(num, sizeof(num), "\"%lld\"", (long long)f->v);
        else
            snprintf(num, sizeof(num), "\"%llu\"", (unsigned long long)f->v);
        return puts_(o, num);
    case T_FIXED32:
    case T_UINT32:
        if (f->wire == 2) /* no number in a length-delimited field */
            return -1;
        snprintf(num, sizeof(num), "%lu", (unsigned long)(uint32_t)f->v);
        return puts_(o, num);
    case T_INT32:
        if (f->wire == 2)
            return -1;
        snprintf(num, sizeof(num), "%ld", (long)(int32_t)f->v);
        return puts_(o, num);
    case T_BOOL:
        return f->wire != 0 ? -1 : puts_(o, f->v ? "true" : "false");
    case T_DOUBLE:
        if (f->wire != 1)
            return -1;
        memcpy(&dv, &f->v, sizeof(dv));
        if (isnan(dv))
            return puts_(o, "\"NaN\"");
        if (isinf(dv))
            return puts_(o, dv > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        snprintf(num, sizeof(num), "%.17g", dv);
        return puts_(o, num);
    }
    return -1;
}

static int walk(const uint8_t *p, size_t n, const msg_desc *d, pdti_buf *o,
                int depth)
{
    size_t i, off;
    int first = 1;
    field f;

    if (depth > 32)
        return -1;
    /* Validate the whole message once. */
    for (off = 0; off < n;)
        if (next_field(p, n, &off, &f) != 0)
            return -1;
    if (put(o, "{", 1))
        return -1;
    for (i = 0; i < d->count; i++) {
        const field_desc *fd = &d->fields[i];
        int seen = 0;
        for (off = 0; off < n;) {
            next_field(p, n, &off, &f);
            if (f.num != fd->num)
                continue;
            if (!seen) {
                if ((!first && put(o, ",", 1)) || put(o, "\"", 1) ||
                    puts_(o, fd->name) || put(o, "\":", 2))
                    return -1;
                if (fd->repeated && put(o, "[", 1))
                    return -1;
                first = 0;
            } else if (fd->repeated) {
                if (put(o, ",", 1))
                    return -1;
            } else {
                /* A repeated singular field: the last one wins. Rewind is
                 * not possible, so emit only the first; our encoder never
                 * repeats them. */
                continue;
            }
            seen = 1;
            if (put_value(&f, fd, o, depth) != 0)
                return -1;
        }
        if (seen && fd->repeated && put(o, "]", 1))
            return -1;
    }
    return put(o, "}", 1);
}

int pdti_otlp_to_json(const uint8_t *data, size_t len, pdti_buf *out)
{
    pdti_buf_reset(out);
    if (walk(data, len, &d_request, out, 0) != 0) {
        pdti_buf_reset(out);
        return pdti_err(PDT_EPARSE, "not an OTLP trace request");
    }
    return PDT_OK;
}
