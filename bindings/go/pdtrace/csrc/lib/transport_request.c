/*
 * What an export request carries: its headers, its body on the wire, and
 * keeping the configured header values out of every message the transport
 * returns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pdtrace/tracer.h"
#include "transport_grpc.h"
#include "json.h"
#include "transport_request.h"

#define REDACT_MIN_LEN 4 /* shorter header values are not searched for */
/* The longest grpc-timeout line; the slot is allocated this long. */
#define TIMEOUT_PLACEHOLDER "grpc-timeout: 99999999S"

void pdti_headers_redact(char *msg, const pdti_kvlist *headers)
{
    size_t i;

    for (i = 0; i < headers->count; i++) {
        const char *v = headers->items[i].value;
        size_t n = v != NULL ? strlen(v) : 0;
        char *p;

        if (n < REDACT_MIN_LEN)
            continue;
        while ((p = strstr(msg, v)) != NULL)
            memset(p, '*', n);
    }
}

/* 1 if name is an HTTP token and value has no control characters. */
static int header_ok(const char *name, const char *value)
{
    const unsigned char *p;

    if (name == NULL || value == NULL || name[0] == '\0')
        return 0;
    for (p = (const unsigned char *)name; *p != '\0'; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", *p))
            return 0;
    for (p = (const unsigned char *)value; *p != '\0'; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

/* Headers the transport sets itself; configured ones of that name are
 * ignored so the request stays well formed. */
static int header_reserved(const char *name)
{
    static const char *const reserved[] = {
        "content-type", "content-encoding", "content-length",
        "transfer-encoding", "expect", "te", "grpc-encoding",
        "grpc-accept-encoding", "grpc-timeout"
    };
    size_t i;

    for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcasecmp(name, reserved[i]) == 0)
            return 1;
    return 0;
}

static int add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *n = curl_slist_append(*list, line);

    if (n == NULL)
        return -1;
    *list = n;
    return 0;
}

/* Content type and body encoding of the protocol. */
static int protocol_headers(struct curl_slist **list, const pdti_config *cfg)
{
    const char *codec = cfg->compression == PDT_COMPRESSION_GZIP ? "gzip"
                        : cfg->compression == PDT_COMPRESSION_ZSTD ? "zstd"
                                                                   : NULL;
    char line[64];

    if (cfg->protocol == PDT_PROTOCOL_GRPC) {
        /* Responses are asked for uncompressed: they are a few bytes. */
        if (add_header(list, "Content-Type: application/grpc") != 0 ||
            add_header(list, "TE: trailers") != 0 ||
            add_header(list, "grpc-accept-encoding: identity") != 0)
            return -1;
        if (codec != NULL) {
            snprintf(line, sizeof(line), "grpc-encoding: %s", codec);
            if (add_header(list, line) != 0)
                return -1;
        }
        return 0;
    }
    if (add_header(list, cfg->protocol == PDT_PROTOCOL_HTTP_JSON
                             ? "Content-Type: application/json"
                             : "Content-Type: application/x-protobuf") != 0)
        return -1;
    if (codec != NULL) {
        snprintf(line, sizeof(line), "Content-Encoding: %s", codec);
        if (add_header(list, line) != 0)
            return -1;
    }
    return 0;
}

int pdti_headers_build(struct curl_slist **list, const pdti_config *cfg)
{
    size_t i;

    if (protocol_headers(list, cfg) != 0)
        return -1;
    /* No "Expect: 100-continue" round trip before large bodies. */
    if (add_header(list, "Expect:") != 0)
        return -1;
    for (i = 0; i < cfg->headers.count; i++) {
        const char *k = cfg->headers.items[i].key;
        const char *v = cfg->headers.items[i].value;
        size_t kl, vl;
        char *line;
        int rc;

        if (!header_ok(k, v) || header_reserved(k))
            continue;
        kl = strlen(k);
        vl = strlen(v);
        line = malloc(kl + vl + 3);
        if (line == NULL)
            return -1;
        memcpy(line, k, kl);
        if (vl == 0) {
            /* "name;" is how libcurl sends a header with an empty value. */
            line[kl] = ';';
            line[kl + 1] = '\0';
        } else {
            line[kl] = ':';
            line[kl + 1] = ' ';
            memcpy(line + kl + 2, v, vl + 1);
        }
        rc = add_header(list, line);
        memset(line, 0, kl + vl + 2);
        free(line);
        if (rc != 0)
            return -1;
    }
    return 0;
}

struct curl_slist *pdti_headers_with_timeout(const struct curl_slist *base,
                                             struct curl_slist **slot)
{
    struct curl_slist *list = NULL, *last = NULL;

    *slot = NULL;
    for (; base != NULL; base = base->next)
        if (add_header(&list, base->data) != 0)
            goto fail;
    if (add_header(&list, TIMEOUT_PLACEHOLDER) != 0)
        goto fail;
    for (last = list; last->next != NULL; last = last->next)
        ;
    *slot = last;
    return list;
fail:
    curl_slist_free_all(list);
    return NULL;
}

void pdti_headers_set_timeout(struct curl_slist *slot, int64_t ms)
{
    static const char name[] = "grpc-timeout: ";
    char v[16];
    size_t n;

    if (slot == NULL)
        return;
    pdti_grpc_timeout_value(v, sizeof(v), ms);
    /* The node's string is as long as the placeholder, which holds the
     * longest value there is. */
    n = strlen(v);
    if (sizeof(name) - 1 + n >= sizeof(TIMEOUT_PLACEHOLDER))
        return;
    memcpy(slot->data + sizeof(name) - 1, v, n + 1);
}

int pdti_request_body(const pdti_config *cfg, pdti_compressor **comp,
                      const uint8_t *body, size_t len, pdti_buf *jbody,
                      pdti_buf *zbody, const uint8_t **payload, size_t *plen,
                      char *why, size_t whycap)
{
    int grpc = cfg->protocol == PDT_PROTOCOL_GRPC;
    int zip = cfg->compression == PDT_COMPRESSION_GZIP ||
              cfg->compression == PDT_COMPRESSION_ZSTD;
    uint8_t head[PDTI_GRPC_FRAME_HEADER] = { 0 };
    int st = PDT_OK;

    *payload = body;
    *plen = len;
    if (cfg->protocol == PDT_PROTOCOL_HTTP_JSON) {
        st = pdti_otlp_to_json(body, len, jbody);
        if (st != PDT_OK) {
            snprintf(why, whycap, "converting %zu bytes to OTLP JSON failed "
                     "(%s)", len, st == PDT_ENOMEM ? "out of memory"
                                                   : "not a request");
            return st;
        }
        *payload = body = jbody->data;
        *plen = len = jbody->len;
    }
    if (!zip && !grpc)
        return PDT_OK;
    pdti_buf_reset(zbody);
    if (grpc)
        st = pdti_buf_append(zbody, head, sizeof(head)) == 0 ? PDT_OK
                                                             : PDT_ENOMEM;
    if (st == PDT_OK && zip && *comp == NULL)
        st = pdti_compressor_new(comp, cfg->compression,
                                 cfg->compression_level);
    if (st == PDT_OK && zip)
        st = pdti_compressor_run(*comp, body, len, zbody);
    else if (st == PDT_OK && len > 0)
        st = pdti_buf_append(zbody, body, len) == 0 ? PDT_OK : PDT_ENOMEM;
    if (st == PDT_OK && grpc &&
        zbody->len - sizeof(head) > (size_t)UINT32_MAX)
        st = PDT_EINVAL;
    if (st != PDT_OK) {
        snprintf(why, whycap, "preparing %zu bytes failed (%s)", len,
                 st == PDT_ENOMEM ? "out of memory"
                 : zip            ? "invalid compression level"
                                  : "over 4 GiB");
        return st;
    }
    if (grpc)
        pdti_grpc_frame_header(zbody->data, zip,
                               (uint32_t)(zbody->len - sizeof(head)));
    *payload = zbody->data;
    *plen = zbody->len;
    return PDT_OK;
}
