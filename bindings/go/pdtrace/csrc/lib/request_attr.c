/*
 * What a P/D request learns after it begins: each leg's target and
 * outcome, and the caller's own attributes.
 */
#include <stdio.h>
#include <string.h>

#include "pdtrace/request.h"
#include "pdtrace/span.h"
#include "error.h"
#include "rec.h"
#include "request.h"
#include "span.h"
#include "tracer_data.h"

/* Splits "scheme://host:port/path", "host:port" or "[v6]:port". */
static void parse_target(const char *s, char *host, size_t hostcap,
                         long *port)
{
    const char *p = strstr(s, "://"), *end, *colon = NULL;
    size_t n;

    *port = -1;
    host[0] = '\0';
    if (p != NULL) {
        if (strncmp(s, "https", 5) == 0)
            *port = 443;
        else if (strncmp(s, "http", 4) == 0)
            *port = 80;
        s = p + 3;
    }
    end = s + strcspn(s, "/?#");
    if (*s == '[') {
        const char *rb = memchr(s, ']', (size_t)(end - s));
        if (rb == NULL)
            return;
        n = (size_t)(rb - s - 1);
        if (n >= hostcap)
            return;
        memcpy(host, s + 1, n);
        host[n] = '\0';
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        n = (size_t)((colon != NULL ? colon : end) - s);
        if (n >= hostcap)
            return;
        memcpy(host, s, n);
        host[n] = '\0';
    }
    if (colon != NULL) {
        long v = 0;
        const char *d = colon + 1;
        if (d == end)
            return;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9' || v > 65535)
                return;
            v = v * 10 + (*d - '0');
        }
        if (v <= 65535)
            *port = v;
    }
}

int pdt_request_set_leg(pdt_request *req, int leg, const char *target,
                        int http_status, const char *error_type)
{
    pdt_span *s;
    int *set_flag, failed, rc = pdti_request_usable(req);
    pdt_tracer *t;
    size_t tlen;

    if (rc != PDT_OK)
        return rc;
    if (leg == PDT_LEG_PREFILL) {
        s = &req->prefill;
        set_flag = &req->prefill_leg_set;
        if (!req->prefill_live)
            return pdti_err(PDT_ESTATE, "no prefill attempt; mark "
                                        "PREFILL_SENT first");
    } else if (leg == PDT_LEG_DECODE) {
        s = &req->decode;
        set_flag = &req->decode_leg_set;
        if (!req->decode_live)
            return pdti_err(PDT_ESTATE, "no decode leg; mark DECODE_SENT "
                                        "first");
    } else {
        return pdti_err(PDT_EINVAL, "leg must be PDT_LEG_PREFILL or "
                                    "PDT_LEG_DECODE");
    }
    if (http_status < 0 || http_status > 999)
        return pdti_err(PDT_EINVAL, "HTTP status %d out of range",
                        http_status);
    tlen = target != NULL ? strlen(target) : 0;
    if (tlen > PDTI_TARGET_MAX)
        return pdti_err(PDT_ELIMIT, "target longer than %d bytes",
                        PDTI_TARGET_MAX);
    if (*set_flag)
        return pdti_err(PDT_ESTATE, "outcome of this leg already set");
    *set_flag = 1;
    t = req->tracer;
    /* Any error type is a failure of the leg (a refused connection, or a
     * 200 whose stream broke off), as is a status of 500 or more. It marks
     * that leg's span only: whether the request failed depends on what
     * the client got (pdt_request_set_response(), or the fallback at
     * pdt_request_end()). */
    failed = http_status >= 500 || error_type != NULL;
    if (failed)
        req->leg_failed = 1;
    if (s->rec != NULL) {
        pdti_rec *r = s->rec;
        if (tlen != 0) {
            char host[256];
            long port;
            parse_target(target, host, sizeof(host), &port);
            if (host[0] != '\0')
                pdti_req_put_str(t, r, PDTI_LIT("server.address"), host);
            if (port >= 0)
                pdti_req_put_int(t, r, PDTI_LIT("server.port"), port);
        }
        if (http_status > 0)
            pdti_req_put_int(t, r, PDTI_LIT("http.response.status_code"), http_status);
        if (error_type != NULL) {
            pdti_req_put_str(t, r, PDTI_LIT("error.type"), error_type);
        } else if (failed) {
            /* OpenTelemetry: without a better type, the status code. */
            char code[16];
            snprintf(code, sizeof(code), "%d", http_status);
            pdti_req_put_str(t, r, PDTI_LIT("error.type"), code);
        }
        if (failed)
            pdt_span_set_status(s, PDT_SPAN_STATUS_ERROR,
                                error_type != NULL ? error_type
                                                   : "upstream error");
    }
    if (req->root.rec != NULL) {
        pdti_rec *r = req->root.rec;
        if (tlen != 0) {
            if (leg == PDT_LEG_PREFILL)
                pdti_req_put_strn(t, r, PDTI_LIT(PDTI_PFX "prefill_target"), target, tlen);
            else
                pdti_req_put_strn(t, r, PDTI_LIT(PDTI_PFX "decode_target"), target, tlen);
        }
        if (leg == PDT_LEG_PREFILL)
            pdti_req_put_int(t, r, PDTI_LIT(PDTI_PFX "prefill.status_code"), http_status);
        else
            pdti_req_put_int(t, r, PDTI_LIT(PDTI_PFX "decode.status_code"), http_status);
    }
    return PDT_OK;
}

