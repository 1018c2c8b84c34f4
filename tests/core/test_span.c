/*
 * Generic spans: attributes, events, status, limits, UTF-8 repair, remote
 * parents; misuse of every public function; status strings and the
 * per-thread last error.
 */
#include <math.h>
#include <pthread.h>
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

static uint64_t base_time(void)
{
    return pdt_now_ns() - 50ull * 1000000000ull;
}

static const tattr *need_attr(const tspan *sp, const char *key, char type)
{
    const tattr *a = tspan_attr(sp, key);
    if (a == NULL)
        fail_msg("attribute \"%s\" missing on %s", key, sp->name);
    assert_int_equal(a->type, type);
    return a;
}

static void test_generic_span(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256], tid[33], sid[17], cid[17];
    pdt_span *parent, *child, *remote;
    pdt_propagation p = PDT_PROPAGATION_INIT;
    tspans s;
    const tspan *ps, *cs, *rs;
    uint64_t a = base_time();
    (void)state;

    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&parent, t,
                                     "llm_d.epp.profile_handler.pick",
                                     PDT_SPAN_KIND_INTERNAL, NULL, NULL, NULL,
                                     a), PDT_OK);
    assert_true(pdt_span_is_sampled(parent));
    assert_int_equal(pdt_span_set_str(parent, "decision", "pd"), PDT_OK);
    assert_int_equal(pdt_span_set_double(parent, "cache_hit_ratio", 0.375),
                     PDT_OK);
    assert_int_equal(pdt_span_set_int(parent, "pd_threshold", -512), PDT_OK);
    assert_int_equal(pdt_span_set_int(parent, "user_input_bytes",
                                      INT64_MAX), PDT_OK);
    assert_int_equal(pdt_span_set_bool(parent, "cached", 7), PDT_OK);
    assert_int_equal(pdt_span_add_event(parent, "scored", a + 5000), PDT_OK);
    assert_int_equal(pdt_span_event_set_str(parent, "pod", "decode-0"),
                     PDT_OK);
    assert_int_equal(pdt_span_event_set_int(parent, "score", 42), PDT_OK);
    assert_int_equal(pdt_span_event_set_double(parent, "w", 1.5), PDT_OK);
    assert_int_equal(pdt_span_event_set_bool(parent, "picked", 1), PDT_OK);
    assert_int_equal(pdt_span_add_event(parent, "second", a + 6000), PDT_OK);
    assert_int_equal(pdt_span_set_status(parent, PDT_SPAN_STATUS_ERROR,
                                         "no pods"), PDT_OK);

    assert_int_equal(pdt_span_start(&child, t, "child",
                                     PDT_SPAN_KIND_PRODUCER, parent,
                                     "00-11111111111111111111111111111111-"
                                     "2222222222222222-01", NULL, a + 1000),
                     PDT_OK);
    assert_int_equal(pdt_span_set_status(child, PDT_SPAN_STATUS_OK, "x"),
                     PDT_OK);
    assert_int_equal(pdt_span_end(child, a + 2000), PDT_OK);
    assert_int_equal(pdt_span_end(parent, a + 10000), PDT_OK);

    assert_int_equal(pdt_span_start(&remote, t, "remote-child",
                                     PDT_SPAN_KIND_CONSUMER, NULL,
                                     "00-4bf92f3577b34da6a3ce929d0e0e4736-"
                                     "00f067aa0ba902b7-01", "k1=v1,k2=v2", a),
                     PDT_OK);
    assert_int_equal(pdt_span_inject(remote, &p), PDT_OK);
    assert_int_equal(pdt_span_ids(remote, tid, sid), PDT_OK);
    assert_string_equal(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
    {
        char want[64];
        snprintf(want, sizeof(want), "00-%s-%s-01", tid, sid);
        assert_string_equal(p.traceparent, want);
    }
    assert_string_equal(p.tracestate, "k1=v1,k2=v2");
    assert_null(p.request_id);
    assert_int_equal(pdt_span_ids(child, NULL, cid), PDT_OK);
    assert_int_equal(pdt_span_ids(child, NULL, NULL), PDT_OK);
    pdt_span_free(remote); /* ends it now */
    pdt_span_free(child);
    pdt_span_free(parent);

    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 3);
    ps = tspans_by_name(&s, "llm_d.epp.profile_handler.pick", 0);
    cs = tspans_by_name(&s, "child", 0);
    rs = tspans_by_name(&s, "remote-child", 0);
    assert_non_null(ps);
    assert_non_null(cs);
    assert_non_null(rs);
    assert_int_equal(ps->kind, PDT_SPAN_KIND_INTERNAL);
    assert_int_equal(cs->kind, PDT_SPAN_KIND_PRODUCER);
    assert_int_equal(rs->kind, PDT_SPAN_KIND_CONSUMER);
    assert_string_equal(ps->parent_id, "");
    assert_int_equal(ps->flags, 0x103); /* sampled, random trace id */
    /* The parent handle wins over the traceparent. */
    assert_string_equal(cs->parent_id, ps->span_id);
    assert_string_equal(cs->trace_id, ps->trace_id);
    assert_string_equal(cs->span_id, cid);
    assert_int_equal(cs->flags, 0x103);
    assert_string_equal(rs->parent_id, "00f067aa0ba902b7");
    assert_int_equal(rs->flags, 0x301);
    assert_string_equal(rs->trace_state, "k1=v1,k2=v2");
    assert_int_equal(ps->end - ps->start, 10000);
    assert_int_equal(cs->start - ps->start, 1000);
    assert_int_equal(cs->end - ps->start, 2000);
    assert_string_equal(need_attr(ps, "decision", 's')->s, "pd");
    assert_true(need_attr(ps, "cache_hit_ratio", 'd')->d == 0.375);
    assert_int_equal(need_attr(ps, "pd_threshold", 'i')->i, -512);
    assert_true(need_attr(ps, "user_input_bytes", 'i')->i == INT64_MAX);
    assert_int_equal(need_attr(ps, "cached", 'b')->b, 1);
    assert_int_equal(ps->nevents, 2);
    assert_string_equal(ps->events[0].name, "scored");
    assert_int_equal(ps->events[0].time - ps->start, 5000);
    assert_int_equal(ps->events[0].nattrs, 4);
    assert_string_equal(ps->events[0].attrs[0].key, "pod");
    assert_string_equal(ps->events[0].attrs[0].s, "decode-0");
    assert_int_equal(ps->events[0].attrs[1].i, 42);
    assert_true(ps->events[0].attrs[2].d == 1.5);
    assert_int_equal(ps->events[0].attrs[3].b, 1);
    assert_string_equal(ps->events[1].name, "second");
    assert_int_equal(ps->events[1].nattrs, 0);
    assert_int_equal(ps->status_code, PDT_SPAN_STATUS_ERROR);
    assert_string_equal(ps->status_msg, "no pods");
    /* OK status carries no message. */
    assert_int_equal(cs->status_code, PDT_SPAN_STATUS_OK);
    assert_null(cs->status_msg);
    assert_false(rs->has_status);
    tspans_free(&s);
    tpath_remove(path);
}

