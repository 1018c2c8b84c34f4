/*
 * Misuse of handles (docs/abi.md, "Misuse of handles"): a second free or
 * close, and calls through a freed handle, are refused with an error and
 * change nothing. Freed handles sit in the library's quarantine, so these
 * tests read no freed memory and run clean under ASan and valgrind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pdtrace.h"
#include "tutil.h"

static pdt_tracer *open_console(char *path)
{
    pdt_tracer_options o;
    pdt_tracer *t = NULL;

    topts_console(&o, path);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    return t;
}

static void expect_last_error(const char *needle)
{
    const char *e = pdt_last_error();
    if (strstr(e, needle) == NULL)
        fail_msg("last error \"%s\" does not mention \"%s\"", e, needle);
}

/* pdt_request_free twice used to drop the tracer's reference twice: the
 * tracer went away under a live span. */
static void test_request_free_twice_is_refused(void **state)
{
    char path[256];
    pdt_tracer *t = open_console(path);
    pdt_request *req = NULL;
    pdt_span *sp = NULL;
    pdt_stats st = PDT_STATS_INIT;
    tspans s;

    (void)state;
    assert_int_equal(pdt_span_start(&sp, t, "keeper", PDT_SPAN_KIND_INTERNAL,
                                    NULL, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_request_begin(&req, t, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_request_end(req, 0, NULL), PDT_OK);
    pdt_request_free(req);
    pdt_request_free(req); /* refused: the reference is not dropped again */
    expect_last_error("already freed");
    /* Every call through the stale pointer is refused too. */
    assert_int_equal(pdt_request_mark(req, PDT_MARK_PREFILL_SENT, 0),
                     PDT_EINVAL);
    assert_int_equal(pdt_request_end(req, 0, NULL), PDT_EINVAL);
    assert_int_equal(pdt_request_set_str(req, "k", "v"), PDT_EINVAL);
    assert_null(pdt_request_id(req));
    assert_null(pdt_request_span(req, PDT_LEG_REQUEST));
    {
        pdt_propagation p = PDT_PROPAGATION_INIT;
        assert_int_equal(pdt_request_inject(req, PDT_LEG_PREFILL, &p),
                         PDT_EINVAL);
    }
    /* The tracer still works and still has both references. */
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.requests_completed, 1);
    assert_int_equal(pdt_span_set_int(sp, "still.alive", 1), PDT_OK);
    assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
    pdt_span_free(sp);
    tclose_and_load(t, path, &s);
    assert_int_equal(tspans_count_name(&s, "keeper"), 1);
    assert_int_equal(tspans_count_name(&s, "llm_d.pd_proxy.request"), 1);
    tspans_free(&s);
    tpath_remove(path);
}

/* A request's borrowed spans die with it. */
static void test_request_span_after_free_is_refused(void **state)
{
    char path[256];
    pdt_tracer *t = open_console(path);
    pdt_request *req = NULL;
    pdt_span *root;

    (void)state;
    assert_int_equal(pdt_request_begin(&req, t, NULL, NULL, 0), PDT_OK);
    root = pdt_request_span(req, PDT_LEG_REQUEST);
    assert_non_null(root);
    assert_int_equal(pdt_span_set_int(root, "k", 1), PDT_OK);
    pdt_request_free(req);
    assert_int_equal(pdt_span_set_int(root, "k", 2), PDT_EINVAL);
    expect_last_error("span");
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_OK);
    tpath_remove(path);
}

/* pdt_tracer_close twice used to be a use after free. */
static void test_tracer_close_twice_is_refused(void **state)
{
    char path[256];
    pdt_tracer *t = open_console(path);
    pdt_stats st = PDT_STATS_INIT;
    uint64_t dropped = 7;

    (void)state;
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_close(t, 2000, &dropped), PDT_EINVAL);
    assert_int_equal(dropped, 0);
    expect_last_error("pdt_tracer_close");
    expect_last_error("already freed or closed");
    /* Other calls through the freed tracer are refused as well. */
    assert_int_equal(pdt_tracer_flush(t, 100, NULL), PDT_EINVAL);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_EINVAL);
    {
        pdt_request *req = (pdt_request *)1;
        pdt_span *sp = (pdt_span *)1;
        assert_int_equal(pdt_request_begin(&req, t, NULL, NULL, 0),
                         PDT_EINVAL);
        assert_null(req);
        assert_int_equal(pdt_span_start(&sp, t, "x", PDT_SPAN_KIND_INTERNAL,
                                        NULL, NULL, NULL, 0), PDT_EINVAL);
        assert_null(sp);
    }
    tpath_remove(path);
}

