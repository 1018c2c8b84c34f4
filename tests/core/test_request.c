/*
 * P/D requests (docs/spans.md): every breakdown formula with
 * caller timestamps, the span tree, propagation, leg failures, tail
 * sampling, and the order rules of the marks. Spans are read back from the
 * console exporter's OTLP JSON lines.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pdtrace.h"
#include "tutil.h"

#define PFX "llm_d.pd_proxy."
#define MS(ns) ((double)(ns) / 1e6)

typedef struct fx {
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    tspans s;
} fx;

static void fx_open(fx *f)
{
    memset(f, 0, sizeof(*f));
    topts_console(&f->o, f->path);
}

static void fx_start(fx *f)
{
    assert_int_equal(pdt_tracer_open(&f->t, &f->o), PDT_OK);
}

static void fx_finish(fx *f)
{
    tclose_and_load(f->t, f->path, &f->s);
}

static void fx_close(fx *f)
{
    tspans_free(&f->s);
    tpath_remove(f->path);
}

/* A base time well in the past so that every mark is valid. */
static uint64_t base_time(void)
{
    return pdt_now_ns() - 100ull * 1000000000ull;
}

static void assert_dattr(const tspan *sp, const char *key, double want)
{
    const tattr *a = tspan_attr(sp, key);
    if (a == NULL)
        fail_msg("attribute %s missing on %s", key, sp->name);
    assert_int_equal(a->type, 'd');
    if (a->d != want)
        fail_msg("%s = %.17g, want %.17g", key, a->d, want);
}

static void assert_no_attr(const tspan *sp, const char *key)
{
    if (tspan_attr(sp, key) != NULL)
        fail_msg("attribute %s present on %s", key, sp->name);
}

static void assert_sattr(const tspan *sp, const char *key, const char *want)
{
    const tattr *a = tspan_attr(sp, key);
    if (a == NULL)
        fail_msg("attribute %s missing on %s", key, sp->name);
    assert_int_equal(a->type, 's');
    assert_string_equal(a->s, want);
}

static void assert_battr(const tspan *sp, const char *key, int want)
{
    const tattr *a = tspan_attr(sp, key);
    if (a == NULL)
        fail_msg("attribute %s missing on %s", key, sp->name);
    assert_int_equal(a->type, 'b');
    assert_int_equal(a->b, want);
}

static void assert_iattr(const tspan *sp, const char *key, int64_t want)
{
    const tattr *a = tspan_attr(sp, key);
    if (a == NULL)
        fail_msg("attribute %s missing on %s", key, sp->name);
    assert_int_equal(a->type, 'i');
    assert_int_equal(a->i, want);
}

/* Offsets of the sequential scenario, in ns. */
#define D_QUEUE 1234567ull
#define D_PREFILL 20000001ull
#define D_KV 333ull
#define D_DTTFT 7654321ull
#define D_STREAM 90000000ull
#define D_TAIL 1000ull

static void sequential_marks(pdt_request *r, uint64_t a)
{
    uint64_t ps = a + D_QUEUE, pe = ps + D_PREFILL, ds = pe + D_KV,
             f = ds + D_DTTFT, l = f + D_STREAM;

    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, ps), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, pe), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, ds), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, f, 1), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, l, 9), PDT_OK);
}

#define E_OFF (D_QUEUE + D_PREFILL + D_KV + D_DTTFT + D_STREAM + D_TAIL)

static void test_sequential(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    const tspan *req, *dec;
    uint32_t all = PDT_BD_QUEUE | PDT_BD_PREFILL | PDT_BD_KV_TRANSFER |
                   PDT_BD_DECODE_TTFT | PDT_BD_TRUE_TTFT |
                   PDT_BD_DECODE_DURATION | PDT_BD_TOTAL | PDT_BD_TPOT;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_connector(r, "nixlv2"), PDT_OK);
    sequential_marks(r, a);
    assert_int_equal(pdt_request_end(r, a + E_OFF, &bd), PDT_OK);
    pdt_request_free(r);

    assert_int_equal(bd.present, all);
    assert_true(bd.queue_ms == 1.234567);
    assert_true(bd.prefill_ms == 20.000001);
    assert_true(bd.kv_transfer_overhead_ms == 0.000333);
    assert_true(bd.decode_ttft_ms == 7.654321);
    assert_true(bd.true_ttft_ms ==
                MS(D_QUEUE + D_PREFILL + D_KV + D_DTTFT));
    assert_true(fabs(bd.true_ttft_ms -
                     (bd.queue_ms + bd.prefill_ms +
                      bd.kv_transfer_overhead_ms + bd.decode_ttft_ms)) <
                1e-9);
    assert_true(bd.decode_duration_ms == MS(D_DTTFT + D_STREAM + D_TAIL));
    assert_true(bd.total_ms == MS(E_OFF));
    assert_true(bd.tpot_ms == MS(D_STREAM) / 9.0);
    assert_int_equal(bd.output_tokens, 10);
    assert_int_equal(bd.mode, PDT_MODE_SEQUENTIAL);
    assert_int_equal(bd.error, 0);
    assert_int_equal(bd.sampled, 1);
    assert_int_equal(bd.size, sizeof(bd));

    fx_finish(&f);
    assert_int_equal(f.s.n, 3);
    req = tspans_by_name(&f.s, PFX "request", 0);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_non_null(req);
    assert_non_null(dec);
    assert_non_null(tspans_by_name(&f.s, PFX "prefill", 0));
    assert_dattr(req, PFX "queue_ms", 1.234567);
    assert_dattr(req, PFX "prefill_duration_ms", 20.000001);
    assert_dattr(req, PFX "kv_transfer_overhead_ms", 0.000333);
    assert_dattr(req, PFX "decode_ttft_ms", 7.654321);
    assert_dattr(req, PFX "true_ttft_ms", bd.true_ttft_ms);
    assert_dattr(req, PFX "decode_duration_ms", bd.decode_duration_ms);
    assert_dattr(req, PFX "total_duration_ms", bd.total_ms);
    assert_dattr(req, PFX "tpot_ms", bd.tpot_ms);
    assert_iattr(req, "gen_ai.usage.output_tokens", 10);
    assert_sattr(req, PFX "connector", "nixlv2");
    assert_battr(req, PFX "disaggregation_enabled", 1);
    assert_battr(req, PFX "concurrent_pd", 0);
    assert_no_attr(req, PFX "reason");
    /* Span times are the marks. */
    assert_int_equal(req->end - req->start, E_OFF);
    assert_int_equal(dec->end - dec->start, D_DTTFT + D_STREAM + D_TAIL);
    assert_int_equal(dec->start - req->start, D_QUEUE + D_PREFILL + D_KV);
    fx_close(&f);
}

