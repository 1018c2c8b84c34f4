/*
 * An OTLP export that cannot start (pdti_xfer_start() failing, forced here
 * by linking with -Wl,--wrap=pdti_xfer_start) is counted as a failed
 * export, and its spans count as finished: flush returns at once instead
 * of waiting for them until its timeout, and their share of the queue's
 * memory budget is given back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pdtrace.h"
#include "core.h"
#include "transport.h"
#include "tutil.h"

int __real_pdti_xfer_start(pdti_xfer *x, const uint8_t *body, size_t len,
                           uint64_t deadline_ns, const int *abort_flag);
int __wrap_pdti_xfer_start(pdti_xfer *x, const uint8_t *body, size_t len,
                           uint64_t deadline_ns, const int *abort_flag);

static int fail_starts; /* starts still to refuse (atomic) */
static int starts;      /* starts seen (atomic) */

int __wrap_pdti_xfer_start(pdti_xfer *x, const uint8_t *body, size_t len,
                           uint64_t deadline_ns, const int *abort_flag)
{
    __atomic_add_fetch(&starts, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&fail_starts, __ATOMIC_SEQ_CST) > 0) {
        __atomic_sub_fetch(&fail_starts, 1, __ATOMIC_SEQ_CST);
        return PDT_EINVAL;
    }
    return __real_pdti_xfer_start(x, body, len, deadline_ns, abort_flag);
}

static void test_start_failure_finishes_spans(void **state)
{
    pdt_tracer *t;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_stats st = PDT_STATS_INIT;
    uint64_t pending = 99, t0;
    pdt_span *sp;
    int i;
    (void)state;

    o.ignore_environment = 1;
    o.endpoint = "http://127.0.0.1:9/v1/traces";
    o.schedule_delay_ms = 3600000;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    __atomic_store_n(&fail_starts, 1, __ATOMIC_SEQ_CST);
    for (i = 0; i < 3; i++) {
        assert_int_equal(pdt_span_start(&sp, t, "unstarted",
                                        PDT_SPAN_KIND_INTERNAL, NULL, NULL,
                                        NULL, 0), PDT_OK);
        assert_int_equal(pdt_span_end(sp, 0), PDT_OK);
        pdt_span_free(sp);
    }
    t0 = pdt_now_ns();
    assert_int_equal(pdt_tracer_flush(t, 8000, &pending), PDT_OK);
    /* Not the flush timeout: the spans were finished with at once. */
    assert_true(pdt_now_ns() - t0 < 4000000000ull);
    assert_int_equal(pending, 0);
    assert_int_equal(__atomic_load_n(&starts, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.dropped_export_failed, 3);
    assert_int_equal(st.export_failures, 1);
    assert_int_equal(st.spans_exported, 0);
    assert_int_equal(__atomic_load_n(&t->queue.mem, __ATOMIC_RELAXED), 0);
    assert_int_equal(pdt_tracer_close(t, 1000, NULL), PDT_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_failure_finishes_spans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
