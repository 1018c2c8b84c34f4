/*
 * bench_metrics: what recording one request's metrics costs the caller.
 *
 * Prints the mean time of pdti_metrics_observe() for a full sequential
 * breakdown (8 histograms), single-threaded and with 2 threads on the same
 * label set, and the heap allocations it made in steady state (malloc,
 * calloc and realloc are interposed and counted). Times are the calling
 * thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that other processes on
 * a busy machine do not inflate them; wall time is printed beside.
 *
 *   bench_metrics [ITERATIONS]
 */
#define _GNU_SOURCE 1
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <pdtrace.h>

#include "metrics.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static uint64_t allocs;

void *malloc(size_t n)
{
    __atomic_add_fetch(&allocs, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    __atomic_add_fetch(&allocs, 1, __ATOMIC_RELAXED);
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    __atomic_add_fetch(&allocs, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}

static pdti_metrics *g_m;
static long g_iters;
static uint64_t g_cpu_ns; /* summed over the threads of a run */

static uint64_t cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fill(pdt_breakdown *bd, long i)
{
    bd->present = 0xff;
    bd->queue_ms = 1.5 + (double)(i & 7);
    bd->prefill_ms = 120.25;
    bd->kv_transfer_overhead_ms = 3.0;
    bd->decode_ttft_ms = 25.0 + (double)(i & 15);
    bd->true_ttft_ms = bd->queue_ms + 120.25 + 3.0 + bd->decode_ttft_ms;
    bd->decode_duration_ms = 900.0;
    bd->total_ms = 1100.0;
    bd->tpot_ms = 9.5;
    bd->mode = PDT_MODE_SEQUENTIAL;
    bd->error = 0;
}

static void *worker(void *arg)
{
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    pdti_metrics_usage u;
    uint64_t t0 = cpu_now();
    long i;

    (void)arg;
    /* A configured tenant, with usage: every counter of the hot path. */
    u.tenant = pdti_metrics_tenant(g_m, "team-b", 6);
    u.input_tokens = 1200;
    u.cached_tokens = 300;
    for (i = 0; i < g_iters; i++) {
        fill(&bd, i);
        pdti_metrics_observe(g_m, "nixlv2",
                             "meta-llama/Llama-3.1-8B-Instruct", &u, &bd);
    }
    __atomic_add_fetch(&g_cpu_ns, cpu_now() - t0, __ATOMIC_RELAXED);
    return NULL;
}

/* Runs `threads` workers; returns CPU ns per request and sets *wall to
 * wall-clock ns per request of one thread. */
static double run(int threads, double *wall)
{
    pthread_t th[8];
    uint64_t t0 = pdt_now_ns();
    int i;

    g_cpu_ns = 0;
    for (i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    *wall = (double)(pdt_now_ns() - t0) / (double)g_iters;
    return (double)g_cpu_ns / (double)g_iters / threads;
}

int main(int argc, char **argv)
{
    uint64_t before;
    double ns1, ns2, w1, w2;

    g_iters = argc > 1 ? atol(argv[1]) : 1000000;
    if (g_iters <= 0)
        g_iters = 1;
    if (pdti_metrics_new(&g_m, "team-a,team-b") != PDT_OK)
        return 1;
    worker(NULL); /* warm up: the label set exists from here on */
    before = __atomic_load_n(&allocs, __ATOMIC_RELAXED);
    worker(NULL);
    printf("allocations in steady state: %llu for %ld requests\n",
           (unsigned long long)(__atomic_load_n(&allocs, __ATOMIC_RELAXED) -
                                before), g_iters);
    ns1 = run(1, &w1);
    printf("observe, 1 thread: %.1f ns CPU per request (wall %.1f ns)\n",
           ns1, w1);
    ns2 = run(2, &w2);
    printf("observe, 2 threads on the same label set: %.1f ns CPU per "
           "request (wall %.1f ns per request of one thread)\n", ns2, w2);
    pdti_metrics_free(g_m);
    return 0;
}