static void test_concurrent(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    const tspan *req, *dec;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_CONCURRENT, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_set_connector(r, "sglang"), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 1000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 5000000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 9000000),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 12000000, &bd), PDT_OK);
    pdt_request_free(r);

    assert_false(bd.present & PDT_BD_KV_TRANSFER);
    assert_true(isnan(bd.kv_transfer_overhead_ms));
    assert_true(bd.queue_ms == 0.001);
    assert_true(bd.prefill_ms == MS(5000000 - 1000));
    assert_true(bd.decode_ttft_ms == MS(9000000 - 1000));
    assert_true(bd.true_ttft_ms == 9.0);
    assert_true(bd.decode_duration_ms == MS(12000000 - 1000));
    assert_true(bd.total_ms == 12.0);
    assert_int_equal(bd.mode, PDT_MODE_CONCURRENT);

    fx_finish(&f);
    assert_int_equal(f.s.n, 3);
    req = tspans_by_name(&f.s, PFX "request", 0);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_non_null(req);
    assert_non_null(dec);
    assert_no_attr(req, PFX "kv_transfer_overhead_ms");
    assert_no_attr(dec, PFX "kv_transfer_overhead_ms");
    assert_battr(req, PFX "concurrent_pd", 1);
    assert_battr(req, PFX "disaggregation_enabled", 1);
    assert_dattr(req, PFX "queue_ms", 0.001);
    assert_dattr(req, PFX "true_ttft_ms", 9.0);
    assert_dattr(dec, PFX "true_ttft_ms", 9.0);
    assert_dattr(req, PFX "total_duration_ms", 12.0);
    fx_close(&f);
}

static void test_decode_only(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    const tspan *req;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY,
                                          "short prompt"), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 10),
                     PDT_EINVAL);
    assert_true(pdt_last_error()[0] != '\0');
    assert_null(pdt_request_span(r, PDT_LEG_PREFILL));
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 2000000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 3000000),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 4000000, &bd), PDT_OK);
    pdt_request_free(r);

    assert_int_equal(bd.present, PDT_BD_DECODE_TTFT | PDT_BD_TRUE_TTFT |
                                 PDT_BD_DECODE_DURATION | PDT_BD_TOTAL);
    assert_true(isnan(bd.queue_ms) && isnan(bd.prefill_ms));
    assert_true(bd.true_ttft_ms == 3.0);
    assert_int_equal(bd.mode, PDT_MODE_DECODE_ONLY);

    fx_finish(&f);
    assert_int_equal(f.s.n, 2);
    assert_int_equal(tspans_count_name(&f.s, PFX "prefill"), 0);
    req = tspans_by_name(&f.s, PFX "request", 0);
    assert_non_null(req);
    assert_battr(req, PFX "disaggregation_enabled", 0);
    assert_sattr(req, PFX "reason", "short prompt");
    assert_no_attr(req, PFX "queue_ms");
    assert_no_attr(req, PFX "prefill_duration_ms");
    assert_no_attr(req, PFX "kv_transfer_overhead_ms");
    assert_dattr(req, PFX "true_ttft_ms", 3.0);
    fx_close(&f);
}