static void test_attribute_limits(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_span *sp;
    pdt_stats st = PDT_STATS_INIT;
    tspans s;
    const tspan *x;
    int i;
    (void)state;

    topts_console(&o, path);
    o.attribute_count_limit = 3;
    o.attribute_value_length_limit = 5;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "limits", PDT_SPAN_KIND_INTERNAL,
                                     NULL, NULL, NULL, 0), PDT_OK);
    /* "abcd" + U+00E9 is 6 bytes: cut before the 2-byte character. */
    assert_int_equal(pdt_span_set_str(sp, "a", "abcd\xc3\xa9"), PDT_OK);
    /* "ab" + U+20AC is exactly 5 bytes: kept. */
    assert_int_equal(pdt_span_set_str(sp, "b", "ab\xe2\x82\xac"), PDT_OK);
    /* "abc" + U+20AC is 6 bytes: cut to 3, not to 5. */
    assert_int_equal(pdt_span_set_str(sp, "c", "abc\xe2\x82\xac"), PDT_OK);
    assert_int_equal(pdt_span_set_int(sp, "d", 1), PDT_ELIMIT);
    assert_true(pdt_last_error()[0] != '\0');
    assert_int_equal(pdt_last_error_code(), PDT_ELIMIT);
    assert_int_equal(pdt_span_set_str(sp, "e", "x"), PDT_ELIMIT);
    assert_int_equal(pdt_span_set_double(sp, "f", 1), PDT_ELIMIT);
    assert_int_equal(pdt_span_set_bool(sp, "g", 1), PDT_ELIMIT);
    /* Event attributes have the same count limit, counted per event. */
    assert_int_equal(pdt_span_add_event(sp, "ev", 0), PDT_OK);
    for (i = 0; i < 3; i++)
        assert_int_equal(pdt_span_event_set_int(sp, "n", i), PDT_OK);
    assert_int_equal(pdt_span_event_set_int(sp, "n", 3), PDT_ELIMIT);
    assert_int_equal(pdt_span_event_set_str(sp, "s", "123456789"),
                     PDT_ELIMIT);
    assert_int_equal(pdt_span_add_event(sp, "ev2", 0), PDT_OK);
    assert_int_equal(pdt_span_event_set_str(sp, "s", "123456789"), PDT_OK);
    /* Event limit: 128 in all. */
    for (i = 2; i < 128; i++)
        assert_int_equal(pdt_span_add_event(sp, "more", 0), PDT_OK);
    assert_int_equal(pdt_span_add_event(sp, "too-many", 0), PDT_ELIMIT);
    assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
    pdt_span_free(sp);
    assert_int_equal(pdt_tracer_flush(t, 5000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.attributes_dropped, 6);
    assert_int_equal(st.values_truncated, 3);

    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 1);
    x = &s.v[0];
    assert_int_equal(x->nattrs, 3);
    assert_int_equal(x->dropped_attrs, 4);
    assert_string_equal(need_attr(x, "a", 's')->s, "abcd");
    assert_string_equal(need_attr(x, "b", 's')->s, "ab\xe2\x82\xac");
    assert_string_equal(need_attr(x, "c", 's')->s, "abc");
    assert_int_equal(x->nevents, 128);
    assert_int_equal(x->dropped_events, 1);
    assert_int_equal(x->events[0].nattrs, 3);
    assert_int_equal(x->events[0].dropped_attrs, 2);
    assert_int_equal(x->events[1].nattrs, 1);
    assert_string_equal(x->events[1].attrs[0].s, "12345");
    /* The span limit does not apply to resource attributes. */
    assert_string_equal(tres_attr(&s, x, "service.name")->s,
                        "llm-d-pd-proxy");
    tspans_free(&s);
    tpath_remove(path);
}