int pdt_request_set_str(pdt_request *req, const char *key, const char *value)
{
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    if (value == NULL)
        return pdti_err(PDT_EINVAL, "value is NULL");
    if (key != NULL && strcmp(key, "gen_ai.request.model") == 0) {
        /* Kept as the request's model, as pdt_request_set_model() does:
         * written once at end on the request and decode spans (no
         * duplicate key) and used as the metrics' model label. */
        size_t n = strlen(value);
        if (n == 0 || n > PDTI_MODEL_MAX)
            return pdti_err(PDT_EINVAL, "model name is empty or longer "
                                        "than %d bytes", PDTI_MODEL_MAX);
        memcpy(req->model, value, n + 1);
        return PDT_OK;
    }
    return pdti_span_attr(&req->root, PDTI_ATTR_STR, key, value,
                          strlen(value), 0);
}

int pdt_request_set_int(pdt_request *req, const char *key, int64_t value)
{
    int rc = pdti_request_usable(req);
    return rc != PDT_OK ? rc
                        : pdti_span_attr(&req->root, PDTI_ATTR_INT, key, NULL,
                                         0, value);
}

int pdt_request_set_double(pdt_request *req, const char *key, double value)
{
    int rc = pdti_request_usable(req);
    return rc != PDT_OK ? rc : pdt_span_set_double(&req->root, key, value);
}

int pdt_request_set_bool(pdt_request *req, const char *key, int value)
{
    int rc = pdti_request_usable(req);
    return rc != PDT_OK ? rc
                        : pdti_span_attr(&req->root, PDTI_ATTR_BOOL, key, NULL,
                                         0, value != 0);
}

int pdt_request_set_attrs(pdt_request *req, int leg, const pdt_attr *attrs,
                          size_t n)
{
    pdt_span *s;
    int rc = pdti_request_usable(req);

    if (rc != PDT_OK)
        return rc;
    if (leg < PDT_LEG_REQUEST || leg > PDT_LEG_DECODE)
        return pdti_err(PDT_EINVAL, "leg %d is not a pdt_leg", leg);
    s = pdti_request_leg_span(req, leg);
    if (s == NULL)
        return pdti_err(PDT_ESTATE, "that leg has no span yet");
    return pdt_span_set_attrs(s, attrs, n);
}