static void test_missing_marks(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    const tspan *req, *dec;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    /* 1: prefill only, decode never sent (e.g. prefill failed). */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "only-prefill"), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 100),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 300),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 1000, &bd), PDT_OK);
    pdt_request_free(r);
    assert_int_equal(bd.present, PDT_BD_QUEUE | PDT_BD_PREFILL |
                                 PDT_BD_TOTAL);
    assert_true(isnan(bd.kv_transfer_overhead_ms));
    assert_true(isnan(bd.decode_ttft_ms));
    assert_true(isnan(bd.true_ttft_ms));
    assert_true(isnan(bd.decode_duration_ms));
    assert_true(isnan(bd.tpot_ms));
    assert_int_equal(bd.output_tokens, -1);

    /* 2: decode sent, no token ever forwarded. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "no-token"), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 100),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 300),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 400),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 1000, &bd), PDT_OK);
    pdt_request_free(r);
    assert_int_equal(bd.present, PDT_BD_QUEUE | PDT_BD_PREFILL |
                                 PDT_BD_KV_TRANSFER |
                                 PDT_BD_DECODE_DURATION | PDT_BD_TOTAL);
    assert_true(isnan(bd.decode_ttft_ms) && isnan(bd.true_ttft_ms));

    fx_finish(&f);
    assert_int_equal(f.s.n, 5);
    req = tspans_by_name(&f.s, PFX "request", 0);
    assert_non_null(req);
    assert_sattr(req, PFX "request_id", "only-prefill");
    assert_dattr(req, PFX "queue_ms", 0.0001);
    assert_dattr(req, PFX "prefill_duration_ms", 0.0002);
    assert_dattr(req, PFX "total_duration_ms", 0.001);
    assert_no_attr(req, PFX "kv_transfer_overhead_ms");
    assert_no_attr(req, PFX "decode_ttft_ms");
    assert_no_attr(req, PFX "true_ttft_ms");
    assert_no_attr(req, PFX "decode_duration_ms");
    assert_no_attr(req, PFX "tpot_ms");
    assert_no_attr(req, "gen_ai.usage.output_tokens");

    req = tspans_by_name(&f.s, PFX "request", 1);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_non_null(req);
    assert_non_null(dec);
    assert_sattr(req, PFX "request_id", "no-token");
    assert_dattr(req, PFX "kv_transfer_overhead_ms", 0.0001);
    assert_dattr(req, PFX "decode_duration_ms", 0.0006);
    assert_no_attr(req, PFX "decode_ttft_ms");
    assert_no_attr(req, PFX "true_ttft_ms");
    assert_no_attr(dec, PFX "true_ttft_ms");
    assert_no_attr(req, PFX "tpot_ms");
    fx_close(&f);
}

static void test_tpot(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a, ds;
    const tspan *sp;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    ds = a + 1000;

    /* One token: no tpot. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, ds), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 1000000, 1), PDT_OK);
    assert_int_equal(pdt_request_end(r, ds + 3000000, &bd), PDT_OK);
    pdt_request_free(r);
    assert_false(bd.present & PDT_BD_TPOT);
    assert_true(isnan(bd.tpot_ms));
    assert_int_equal(bd.output_tokens, 1);

    /* Zero-token chunks move the marks but do not count. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, ds), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 1000000, 0), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 2000000, 1), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 3000000, 2), PDT_OK);
    assert_int_equal(pdt_request_end(r, ds + 4000000, &bd), PDT_OK);
    pdt_request_free(r);
    assert_true(bd.present & PDT_BD_TPOT);
    assert_int_equal(bd.output_tokens, 3);
    assert_true(bd.decode_ttft_ms == 1.0);
    assert_true(bd.tpot_ms == 1.0); /* (3 ms - 1 ms) / (3 - 1) */

    /* Usage overrides the counted tokens: 5 tokens, not 2. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "usage-5"), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, ds), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 1000000, 1), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 9000000, 1), PDT_OK);
    assert_int_equal(pdt_request_set_usage(r, 100, 5, 40), PDT_OK);
    assert_int_equal(pdt_request_end(r, ds + 9000000, &bd), PDT_OK);
    pdt_request_free(r);
    assert_int_equal(bd.output_tokens, 5);
    assert_true(bd.tpot_ms == 2.0);

    /* Usage of 1 output token wins over 10 counted: no tpot. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, ds), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 1000000, 5), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 2000000, 5), PDT_OK);
    assert_int_equal(pdt_request_set_usage(r, -1, 1, -1), PDT_OK);
    assert_int_equal(pdt_request_end(r, ds + 3000000, &bd), PDT_OK);
    pdt_request_free(r);
    assert_int_equal(bd.output_tokens, 1);
    assert_false(bd.present & PDT_BD_TPOT);

    /* Unknown usage (negative) falls back to the counted tokens. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, ds), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 1000000, 2), PDT_OK);
    assert_int_equal(pdt_request_tokens(r, ds + 2000000, 2), PDT_OK);
    assert_int_equal(pdt_request_set_usage(r, -1, -1, -1), PDT_OK);
    assert_int_equal(pdt_request_end(r, ds + 3000000, &bd), PDT_OK);
    pdt_request_free(r);
    assert_int_equal(bd.output_tokens, 4);
    assert_true(bd.tpot_ms == 1.0 / 3.0);

    fx_finish(&f);
    sp = NULL;
    {
        size_t i;
        for (i = 0; i < 5 && sp == NULL; i++) {
            const tspan *c = tspans_by_name(&f.s, PFX "request", i);
            const tattr *id = tspan_attr(c, PFX "request_id");
            if (id != NULL && strcmp(id->s, "usage-5") == 0)
                sp = c;
        }
    }
    assert_non_null(sp);
    assert_dattr(sp, PFX "tpot_ms", 2.0);
    assert_iattr(sp, "gen_ai.usage.output_tokens", 5);
    assert_iattr(sp, "gen_ai.usage.input_tokens", 100);
    assert_iattr(sp, "gen_ai.usage.cache_read.input_tokens", 40);
    fx_close(&f);
}

static void test_prefill_retries(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    const tspan *req, *p1, *p2;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1000000),
                     PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_PREFILL, "p1:8000", 503,
                                         NULL), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 2000000),
                     PDT_OK);
    /* A retry may not start before the previous attempt ended. */
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1500000),
                     PDT_ERANGE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 3000000),
                     PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_PREFILL, "p2:8000", 200,
                                         NULL), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 7000000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 8000000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 9000000),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 10000000, &bd), PDT_OK);
    pdt_request_free(r);

    assert_true(bd.queue_ms == 1.0);
    assert_true(bd.prefill_ms == 6.0);
    assert_true(bd.kv_transfer_overhead_ms == 1.0);
    assert_true(bd.true_ttft_ms == 9.0);

    fx_finish(&f);
    assert_int_equal(f.s.n, 4);
    assert_int_equal(tspans_count_name(&f.s, PFX "prefill"), 2);
    req = tspans_by_name(&f.s, PFX "request", 0);
    p1 = tspans_by_name(&f.s, PFX "prefill", 0);
    p2 = tspans_by_name(&f.s, PFX "prefill", 1);
    assert_non_null(req);
    if (p1->start > p2->start) {
        const tspan *x = p1;
        p1 = p2;
        p2 = x;
    }
    assert_string_not_equal(p1->span_id, p2->span_id);
    assert_string_equal(p1->parent_id, req->span_id);
    assert_string_equal(p2->parent_id, req->span_id);
    assert_int_equal(p1->start - req->start, 1000000);
    assert_int_equal(p1->end - req->start, 2000000);
    assert_int_equal(p2->start - req->start, 3000000);
    assert_int_equal(p2->end - req->start, 7000000);
    assert_int_equal(p1->status_code, PDT_SPAN_STATUS_ERROR);
    assert_int_not_equal(p2->status_code, PDT_SPAN_STATUS_ERROR);
    assert_sattr(p1, "server.address", "p1");
    assert_sattr(p2, "server.address", "p2");
    assert_dattr(req, PFX "queue_ms", 1.0);
    assert_dattr(req, PFX "prefill_duration_ms", 6.0);
    fx_close(&f);
}

static void test_out_of_order(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    (void)state;

    o.exporter = PDT_EXPORTER_NONE;
    o.ignore_environment = 1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    a = base_time();

    /* Arrival in the future. */
    r = (pdt_request *)&o;
    assert_int_equal(pdt_request_begin(&r, t, NULL, NULL,
                                       pdt_now_ns() + 60000000000ull),
                     PDT_ERANGE);
    assert_null(r);

    assert_int_equal(pdt_request_begin(&r, t, NULL, NULL, a), PDT_OK);
    /* Before arrival. */
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a - 1),
                     PDT_ERANGE);
    assert_true(pdt_last_error()[0] != '\0');
    /* In the future. */
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT,
                                      pdt_now_ns() + 60000000000ull),
                     PDT_ERANGE);
    /* Decode before prefill was sent, then before it was done. */
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 10),
                     PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 10),
                     PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 100),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 200),
                     PDT_ESTATE);
    assert_null(pdt_request_span(r, PDT_LEG_DECODE));
    /* Repeated mark. */
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 150),
                     PDT_ESTATE);
    /* Done before sent. */
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 50),
                     PDT_ERANGE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 300),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 301),
                     PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 299),
                     PDT_ERANGE);
    /* Tokens and first token need the decode leg. */
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 400),
                     PDT_ESTATE);
    assert_int_equal(pdt_request_tokens(r, a + 400, 1), PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_LAST_TOKEN, a + 400),
                     PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 400),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 401),
                     PDT_ESTATE);
    /* Mode can no longer change. */
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_CONCURRENT, NULL),
                     PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 399),
                     PDT_ERANGE);
    assert_int_equal(pdt_request_mark(r, 99, a + 500), PDT_EINVAL);
    assert_int_equal(pdt_request_mark(r, 0, a + 500), PDT_EINVAL);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 500),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + 501),
                     PDT_ESTATE);
    assert_int_equal(pdt_request_tokens(r, a + 450, 1), PDT_ERANGE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_LAST_TOKEN, a + 900),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_LAST_TOKEN, a + 800),
                     PDT_ERANGE);
    /* End before the last mark: clamped, still recorded. */
    assert_int_equal(pdt_request_end(r, a + 700, &bd), PDT_ERANGE);
    assert_true(pdt_last_error()[0] != '\0');
    assert_true(bd.total_ms == 0.0009);
    assert_true(bd.decode_duration_ms == 0.0005);
    /* The refused marks changed nothing. */
    assert_true(bd.queue_ms == 0.0001);
    assert_true(bd.prefill_ms == 0.0002);
    assert_true(bd.kv_transfer_overhead_ms == 0.0001);
    assert_true(bd.decode_ttft_ms == 0.0001);
    /* After end. */
    assert_int_equal(pdt_request_end(r, 0, NULL), PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_LAST_TOKEN, 0), PDT_ESTATE);
    assert_int_equal(pdt_request_tokens(r, 0, 1), PDT_ESTATE);
    assert_int_equal(pdt_request_set_usage(r, 1, 2, 3), PDT_ESTATE);
    assert_int_equal(pdt_request_set_id(r, "x"), PDT_ESTATE);
    assert_int_equal(pdt_request_set_str(r, "k", "v"), PDT_ESTATE);
    assert_int_equal(pdt_request_set_response(r, 200, NULL), PDT_ESTATE);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_DECODE, NULL, 200, NULL),
                     PDT_ESTATE);
    pdt_request_free(r);

    /* Sequential decode without any prefill. */
    assert_int_equal(pdt_request_begin(&r, t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 1),
                     PDT_ESTATE);
    /* A future end is refused (ERANGE) but still ends the request. */
    assert_int_equal(pdt_request_end(r, pdt_now_ns() + 60000000000ull, &bd),
                     PDT_ERANGE);
    assert_int_equal(pdt_request_end(r, 0, &bd), PDT_ESTATE);
    pdt_request_free(r);
    assert_int_equal(pdt_tracer_close(t, 1000, NULL), PDT_OK);
}