/* A tracer closed while a span keeps it alive: the second close is still
 * refused, and the reference the span holds is not dropped by it. */
static void test_tracer_close_twice_while_alive_is_refused(void **state)
{
    char path[256];
    pdt_tracer *t = open_console(path);
    pdt_span *sp = NULL;
    pdt_stats st = PDT_STATS_INIT;

    (void)state;
    assert_int_equal(pdt_span_start(&sp, t, "late", PDT_SPAN_KIND_INTERNAL,
                                    NULL, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_EINVAL);
    /* Still alive (the span's reference): closed, but its counters read. */
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_started, 1);
    assert_int_equal(pdt_tracer_flush(t, 100, NULL), PDT_ECLOSED);
    assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
    pdt_span_free(sp); /* the last reference: the tracer goes */
    tpath_remove(path);
}

static void test_span_free_twice_is_refused(void **state)
{
    char path[256];
    pdt_tracer *t = open_console(path);
    pdt_span *sp = NULL, *keep = NULL;
    char tid[33];
    tspans s;

    (void)state;
    assert_int_equal(pdt_span_start(&keep, t, "keep", PDT_SPAN_KIND_INTERNAL,
                                    NULL, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_span_start(&sp, t, "once", PDT_SPAN_KIND_INTERNAL,
                                    NULL, NULL, NULL, 0), PDT_OK);
    pdt_span_free(sp);
    pdt_span_free(sp);
    expect_last_error("already freed");
    assert_int_equal(pdt_span_end(sp, 0), PDT_EINVAL);
    assert_int_equal(pdt_span_set_str(sp, "k", "v"), PDT_EINVAL);
    assert_int_equal(pdt_span_add_event(sp, "e", 0), PDT_EINVAL);
    assert_int_equal(pdt_span_event_set_int(sp, "k", 1), PDT_EINVAL);
    assert_int_equal(pdt_span_set_status(sp, PDT_SPAN_STATUS_OK, NULL),
                     PDT_EINVAL);
    assert_int_equal(pdt_span_ids(sp, tid, NULL), PDT_EINVAL);
    assert_int_equal(pdt_span_is_sampled(sp), 0);
    /* The tracer kept the reference of `keep`. */
    assert_int_equal(pdt_span_end(keep, 0), PDT_OK);
    pdt_span_free(keep);
    tclose_and_load(t, path, &s);
    assert_int_equal(tspans_count_name(&s, "once"), 1);
    assert_int_equal(tspans_count_name(&s, "keep"), 1);
    tspans_free(&s);
    tpath_remove(path);
}

/* A handle of the wrong type is refused, not read as the other type. */
static void test_wrong_handle_type_is_refused(void **state)
{
    char path[256];
    pdt_tracer *t = open_console(path);
    pdt_span *sp = NULL;

    (void)state;
    assert_int_equal(pdt_span_start(&sp, t, "s", PDT_SPAN_KIND_INTERNAL,
                                    NULL, NULL, NULL, 0), PDT_OK);
    assert_int_equal(pdt_tracer_flush((pdt_tracer *)(void *)sp, 10, NULL),
                     PDT_EINVAL);
    expect_last_error("not a live tracer");
    pdt_span_free(sp);
    assert_int_equal(pdt_tracer_close(t, 2000, NULL), PDT_OK);
    tpath_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_free_twice_is_refused),
        cmocka_unit_test(test_request_span_after_free_is_refused),
        cmocka_unit_test(test_tracer_close_twice_is_refused),
        cmocka_unit_test(test_tracer_close_twice_while_alive_is_refused),
        cmocka_unit_test(test_span_free_twice_is_refused),
        cmocka_unit_test(test_wrong_handle_type_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
