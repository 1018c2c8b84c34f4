/*
 * bench_c_rows: the libpdtrace-from-C rows of tests/bench/run_bench.sh.
 *
 * The same traced P/D request as bench_core (request, prefill and decode
 * spans, about 15 caller-set attributes plus the breakdown, 6 stage marks,
 * inject for both legs), exported over OTLP/HTTP to an external loopback
 * sink given by --endpoint. Prints one JSON line.
 *
 * Default mode (closed loop): warm-up, then --n requests timed one by one;
 * every --flush-every requests and at the end the tracer is flushed
 * (outside the per-request timing, inside the CPU and allocation totals).
 * Reports caller-thread ns/request (p50, p99, mean), process CPU
 * (getrusage user+sys, all threads) per request, malloc/calloc/realloc
 * calls per request on the caller's thread and in the whole process, and
 * ru_maxrss.
 *
 * --compression-level L sets pdt_tracer_options.compression_level (0, the
 * default, is the codec's default level). --protocol grpc (or http/json)
 * sets pdt_tracer_options.protocol; --endpoint is then the server's URL.
 *
 * --threads T (closed loop): T calling threads share the --n requests in
 * rounds of --flush-every; between rounds the main thread flushes (outside
 * the timing). Latencies of all threads are pooled for p50/p99.
 *
 * Rate mode (--rate R --seconds S): offers R requests/s for S seconds
 * (open loop, 1 ms ticks), flushes, and reports how many spans the tracer
 * exported, dropped or failed, for the zero-loss ramp into a Collector.
 */
#define _GNU_SOURCE 1
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <pdtrace.h>

#include "workload.h"

/* ---- allocation counting ------------------------------------------------ */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static __thread uint64_t allocs_thread;
static uint64_t allocs_all;

static void count_alloc(void)
{
    allocs_thread++;
    __atomic_add_fetch(&allocs_all, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    count_alloc();
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    count_alloc();
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    count_alloc();
    return __libc_realloc(p, n);
}

/* ---- one traced request ---------------------------------------------- */

/* --fresh-trace: a new inbound trace id per request, as in production. */
static int fresh_trace;
static char fresh[sizeof(PDTB_INBOUND)];
static uint64_t fresh_state = 0x9e3779b97f4a7c15u;

static void next_inbound(void)
{
    pdtb_fresh_traceparent(fresh, &fresh_state);
}

void one_request(pdt_tracer *t);

/* Not static and not inlined, so that callgrind can toggle on it. */
__attribute__((noinline)) void one_request(pdt_tracer *t)
{
    pdtb_request(t, fresh_trace ? fresh : PDTB_INBOUND, 0);
}

/* ---- measurement helpers ------------------------------------------------ */

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void flush(pdt_tracer *t)
{
    if (pdt_tracer_flush(t, 30000, NULL) != PDT_OK)
        fprintf(stderr, "flush: %s\n", pdt_last_error());
}

static void print_stats(pdt_tracer *t)
{
    pdt_stats st = PDT_STATS_INIT;
    pdt_tracer_stats(t, &st);
    printf("\"spans_ended\":%llu,\"spans_exported\":%llu,"
           "\"dropped_queue_full\":%llu,\"dropped_export_failed\":%llu,"
           "\"export_requests\":%llu,\"export_failures\":%llu,"
           "\"bytes_sent\":%llu",
           (unsigned long long)st.spans_ended,
           (unsigned long long)st.spans_exported,
           (unsigned long long)st.dropped_queue_full,
           (unsigned long long)st.dropped_export_failed,
           (unsigned long long)st.export_requests,
           (unsigned long long)st.export_failures,
           (unsigned long long)st.bytes_sent);
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u),
                           (long)(ns % 1000000000u) };
    nanosleep(&ts, NULL);
}

/* ---- several calling threads ------------------------------------------ */

typedef struct {
    pdt_tracer *t;
    pthread_barrier_t *bar;
    uint64_t *lat; /* this thread's latencies */
    long n;        /* requests of this thread */
    long round;    /* requests of this thread per round */
} worker;

static void *worker_main(void *arg)
{
    worker *wk = arg;
    long i = 0;

    while (i < wk->n) {
        long end = i + wk->round < wk->n ? i + wk->round : wk->n;
        pthread_barrier_wait(wk->bar); /* round starts */
        for (; i < end; i++) {
            uint64_t s = pdt_now_ns();
            one_request(wk->t);
            wk->lat[i] = pdt_now_ns() - s;
        }
        pthread_barrier_wait(wk->bar); /* round done: main flushes */
    }
    return NULL;
}

/* Runs n requests (warm-up first) from `threads` threads; prints the JSON
 * line. Every thread gets n / threads requests. */