static void test_submicrosecond(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    const tspan *req;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1234567),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE,
                                      a + 1234567 + 1), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT,
                                      a + 1234567 + 1 + 999), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN,
                                      a + 1234567 + 1 + 999 + 123456789),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 1234567 + 1 + 999 + 123456789,
                                     &bd), PDT_OK);
    pdt_request_free(r);
    assert_true(bd.queue_ms == 1.234567);
    assert_true(bd.prefill_ms == 0.000001);
    assert_true(bd.kv_transfer_overhead_ms == 0.000999);
    assert_true(bd.decode_ttft_ms == 123.456789);
    assert_true(bd.true_ttft_ms == 124.692356);
    fx_finish(&f);
    req = tspans_by_name(&f.s, PFX "request", 0);
    assert_non_null(req);
    assert_dattr(req, PFX "queue_ms", 1.234567);
    assert_dattr(req, PFX "prefill_duration_ms", 0.000001);
    assert_dattr(req, PFX "kv_transfer_overhead_ms", 0.000999);
    assert_dattr(req, PFX "decode_ttft_ms", 123.456789);
    assert_dattr(req, PFX "true_ttft_ms", 124.692356);
    fx_close(&f);
}

static void test_leg_failures(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint64_t a;
    const tspan *req, *pre, *dec;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();

    /* Prefill answered 503. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "p503"), PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_PREFILL, "p:1", 200,
                                         NULL), PDT_ESTATE);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 10),
                     PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_PREFILL,
                                         "http://10.0.0.7:8000/v1", 503,
                                         NULL), PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_PREFILL, NULL, 503,
                                         NULL), PDT_ESTATE);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_REQUEST, NULL, 503,
                                         NULL), PDT_EINVAL);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 20),
                     PDT_OK);
    assert_int_equal(pdt_request_set_response(r, 503, NULL), PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 30, &bd), PDT_OK);
    pdt_request_free(r);
    assert_true(bd.error);

    /* Decode connection refused: no HTTP status, an error type. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "d0"), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 10),
                     PDT_OK);
    {
        /* A target longer than 4096 bytes is refused, and the leg can
         * still be set. */
        char longt[4200];
        memset(longt, 'h', sizeof(longt) - 1);
        longt[sizeof(longt) - 1] = '\0';
        assert_int_equal(pdt_request_set_leg(r, PDT_LEG_DECODE, longt, 0,
                                             "x"), PDT_ELIMIT);
    }
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_DECODE, "[::1]:9000", 0,
                                         "connection_refused"), PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 30, &bd), PDT_OK);
    pdt_request_free(r);
    assert_true(bd.error);

    /* A 4xx from decode without an error type is not a leg failure. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "d404"), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 10),
                     PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_DECODE,
                                         "https://dec.example/v1?x=1", 404,
                                         NULL), PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 30, &bd), PDT_OK);
    pdt_request_free(r);
    assert_false(bd.error);

    fx_finish(&f);
    assert_int_equal(f.s.n, 6);
    req = tspans_by_name(&f.s, PFX "request", 0);
    pre = tspans_by_name(&f.s, PFX "prefill", 0);
    assert_non_null(req);
    assert_non_null(pre);
    assert_sattr(req, PFX "request_id", "p503");
    assert_int_equal(pre->status_code, PDT_SPAN_STATUS_ERROR);
    assert_int_equal(req->status_code, PDT_SPAN_STATUS_ERROR);
    assert_iattr(pre, "http.response.status_code", 503);
    assert_sattr(pre, "server.address", "10.0.0.7");
    assert_iattr(pre, "server.port", 8000);
    assert_iattr(req, PFX "prefill.status_code", 503);
    assert_sattr(req, PFX "prefill_target", "http://10.0.0.7:8000/v1");
    assert_iattr(req, "http.response.status_code", 503);
    /* OpenTelemetry: error.type is set when a request fails; for an HTTP
     * error without a better type, the status code. */
    assert_sattr(pre, "error.type", "503");

    req = tspans_by_name(&f.s, PFX "request", 1);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_non_null(req);
    assert_non_null(dec);
    assert_sattr(req, PFX "request_id", "d0");
    assert_int_equal(dec->status_code, PDT_SPAN_STATUS_ERROR);
    assert_int_equal(req->status_code, PDT_SPAN_STATUS_ERROR);
    assert_sattr(dec, "error.type", "connection_refused");
    assert_non_null(dec->status_msg);
    assert_string_equal(dec->status_msg, "connection_refused");
    assert_sattr(dec, "server.address", "::1");
    assert_iattr(dec, "server.port", 9000);
    assert_no_attr(dec, "http.response.status_code");
    assert_iattr(req, PFX "decode.status_code", 0);

    req = tspans_by_name(&f.s, PFX "request", 2);
    dec = tspans_by_name(&f.s, PFX "decode", 1);
    assert_sattr(req, PFX "request_id", "d404");
    assert_int_not_equal(dec->status_code, PDT_SPAN_STATUS_ERROR);
    assert_int_not_equal(req->status_code, PDT_SPAN_STATUS_ERROR);
    assert_iattr(dec, "http.response.status_code", 404);
    /* A URL without a port: the scheme's. */
    assert_sattr(dec, "server.address", "dec.example");
    assert_iattr(dec, "server.port", 443);
    assert_sattr(req, PFX "decode_target", "https://dec.example/v1?x=1");
    fx_close(&f);
}

