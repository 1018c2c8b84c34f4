/*
 * Fuzz target for the attribute setters and the encoder: arbitrary bytes
 * become span names, keys, values, event names and traceparents; the span
 * is encoded, and the encoded request must convert to JSON (which checks
 * its structure) with every string valid UTF-8.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <pdtrace.h>

#include "core.h"
#include "json.h"
#include "propagation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pdt_tracer *tracer;

/* Splits the input into NUL-terminated pieces. */
static const char *piece(const uint8_t **p, size_t *n, char *buf,
                         size_t cap)
{
    size_t len = 0;
    while (*n > 0 && **p != 0xff && len + 1 < cap) {
        buf[len++] = (char)(**p == 0 ? 'z' : **p);
        (*p)++;
        (*n)--;
    }
    if (*n > 0) {
        (*p)++;
        (*n)--;
    }
    buf[len] = '\0';
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pdt_span *s = NULL;
    char name[256], key[256], val[1024], tp[128];
    pdti_rec *r;
    pdti_buf body = PDTI_BUF_INIT, json = PDTI_BUF_INIT;

    if (tracer == NULL) {
        pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
        o.ignore_environment = 1;
        o.exporter = PDT_EXPORTER_OTLP;
        o.endpoint = "http://127.0.0.1:9/v1/traces";
        o.attribute_value_length_limit = 100;
        o.attribute_count_limit = 8;
        o.schedule_delay_ms = 3600000;
        o.max_queue_size = 16;
        o.max_export_batch_size = 16;
        if (pdt_tracer_open(&tracer, &o) != PDT_OK)
            return 0;
    }
    piece(&data, &size, name, sizeof(name));
    piece(&data, &size, tp, sizeof(tp));
    if (name[0] == '\0')
        name[0] = 'n', name[1] = '\0';
    if (pdt_span_start(&s, tracer, name, PDT_SPAN_KIND_INTERNAL, NULL, tp,
                       "a=b", 0) != PDT_OK)
        return 0;
    while (size > 0) {
        piece(&data, &size, key, sizeof(key));
        piece(&data, &size, val, sizeof(val));
        if (key[0] == '\0')
            continue;
        pdt_span_set_strn(s, key, val, strlen(val));
        pdt_span_add_event(s, val[0] ? val : "e", 0);
        pdt_span_event_set_str(s, key, val);
    }
    pdt_span_set_status(s, PDT_SPAN_STATUS_ERROR, val);
    /* Freeze and encode the record directly (not through the queue). */
    r = pdti_span_finish(s, 0);
    if (r != NULL) {
        assert(pdti_utf8_valid(r->name.data, r->name.len) == r->name.len);
        assert(pdti_encode_request(tracer->preamble.data, tracer->scope_off,
                                   tracer->preamble.data + tracer->scope_off,
                                   tracer->preamble.len - tracer->scope_off,
                                   &r, 1, &body) == PDT_OK);
        assert(pdti_otlp_to_json(body.data, body.len, &json) == PDT_OK);
        assert(pdti_utf8_valid(json.data, json.len) == json.len);
        pdti_rec_release(&tracer->pool, r);
    }
    pdt_span_free(s);
    pdti_buf_free(&body);
    pdti_buf_free(&json);
    return 0;
}