/*
 * Values are copied on the caller's thread and cut to the length limit
 * when the exporter encodes them: the result must be what cutting the
 * whole repaired string gives, even for values far over the limit with
 * multi-byte or invalid bytes around the cut.
 */
static void test_long_values_cut_late(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_span *sp;
    pdt_stats st = PDT_STATS_INIT;
    tspans s;
    const tspan *x;
    char big[10000];
    (void)state;

    topts_console(&o, path);
    o.attribute_value_length_limit = 7;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "late", PDT_SPAN_KIND_INTERNAL,
                                     NULL, NULL, NULL, 0), PDT_OK);
    /* A 4-byte character straddling the cut, then many more bytes. */
    assert_int_equal(pdt_span_set_str(sp, "four", "abcde\xf0\x9f\x98\x80"
                                                  "zzzzzzzzzzzz"), PDT_OK);
    /* Invalid bytes become U+FFFD (3 bytes): two fit in 7, not three. */
    assert_int_equal(pdt_span_set_str(sp, "bad", "\xff\xfe\xfd\xfc\xfb"
                                                 "\xfa\xf9\xf8\xf7"), PDT_OK);
    /* A 3-byte character ending exactly at the limit is kept. */
    assert_int_equal(pdt_span_set_str(sp, "euro", "abcd\xe2\x82\xacqqqqq"),
                     PDT_OK);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(pdt_span_set_str(sp, "big", big), PDT_OK);
    assert_int_equal(pdt_span_set_strn(sp, "short", "ok", 2), PDT_OK);
    assert_int_equal(pdt_span_set_double(sp, "d", -0.25), PDT_OK);
    pdt_span_free(sp);
    assert_int_equal(pdt_tracer_flush(t, 5000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.values_truncated, 4);

    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 1);
    x = &s.v[0];
    assert_int_equal(x->nattrs, 6);
    assert_string_equal(need_attr(x, "four", 's')->s, "abcde");
    assert_string_equal(need_attr(x, "bad", 's')->s,
                        "\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(need_attr(x, "euro", 's')->s, "abcd\xe2\x82\xac");
    assert_string_equal(need_attr(x, "big", 's')->s, "xxxxxxx");
    assert_string_equal(need_attr(x, "short", 's')->s, "ok");
    assert_true(need_attr(x, "d", 'd')->d == -0.25);
    tspans_free(&s);
    tpath_remove(path);
}

/* A span too big for any collector (over 8 MiB encoded) is dropped and
 * counted by the exporter, which keeps going. */
static void test_oversized_span_dropped(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_span *sp;
    pdt_stats st = PDT_STATS_INIT;
    size_t big = (9u << 20);
    char *v = malloc(big + 1);
    tspans s;
    (void)state;

    assert_non_null(v);
    memset(v, 'x', big);
    v[big] = '\0';
    topts_console(&o, path);
    /* Past the default value cap (1 MiB), which would cut it at set time. */
    o.attribute_value_length_limit = 16 << 20;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "huge", PDT_SPAN_KIND_INTERNAL,
                                     NULL, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_span_set_str(sp, "blob", v), PDT_OK);
    pdt_span_free(sp);
    assert_int_equal(pdt_span_start(&sp, t, "small", PDT_SPAN_KIND_INTERNAL,
                                     NULL, NULL, NULL, 0), PDT_OK);
    pdt_span_free(sp);
    free(v);
    assert_int_equal(pdt_tracer_flush(t, 5000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.dropped_export_failed, 1);
    assert_int_equal(st.spans_exported, 1);
    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.v[0].name, "small");
    tspans_free(&s);
    tpath_remove(path);
}