static void test_free_without_end(void **state)
{
    fx f;
    pdt_request *r;
    uint64_t a;
    const tspan *req, *dec;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, NULL),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 10),
                     PDT_OK);
    pdt_request_free(r);

    /* Abandoned after the response status was already known. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_response(r, 200, NULL), PDT_OK);
    pdt_request_free(r);

    fx_finish(&f);
    assert_int_equal(f.s.n, 3);
    req = tspans_by_name(&f.s, PFX "request", 0);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_non_null(req);
    assert_non_null(dec);
    assert_int_equal(req->status_code, PDT_SPAN_STATUS_ERROR);
    assert_sattr(req, "error.type", "abandoned");
    assert_true(dec->end >= dec->start);
    assert_true(req->end >= dec->end);
    req = tspans_by_name(&f.s, PFX "request", 1);
    assert_non_null(req);
    assert_int_equal(req->status_code, PDT_SPAN_STATUS_ERROR);
    assert_sattr(req, "error.type", "abandoned");
    fx_close(&f);
}

#define IN_TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define IN_SPAN "00f067aa0ba902b7"

static void test_inject_and_tree(void **state)
{
    fx f;
    pdt_request *r;
    pdt_propagation pp = PDT_PROPAGATION_INIT, pd = PDT_PROPAGATION_INIT,
                    pr = PDT_PROPAGATION_INIT, pp2 = PDT_PROPAGATION_INIT;
    pdt_propagation small = PDT_PROPAGATION_INIT;
    char root_trace[33], root_span[17];
    uint64_t a;
    const tspan *req, *pre, *dec;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, "00-" IN_TRACE "-" IN_SPAN
                                       "-01", "vendor=abc,other=x y", a),
                     PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "req-42"), PDT_OK);
    assert_string_equal(pdt_request_id(r), "req-42");
    /* Headers built before the SENT marks. */
    assert_int_equal(pdt_request_inject(r, PDT_LEG_PREFILL, &pp), PDT_OK);
    assert_int_equal(pdt_request_inject(r, PDT_LEG_DECODE, &pd), PDT_OK);
    assert_int_equal(pdt_request_inject(r, PDT_LEG_REQUEST, &pr), PDT_OK);
    small.size = sizeof(small) - 1;
    assert_int_equal(pdt_request_inject(r, PDT_LEG_DECODE, &small),
                     PDT_EINVAL);
    assert_int_equal(pdt_request_inject(r, 7, &pd), PDT_EINVAL);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 10),
                     PDT_OK);
    /* After the mark, the same id. */
    assert_int_equal(pdt_request_inject(r, PDT_LEG_PREFILL, &pp2), PDT_OK);
    assert_string_equal(pp.traceparent, pp2.traceparent);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 20),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 30),
                     PDT_OK);
    assert_int_equal(pdt_span_ids(pdt_request_span(r, PDT_LEG_REQUEST),
                                  root_trace, root_span), PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 40, NULL), PDT_OK);
    /* Inject still works after end; the request id and tracestate are
     * borrowed from the request and live until free. */
    assert_int_equal(pdt_request_inject(r, PDT_LEG_DECODE, &pd), PDT_OK);
    assert_string_equal(pd.request_id, "req-42");
    assert_string_equal(pp.request_id, "req-42");
    assert_non_null(pd.tracestate);
    assert_string_equal(pd.tracestate, "vendor=abc,other=x y");
    assert_string_equal(root_trace, IN_TRACE);

    fx_finish(&f);
    pdt_request_free(r);
    assert_int_equal(f.s.n, 3);
    req = tspans_by_name(&f.s, PFX "request", 0);
    pre = tspans_by_name(&f.s, PFX "prefill", 0);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_non_null(req);
    assert_non_null(pre);
    assert_non_null(dec);
    {
        char want[64];
        snprintf(want, sizeof(want), "00-%s-%s-01", IN_TRACE, pre->span_id);
        assert_string_equal(pp.traceparent, want);
        snprintf(want, sizeof(want), "00-%s-%s-01", IN_TRACE, dec->span_id);
        assert_string_equal(pd.traceparent, want);
        snprintf(want, sizeof(want), "00-%s-%s-01", IN_TRACE, req->span_id);
        assert_string_equal(pr.traceparent, want);
    }
    assert_string_equal(req->span_id, root_span);
    /* The tree: request under the inbound parent, legs siblings. */
    assert_string_equal(req->trace_id, IN_TRACE);
    assert_string_equal(pre->trace_id, IN_TRACE);
    assert_string_equal(dec->trace_id, IN_TRACE);
    assert_string_equal(req->parent_id, IN_SPAN);
    assert_string_equal(pre->parent_id, req->span_id);
    assert_string_equal(dec->parent_id, req->span_id);
    assert_int_equal(req->kind, PDT_SPAN_KIND_SERVER);
    assert_int_equal(pre->kind, PDT_SPAN_KIND_CLIENT);
    assert_int_equal(dec->kind, PDT_SPAN_KIND_CLIENT);
    /* Span.flags: sampled, and whether the parent is remote. */
    assert_int_equal(req->flags, 0x301);
    assert_int_equal(pre->flags, 0x101);
    assert_int_equal(dec->flags, 0x101);
    assert_non_null(req->trace_state);
    assert_string_equal(req->trace_state, "vendor=abc,other=x y");
    assert_non_null(dec->trace_state);
    assert_string_equal(dec->trace_state, "vendor=abc,other=x y");
    assert_sattr(req, PFX "request_id", "req-42");
    assert_sattr(dec, PFX "request_id", "req-42");
    /* Resource and scope (docs/spans.md). */
    {
        const tattr *sn = tres_attr(&f.s, req, "service.name");
        const tattr *sdk = tres_attr(&f.s, req, "telemetry.sdk.name");
        const tattr *pid = tres_attr(&f.s, req, "process.pid");
        assert_non_null(sn);
        assert_string_equal(sn->s, "llm-d-pd-proxy");
        assert_non_null(sdk);
        assert_string_equal(sdk->s, "libpdtrace");
        assert_non_null(pid);
        assert_int_equal(pid->type, 'i');
        assert_non_null(tres_attr(&f.s, req, "host.name"));
        assert_non_null(tres_attr(&f.s, req, "telemetry.sdk.version"));
        assert_non_null(tres_attr(&f.s, req, "telemetry.sdk.language"));
        assert_non_null(req->scope_name);
        assert_string_equal(req->scope_name, "libpdtrace");
        assert_string_equal(req->scope_version, pdt_version());
    }
    fx_close(&f);
}

