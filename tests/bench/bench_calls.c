/*
 * bench_calls: the median cost of each public call of one traced P/D
 * request on the calling thread, in CPU cycles (the time-stamp counter on
 * x86-64, nanoseconds elsewhere). The workload is bench_core's request
 * with caller-supplied timestamps; spans go to the console exporter
 * writing to /dev/null, so the exporter thread does its full work without
 * a network peer.
 *
 *   bench_calls [N] [QUEUE_DEPTH]
 *
 * QUEUE_DEPTH (default 8192) is how many spans may wait in the queue
 * before the loop flushes: it sets how much record memory cycles through
 * the pool, which is what the first call touching each record pays for.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pdtrace.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define UNIT "cycles"
static inline uint64_t ticks(void) { return __rdtsc(); }
#else
#define UNIT "ns"
static inline uint64_t ticks(void) { return pdt_now_ns(); }
#endif

enum { NCALLS = 18 };
static const char *names[NCALLS] = {
    "pdt_request_begin (inbound traceparent)", "pdt_request_set_connector",
    "pdt_request_set_str x4", "pdt_request_set_int", "pdt_request_set_bool",
    "pdt_request_inject (prefill)", "mark PREFILL_SENT", "mark PREFILL_DONE",
    "pdt_request_set_leg (prefill)", "pdt_request_inject (decode)",
    "mark DECODE_SENT", "mark FIRST_TOKEN", "mark LAST_TOKEN",
    "pdt_request_set_leg (decode)", "pdt_request_set_usage",
    "pdt_request_set_response", "pdt_request_end", "pdt_request_free"
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000, i;
    uint64_t depth = argc > 2 ? (uint64_t)atoll(argv[2]) : 8192;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t;
    uint32_t *samp[NCALLS];
    uint64_t sum = 0;
    int k, pass;

    if (n <= 0)
        return 1;
    o.exporter = PDT_EXPORTER_CONSOLE;
    o.console_path = "/dev/null";
    o.max_queue_size = 65536;
    o.max_export_batch_size = 1536;
    o.schedule_delay_ms = 100;
    o.ignore_environment = 1;
    if (pdt_tracer_open(&t, &o) != PDT_OK) {
        fprintf(stderr, "open: %s\n", pdt_last_error());
        return 1;
    }
    for (k = 0; k < NCALLS; k++)
        if ((samp[k] = malloc(sizeof(uint32_t) * (size_t)n)) == NULL)
            return 1;
    /* The first pass warms the record pool; the second is measured. */
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < n; i++) {
            pdt_request *req;
            pdt_propagation prop = PDT_PROPAGATION_INIT;
            pdt_breakdown bd = PDT_BREAKDOWN_INIT;
            uint64_t a = pdt_now_ns(), c0, c1;
            k = 0;
#define T(x) do { c0 = ticks(); x; c1 = ticks(); \
                  samp[k++][i] = (uint32_t)(c1 - c0); } while (0)
            T(pdt_request_begin(&req, t, "00-0af7651916cd43dd8448eb211c80319c"
                                "-b7ad6b7169203331-01", NULL, a));
            T(pdt_request_set_connector(req, "nixlv2"));
            T(pdt_request_set_str(req, "http.request.method", "POST");
              pdt_request_set_str(req, "url.path", "/v1/chat/completions");
              pdt_request_set_str(req, "gen_ai.request.model",
                                  "llama-3.1-8b");
              pdt_request_set_str(req, "gen_ai.operation.name", "chat"));
            T(pdt_request_set_int(req, "gen_ai.request.max_tokens", 128));
            T(pdt_request_set_bool(req, "gen_ai.request.stream", 1));
            T(pdt_request_inject(req, PDT_LEG_PREFILL, &prop));
            T(pdt_request_mark(req, PDT_MARK_PREFILL_SENT, a + 1000));
            T(pdt_request_mark(req, PDT_MARK_PREFILL_DONE, a + 2000));
            T(pdt_request_set_leg(req, PDT_LEG_PREFILL, "10.0.0.1:8000", 200,
                                  NULL));
            T(pdt_request_inject(req, PDT_LEG_DECODE, &prop));
            T(pdt_request_mark(req, PDT_MARK_DECODE_SENT, a + 3000));
            T(pdt_request_mark(req, PDT_MARK_FIRST_TOKEN, a + 4000));
            T(pdt_request_mark(req, PDT_MARK_LAST_TOKEN, a + 5000));
            T(pdt_request_set_leg(req, PDT_LEG_DECODE, "10.0.0.2:8000", 200,
                                  NULL));
            T(pdt_request_set_usage(req, 1024, 128, 512));
            T(pdt_request_set_response(req, 200, NULL));
            T(pdt_request_end(req, a + 6000, &bd));
            T(pdt_request_free(req));
#undef T
            if ((i & 1023) == 1023) {
                pdt_stats q = PDT_STATS_INIT;
                pdt_tracer_stats(t, &q);
                if (q.queue_depth > depth)
                    pdt_tracer_flush(t, 10000, NULL);
            }
        }
    }
    printf("| call | median %s |\n|---|---|\n", UNIT);
    for (k = 0; k < NCALLS; k++) {
        qsort(samp[k], (size_t)n, sizeof(uint32_t), cmp_u32);
        sum += samp[k][n / 2];
        printf("| %s | %u |\n", names[k], samp[k][n / 2]);
        free(samp[k]);
    }
    printf("| sum of the medians | %llu |\n", (unsigned long long)sum);
    pdt_tracer_close(t, 10000, NULL);
    return 0;
}