static void test_utf8_repair(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_span *sp;
    pdt_stats st = PDT_STATS_INIT;
    tspans s;
    const tspan *x;
    const tattr *a;
    static const char nul_value[] = { 'a', '\0', 'b' };
    (void)state;

    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "na\x80me", PDT_SPAN_KIND_INTERNAL,
                                     NULL, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_span_set_str(sp, "k\xff", "v"), PDT_OK);
    assert_int_equal(pdt_span_set_str(sp, "val", "a\xc3(b"), PDT_OK);
    /* Overlong encoding of '/' and a surrogate: each maximal invalid
     * subsequence becomes one U+FFFD. */
    assert_int_equal(pdt_span_set_str(sp, "overlong", "\xc0\xaf"), PDT_OK);
    assert_int_equal(pdt_span_set_str(sp, "surrogate", "\xed\xa0\x80!"),
                     PDT_OK);
    assert_int_equal(pdt_span_set_int(sp, "ik\xfe", 1), PDT_OK);
    assert_int_equal(pdt_span_set_strn(sp, "nul", nul_value, 3), PDT_OK);
    assert_int_equal(pdt_span_set_strn(sp, "empty", NULL, 0), PDT_OK);
    assert_int_equal(pdt_span_add_event(sp, "ev\xf5", 0), PDT_OK);
    assert_int_equal(pdt_span_event_set_str(sp, "ek\x80", "ev\xe2\x82"),
                     PDT_OK);
    assert_int_equal(pdt_span_set_status(sp, PDT_SPAN_STATUS_ERROR,
                                         "bad \xff status"), PDT_OK);
    pdt_span_free(sp);
    assert_int_equal(pdt_tracer_flush(t, 5000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_true(st.strings_sanitized >= 9);

    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 1);
    x = &s.v[0];
    assert_string_equal(x->name, "na\xef\xbf\xbdme");
    assert_string_equal(need_attr(x, "k\xef\xbf\xbd", 's')->s, "v");
    assert_string_equal(need_attr(x, "val", 's')->s, "a\xef\xbf\xbd(b");
    a = need_attr(x, "overlong", 's');
    assert_true(strcmp(a->s, "\xef\xbf\xbd\xef\xbf\xbd") == 0 ||
                strcmp(a->s, "\xef\xbf\xbd") == 0);
    a = need_attr(x, "surrogate", 's');
    assert_true(strncmp(a->s, "\xef\xbf\xbd", 3) == 0);
    assert_int_equal(a->s[a->slen - 1], '!');
    assert_int_equal(need_attr(x, "ik\xef\xbf\xbd", 'i')->i, 1);
    a = need_attr(x, "nul", 's');
    assert_int_equal(a->slen, 3);
    assert_memory_equal(a->s, nul_value, 3);
    assert_int_equal(need_attr(x, "empty", 's')->slen, 0);
    assert_int_equal(x->nevents, 1);
    assert_string_equal(x->events[0].name, "ev\xef\xbf\xbd");
    assert_string_equal(x->events[0].attrs[0].key, "ek\xef\xbf\xbd");
    assert_string_equal(x->events[0].attrs[0].s, "ev\xef\xbf\xbd");
    assert_string_equal(x->status_msg, "bad \xef\xbf\xbd status");
    tspans_free(&s);
    tpath_remove(path);
}

static void test_malformed_traceparent(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256], tid[33];
    pdt_span *sp;
    pdt_request *r;
    tspans s;
    size_t i;
    static const char *bad[] = {
        "",
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    };
    (void)state;

    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(pdt_traceparent_parse(bad[i], NULL, NULL, NULL),
                         PDT_EPARSE);
        assert_int_equal(pdt_span_start(&sp, t, "fresh",
                                         PDT_SPAN_KIND_SERVER, NULL, bad[i],
                                         "a=b", 0), PDT_OK);
        assert_int_equal(pdt_span_ids(sp, tid, NULL), PDT_OK);
        assert_string_not_equal(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_string_not_equal(tid, "00000000000000000000000000000000");
        pdt_span_free(sp);
    }
    assert_int_equal(pdt_request_begin(&r, t, "junk", "a=b", 0), PDT_OK);
    pdt_request_free(r);
    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, sizeof(bad) / sizeof(bad[0]) + 1);
    for (i = 0; i < s.n; i++) {
        assert_string_equal(s.v[i].parent_id, "");
        /* A new trace is sampled by the default sampler, and a tracestate
         * without its traceparent is dropped. Its id is random. */
        assert_int_equal(s.v[i].flags, 0x103);
        assert_true(s.v[i].trace_state == NULL ||
                    s.v[i].trace_state[0] == '\0');
    }
    tspans_free(&s);
    tpath_remove(path);
}

