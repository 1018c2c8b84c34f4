/*
 * The OTLP encoder and the protobuf-to-JSON converter: a batch of records
 * built through the public API is encoded with pdti_encode_request(),
 * decoded back with the nanopb descriptors and compared field by field;
 * sizes are checked against pdti_span_body_size(); the JSON form is parsed
 * strictly; garbage, truncated and deeply nested input is refused cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pdtrace.h"
#include "core.h"
#include "json.h"
#include "tutil.h"

#define MAXR 64

typedef struct batch {
    pdt_tracer *t;
    char path[256];
    pdti_rec *recs[MAXR];
    size_t n;
    pdti_buf out;
    /* What was built. */
    char gen_trace[33], gen_span[17], child_span[17], remote_span[17];
    uint64_t a;
} batch;

/* Takes every queued record away from the exporter thread. */
static void take_queue(batch *b)
{
    pdt_tracer *t = b->t;
    pdti_rec *r;

    pthread_mutex_lock(&t->queue.mu);
    r = t->queue.head;
    t->queue.head = t->queue.tail = NULL;
    t->queue.enqueued_total -= t->queue.len;
    t->queue.len = t->queue.bytes = 0;
    pthread_mutex_unlock(&t->queue.mu);
    for (b->n = 0; r != NULL; r = r->next) {
        assert_true(b->n < MAXR);
        pdti_queue_uncharge(&t->queue, r->charge); /* the queue's no more */
        b->recs[b->n++] = r;
    }
}