static void test_request_id_default(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_request *r1, *r2;
    char long_id[300];
    (void)state;

    o.exporter = PDT_EXPORTER_NONE;
    o.ignore_environment = 1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_request_begin(&r1, t, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_request_begin(&r2, t, NULL, NULL, 0), PDT_OK);
    assert_int_equal(strlen(pdt_request_id(r1)), 36);
    assert_string_not_equal(pdt_request_id(r1), pdt_request_id(r2));
    {
        /* A version 4 UUID: 8-4-4-4-12 lowercase hex, version nibble 4,
         * variant bits 10. */
        const char *id = pdt_request_id(r1);
        int i;
        for (i = 0; i < 36; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                assert_int_equal(id[i], '-');
            else
                assert_non_null(strchr("0123456789abcdef", id[i]));
        }
        assert_int_equal(id[14], '4');
        assert_non_null(strchr("89ab", id[19]));
    }
    assert_int_equal(pdt_request_set_id(r1, ""), PDT_EINVAL);
    assert_int_equal(pdt_request_set_id(r1, "bad id"), PDT_EINVAL);
    assert_int_equal(pdt_request_set_id(r1, "bad\r\nid"), PDT_EINVAL);
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_int_not_equal(pdt_request_set_id(r1, long_id), PDT_OK);
    assert_int_equal(strlen(pdt_request_id(r1)), 36);
    assert_null(pdt_request_id(NULL));
    pdt_request_free(r1);
    pdt_request_free(r2);
    assert_int_equal(pdt_tracer_close(t, 1000, NULL), PDT_OK);
}

static void test_summary_mirrored(void **state)
{
    fx f;
    pdt_request *r;
    uint64_t a;
    const tspan *req, *dec;
    size_t i, n = 0;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    sequential_marks(r, a);
    assert_int_equal(pdt_request_set_usage(r, 1000, 10, 500), PDT_OK);
    assert_int_equal(pdt_request_end(r, a + E_OFF, NULL), PDT_OK);
    pdt_request_free(r);
    fx_finish(&f);
    req = tspans_by_name(&f.s, PFX "request", 0);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_non_null(req);
    assert_non_null(dec);
    for (i = 0; i < req->nattrs; i++) {
        const tattr *x = &req->attrs[i], *y;
        size_t kl = strlen(x->key);
        if (strncmp(x->key, PFX, strlen(PFX)) != 0 || kl < 3 ||
            strcmp(x->key + kl - 3, "_ms") != 0)
            continue;
        n++;
        y = tspan_attr(dec, x->key);
        if (y == NULL)
            fail_msg("%s not mirrored on the decode span", x->key);
        assert_int_equal(y->type, 'd');
        assert_memory_equal(&x->d, &y->d, sizeof(double));
        assert_int_equal(tspan_attr_count(dec, x->key), 1);
        assert_int_equal(tspan_attr_count(req, x->key), 1);
    }
    assert_int_equal(n, 8);
    assert_iattr(dec, "gen_ai.usage.output_tokens", 10);
    assert_non_null(tspan_attr(req, PFX "request_id"));
    assert_sattr(dec, PFX "request_id", tspan_attr(req, PFX "request_id")->s);
    /* The prefill span carries none of the summary. */
    assert_no_attr(tspans_by_name(&f.s, PFX "prefill", 0),
                   PFX "true_ttft_ms");
    fx_close(&f);
}

/* Connector, model and disaggregation_enabled go on the decode span too,
 * once each on either span, whichever call set the model. */
static void test_labels_mirrored(void **state)
{
    fx f;
    pdt_request *r;
    uint64_t a;
    const tspan *req, *dec;
    static const char *const keys[] = {
        PFX "connector", "gen_ai.request.model", PFX "disaggregation_enabled",
    };
    size_t i, k;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    a = base_time();
    /* 1: pdt_request_set_model(), sequential. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "m1"), PDT_OK);
    assert_int_equal(pdt_request_set_connector(r, "nixlv2"), PDT_OK);
    assert_int_equal(pdt_request_set_model(r, "model-a"), PDT_OK);
    assert_int_equal(pdt_request_set_tenant(r, "team\xff" "a"), PDT_OK);
    sequential_marks(r, a);
    assert_int_equal(pdt_request_end(r, a + E_OFF, NULL), PDT_OK);
    pdt_request_free(r);
    /* 2: the model through pdt_request_set_str(), set twice (the second
     * wins), decode-only. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "m2"), PDT_OK);
    assert_int_equal(pdt_request_set_connector(r, "lmcache"), PDT_OK);
    assert_int_equal(pdt_request_set_mode(r, PDT_MODE_DECODE_ONLY, "short"),
                     PDT_OK);
    assert_int_equal(pdt_request_set_str(r, "gen_ai.request.model", "old"),
                     PDT_OK);
    assert_int_equal(pdt_request_set_str(r, "gen_ai.request.model",
                                         "model-b"), PDT_OK);
    /* The same limits as pdt_request_set_model(). */
    assert_int_equal(pdt_request_set_str(r, "gen_ai.request.model", ""),
                     PDT_EINVAL);
    {
        char longm[300];
        memset(longm, 'm', sizeof(longm) - 1);
        longm[sizeof(longm) - 1] = '\0';
        assert_int_equal(pdt_request_set_str(r, "gen_ai.request.model",
                                             longm), PDT_EINVAL);
    }
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 10),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + 30, NULL), PDT_OK);
    pdt_request_free(r);
    /* 3: no connector, no model: neither span has them. */
    assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, "m3"), PDT_OK);
    sequential_marks(r, a);
    assert_int_equal(pdt_request_end(r, a + E_OFF, NULL), PDT_OK);
    pdt_request_free(r);
    fx_finish(&f);

    for (i = 0; i < 3; i++) {
        req = tspans_by_name(&f.s, PFX "request", i);
        dec = tspans_by_name(&f.s, PFX "decode", i);
        assert_non_null(req);
        assert_non_null(dec);
        for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            size_t want = i == 2 && k < 2 ? 0 : 1;
            assert_int_equal(tspan_attr_count(req, keys[k]), want);
            assert_int_equal(tspan_attr_count(dec, keys[k]), want);
        }
        assert_no_attr(dec, PFX "reason");
        assert_no_attr(dec, PFX "concurrent_pd");
    }
    req = tspans_by_name(&f.s, PFX "request", 0);
    dec = tspans_by_name(&f.s, PFX "decode", 0);
    assert_sattr(req, PFX "request_id", "m1");
    assert_sattr(dec, PFX "connector", "nixlv2");
    assert_sattr(dec, "gen_ai.request.model", "model-a");
    assert_battr(dec, PFX "disaggregation_enabled", 1);
    /* The tenant: on the request span only, once, as valid UTF-8. */
    assert_sattr(req, "llm_d.tenant", "team\xef\xbf\xbd" "a");
    assert_int_equal(tspan_attr_count(req, "llm_d.tenant"), 1);
    assert_no_attr(dec, "llm_d.tenant");
    assert_no_attr(tspans_by_name(&f.s, PFX "request", 2), "llm_d.tenant");
    req = tspans_by_name(&f.s, PFX "request", 1);
    dec = tspans_by_name(&f.s, PFX "decode", 1);
    assert_sattr(req, PFX "request_id", "m2");
    assert_sattr(req, "gen_ai.request.model", "model-b");
    assert_sattr(dec, "gen_ai.request.model", "model-b");
    assert_sattr(dec, PFX "connector", "lmcache");
    assert_battr(dec, PFX "disaggregation_enabled", 0);
    assert_battr(req, PFX "disaggregation_enabled", 0);
    fx_close(&f);
}

