/*
 * The breakdown of a P/D request (true TTFT and its parts, docs/spans.md)
 * and the summary attributes it leaves on the request and decode spans.
 * Runs on the calling thread at pdt_request_end().
 */
#include <math.h>

#include "pdtrace/request.h"
#include "pdtrace/span.h"
#include "attr.h"
#include "rec.h"
#include "request.h"
#include "tracer_data.h"

/* Appends one double attribute to the summary scratch buffer. */
static void summary_double(pdt_request *req, unsigned *n, const char *key,
                           size_t klen, double v)
{
    if (pdti_attr_double_lit(&req->summary, PDTI_TAG_SPAN_ATTR, key, klen, v)
        == PDT_OK)
        (*n)++;
}

/* Copies the summary, encoded once, into a record, within its attribute
 * limit. */
static void add_summary(pdt_request *req, pdti_rec *r, unsigned n)
{
    int64_t limit = req->tracer->cfg.attr_count_limit;

    if ((int64_t)r->nattrs + (int64_t)n > limit) {
        r->dropped_attrs += n;
        PDTI_COUNT(req->tracer, attributes_dropped, n);
        return;
    }
    if (pdti_buf_append(&r->attrs, req->summary.data, req->summary.len) == 0)
        r->nattrs += n;
}

void pdti_request_breakdown(const pdt_request *req, pdt_breakdown *bd)
{
    uint64_t a = req->a, e = req->e;
    double nan = NAN;

    bd->present = 0;
    bd->queue_ms = bd->prefill_ms = bd->kv_transfer_overhead_ms = nan;
    bd->decode_ttft_ms = bd->true_ttft_ms = bd->decode_duration_ms = nan;
    bd->total_ms = bd->tpot_ms = nan;
    bd->mode = req->mode;
    bd->error = req->error;
    bd->output_tokens = req->usage_out >= 0 ? req->usage_out
                        : req->tokens_seen ? req->tokens_counted : -1;

    if (req->ps != 0) {
        bd->queue_ms = pdti_ms_between(a, req->ps);
        bd->present |= PDT_BD_QUEUE;
        if (req->pe != 0) {
            bd->prefill_ms = pdti_ms_between(req->ps, req->pe);
            bd->present |= PDT_BD_PREFILL;
        }
    }
    if (req->mode == PDT_MODE_SEQUENTIAL && req->pe != 0 && req->ds != 0) {
        bd->kv_transfer_overhead_ms = pdti_ms_between(req->pe, req->ds);
        bd->present |= PDT_BD_KV_TRANSFER;
    }
    if (req->ds != 0 && req->f != 0) {
        bd->decode_ttft_ms = pdti_ms_between(req->ds, req->f);
        bd->present |= PDT_BD_DECODE_TTFT;
    }
    if (req->f != 0) {
        bd->true_ttft_ms = pdti_ms_between(a, req->f);
        bd->present |= PDT_BD_TRUE_TTFT;
    }
    if (req->ds != 0) {
        bd->decode_duration_ms = pdti_ms_between(req->ds, e);
        bd->present |= PDT_BD_DECODE_DURATION;
    }
    bd->total_ms = pdti_ms_between(a, e);
    bd->present |= PDT_BD_TOTAL;
    if (req->f != 0 && bd->output_tokens >= 2) {
        bd->tpot_ms = pdti_ms_between(req->f, req->l) / (double)(bd->output_tokens - 1);
        bd->present |= PDT_BD_TPOT;
    }
}

