/*
 * bench_core: what one traced P/D request costs libpdtrace.
 *
 * Prints:
 *  - caller-thread time per request (3 spans, ~15 attributes, 6 marks),
 *    mean, p50 and p99, with the spans exported over OTLP/HTTP to a
 *    loopback sink running in this process;
 *  - heap allocations per request on the caller's thread in steady state
 *    (malloc/calloc/realloc are interposed and counted per thread);
 *  - encode throughput of ExportTraceServiceRequest (spans/s, one core);
 *  - wire bytes per span with no compression, gzip and zstd, for batches
 *    of 512 requests.
 * Numbers, not verdicts: the targets live in the docs, not here.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pdtrace.h>

#include "core.h"
#include "transport.h"
#include "workload.h"

/* ---- allocation counting ------------------------------------------------ */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static __thread uint64_t allocs;

void *malloc(size_t n)
{
    allocs++;
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    allocs++;
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    allocs++;
    return __libc_realloc(p, n);
}

/* ---- a loopback OTLP sink ------------------------------------------------ */

static volatile int sink_stop;
static uint64_t sink_bytes, sink_requests;

static void *sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[1 << 16];
    size_t have = 0;

    for (;;) {
        ssize_t n;
        char *end;
        size_t hdr, body = 0;
        char *cl;

        while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
            n = read(fd, buf + have, sizeof(buf) - have);
            if (n <= 0)
                goto out;
            have += (size_t)n;
        }
        hdr = (size_t)(end - buf) + 4;
        buf[hdr - 1] = '\0';
        cl = strcasestr(buf, "content-length:");
        if (cl != NULL)
            body = strtoull(cl + 15, NULL, 10);
        /* Consume the body. */
        if (have - hdr >= body) {
            memmove(buf, buf + hdr + body, have - hdr - body);
            have -= hdr + body;
        } else {
            size_t left = body - (have - hdr);
            have = 0;
            while (left > 0) {
                n = read(fd, buf, left < sizeof(buf) ? left : sizeof(buf));
                if (n <= 0)
                    goto out;
                left -= (size_t)n;
            }
        }
        __atomic_add_fetch(&sink_bytes, body, __ATOMIC_RELAXED);
        __atomic_add_fetch(&sink_requests, 1, __ATOMIC_RELAXED);
        {
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                                     "application/x-protobuf\r\n"
                                     "Content-Length: 0\r\n\r\n";
            if (write(fd, ok, sizeof(ok) - 1) < 0)
                goto out;
        }
    }
out:
    close(fd);
    return NULL;
}

static void *sink_main(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    while (!sink_stop) {
        pthread_t th;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_create(&th, NULL, sink_conn, (void *)(intptr_t)fd);
        pthread_detach(th);
    }
    return NULL;
}

static int sink_start(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    pthread_t th;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 16))
        return -1;
    getsockname(fd, (struct sockaddr *)&a, &len);
    pthread_create(&th, NULL, sink_main, (void *)(intptr_t)fd);
    pthread_detach(th);
    return ntohs(a.sin_port);
}

/* ---- one traced request ---------------------------------------------- */

/* Out of line, so that callgrind can toggle on them. */
__attribute__((noinline)) static void one_request(pdt_tracer *t, uint64_t i)
{
    (void)i;
    pdtb_request(t, PDTB_INBOUND, 0);
}

/* The same request with the caller's own timestamps (a proxy often has
 * them already): the library reads no clock. */