/* One request for the status rule: prefill answers prefill_status (with
 * prefill_err), a retry answers 200 when retry is set, decode answers
 * decode_status/decode_err, and the client gets resp (-1: never set). */
static void run_status_case(fx *f, const char *id, int prefill_status,
                            const char *prefill_err, int retry,
                            int decode_status, const char *decode_err,
                            int resp, const char *resp_err, pdt_breakdown *bd)
{
    pdt_request *r;
    uint64_t a = base_time();

    assert_int_equal(pdt_request_begin(&r, f->t, NULL, NULL, a), PDT_OK);
    assert_int_equal(pdt_request_set_id(r, id), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1000),
                     PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_PREFILL, "p:1",
                                         prefill_status, prefill_err),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 2000),
                     PDT_OK);
    if (retry) {
        assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT,
                                          a + 3000), PDT_OK);
        assert_int_equal(pdt_request_set_leg(r, PDT_LEG_PREFILL, "p:2", 200,
                                             NULL), PDT_OK);
        assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE,
                                          a + 4000), PDT_OK);
    }
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 5000),
                     PDT_OK);
    assert_int_equal(pdt_request_tokens(r, a + 6000, 3), PDT_OK);
    assert_int_equal(pdt_request_set_leg(r, PDT_LEG_DECODE, "d:1",
                                         decode_status, decode_err), PDT_OK);
    if (resp >= 0)
        assert_int_equal(pdt_request_set_response(r, resp, resp_err),
                         PDT_OK);
    *bd = (pdt_breakdown)PDT_BREAKDOWN_INIT;
    assert_int_equal(pdt_request_end(r, a + 7000, bd), PDT_OK);
    pdt_request_free(r);
}

/* The span of the request whose request_id is id, and its nth leg span
 * of that name. */
static const tspan *span_of(const tspans *s, const char *id,
                            const char *name, size_t nth)
{
    const tspan *root = NULL;
    size_t i;

    for (i = 0; i < s->n && root == NULL; i++) {
        const tattr *x = tspan_attr(&s->v[i], PFX "request_id");
        if (x != NULL && strcmp(s->v[i].name, PFX "request") == 0 &&
            strcmp(x->s, id) == 0)
            root = &s->v[i];
    }
    if (root == NULL)
        fail_msg("no request %s", id);
    if (strcmp(name, PFX "request") == 0)
        return root;
    for (i = 0; i < s->n; i++) {
        if (strcmp(s->v[i].name, name) == 0 &&
            strcmp(s->v[i].parent_id, root->span_id) == 0 && nth-- == 0)
            return &s->v[i];
    }
    fail_msg("no %s span %zu of request %s", name, nth, id);
    return NULL;
}

/* A leg's failure marks that leg only; the request fails when the client
 * got an error, or (fallback) when a leg failed and no response status was
 * ever given. */
static void test_status_rule(void **state)
{
    fx f;
    pdt_breakdown bd;
    char *text;
    size_t len = 0;
    const tspan *sp;
    (void)state;

    fx_open(&f);
    fx_start(&f);
    /* Prefill 503, retried with success, client got 200: only the first
     * prefill attempt is ERROR. */
    run_status_case(&f, "retried", 503, NULL, 1, 200, NULL, 200, NULL, &bd);
    assert_false(bd.error);
    /* Prefill timed out, decode went ahead without it (e.g. recomputed),
     * client got 200. */
    run_status_case(&f, "leg-only", 0, "timeout", 0, 200, NULL, 200, NULL,
                    &bd);
    assert_false(bd.error);
    /* Decode stream broke off and the client got an error type. */
    run_status_case(&f, "client-err", 200, NULL, 0, 200,
                    "stream_interrupted", 200, "stream_interrupted", &bd);
    assert_true(bd.error);
    /* Client got a 502 although both legs reported success. */
    run_status_case(&f, "client-5xx", 200, NULL, 0, 200, NULL, 502, NULL,
                    &bd);
    assert_true(bd.error);
    /* Client got a 4xx without an error type: not a failure. */
    run_status_case(&f, "client-4xx", 200, NULL, 0, 200, NULL, 429, NULL,
                    &bd);
    assert_false(bd.error);
    /* Fallback: a leg failed and no response status was ever set. */
    run_status_case(&f, "no-response", 200, NULL, 0, 503, NULL, -1, NULL,
                    &bd);
    assert_true(bd.error);
    /* No leg failed and no response status: ok. */
    run_status_case(&f, "quiet", 200, NULL, 0, 200, NULL, -1, NULL, &bd);
    assert_false(bd.error);

    /* The metrics count the same outcome. */
    assert_int_equal(pdt_tracer_metrics(f.t, NULL, 0, &len), PDT_EBUFSIZE);
    text = malloc(len + 4096);
    assert_non_null(text);
    assert_int_equal(pdt_tracer_metrics(f.t, text, len + 4096, &len), PDT_OK);
    assert_non_null(strstr(text, "mode=\"sequential\",tenant=\"\",outcome=\"ok\"} 4\n"));
    assert_non_null(strstr(text, "mode=\"sequential\",tenant=\"\",outcome=\"error\"} 3\n"));
    free(text);
    fx_finish(&f);

    sp = span_of(&f.s, "retried", PFX "request", 0);
    assert_int_not_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);
    assert_iattr(sp, PFX "prefill.status_code", 503);
    {
        const tspan *p1 = span_of(&f.s, "retried", PFX "prefill", 0);
        const tspan *p2 = span_of(&f.s, "retried", PFX "prefill", 1);
        if (p1->start > p2->start) {
            const tspan *x = p1;
            p1 = p2;
            p2 = x;
        }
        assert_int_equal(p1->status_code, PDT_SPAN_STATUS_ERROR);
        assert_sattr(p1, "error.type", "503");
        assert_int_not_equal(p2->status_code, PDT_SPAN_STATUS_ERROR);
    }
    sp = span_of(&f.s, "leg-only", PFX "request", 0);
    assert_int_not_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);
    assert_no_attr(sp, "error.type");
    sp = span_of(&f.s, "leg-only", PFX "prefill", 0);
    assert_int_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);
    assert_sattr(sp, "error.type", "timeout");
    sp = span_of(&f.s, "leg-only", PFX "decode", 0);
    assert_int_not_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);

    sp = span_of(&f.s, "client-err", PFX "request", 0);
    assert_int_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);
    assert_sattr(sp, "error.type", "stream_interrupted");
    assert_int_equal(span_of(&f.s, "client-err", PFX "decode", 0)
                         ->status_code, PDT_SPAN_STATUS_ERROR);
    assert_int_not_equal(span_of(&f.s, "client-err", PFX "prefill", 0)
                             ->status_code, PDT_SPAN_STATUS_ERROR);

    sp = span_of(&f.s, "client-5xx", PFX "request", 0);
    assert_int_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);
    assert_int_not_equal(span_of(&f.s, "client-5xx", PFX "decode", 0)
                             ->status_code, PDT_SPAN_STATUS_ERROR);
    sp = span_of(&f.s, "client-4xx", PFX "request", 0);
    assert_int_not_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);

    sp = span_of(&f.s, "no-response", PFX "request", 0);
    assert_int_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);
    assert_int_equal(span_of(&f.s, "no-response", PFX "decode", 0)
                         ->status_code, PDT_SPAN_STATUS_ERROR);
    sp = span_of(&f.s, "quiet", PFX "request", 0);
    assert_int_not_equal(sp->status_code, PDT_SPAN_STATUS_ERROR);
    fx_close(&f);
}