static int run_threads(pdt_tracer *t, const char *comp, long n, long warm,
                       long flush_every, int threads)
{
    pthread_t th[64];
    worker wk[64];
    pthread_barrier_t bar;
    uint64_t *lat, c0, c1, w0, w1, sum = 0;
    long per = n / threads, round = flush_every / threads, i, rounds;
    int k;

    if (round < 1)
        round = 1;
    n = per * threads;
    for (i = 0; i < warm; i++)
        one_request(t);
    flush(t);
    lat = __libc_malloc(sizeof(*lat) * (size_t)n);
    if (lat == NULL || pthread_barrier_init(&bar, NULL, (unsigned)threads + 1))
        return 1;
    for (k = 0; k < threads; k++) {
        wk[k].t = t;
        wk[k].bar = &bar;
        wk[k].lat = lat + (size_t)k * (size_t)per;
        wk[k].n = per;
        wk[k].round = round;
        if (pthread_create(&th[k], NULL, worker_main, &wk[k]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    rounds = (per + round - 1) / round;
    c0 = cpu_ns();
    w0 = pdt_now_ns();
    for (i = 0; i < rounds; i++) {
        pthread_barrier_wait(&bar); /* start */
        pthread_barrier_wait(&bar); /* done */
        flush(t);
    }
    w1 = pdt_now_ns();
    c1 = cpu_ns();
    for (k = 0; k < threads; k++)
        pthread_join(th[k], NULL);
    pthread_barrier_destroy(&bar);
    for (i = 0; i < n; i++)
        sum += lat[i];
    qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
    printf("{\"impl\":\"pdtrace-c\",\"threads\":%d,\"n\":%ld,"
           "\"compression\":\"%s\",\"caller_mean_ns\":%.1f,"
           "\"caller_p50_ns\":%llu,\"caller_p99_ns\":%llu,"
           "\"cpu_ns_per_req\":%.1f,\"wall_s\":%.4f,",
           threads, n, comp, (double)sum / (double)n,
           (unsigned long long)lat[n / 2],
           (unsigned long long)lat[(size_t)((double)n * 0.99)],
           (double)(c1 - c0) / (double)n, (double)(w1 - w0) / 1e9);
    print_stats(t);
    printf(",\"maxrss_kb\":%ld}\n", maxrss_kb());
    free(lat);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "endpoint", required_argument, NULL, 'e' },
        { "compression", required_argument, NULL, 'c' },
        { "n", required_argument, NULL, 'n' },
        { "warm", required_argument, NULL, 'w' },
        { "flush-every", required_argument, NULL, 'f' },
        { "batch", required_argument, NULL, 'b' },
        { "queue", required_argument, NULL, 'q' },
        { "delay-ms", required_argument, NULL, 'd' },
        { "rate", required_argument, NULL, 'r' },
        { "seconds", required_argument, NULL, 's' },
        { "fresh-trace", no_argument, NULL, 't' },
        { "max-concurrent", required_argument, NULL, 'm' },
        { "compression-level", required_argument, NULL, 'l' },
        { "threads", required_argument, NULL, 'T' },
        { "protocol", required_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 }
    };
    const char *endpoint = NULL, *comp = "zstd";
    long n = 20000, warm = 5000, flush_every = 8192, batch = 1536;
    long queue = 65536, delay_ms = 200, rate = 0, max_concurrent = 0;
    double seconds = 5.0;
    int threads = 0;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t;
    int c;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'e': endpoint = optarg; break;
        case 'c': comp = optarg; break;
        case 'n': n = atol(optarg); break;
        case 'w': warm = atol(optarg); break;
        case 'f': flush_every = atol(optarg); break;
        case 'b': batch = atol(optarg); break;
        case 'q': queue = atol(optarg); break;
        case 'd': delay_ms = atol(optarg); break;
        case 'r': rate = atol(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 't': fresh_trace = 1; break;
        case 'm': max_concurrent = atol(optarg); break;
        case 'l': o.compression_level = atoi(optarg); break;
        case 'T': threads = atoi(optarg); break;
        case 'p':
            o.protocol = strcmp(optarg, "grpc") == 0 ? PDT_PROTOCOL_GRPC
                         : strcmp(optarg, "http/json") == 0
                             ? PDT_PROTOCOL_HTTP_JSON
                         : strcmp(optarg, "http/protobuf") == 0
                             ? PDT_PROTOCOL_HTTP_PROTOBUF
                             : -1; /* refused by pdt_tracer_open() */
            break;
        default: return 2;
        }
    }
    if (endpoint == NULL || n <= 0 || flush_every <= 0 || threads < 0 ||
        threads > 64 || (threads > 0 && n < threads)) {
        fprintf(stderr, "usage: bench_c_rows --endpoint URL [--compression "
                        "none|gzip|zstd] [--compression-level L] [--n N] "
                        "[--warm N] [--rate R --seconds S] "
                        "[--max-concurrent N] [--threads 1..64] "
                        "[--protocol http/protobuf|grpc|http/json]\n");
        return 2;
    }
    memcpy(fresh, PDTB_INBOUND, sizeof(PDTB_INBOUND));
    o.endpoint = endpoint;
    o.exporter = PDT_EXPORTER_OTLP;
    o.compression = strcmp(comp, "none") == 0   ? PDT_COMPRESSION_NONE
                    : strcmp(comp, "gzip") == 0 ? PDT_COMPRESSION_GZIP
                                                : PDT_COMPRESSION_ZSTD;
    o.max_queue_size = queue;
    o.max_export_batch_size = batch;
    o.schedule_delay_ms = delay_ms;
    o.max_concurrent_exports = max_concurrent; /* 0: the default */
    o.ignore_environment = 1;
    if (pdt_tracer_open(&t, &o) != PDT_OK) {
        fprintf(stderr, "open: %s\n", pdt_last_error());
        return 1;
    }

    if (threads > 0 && rate == 0) {
        int rc = run_threads(t, comp, n, warm, flush_every, threads);
        pdt_tracer_close(t, 10000, NULL);
        return rc;
    }
    if (rate > 0) {
        /* Open loop: keep up with rate * elapsed, in 1 ms ticks. */
        uint64_t t0 = pdt_now_ns(), dur = (uint64_t)(seconds * 1e9), now;
        uint64_t c0 = cpu_ns(), sent = 0, late_ticks = 0;
        double wall;
        while ((now = pdt_now_ns()) - t0 < dur) {
            uint64_t due = (uint64_t)((double)(now - t0) * (double)rate / 1e9);
            if (due > sent + (uint64_t)rate / 100)
                late_ticks++; /* more than 10 ms behind */
            while (sent < due) {
                one_request(t);
                sent++;
            }
            sleep_ns(500000);
        }
        wall = (double)(pdt_now_ns() - t0) / 1e9;
        flush(t);
        printf("{\"mode\":\"rate\",\"rate\":%ld,\"seconds\":%.3f,"
               "\"busy_s\":%.3f,"
               "\"requests\":%llu,\"achieved_rps\":%.0f,\"late_ticks\":%llu,"
               "\"cpu_ns_per_req\":%.0f,",
               rate, wall, (double)(pdt_now_ns() - t0) / 1e9,
               (unsigned long long)sent, (double)sent / wall,
               (unsigned long long)late_ticks,
               (double)(cpu_ns() - c0) / (double)(sent ? sent : 1));
        print_stats(t);
        printf(",\"maxrss_kb\":%ld}\n", maxrss_kb());
    } else {
        uint64_t *lat = __libc_malloc(sizeof(*lat) * (size_t)n);
        uint64_t sum = 0, a0, a1, at0, at1, c0, c1, w0, w1;
        long i;

        for (i = 0; i < warm; i++) {
            if (fresh_trace)
                next_inbound();
            one_request(t);
            if ((i + 1) % flush_every == 0)
                flush(t);
        }
        flush(t);
        a0 = allocs_thread;
        at0 = __atomic_load_n(&allocs_all, __ATOMIC_RELAXED);
        c0 = cpu_ns();
        w0 = pdt_now_ns();
        for (i = 0; i < n; i++) {
            uint64_t s;
            if (fresh_trace)
                next_inbound();
            s = pdt_now_ns();
            one_request(t);
            lat[i] = pdt_now_ns() - s;
            if ((i + 1) % flush_every == 0)
                flush(t);
        }
        flush(t);
        w1 = pdt_now_ns();
        c1 = cpu_ns();
        a1 = allocs_thread;
        at1 = __atomic_load_n(&allocs_all, __ATOMIC_RELAXED);
        for (i = 0; i < n; i++)
            sum += lat[i];
        qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
        printf("{\"impl\":\"pdtrace-c\",\"n\":%ld,\"compression\":\"%s\","
               "\"caller_mean_ns\":%.1f,\"caller_p50_ns\":%llu,"
               "\"caller_p99_ns\":%llu,\"cpu_ns_per_req\":%.1f,"
               "\"wall_s\":%.4f,\"allocs_per_req\":%.4f,"
               "\"allocs_caller_per_req\":%.4f,"
               "\"allocs_how\":\"interposed malloc/calloc/realloc calls, "
               "all threads incl. exporter (caller thread separately)\",",
               n, comp, (double)sum / (double)n,
               (unsigned long long)lat[n / 2],
               (unsigned long long)lat[(size_t)((double)n * 0.99)],
               (double)(c1 - c0) / (double)n, (double)(w1 - w0) / 1e9,
               (double)(at1 - at0) / (double)n, (double)(a1 - a0) / (double)n);
        print_stats(t);
        printf(",\"maxrss_kb\":%ld}\n", maxrss_kb());
    }
    pdt_tracer_close(t, 10000, NULL);
    return 0;
}