__attribute__((noinline)) static void one_request_ts(pdt_tracer *t, uint64_t a)
{
    pdtb_request(t, PDTB_INBOUND, a);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    char endpoint[64];
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t;
    pdt_stats st = PDT_STATS_INIT;
    uint64_t *lat, *ts_lat, t0, total, a0, a1, ts_p50_out;
    double clock_ns;
    int port = sink_start();
    long i, warm = n;

    if (port < 0 || n <= 0)
        return 1;
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d/v1/traces",
             port);
    o.endpoint = endpoint;
    o.exporter = PDT_EXPORTER_OTLP;
    o.compression = PDT_COMPRESSION_ZSTD;
    o.max_queue_size = 65536;
    o.max_export_batch_size = 1536;
    o.schedule_delay_ms = 100;
    o.ignore_environment = 1;
    if (pdt_tracer_open(&t, &o) != PDT_OK) {
        fprintf(stderr, "open: %s\n", pdt_last_error());
        return 1;
    }
    lat = __libc_malloc(sizeof(*lat) * (size_t)n);
    ts_lat = __libc_malloc(sizeof(*ts_lat) * (size_t)n);
    /* Warm up with the same pacing as the timed run, so the record pool
     * reaches the size that run needs. */
    for (i = 0; i < warm; i++) {
        one_request(t, (uint64_t)i);
        if ((i & 1023) == 1023) {
            pdt_stats q = PDT_STATS_INIT;
            pdt_tracer_stats(t, &q);
            if (q.queue_depth > 8192)
                pdt_tracer_flush(t, 10000, NULL);
        }
    }
    pdt_tracer_flush(t, 10000, NULL);

    a0 = allocs;
    t0 = pdt_now_ns();
    for (i = 0; i < n; i++) {
        uint64_t s = pdt_now_ns();
        one_request(t, (uint64_t)i);
        lat[i] = pdt_now_ns() - s;
        if ((i & 1023) == 1023) {
            /* Keep the queue from overflowing: pace like real traffic. */
            uint64_t depth;
            pdt_stats q = PDT_STATS_INIT;
            pdt_tracer_stats(t, &q);
            depth = q.queue_depth;
            if (depth > 8192)
                pdt_tracer_flush(t, 10000, NULL);
        }
    }
    total = pdt_now_ns() - t0;
    a1 = allocs;
    pdt_tracer_flush(t, 30000, NULL);
    {
        /* The clock reads inside the library: 7 per request above. */
        uint64_t c0, c1, sum = 0, ts_p50;
        long k;
        c0 = pdt_now_ns();
        for (k = 0; k < 1000000; k++)
            sum += pdt_now_ns();
        c1 = pdt_now_ns();
        clock_ns = (double)(c1 - c0) / 1e6;
        (void)sum;
        for (i = 0; i < n; i++) {
            uint64_t s = pdt_now_ns();
            one_request_ts(t, s - 10000);
            ts_lat[i] = pdt_now_ns() - s;
            if ((i & 1023) == 1023) {
                pdt_stats q = PDT_STATS_INIT;
                pdt_tracer_stats(t, &q);
                if (q.queue_depth > 8192)
                    pdt_tracer_flush(t, 10000, NULL);
            }
        }
        pdt_tracer_flush(t, 30000, NULL);
        qsort(ts_lat, (size_t)n, sizeof(*ts_lat), cmp_u64);
        ts_p50 = ts_lat[n / 2];
        ts_p50_out = ts_p50;
    }
    pdt_tracer_stats(t, &st);
    qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
    printf("## libpdtrace C core\n\n");
    printf("| metric | value |\n|---|---|\n");
    printf("| requests timed | %ld |\n", n);
    printf("| caller ns/request (mean, incl. timing) | %.0f |\n",
           (double)total / (double)n);
    printf("| caller ns/request p50 | %llu |\n",
           (unsigned long long)lat[n / 2]);
    printf("| caller ns/request p99 | %llu |\n",
           (unsigned long long)lat[(size_t)((double)n * 0.99)]);
    printf("| caller ns/request p50, timestamps given by the caller | %llu "
           "|\n", (unsigned long long)ts_p50_out);
    printf("| one clock read (pdt_now_ns), ns | %.1f |\n", clock_ns);
    printf("| caller allocations/request (steady state) | %.4f |\n",
           (double)(a1 - a0) / (double)n);
    printf("| spans exported / dropped (queue) | %llu / %llu |\n",
           (unsigned long long)st.spans_exported,
           (unsigned long long)st.dropped_queue_full);
    printf("| HTTP requests / zstd bytes per span on the wire | %llu / %.1f "
           "|\n", (unsigned long long)st.export_requests,
           st.spans_exported ? (double)st.bytes_sent /
                                   (double)st.spans_exported : 0.0);
    pdt_tracer_close(t, 10000, NULL);

    /* Encoder and compression on a frozen batch of 512 requests. */
    {
        pdt_tracer_options c = PDT_TRACER_OPTIONS_INIT;
        pdt_tracer *ct;
        pdti_rec *recs[1536];
        size_t nrec = 0, k, reps = 200;
        pdti_buf body = PDTI_BUF_INIT, z = PDTI_BUF_INIT;
        pdti_rec *r;
        uint64_t e0, e1;
        int kinds[2] = { PDT_COMPRESSION_GZIP, PDT_COMPRESSION_ZSTD };
        const char *names[2] = { "gzip", "zstd" };

        c.exporter = PDT_EXPORTER_OTLP;
        c.endpoint = endpoint;
        c.max_queue_size = 4096;
        c.max_export_batch_size = 4096;
        c.schedule_delay_ms = 3600000;
        c.ignore_environment = 1;
        pdt_tracer_open(&ct, &c);
        for (i = 0; i < 512; i++)
            one_request(ct, (uint64_t)i);
        /* Take the frozen records straight off the queue. */
        pthread_mutex_lock(&ct->queue.mu);
        for (r = ct->queue.head; r != NULL && nrec < 1536; r = r->next)
            recs[nrec++] = r;
        pthread_mutex_unlock(&ct->queue.mu);
        pdti_encode_request(ct->preamble.data, ct->scope_off,
                            ct->preamble.data + ct->scope_off,
                            ct->preamble.len - ct->scope_off, recs, nrec,
                            &body);
        e0 = pdt_now_ns();
        for (k = 0; k < reps; k++)
            pdti_encode_request(ct->preamble.data, ct->scope_off,
                                ct->preamble.data + ct->scope_off,
                                ct->preamble.len - ct->scope_off, recs, nrec,
                                &body);
        e1 = pdt_now_ns();
        printf("| encode: spans/s (one core, %zu-span batch) | %.2f M |\n",
               nrec, (double)(nrec * reps) / ((double)(e1 - e0) / 1e9) / 1e6);
        printf("| encode: ns/span | %.1f |\n",
               (double)(e1 - e0) / (double)(nrec * reps));
        printf("| wire bytes/span, none | %.1f |\n",
               (double)body.len / (double)nrec);
        for (k = 0; k < 2; k++) {
            uint64_t c0, c1;
            int rep;
            c0 = pdt_now_ns();
            for (rep = 0; rep < 20; rep++) {
                pdti_buf_reset(&z);
                pdti_compress(kinds[k], body.data, body.len, &z);
            }
            c1 = pdt_now_ns();
            printf("| wire bytes/span, %s | %.1f (%.0f ns/span to "
                   "compress) |\n", names[k], (double)z.len / (double)nrec,
                   (double)(c1 - c0) / 20.0 / (double)nrec);
        }
        pdti_buf_free(&body);
        pdti_buf_free(&z);
        pdt_tracer_close(ct, 0, NULL);
    }
    sink_stop = 1;
    return 0;
}