/* Inbound traceparent with flags 00: the parent-based sampler says no. */
#define UNSAMPLED "00-" IN_TRACE "-" IN_SPAN "-00"

static void run_unsampled(fx *f, const char *id, int fail, uint64_t ttft_ns,
                          pdt_breakdown *bd)
{
    pdt_request *r;
    uint64_t a = base_time();

    assert_int_equal(pdt_request_begin(&r, f->t, UNSAMPLED, NULL, a), PDT_OK);
    assert_false(pdt_span_is_sampled(pdt_request_span(r, PDT_LEG_REQUEST)));
    assert_int_equal(pdt_request_set_id(r, id), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_SENT, a + 1000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_PREFILL_DONE, a + 2000),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_DECODE_SENT, a + 3000),
                     PDT_OK);
    if (fail)
        assert_int_equal(pdt_request_set_leg(r, PDT_LEG_DECODE, NULL, 502,
                                             "bad_gateway"), PDT_OK);
    assert_int_equal(pdt_request_mark(r, PDT_MARK_FIRST_TOKEN, a + ttft_ns),
                     PDT_OK);
    assert_int_equal(pdt_request_end(r, a + ttft_ns + 1000, bd), PDT_OK);
    pdt_request_free(r);
    /* The breakdown is computed whether or not the spans are kept. */
    assert_true(bd->present & PDT_BD_TRUE_TTFT);
    assert_true(bd->true_ttft_ms == MS(ttft_ns));
    assert_true(bd->kv_transfer_overhead_ms == 0.001);
}

static int has_request(const tspans *s, const char *id)
{
    size_t i;
    for (i = 0; i < s->n; i++) {
        const tattr *a = tspan_attr(&s->v[i], PFX "request_id");
        if (a != NULL && strcmp(s->v[i].name, PFX "request") == 0 &&
            strcmp(a->s, id) == 0)
            return 1;
    }
    return 0;
}

static void test_tail_sampling(void **state)
{
    fx f;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    pdt_stats st = PDT_STATS_INIT;
    (void)state;

    fx_open(&f);
    f.o.tail_ttft_threshold_ms = 50.0;
    fx_start(&f);
    run_unsampled(&f, "fast-ok", 0, 10000000, &bd);
    assert_false(bd.sampled);
    run_unsampled(&f, "fast-failed", 1, 10000000, &bd);
    assert_true(bd.sampled);
    assert_true(bd.error);
    run_unsampled(&f, "slow-ok", 0, 100000000, &bd);
    assert_true(bd.sampled);
    assert_int_equal(pdt_tracer_flush(f.t, 5000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(f.t, &st), PDT_OK);
    assert_int_equal(st.spans_started, 9);
    assert_int_equal(st.spans_ended, 9);
    assert_int_equal(st.spans_not_sampled, 3);
    assert_int_equal(st.spans_exported, 6);
    assert_int_equal(st.requests_completed, 3);
    fx_finish(&f);
    assert_int_equal(f.s.n, 6);
    assert_false(has_request(&f.s, "fast-ok"));
    assert_true(has_request(&f.s, "fast-failed"));
    assert_true(has_request(&f.s, "slow-ok"));
    /* The exported spans keep the inbound (unsampled) flags. */
    assert_int_equal(tspans_by_name(&f.s, PFX "request", 0)->flags & 0xff, 0);
    fx_close(&f);

    /* Errors not kept when tail_keep_errors is -1; no threshold. */
    fx_open(&f);
    f.o.tail_keep_errors = -1;
    fx_start(&f);
    run_unsampled(&f, "failed", 1, 10000000, &bd);
    assert_false(bd.sampled);
    assert_true(bd.error);
    run_unsampled(&f, "slow", 0, 900000000, &bd);
    assert_false(bd.sampled);
    fx_finish(&f);
    assert_int_equal(f.s.n, 0);
    fx_close(&f);
}

static void test_ratio_sampler(void **state)
{
    fx f;
    pdt_request *r;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    int i;
    (void)state;

    fx_open(&f);
    f.o.sampler = PDT_SAMPLER_TRACEIDRATIO;
    f.o.sampler_ratio = 0.0;
    f.o.sampler_ratio_set = 1;
    f.o.tail_keep_errors = -1;
    fx_start(&f);
    for (i = 0; i < 50; i++) {
        assert_int_equal(pdt_request_begin(&r, f.t, NULL, NULL, 0), PDT_OK);
        assert_int_equal(pdt_request_end(r, 0, &bd), PDT_OK);
        assert_false(bd.sampled);
        assert_true(bd.present & PDT_BD_TOTAL);
        pdt_request_free(r);
    }
    fx_finish(&f);
    assert_int_equal(f.s.n, 0);
    fx_close(&f);

    fx_open(&f);
    f.o.sampler = PDT_SAMPLER_TRACEIDRATIO;
    f.o.sampler_ratio = 1.0;
    f.o.sampler_ratio_set = 1;
    fx_start(&f);
    for (i = 0; i < 50; i++) {
        /* The ratio sampler ignores the parent's flag. */
        assert_int_equal(pdt_request_begin(&r, f.t, i % 2 ? UNSAMPLED : NULL,
                                           NULL, 0), PDT_OK);
        assert_int_equal(pdt_request_end(r, 0, &bd), PDT_OK);
        assert_true(bd.sampled);
        pdt_request_free(r);
    }
    fx_finish(&f);
    assert_int_equal(f.s.n, 50);
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequential),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_decode_only),
        cmocka_unit_test(test_missing_marks),
        cmocka_unit_test(test_tpot),
        cmocka_unit_test(test_prefill_retries),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_submicrosecond),
        cmocka_unit_test(test_leg_failures),
        cmocka_unit_test(test_free_without_end),
        cmocka_unit_test(test_inject_and_tree),
        cmocka_unit_test(test_request_id_default),
        cmocka_unit_test(test_summary_mirrored),
        cmocka_unit_test(test_labels_mirrored),
        cmocka_unit_test(test_status_rule),
        cmocka_unit_test(test_tail_sampling),
        cmocka_unit_test(test_ratio_sampler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