#define EXPECT_ERR(call, code)                                              \
    do {                                                                    \
        pdt_clear_error();                                                  \
        assert_int_equal((call), (code));                                   \
        assert_int_equal(pdt_last_error_code(), (code));                    \
        if (pdt_last_error()[0] == '\0')                                    \
            fail_msg("no last-error message for %s", #call);                \
    } while (0)

static void test_misuse_null(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_span *sp, *ended;
    pdt_request *r;
    pdt_propagation p = PDT_PROPAGATION_INIT;
    pdt_stats st = PDT_STATS_INIT;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    uint8_t tid[16];
    uint64_t dropped = 5, pending = 5;
    char buf[40], path[256];
    (void)state;

    /* Recorded spans, so that every check runs (unsampled spans accept
     * and ignore most calls). */
    topts_console(&o, path);
    EXPECT_ERR(pdt_tracer_open(NULL, &o), PDT_EINVAL);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_tracer_options_init(NULL, sizeof(pdt_tracer_options)),
                     PDT_EINVAL);

    /* Spans. */
    sp = (pdt_span *)&o;
    EXPECT_ERR(pdt_span_start(&sp, NULL, "n", 1, NULL, NULL, NULL, 0),
               PDT_EINVAL);
    assert_null(sp);
    EXPECT_ERR(pdt_span_start(NULL, t, "n", 1, NULL, NULL, NULL, 0),
               PDT_EINVAL);
    EXPECT_ERR(pdt_span_start(&sp, t, NULL, 1, NULL, NULL, NULL, 0),
               PDT_EINVAL);
    EXPECT_ERR(pdt_span_start(&sp, t, "", 1, NULL, NULL, NULL, 0),
               PDT_EINVAL);
    EXPECT_ERR(pdt_span_start(&sp, t, "n", 0, NULL, NULL, NULL, 0),
               PDT_EINVAL);
    EXPECT_ERR(pdt_span_start(&sp, t, "n", 6, NULL, NULL, NULL, 0),
               PDT_EINVAL);
    EXPECT_ERR(pdt_span_start(&sp, t, "n", 1, NULL, NULL, NULL,
                              pdt_now_ns() + 3600000000000ull), PDT_ERANGE);
    assert_int_equal(pdt_span_start(&sp, t, "n", 1, NULL, NULL, NULL, 0),
                     PDT_OK);
    EXPECT_ERR(pdt_span_set_str(NULL, "k", "v"), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_str(sp, NULL, "v"), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_str(sp, "", "v"), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_str(sp, "k", NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_strn(NULL, "k", "v", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_strn(sp, NULL, "v", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_strn(sp, "k", NULL, 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_int(NULL, "k", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_int(sp, NULL, 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_double(NULL, "k", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_double(sp, "", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_bool(NULL, "k", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_bool(sp, NULL, 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_add_event(NULL, "e", 0), PDT_EINVAL);
    EXPECT_ERR(pdt_span_add_event(sp, NULL, 0), PDT_EINVAL);
    EXPECT_ERR(pdt_span_add_event(sp, "", 0), PDT_EINVAL);
    EXPECT_ERR(pdt_span_add_event(sp, "e", pdt_now_ns() + 3600000000000ull),
               PDT_ERANGE);
    /* Event attributes before any event. */
    EXPECT_ERR(pdt_span_event_set_str(sp, "k", "v"), PDT_ESTATE);
    EXPECT_ERR(pdt_span_event_set_str(NULL, "k", "v"), PDT_EINVAL);
    EXPECT_ERR(pdt_span_event_set_str(sp, "k", NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_span_event_set_int(NULL, "k", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_event_set_double(sp, NULL, 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_event_set_bool(sp, "", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_status(NULL, 0, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_status(sp, 3, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_span_set_status(sp, -1, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_span_inject(NULL, &p), PDT_EINVAL);
    EXPECT_ERR(pdt_span_inject(sp, NULL), PDT_EINVAL);
    p.size = 8;
    EXPECT_ERR(pdt_span_inject(sp, &p), PDT_EINVAL);
    p.size = sizeof(p);
    EXPECT_ERR(pdt_span_ids(NULL, buf, buf), PDT_EINVAL);
    assert_int_equal(pdt_span_is_sampled(NULL), 0);
    EXPECT_ERR(pdt_span_end(NULL, 0), PDT_EINVAL);
    EXPECT_ERR(pdt_traceparent_parse(NULL, tid, NULL, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_traceparent_parse("x", tid, NULL, NULL), PDT_EPARSE);

    /* Ended spans. */
    assert_int_equal(pdt_span_start(&ended, t, "e", 1, NULL, NULL, NULL, 0),
                     PDT_OK);
    assert_int_equal(pdt_span_end(ended, 0), PDT_OK);
    EXPECT_ERR(pdt_span_end(ended, 0), PDT_ESTATE);
    EXPECT_ERR(pdt_span_set_str(ended, "k", "v"), PDT_ESTATE);
    EXPECT_ERR(pdt_span_set_strn(ended, "k", "v", 1), PDT_ESTATE);
    EXPECT_ERR(pdt_span_set_int(ended, "k", 1), PDT_ESTATE);
    EXPECT_ERR(pdt_span_set_double(ended, "k", 1), PDT_ESTATE);
    EXPECT_ERR(pdt_span_set_bool(ended, "k", 1), PDT_ESTATE);
    EXPECT_ERR(pdt_span_add_event(ended, "e", 0), PDT_ESTATE);
    EXPECT_ERR(pdt_span_event_set_int(ended, "k", 1), PDT_ESTATE);
    EXPECT_ERR(pdt_span_set_status(ended, 2, "m"), PDT_ESTATE);
    /* Still usable for propagation. */
    assert_int_equal(pdt_span_inject(ended, &p), PDT_OK);
    pdt_span_free(ended);
    pdt_span_free(NULL);

    /* Requests. */
    r = (pdt_request *)&o;
    EXPECT_ERR(pdt_request_begin(&r, NULL, NULL, NULL, 0), PDT_EINVAL);
    assert_null(r);
    EXPECT_ERR(pdt_request_begin(NULL, t, NULL, NULL, 0), PDT_EINVAL);
    assert_int_equal(pdt_request_begin(&r, t, NULL, NULL, 0), PDT_OK);
    EXPECT_ERR(pdt_request_set_id(NULL, "x"), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_id(r, NULL), PDT_EINVAL);
    assert_null(pdt_request_id(NULL));
    EXPECT_ERR(pdt_request_set_mode(NULL, 0, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_mode(r, 3, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_mode(r, -1, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_connector(NULL, "nixlv2"), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_connector(r, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_connector(r, ""), PDT_EINVAL);
    EXPECT_ERR(pdt_request_mark(NULL, PDT_MARK_PREFILL_SENT, 0), PDT_EINVAL);
    EXPECT_ERR(pdt_request_tokens(NULL, 0, 1), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_usage(NULL, 1, 1, 1), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_leg(NULL, PDT_LEG_PREFILL, NULL, 200, NULL),
               PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_leg(r, 9, NULL, 200, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_response(NULL, 200, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_response(r, -1, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_response(r, 1000, NULL), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_str(NULL, "k", "v"), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_str(r, NULL, "v"), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_int(NULL, "k", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_double(NULL, "k", 1), PDT_EINVAL);
    EXPECT_ERR(pdt_request_set_bool(NULL, "k", 1), PDT_EINVAL);
    assert_null(pdt_request_span(NULL, PDT_LEG_REQUEST));
    assert_null(pdt_request_span(r, 5));
    assert_null(pdt_request_span(r, PDT_LEG_DECODE));
    EXPECT_ERR(pdt_request_inject(NULL, PDT_LEG_DECODE, &p), PDT_EINVAL);
    EXPECT_ERR(pdt_request_inject(r, PDT_LEG_DECODE, NULL), PDT_EINVAL);
    /* The request's own spans are ended by the request only. */
    EXPECT_ERR(pdt_span_end(pdt_request_span(r, PDT_LEG_REQUEST), 0),
               PDT_ESTATE);
    pdt_span_free(pdt_request_span(r, PDT_LEG_REQUEST)); /* ignored */
    assert_int_equal(pdt_request_set_str(r, "still", "usable"), PDT_OK);
    EXPECT_ERR(pdt_request_end(NULL, 0, NULL), PDT_EINVAL);
    bd.size = 4;
    EXPECT_ERR(pdt_request_end(r, 0, &bd), PDT_EINVAL);
    bd.size = sizeof(bd);
    assert_int_equal(pdt_request_end(r, 0, &bd), PDT_OK);
    EXPECT_ERR(pdt_request_end(r, 0, &bd), PDT_ESTATE);
    pdt_request_free(r);
    pdt_request_free(NULL);

    /* Tracer. */
    EXPECT_ERR(pdt_tracer_flush(NULL, 10, &pending), PDT_EINVAL);
    assert_int_equal(pending, 0);
    EXPECT_ERR(pdt_tracer_stats(NULL, &st), PDT_EINVAL);
    EXPECT_ERR(pdt_tracer_stats(t, NULL), PDT_EINVAL);
    st.size = 4;
    EXPECT_ERR(pdt_tracer_stats(t, &st), PDT_EINVAL);
    st.size = sizeof(st);
    assert_int_equal(pdt_tracer_close(NULL, 0, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(pdt_tracer_close(NULL, 0, NULL), PDT_OK);
    pdt_span_free(sp);
    assert_int_equal(pdt_tracer_close(t, 1000, NULL), PDT_OK);
    tpath_remove(path);
}

static void test_end_order_unrecorded(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_span *sp;
    uint64_t dropped = 7;
    (void)state;

    /* The order rules hold for spans that are not recorded, too. */
    o.exporter = PDT_EXPORTER_NONE;
    o.ignore_environment = 1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "x", 1, NULL, NULL, NULL, 0),
                     PDT_OK);
    /* End before start: clamped, recorded, PDT_ERANGE. */
    EXPECT_ERR(pdt_span_end(sp, 1), PDT_ERANGE);
    EXPECT_ERR(pdt_span_end(sp, 0), PDT_ESTATE);
    pdt_span_free(sp);
    assert_int_equal(pdt_tracer_close(t, 1000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
}

static void test_end_clamped(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_span *sp;
    tspans s;
    uint64_t a = base_time();
    (void)state;

    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "x", 1, NULL, NULL, NULL, a),
                     PDT_OK);
    assert_int_equal(pdt_span_end(sp, a - 1000), PDT_ERANGE);
    pdt_span_free(sp);
    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 1);
    assert_true(s.v[0].start == s.v[0].end);
    tspans_free(&s);
    tpath_remove(path);
}

static void test_unsampled_span(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_span *sp;
    pdt_propagation p = PDT_PROPAGATION_INIT;
    tspans s;
    (void)state;

    topts_console(&o, path);
    o.sampler = PDT_SAMPLER_ALWAYS_OFF;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "off", 1, NULL, NULL, NULL, 0),
                     PDT_OK);
    assert_false(pdt_span_is_sampled(sp));
    assert_int_equal(pdt_span_set_str(sp, "k", "v"), PDT_OK);
    assert_int_equal(pdt_span_add_event(sp, "e", 0), PDT_OK);
    assert_int_equal(pdt_span_event_set_int(sp, "k", 1), PDT_OK);
    assert_int_equal(pdt_span_set_status(sp, 2, "m"), PDT_OK);
    assert_int_equal(pdt_span_inject(sp, &p), PDT_OK);
    assert_int_equal(p.traceparent[53], '0');
    assert_int_equal(p.traceparent[54], '2'); /* random, not sampled */
    assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
    assert_int_equal(pdt_span_set_str(sp, "k", "v"), PDT_ESTATE);
    pdt_span_free(sp);
    tclose_and_load(t, path, &s);
    assert_int_equal(s.n, 0);
    tspans_free(&s);
    tpath_remove(path);
}

static void test_status_str(void **state)
{
    static const char *names[] = {
        "PDT_OK", "PDT_EINVAL", "PDT_ENOMEM", "PDT_ESTATE", "PDT_ERANGE",
        "PDT_EPARSE", "PDT_ETIMEOUT", "PDT_ELIMIT", "PDT_EBUFSIZE",
        "PDT_EIO", "PDT_ECLOSED", "PDT_ENOTSUP", "PDT_EINTERNAL" };
    int i, k;
    (void)state;

    assert_int_equal(PDT_OK, 0);
    assert_int_equal(PDT_EINTERNAL, 12);
    for (i = 0; i <= 12; i++) {
        const char *s = pdt_status_str(i);
        size_t n = strlen(names[i]);
        assert_non_null(s);
        if (strncmp(s, names[i], n) != 0 || s[n] != ':')
            fail_msg("pdt_status_str(%d) = \"%s\"", i, s);
        for (k = 0; k < i; k++)
            assert_string_not_equal(s, pdt_status_str(k));
    }
    assert_string_equal(pdt_status_str(13), "unknown status");
    assert_string_equal(pdt_status_str(-1), "unknown status");
    assert_string_equal(pdt_status_str(1 << 30), "unknown status");
    assert_string_equal(pdt_version(), PDT_VERSION_STRING);
    assert_int_equal(pdt_version_number(), PDT_VERSION_NUMBER);
    assert_true(pdt_now_ns() != 0);
}

typedef struct thr_arg {
    pthread_barrier_t *b;
    int code_before, code_after;
    char msg_before[64], msg_after[600];
} thr_arg;

static void *err_thread(void *p)
{
    thr_arg *a = p;

    /* A fresh thread has no error, whatever the main thread did. */
    a->code_before = pdt_last_error_code();
    snprintf(a->msg_before, sizeof(a->msg_before), "%s", pdt_last_error());
    assert_int_equal(pdt_traceparent_parse("nope", NULL, NULL, NULL),
                     PDT_EPARSE);
    pthread_barrier_wait(a->b); /* main raises its own error now */
    pthread_barrier_wait(a->b);
    a->code_after = pdt_last_error_code();
    snprintf(a->msg_after, sizeof(a->msg_after), "%s", pdt_last_error());
    return NULL;
}

static void test_last_error_per_thread(void **state)
{
    pthread_t th;
    pthread_barrier_t b;
    thr_arg a;
    char mine[600];
    (void)state;

    memset(&a, 0, sizeof(a));
    a.b = &b;
    pdt_clear_error();
    assert_int_equal(pdt_last_error_code(), PDT_OK);
    assert_string_equal(pdt_last_error(), "");
    assert_int_equal(pdt_span_end(NULL, 0), PDT_EINVAL);
    pthread_barrier_init(&b, NULL, 2);
    assert_int_equal(pthread_create(&th, NULL, err_thread, &a), 0);
    pthread_barrier_wait(&b);
    assert_int_equal(pdt_tracer_open(NULL, NULL), PDT_EINVAL);
    snprintf(mine, sizeof(mine), "%s", pdt_last_error());
    pthread_barrier_wait(&b);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&b);
    assert_int_equal(a.code_before, PDT_OK);
    assert_string_equal(a.msg_before, "");
    assert_int_equal(a.code_after, PDT_EPARSE);
    assert_true(a.msg_after[0] != '\0');
    assert_int_equal(pdt_last_error_code(), PDT_EINVAL);
    assert_string_equal(pdt_last_error(), mine);
    assert_string_not_equal(mine, a.msg_after);
    /* Successful calls do not clear it; pdt_clear_error() does. */
    assert_int_equal(pdt_traceparent_parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL,
        NULL, NULL), PDT_OK);
    assert_int_equal(pdt_last_error_code(), PDT_EINVAL);
    pdt_clear_error();
    assert_int_equal(pdt_last_error_code(), PDT_OK);
    assert_string_equal(pdt_last_error(), "");
}

/* W3C Level 2, trace-flags: only the flags the spec defines go out (MUST
 * set unknown flags to zero); the random-trace-id flag of a parent is
 * propagated as received; a new trace (random id) sets it. */
static void w3c_outgoing_flags_only_known(void **state)
{
    static const struct {
        const char *in;   /* inbound flags */
        char out_lo;      /* second hex digit of the outgoing flags */
    } cases[] = {
        { "ff", '3' }, { "fe", '2' }, { "fd", '1' }, { "fc", '0' },
        { "01", '1' }, { "00", '0' }, { "02", '2' }, { "03", '3' },
        { "81", '1' }, { "04", '0' },
    };
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256], tp[64];
    size_t i;

    (void)state;
    topts_console(&o, path);
    o.sampler = PDT_SAMPLER_PARENTBASED_ALWAYS_ON;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pdt_span *sp = NULL, *child = NULL;
        pdt_request *req = NULL;
        pdt_propagation p = PDT_PROPAGATION_INIT;

        snprintf(tp, sizeof tp,
                 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-%s",
                 cases[i].in);
        assert_int_equal(pdt_span_start(&sp, t, "in", PDT_SPAN_KIND_SERVER,
                                        NULL, tp, NULL, 0), PDT_OK);
        assert_int_equal(pdt_span_inject(sp, &p), PDT_OK);
        if (p.traceparent[53] != '0' || p.traceparent[54] != cases[i].out_lo)
            fail_msg("inbound flags %s went out as %s", cases[i].in,
                     p.traceparent + 53);
        /* A local child keeps the same flags. */
        assert_int_equal(pdt_span_start(&child, t, "c", PDT_SPAN_KIND_INTERNAL, sp, NULL, NULL, 0),
                         PDT_OK);
        assert_int_equal(pdt_span_inject(child, &p), PDT_OK);
        assert_int_equal(p.traceparent[54], cases[i].out_lo);
        pdt_span_free(child);
        pdt_span_free(sp);
        /* And a request's legs. */
        assert_int_equal(pdt_request_begin(&req, t, tp, NULL, 0), PDT_OK);
        assert_int_equal(pdt_request_inject(req, PDT_LEG_PREFILL, &p), PDT_OK);
        assert_int_equal(p.traceparent[53], '0');
        assert_int_equal(p.traceparent[54], cases[i].out_lo);
        pdt_request_free(req);
    }
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_OK);
    tpath_remove(path);
}

static void w3c_new_trace_sets_random_flag(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_span *sp = NULL;
    pdt_request *req = NULL;
    pdt_propagation p = PDT_PROPAGATION_INIT;

    (void)state;
    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "root", PDT_SPAN_KIND_INTERNAL, NULL, NULL, NULL, 0),
                     PDT_OK);
    assert_int_equal(pdt_span_inject(sp, &p), PDT_OK);
    assert_string_equal(p.traceparent + 52, "-03");
    pdt_span_free(sp);
    /* A malformed inbound traceparent restarts the trace: random too. */
    assert_int_equal(pdt_request_begin(&req, t, "00-zz", NULL, 0), PDT_OK);
    assert_int_equal(pdt_request_inject(req, PDT_LEG_DECODE, &p), PDT_OK);
    assert_string_equal(p.traceparent + 52, "-03");
    pdt_request_free(req);
    /* An inbound trace id without the flag is not ours: not marked. */
    assert_int_equal(pdt_request_begin(&req, t,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL, 0),
        PDT_OK);
    assert_int_equal(pdt_request_inject(req, PDT_LEG_DECODE, &p), PDT_OK);
    assert_string_equal(p.traceparent + 52, "-01");
    pdt_request_free(req);
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_OK);
    tpath_remove(path);
}

/* A duplicated traceparent (header lines joined with ',') restarts the
 * trace, and its tracestate is not used (MUST NOT parse tracestate when
 * the traceparent is invalid). */
static void w3c_duplicated_future_traceparent_restarts_trace(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o;
    char path[256];
    pdt_request *req = NULL;
    pdt_propagation p = PDT_PROPAGATION_INIT;

    (void)state;
    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_request_begin(&req, t,
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x,"
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        "a=b", 0), PDT_OK);
    assert_int_equal(pdt_request_inject(req, PDT_LEG_DECODE, &p), PDT_OK);
    assert_null(strstr(p.traceparent, "4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_null(p.tracestate);
    pdt_request_free(req);
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_OK);
    tpath_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(w3c_outgoing_flags_only_known),
        cmocka_unit_test(w3c_new_trace_sets_random_flag),
        cmocka_unit_test(w3c_duplicated_future_traceparent_restarts_trace),
        cmocka_unit_test(test_generic_span),
        cmocka_unit_test(test_attribute_limits),
        cmocka_unit_test(test_long_values_cut_late),
        cmocka_unit_test(test_oversized_span_dropped),
        cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_malformed_traceparent),
        cmocka_unit_test(test_misuse_null),
        cmocka_unit_test(test_end_order_unrecorded),
        cmocka_unit_test(test_end_clamped),
        cmocka_unit_test(test_unsampled_span),
        cmocka_unit_test(test_status_str),
        cmocka_unit_test(test_last_error_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