static void build(batch *b)
{
    pdt_tracer_options o;
    pdt_span *gen, *child, *remote;
    pdt_request *req;
    int i;

    memset(b, 0, sizeof(*b));
    topts_console(&o, b->path);
    o.schedule_delay_ms = 3600000;
    o.max_queue_size = 1000;
    o.max_export_batch_size = 1000;
    o.attribute_count_limit = 6;
    o.resource_attributes = "deployment.environment=test,team=p%2Fd";
    o.service_name = "encode-test";
    assert_int_equal(pdt_tracer_open(&b->t, &o), PDT_OK);
    b->a = pdt_now_ns() - 10000000000ull;

    assert_int_equal(pdt_span_start(&gen, b->t, "generic",
                                     PDT_SPAN_KIND_INTERNAL, NULL, NULL, NULL,
                                     b->a), PDT_OK);
    assert_int_equal(pdt_span_set_str(gen, "s", "text \"quoted\"\n\x01"),
                     PDT_OK);
    assert_int_equal(pdt_span_set_int(gen, "i", -9000000000ll), PDT_OK);
    assert_int_equal(pdt_span_set_double(gen, "d", 0.1), PDT_OK);
    assert_int_equal(pdt_span_set_bool(gen, "b", 1), PDT_OK);
    assert_int_equal(pdt_span_set_bool(gen, "f", 0), PDT_OK);
    assert_int_equal(pdt_span_set_str(gen, "utf8", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x9a\x80"),
                     PDT_OK);
    assert_int_equal(pdt_span_set_int(gen, "over1", 1), PDT_ELIMIT);
    assert_int_equal(pdt_span_set_int(gen, "over2", 2), PDT_ELIMIT);
    for (i = 0; i < 130; i++) {
        char name[32];
        snprintf(name, sizeof(name), "ev%d", i);
        assert_int_equal(pdt_span_add_event(gen, name, b->a + 1000u * i),
                         i < 128 ? PDT_OK : PDT_ELIMIT);
        if (i == 0) {
            assert_int_equal(pdt_span_event_set_str(gen, "ek", "ev"), PDT_OK);
            assert_int_equal(pdt_span_event_set_double(gen, "ed", -2.5),
                             PDT_OK);
        }
    }
    assert_int_equal(pdt_span_set_status(gen, PDT_SPAN_STATUS_ERROR,
                                         "went wrong"), PDT_OK);
    assert_int_equal(pdt_span_ids(gen, b->gen_trace, b->gen_span), PDT_OK);

    assert_int_equal(pdt_span_start(&child, b->t, "child",
                                     PDT_SPAN_KIND_CLIENT, gen, NULL, NULL,
                                     b->a + 10), PDT_OK);
    assert_int_equal(pdt_span_ids(child, NULL, b->child_span), PDT_OK);
    assert_int_equal(pdt_span_end(child, b->a + 20), PDT_OK);
    assert_int_equal(pdt_span_end(gen, b->a + 5000000), PDT_OK);

    assert_int_equal(pdt_span_start(&remote, b->t, "remote",
                                     PDT_SPAN_KIND_SERVER, NULL,
                                     "00-0af7651916cd43dd8448eb211c80319c-"
                                     "b7ad6b7169203331-00", "congo=t61rcWkgMzE",
                                     b->a), PDT_OK);
    assert_int_equal(pdt_span_ids(remote, NULL, b->remote_span), PDT_OK);
    /* Unsampled parent: not recorded, not in the batch. */
    assert_false(pdt_span_is_sampled(remote));
    assert_int_equal(pdt_span_end(remote, b->a + 30), PDT_OK);
    pdt_span_free(remote);
    assert_int_equal(pdt_span_start(&remote, b->t, "remote",
                                     PDT_SPAN_KIND_SERVER, NULL,
                                     "00-0af7651916cd43dd8448eb211c80319c-"
                                     "b7ad6b7169203331-01", "congo=t61rcWkgMzE",
                                     b->a), PDT_OK);
    assert_int_equal(pdt_span_ids(remote, NULL, b->remote_span), PDT_OK);
    assert_int_equal(pdt_span_end(remote, b->a + 30), PDT_OK);

    assert_int_equal(pdt_request_begin(&req, b->t, NULL, NULL, b->a), PDT_OK);
    assert_int_equal(pdt_request_mark(req, PDT_MARK_PREFILL_SENT, b->a + 1),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(req, PDT_MARK_PREFILL_DONE, b->a + 2),
                     PDT_OK);
    assert_int_equal(pdt_request_mark(req, PDT_MARK_DECODE_SENT, b->a + 3),
                     PDT_OK);
    assert_int_equal(pdt_request_end(req, b->a + 4, NULL), PDT_OK);
    pdt_request_free(req);
    pdt_span_free(child);
    pdt_span_free(gen);
    pdt_span_free(remote);

    take_queue(b);
    assert_int_equal(b->n, 6);
    assert_int_equal(pdti_encode_request(b->t->preamble.data,
                                         b->t->scope_off,
                                         b->t->preamble.data +
                                             b->t->scope_off,
                                         b->t->preamble.len -
                                             b->t->scope_off,
                                         b->recs, b->n, &b->out), PDT_OK);
}

static void release(batch *b)
{
    size_t i;
    for (i = 0; i < b->n; i++)
        pdti_rec_release(&b->t->pool, b->recs[i]);
    pdti_buf_free(&b->out);
    assert_int_equal(pdt_tracer_close(b->t, 5000, NULL), PDT_OK);
    tpath_remove(b->path);
}

static const tattr *ea(const tspan *sp, const char *key, char type)
{
    const tattr *a = tspan_attr(sp, key);
    if (a == NULL)
        fail_msg("attribute %s missing on %s", key, sp->name);
    assert_int_equal(a->type, type);
    return a;
}

static void check_model(const batch *b, const tspans *s, int from_pb)
{
    const tspan *g, *c, *r;
    const tattr *x;
    size_t i;

    assert_int_equal(s->n, 6);
    g = tspans_by_name(s, "generic", 0);
    c = tspans_by_name(s, "child", 0);
    r = tspans_by_name(s, "remote", 0);
    assert_non_null(g);
    assert_non_null(c);
    assert_non_null(r);
    assert_string_equal(g->trace_id, b->gen_trace);
    assert_string_equal(g->span_id, b->gen_span);
    assert_string_equal(g->parent_id, "");
    assert_int_equal(g->kind, PDT_SPAN_KIND_INTERNAL);
    assert_int_equal(g->end - g->start, 5000000);
    assert_int_equal(g->flags, 0x103); /* sampled, random trace id */
    assert_string_equal(ea(g, "s", 's')->s, "text \"quoted\"\n\x01");
    assert_true(ea(g, "i", 'i')->i == -9000000000ll);
    assert_true(ea(g, "d", 'd')->d == 0.1);
    assert_int_equal(ea(g, "b", 'b')->b, 1);
    assert_int_equal(ea(g, "f", 'b')->b, 0);
    assert_string_equal(ea(g, "utf8", 's')->s,
                        "\xc3\xa9t\xc3\xa9 \xf0\x9f\x9a\x80");
    assert_int_equal(g->nattrs, 6);
    assert_int_equal(g->dropped_attrs, 2);
    assert_int_equal(g->nevents, 128);
    assert_int_equal(g->dropped_events, 2);
    for (i = 0; i < g->nevents; i++) {
        char name[32];
        snprintf(name, sizeof(name), "ev%u", (unsigned)i);
        assert_string_equal(g->events[i].name, name);
        assert_int_equal(g->events[i].time - g->start, 1000u * i);
    }
    assert_int_equal(g->events[0].nattrs, 2);
    assert_string_equal(g->events[0].attrs[0].s, "ev");
    assert_true(g->events[0].attrs[1].d == -2.5);
    assert_true(g->has_status);
    assert_int_equal(g->status_code, 2);
    assert_string_equal(g->status_msg, "went wrong");

    assert_string_equal(c->span_id, b->child_span);
    assert_string_equal(c->parent_id, b->gen_span);
    assert_string_equal(c->trace_id, b->gen_trace);
    assert_int_equal(c->kind, PDT_SPAN_KIND_CLIENT);
    assert_int_equal(c->start - g->start, 10);
    assert_int_equal(c->end - g->start, 20);
    assert_false(c->has_status);
    assert_int_equal(c->nattrs, 0);
    assert_int_equal(c->nevents, 0);

    assert_string_equal(r->span_id, b->remote_span);
    assert_string_equal(r->trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_string_equal(r->parent_id, "b7ad6b7169203331");
    assert_string_equal(r->trace_state, "congo=t61rcWkgMzE");
    assert_int_equal(r->flags, 0x301);
    assert_int_equal(r->kind, PDT_SPAN_KIND_SERVER);

    assert_int_equal(tspans_count_name(s, "llm_d.pd_proxy.request"), 1);
    assert_int_equal(tspans_count_name(s, "llm_d.pd_proxy.prefill"), 1);
    assert_int_equal(tspans_count_name(s, "llm_d.pd_proxy.decode"), 1);

    /* Resource and scope on every span. */
    for (i = 0; i < s->n; i++) {
        x = tres_attr(s, &s->v[i], "service.name");
        assert_non_null(x);
        assert_string_equal(x->s, "encode-test");
        x = tres_attr(s, &s->v[i], "team");
        assert_non_null(x);
        assert_string_equal(x->s, "p/d");
        x = tres_attr(s, &s->v[i], "deployment.environment");
        assert_non_null(x);
        assert_string_equal(x->s, "test");
        x = tres_attr(s, &s->v[i], "process.pid");
        assert_non_null(x);
        assert_int_equal(x->type, 'i');
        assert_int_equal(x->i, (int64_t)getpid());
        assert_string_equal(s->v[i].scope_name, "libpdtrace");
        assert_string_equal(s->v[i].scope_version, PDT_VERSION_STRING);
    }
    (void)from_pb;
}

static void test_roundtrip_pb(void **state)
{
    batch b;
    tspans s;
    size_t i, spans = 0, ss, rs, total;
    (void)state;

    build(&b);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tspans_add_pb(&s, b.out.data, b.out.len), 0);
    check_model(&b, &s, 1);
    assert_int_equal(s.nres, 1);
    /* Each Span's encoded length is what pdti_span_body_size() says. */
    for (i = 0; i < b.n; i++) {
        size_t body = pdti_span_body_size(b.recs[i]);
        assert_int_equal(s.v[i].body_len, body);
        spans += 1 + pdti_varint_len(body) + body;
    }
    /* And the request's length follows from them. */
    ss = (b.t->preamble.len - b.t->scope_off) + spans;
    rs = b.t->scope_off + 1 + pdti_varint_len(ss) + ss;
    total = 1 + pdti_varint_len(rs) + rs;
    assert_int_equal(b.out.len, total);
    tspans_free(&s);
    release(&b);
}

/* Every span of `all` is in exactly one of the halves, in order: the
 * first k in `a`, the rest in `b`; each half keeps the resource and the
 * scope. */
static void check_halves(const tspans *all, const tspans *a,
                         const tspans *b, size_t k)
{
    size_t i;

    assert_int_equal(a->n, k);
    assert_int_equal(b->n, all->n - k);
    for (i = 0; i < all->n; i++) {
        const tspan *want = &all->v[i];
        const tspan *got = i < k ? &a->v[i] : &b->v[i - k];
        const tspans *half = i < k ? a : b;
        const tattr *x;
        assert_string_equal(got->span_id, want->span_id);
        assert_string_equal(got->trace_id, want->trace_id);
        assert_string_equal(got->name, want->name);
        assert_int_equal(got->body_len, want->body_len);
        assert_int_equal(got->nattrs, want->nattrs);
        assert_int_equal(got->nevents, want->nevents);
        /* Not in the other half. */
        assert_null(tspans_by_id(i < k ? b : a, want->span_id));
        assert_string_equal(got->scope_name, "libpdtrace");
        assert_string_equal(got->scope_version, want->scope_version);
        x = tres_attr(half, got, "service.name");
        assert_non_null(x);
        assert_string_equal(x->s, "encode-test");
        x = tres_attr(half, got, "team");
        assert_non_null(x);
        assert_string_equal(x->s, "p/d");
    }
    assert_int_equal(a->nres, 1);
    assert_int_equal(b->nres, 1);
    assert_int_equal(a->res[0].nattrs, all->res[0].nattrs);
    assert_int_equal(b->res[0].nattrs, all->res[0].nattrs);
}

/* pdti_encode_split(), which the exporter uses on a batch the collector
 * refused as too large: at every cut point, both halves decode, and hold
 * every span exactly once with the resource and scope intact. */
static void test_split(void **state)
{
    batch b;
    tspans all, ha, hb;
    pdti_buf first = PDTI_BUF_INIT, second = PDTI_BUF_INIT;
    size_t k, got;
    uint8_t junk[16];
    (void)state;

    build(&b);
    memset(&all, 0, sizeof(all));
    assert_int_equal(tspans_add_pb(&all, b.out.data, b.out.len), 0);
    assert_int_equal(all.n, b.n);
    assert_true(b.n >= 2);
    for (k = 1; k < b.n; k++) {
        got = 0;
        assert_int_equal(pdti_encode_split(b.out.data, b.out.len, &got, k,
                                           &first, &second), PDT_OK);
        assert_int_equal(got, b.n);
        memset(&ha, 0, sizeof(ha));
        memset(&hb, 0, sizeof(hb));
        assert_int_equal(tspans_add_pb(&ha, first.data, first.len), 0);
        assert_int_equal(tspans_add_pb(&hb, second.data, second.len), 0);
        check_halves(&all, &ha, &hb, k);
        /* Splitting costs only the second copy of resource and scope. */
        assert_true(first.len + second.len > b.out.len);
        assert_true(first.len < b.out.len && second.len < b.out.len);
        tspans_free(&ha);
        tspans_free(&hb);
    }
    /* A half can be split again, as the exporter does. */
    assert_int_equal(pdti_encode_split(b.out.data, b.out.len, &got, 3,
                                       &first, &second), PDT_OK);
    {
        pdti_buf a2 = PDTI_BUF_INIT, b2 = PDTI_BUF_INIT;
        tspans s1, s2;
        memset(&s1, 0, sizeof(s1));
        memset(&s2, 0, sizeof(s2));
        assert_int_equal(pdti_encode_split(first.data, first.len, &got, 1,
                                           &a2, &b2), PDT_OK);
        assert_int_equal(got, 3);
        assert_int_equal(tspans_add_pb(&s1, a2.data, a2.len), 0);
        assert_int_equal(tspans_add_pb(&s2, b2.data, b2.len), 0);
        assert_int_equal(s1.n, 1);
        assert_int_equal(s2.n, 2);
        assert_string_equal(s1.v[0].span_id, all.v[0].span_id);
        assert_string_equal(s2.v[1].span_id, all.v[2].span_id);
        tspans_free(&s1);
        tspans_free(&s2);
        pdti_buf_free(&a2);
        pdti_buf_free(&b2);
    }
    /* Bad cut points and bad input: an error, never a crash. */
    assert_int_equal(pdti_encode_split(b.out.data, b.out.len, &got, 0,
                                       &first, &second), PDT_EINVAL);
    assert_int_equal(pdti_encode_split(b.out.data, b.out.len, &got, b.n,
                                       &first, &second), PDT_EINVAL);
    memset(junk, 0xff, sizeof(junk));
    assert_int_equal(pdti_encode_split(junk, sizeof(junk), &got, 1,
                                       &first, &second), PDT_EPARSE);
    assert_int_equal(pdti_encode_split(b.out.data, b.out.len / 2, &got, 1,
                                       &first, &second), PDT_EPARSE);
    tspans_free(&all);
    pdti_buf_free(&first);
    pdti_buf_free(&second);
    release(&b);
}

static void test_roundtrip_json(void **state)
{
    batch b;
    tspans s;
    pdti_buf js = PDTI_BUF_INIT;
    tjson root;
    (void)state;

    build(&b);
    assert_int_equal(pdti_otlp_to_json(b.out.data, b.out.len, &js), PDT_OK);
    assert_int_equal(tjson_parse((const char *)js.data, js.len, &root), 0);
    tjson_free(&root);
    /* One line: the console exporter writes one request per line. */
    assert_null(memchr(js.data, '\n', js.len));
    memset(&s, 0, sizeof(s));
    assert_int_equal(tspans_add_json(&s, (const char *)js.data, js.len), 0);
    check_model(&b, &s, 0);
    tspans_free(&s);
    pdti_buf_free(&js);
    release(&b);
}

static void test_empty_batch(void **state)
{
    batch b;
    pdti_buf out = PDTI_BUF_INIT, js = PDTI_BUF_INIT;
    tspans s;
    (void)state;

    build(&b);
    assert_int_equal(pdti_encode_request(b.t->preamble.data, b.t->scope_off,
                                         b.t->preamble.data + b.t->scope_off,
                                         b.t->preamble.len - b.t->scope_off,
                                         b.recs, 0, &out), PDT_OK);
    memset(&s, 0, sizeof(s));
    assert_int_equal(tspans_add_pb(&s, out.data, out.len), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.nres, 1);
    assert_int_equal(pdti_otlp_to_json(out.data, out.len, &js), PDT_OK);
    assert_int_equal(pdti_otlp_to_json(NULL, 0, &js), PDT_OK);
    assert_int_equal(js.len, 2);
    assert_memory_equal(js.data, "{}", 2);
    tspans_free(&s);
    pdti_buf_free(&out);
    pdti_buf_free(&js);
    release(&b);
}

/* Accepts either a refusal or output that is strict JSON. */
static void check_garbage(const uint8_t *p, size_t n, pdti_buf *js)
{
    int rc = pdti_otlp_to_json(p, n, js);
    tjson v;

    if (rc == PDT_OK) {
        if (tjson_parse((const char *)js->data, js->len, &v) != 0) {
            FILE *dump = getenv("PDT_TEST_DUMP") != NULL
                             ? fopen(getenv("PDT_TEST_DUMP"), "wb") : NULL;
            if (dump != NULL) {
                fwrite(js->data, 1, js->len, dump);
                fclose(dump);
            }
            fail_msg("invalid JSON from %zu input bytes: %.*s", n,
                     (int)(js->len > 200 ? 200 : js->len),
                     (const char *)js->data);
        }
        tjson_free(&v);
    } else {
        assert_int_equal(rc, PDT_EPARSE);
        assert_int_equal(js->len, 0);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void test_garbage(void **state)
{
    batch b;
    pdti_buf js = PDTI_BUF_INIT;
    uint8_t buf[512];
    size_t i, k, n;
    (void)state;

    /* Random bytes. */
    for (i = 0; i < 20000; i++) {
        n = rnd() % sizeof(buf);
        for (k = 0; k < n; k++)
            buf[k] = (uint8_t)rnd();
        check_garbage(buf, n, &js);
    }
    /* Truncations and bit flips of a real request. */
    build(&b);
    for (n = 0; n < b.out.len; n++)
        check_garbage(b.out.data, n, &js);
    for (i = 0; i < 4000; i++) {
        uint8_t *copy = malloc(b.out.len);
        assert_non_null(copy);
        memcpy(copy, b.out.data, b.out.len);
        copy[rnd() % b.out.len] ^= (uint8_t)(1u << (rnd() % 8));
        check_garbage(copy, b.out.len, &js);
        free(copy);
    }
    release(&b);
    pdti_buf_free(&js);
}

/*
 * Deep nesting: ExportTraceServiceRequest > ResourceSpans > ScopeSpans >
 * Span > KeyValue > AnyValue > ArrayValue > AnyValue > ... `depth` times.
 */
static size_t put_len(uint8_t *p, size_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Wraps body[0..*len) in field `tag` (wire type 2), in place. */
static void wrap(uint8_t *body, size_t *len, uint8_t tag)
{
    uint8_t hdr[12];
    size_t h;
    hdr[0] = tag;
    h = 1 + put_len(hdr + 1, *len);
    memmove(body + h, body, *len);
    memcpy(body, hdr, h);
    *len += h;
}

static void test_deep_nesting(void **state)
{
    static uint8_t buf[1 << 20];
    pdti_buf js = PDTI_BUF_INIT;
    size_t len, d;
    int depth;
    (void)state;

    for (depth = 1; depth <= 5000; depth = depth < 40 ? depth + 1
                                                       : depth * 2) {
        len = 0;
        /* innermost AnyValue: string "x" */
        buf[len++] = 0x0a;
        buf[len++] = 1;
        buf[len++] = 'x';
        for (d = 0; d < (size_t)depth; d++) {
            wrap(buf, &len, 0x0a); /* ArrayValue.values */
            wrap(buf, &len, 0x2a); /* AnyValue.array_value */
        }
        wrap(buf, &len, 0x12);     /* KeyValue.value */
        wrap(buf, &len, 0x4a);     /* Span.attributes */
        wrap(buf, &len, 0x12);     /* ScopeSpans.spans */
        wrap(buf, &len, 0x12);     /* ResourceSpans.scope_spans */
        wrap(buf, &len, 0x0a);     /* request.resource_spans */
        assert_true(len < sizeof(buf));
        check_garbage(buf, len, &js);
        if (depth > 64)
            assert_int_equal(pdti_otlp_to_json(buf, len, &js), PDT_EPARSE);
    }
    pdti_buf_free(&js);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_pb),
        cmocka_unit_test(test_roundtrip_json),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_deep_nesting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