void pdti_request_summary(pdt_request *req, const pdt_breakdown *bd)
{
    pdti_rec *root = req->root.rec, *dec = req->decode.rec;
    unsigned n = 0;

    if (root == NULL && dec == NULL)
        return;
    pdti_buf_reset(&req->summary);
    if (bd->present & PDT_BD_QUEUE)
        summary_double(req, &n, PDTI_LIT(PDTI_PFX "queue_ms"), bd->queue_ms);
    if (bd->present & PDT_BD_PREFILL)
        summary_double(req, &n, PDTI_LIT(PDTI_PFX "prefill_duration_ms"),
                       bd->prefill_ms);
    if (bd->present & PDT_BD_KV_TRANSFER)
        summary_double(req, &n, PDTI_LIT(PDTI_PFX "kv_transfer_overhead_ms"),
                       bd->kv_transfer_overhead_ms);
    if (bd->present & PDT_BD_DECODE_TTFT)
        summary_double(req, &n, PDTI_LIT(PDTI_PFX "decode_ttft_ms"),
                       bd->decode_ttft_ms);
    if (bd->present & PDT_BD_TRUE_TTFT)
        summary_double(req, &n, PDTI_LIT(PDTI_PFX "true_ttft_ms"),
                       bd->true_ttft_ms);
    if (bd->present & PDT_BD_DECODE_DURATION)
        summary_double(req, &n, PDTI_LIT(PDTI_PFX "decode_duration_ms"),
                       bd->decode_duration_ms);
    summary_double(req, &n, PDTI_LIT(PDTI_PFX "total_duration_ms"), bd->total_ms);
    if (bd->present & PDT_BD_TPOT)
        summary_double(req, &n, PDTI_LIT(PDTI_PFX "tpot_ms"), bd->tpot_ms);

    if (root != NULL) {
        add_summary(req, root, n);
        pdti_req_put_str(req->tracer, root, PDTI_LIT(PDTI_PFX "request_id"), req->request_id);
        if (req->connector[0] != '\0')
            pdti_req_put_str(req->tracer, root, PDTI_LIT(PDTI_PFX "connector"), req->connector);
        if (req->model[0] != '\0')
            pdti_req_put_str(req->tracer, root, PDTI_LIT("gen_ai.request.model"),
                    req->model);
        pdti_req_put_bool(req->tracer, root, PDTI_LIT(PDTI_PFX "disaggregation_enabled"),
                      req->mode != PDT_MODE_DECODE_ONLY);
        pdti_req_put_bool(req->tracer, root, PDTI_LIT(PDTI_PFX "concurrent_pd"),
                      req->mode == PDT_MODE_CONCURRENT);
        if (req->reason[0] != '\0')
            pdti_req_put_str(req->tracer, root, PDTI_LIT(PDTI_PFX "reason"), req->reason);
        if (req->tenant[0] != '\0')
            pdti_req_put_str(req->tracer, root, PDTI_LIT("llm_d.tenant"), req->tenant);
        if (req->usage_in >= 0)
            pdti_req_put_int(req->tracer, root, PDTI_LIT("gen_ai.usage.input_tokens"),
                         req->usage_in);
        if (bd->output_tokens >= 0)
            pdti_req_put_int(req->tracer, root, PDTI_LIT("gen_ai.usage.output_tokens"),
                         bd->output_tokens);
        if (req->usage_cached >= 0)
            pdti_req_put_int(req->tracer, root, PDTI_LIT("gen_ai.usage.cache_read.input_tokens"),
                         req->usage_cached);
        if (req->error) {
            if (root->status_code != PDT_SPAN_STATUS_ERROR)
                pdt_span_set_status(&req->root, PDT_SPAN_STATUS_ERROR,
                                    "request failed");
        }
    }
    if (dec != NULL) {
        add_summary(req, dec, n);
        pdti_req_put_str(req->tracer, dec, PDTI_LIT(PDTI_PFX "request_id"), req->request_id);
        /* The labels the published queries filter the decode span by. */
        if (req->connector[0] != '\0')
            pdti_req_put_str(req->tracer, dec, PDTI_LIT(PDTI_PFX "connector"), req->connector);
        if (req->model[0] != '\0')
            pdti_req_put_str(req->tracer, dec, PDTI_LIT("gen_ai.request.model"),
                    req->model);
        pdti_req_put_bool(req->tracer, dec, PDTI_LIT(PDTI_PFX "disaggregation_enabled"),
                      req->mode != PDT_MODE_DECODE_ONLY);
        if (bd->output_tokens >= 0)
            pdti_req_put_int(req->tracer, dec, PDTI_LIT("gen_ai.usage.output_tokens"),
                         bd->output_tokens);
    }
}
