/*
 * bench_floor: the floor row of tests/bench/run_bench.sh.
 *
 * What one traced request costs at the very least: the 7 clock reads a
 * request makes, then its 3 spans (the same names, kinds, ids, timestamps,
 * attributes and types as the benchmark's workload, 26 + 3 + 13 attributes)
 * encoded once into an OTLP ExportTraceServiceRequest by a minimal protobuf
 * writer, one batch of 512 requests per body, then the body compressed by
 * the library's own compressor (same codec code and default levels as an
 * export). No queue, no threads, no HTTP: the work no exporter can avoid.
 *
 * The writer fills its buffer from the end towards the front, so every
 * length is known when its prefix is written: one pass, no size pass, no
 * copy. Spans of a batch are written as the requests end; the scope,
 * resource and request envelopes are prepended when the batch is complete.
 *
 *   bench_floor [--requests N] [--batch R] [--repeats K] [--level-gzip L]
 *               [--level-zstd L]
 *   bench_floor --check
 *
 * Prints one JSON line: per compression mode (none, gzip, zstd at the
 * library's default levels, and gzip/zstd at the levels given), the median
 * over K repeats of the thread CPU time per request, and the body bytes per
 * span.
 *
 * --check encodes one batch of 64 requests, walks it with a protobuf reader
 * that checks every length prefix nests exactly, and checks the shape: one
 * resource (6 attributes), one scope, 3 spans a request with 26, 3 and 13
 * attributes. Exit status 0 when it holds (a meson test of the unit suite).
 */
#define _GNU_SOURCE 1
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pdtrace.h>

#include "buf.h"
#include "transport.h"

/* ---- backward protobuf writer ------------------------------------------ */

typedef struct {
    uint8_t *base; /* buffer start */
    uint8_t *p;    /* first written byte; the message is [p, end) */
    uint8_t *end;
} bw;

#define BW_INLINE static inline __attribute__((always_inline))

BW_INLINE size_t bw_len(const bw *w) { return (size_t)(w->end - w->p); }

BW_INLINE void bw_bytes(bw *w, const void *s, size_t n)
{
    w->p -= n;
    memcpy(w->p, s, n);
}

BW_INLINE void bw_byte(bw *w, unsigned b) { *--w->p = (uint8_t)b; }

static void bw_varint_long(bw *w, uint64_t v)
{
    uint8_t *q;
    size_t n = 1;
    uint64_t x = v >> 7;

    while (x != 0) {
        n++;
        x >>= 7;
    }
    w->p -= n;
    q = w->p;
    while (v > 0x7f) {
        *q++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *q = (uint8_t)v;
}

BW_INLINE void bw_varint(bw *w, uint64_t v)
{
    if (v < 0x80)
        bw_byte(w, (unsigned)v);
    else
        bw_varint_long(w, v);
}

BW_INLINE void bw_fixed64(bw *w, uint64_t v)
{
    w->p -= 8;
    memcpy(w->p, &v, 8); /* little-endian hosts (x86-64, arm64) */
}

/* Tags of the fields used here are one byte (field < 16). */
BW_INLINE void bw_tag(bw *w, unsigned field, unsigned wt)
{
    bw_byte(w, field << 3 | wt);
}

/* A length-delimited field whose payload was written since `mark`. */
BW_INLINE void bw_close(bw *w, unsigned field, size_t mark)
{
    bw_varint(w, (uint64_t)(bw_len(w) - mark));
    bw_tag(w, field, 2);
}

BW_INLINE void bw_str(bw *w, unsigned field, const char *s, size_t n)
{
    bw_bytes(w, s, n);
    bw_varint(w, n);
    bw_tag(w, field, 2);
}

/* KeyValue{key, AnyValue{...}} as field `field` (attributes: 9 in Span,
 * 1 in Resource); the key's length is a compile-time constant at every
 * call. */
BW_INLINE void kv_str(bw *w, unsigned field, const char *k, size_t kn,
                      const char *v, size_t vn)
{
    size_t m = bw_len(w), m2 = m;
    bw_str(w, 1, v, vn); /* AnyValue.string_value */
    bw_close(w, 2, m2);
    bw_str(w, 1, k, kn);
    bw_close(w, field, m);
}

BW_INLINE void kv_int(bw *w, unsigned field, const char *k, size_t kn,
                      int64_t v)
{
    size_t m = bw_len(w), m2 = m;
    bw_varint(w, (uint64_t)v);
    bw_tag(w, 3, 0); /* int_value */
    bw_close(w, 2, m2);
    bw_str(w, 1, k, kn);
    bw_close(w, field, m);
}

BW_INLINE void kv_bool(bw *w, unsigned field, const char *k, size_t kn,
                       int v)
{
    size_t m = bw_len(w);
    bw_byte(w, v ? 1u : 0u);
    bw_tag(w, 2, 0); /* bool_value */
    bw_byte(w, 2);   /* AnyValue length */
    bw_tag(w, 2, 2);
    bw_str(w, 1, k, kn);
    bw_close(w, field, m);
}

BW_INLINE void kv_double(bw *w, unsigned field, const char *k, size_t kn,
                         double v)
{
    size_t m = bw_len(w);
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    bw_fixed64(w, u);
    bw_tag(w, 4, 1); /* double_value */
    bw_byte(w, 9);   /* AnyValue length */
    bw_tag(w, 2, 2);
    bw_str(w, 1, k, kn);
    bw_close(w, field, m);
}

/* Attribute helpers with a literal key (length from sizeof). */
#define KS(k, v) kv_str(w, 9, k, sizeof(k) - 1, v, sizeof(v) - 1)
#define KI(k, v) kv_int(w, 9, k, sizeof(k) - 1, v)
#define KB(k, v) kv_bool(w, 9, k, sizeof(k) - 1, v)
#define KD(k, v) kv_double(w, 9, k, sizeof(k) - 1, v)
#define P "llm_d.pd_proxy."

/* ---- one request ------------------------------------------------------ */

static uint64_t rng = 0x2545f4914f6cdd1du;

static uint64_t next64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const uint8_t trace_id[16] = { 0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd,
                                      0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21,
                                      0x1c, 0x80, 0x31, 0x9c };
static const uint8_t inbound_parent[8] = { 0xb7, 0xad, 0x6b, 0x71,
                                           0x69, 0x20, 0x33, 0x31 };

/* Span header fields: ids, name, kind, times; written after (before, in
 * the buffer) its attributes. */
BW_INLINE void span_head(bw *w, const uint8_t sid[8], const uint8_t *parent,
                         const char *name, size_t name_len, int kind,
                         uint64_t t0, uint64_t t1)
{
    bw_fixed64(w, t1);
    bw_tag(w, 8, 1);
    bw_fixed64(w, t0);
    bw_tag(w, 7, 1);
    bw_varint(w, (uint64_t)kind);
    bw_tag(w, 6, 0);
    bw_str(w, 5, name, name_len);
    bw_bytes(w, parent, 8);
    bw_varint(w, 8);
    bw_tag(w, 4, 2);
    bw_str(w, 2, (const char *)sid, 8);
    bw_str(w, 1, (const char *)trace_id, 16);
}

static double ms(uint64_t a, uint64_t b) { return (double)(b - a) / 1e6; }

BW_INLINE void breakdown(bw *w, uint64_t t[7], const char *rid)
{
    kv_str(w, 9, P "request_id", sizeof(P "request_id") - 1, rid, 36);
    KD(P "tpot_ms", ms(t[4], t[5]) / 127.0);
    KD(P "total_duration_ms", ms(t[0], t[6]));
    KD(P "decode_duration_ms", ms(t[3], t[6]));
    KD(P "true_ttft_ms", ms(t[0], t[4]));
    KD(P "decode_ttft_ms", ms(t[3], t[4]));
    KD(P "kv_transfer_overhead_ms", ms(t[2], t[3]));
    KD(P "prefill_duration_ms", ms(t[1], t[2]));
    KD(P "queue_ms", ms(t[0], t[1]));
}

/* Marked noinline and global so that callgrind can toggle on it. */
void floor_request(bw *w);

__attribute__((noinline)) void floor_request(bw *w)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t t[7], a, b;
    uint8_t sreq[8], spre[8], sdec[8];
    char rid[36];
    size_t m;
    int i, j;

    /* arrival, prefill sent/done, decode sent, first/last token, end */
    for (i = 0; i < 7; i++)
        t[i] = clock_ns();
    a = next64();
    memcpy(sreq, &a, 8);
    b = next64();
    memcpy(spre, &b, 8);
    a = next64();
    memcpy(sdec, &a, 8);
    a = next64();
    b = next64();
    for (i = 0, j = 0; i < 36; i++) {
        uint64_t x = j < 16 ? a >> (4 * j) : b >> (4 * (j - 16));
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            rid[i] = '-';
            continue;
        }
        rid[i] = hex[x & 15];
        j++;
    }
    rid[14] = '4';

    /* decode span */
    m = bw_len(w);
    KI("gen_ai.usage.output_tokens", 128);
    breakdown(w, t, rid);
    KI("http.response.status_code", 200);
    KI("server.port", 8000);
    KS("server.address", "10.0.0.2");
    span_head(w, sdec, sreq, P "decode", sizeof(P "decode") - 1, 3, t[3], t[6]);
    bw_close(w, 2, m);

    /* prefill span */
    m = bw_len(w);
    KI("http.response.status_code", 200);
    KI("server.port", 8000);
    KS("server.address", "10.0.0.1");
    span_head(w, spre, sreq, P "prefill", sizeof(P "prefill") - 1, 3, t[1], t[2]);
    bw_close(w, 2, m);

    /* request span */
    m = bw_len(w);
    KI("gen_ai.usage.cache_read.input_tokens", 512);
    KI("gen_ai.usage.output_tokens", 128);
    KI("gen_ai.usage.input_tokens", 1024);
    KB(P "concurrent_pd", 0);
    KB(P "disaggregation_enabled", 1);
    KS(P "connector", "nixlv2");
    breakdown(w, t, rid);
    KI("http.response.status_code", 200);
    KI(P "decode.status_code", 200);
    KS(P "decode_target", "10.0.0.2:8000");
    KI(P "prefill.status_code", 200);
    KS(P "prefill_target", "10.0.0.1:8000");
    KB("gen_ai.request.stream", 1);
    KI("gen_ai.request.max_tokens", 128);
    KS("gen_ai.operation.name", "chat");
    KS("gen_ai.request.model", "llama-3.1-8b");
    KS("url.path", "/v1/chat/completions");
    KS("http.request.method", "POST");
    span_head(w, sreq, inbound_parent, P "request",
              sizeof(P "request") - 1, 2, t[0], t[6]);
    bw_close(w, 2, m);
}

/* Prepends ScopeSpans' scope, then the ResourceSpans and request
 * envelopes, around the spans written since the batch began. */
static void floor_envelope(bw *w)
{
    size_t m;

    m = bw_len(w);
    bw_str(w, 2, "0.1.0", 5);
    bw_str(w, 1, "libpdtrace", 10);
    bw_close(w, 1, m); /* ScopeSpans.scope */
    bw_close(w, 2, 0); /* ResourceSpans.scope_spans */
    m = bw_len(w);
    kv_str(w, 1, "host.name", 9, "bench-host", 10);
    kv_int(w, 1, "process.pid", 11, 4242);
    kv_str(w, 1, "telemetry.sdk.version", 21, "0.1.0", 5);
    kv_str(w, 1, "telemetry.sdk.language", 22, "c", 1);
    kv_str(w, 1, "telemetry.sdk.name", 18, "libpdtrace", 10);
    kv_str(w, 1, "service.name", 12, "llm-d-pd-proxy", 14);
    bw_close(w, 1, m); /* ResourceSpans.resource */
    bw_close(w, 1, 0); /* ExportTraceServiceRequest.resource_spans */
}

/* ---- self-check ------------------------------------------------------ */

/* Reads a varint at *i (< n). -1 on a truncated or overlong one. */
static int rd_varint(const uint8_t *b, size_t n, size_t *i, uint64_t *v)
{
    unsigned sh = 0;
    *v = 0;
    while (*i < n && sh < 64) {
        uint8_t c = b[(*i)++];
        *v |= (uint64_t)(c & 0x7f) << sh;
        if ((c & 0x80) == 0)
            return 0;
        sh += 7;
    }
    return -1;
}

/* Counts the fields numbered `want` (length-delimited) in [b, b+n),
 * checking that every field of the message is well formed; the payload
 * of the k-th such field goes to sub[k] (up to max). -1 when malformed. */
static long fields(const uint8_t *b, size_t n, unsigned want,
                   const uint8_t **sub, size_t *sub_len, long max)
{
    size_t i = 0;
    long count = 0;
    while (i < n) {
        uint64_t tag, v;
        if (rd_varint(b, n, &i, &tag) != 0)
            return -1;
        switch (tag & 7) {
        case 0:
            if (rd_varint(b, n, &i, &v) != 0)
                return -1;
            break;
        case 1:
            if (n - i < 8)
                return -1;
            i += 8;
            break;
        case 2:
            if (rd_varint(b, n, &i, &v) != 0 || v > n - i)
                return -1;
            if ((tag >> 3) == want) {
                if (count < max) {
                    sub[count] = b + i;
                    sub_len[count] = (size_t)v;
                }
                count++;
            }
            i += (size_t)v;
            break;
        default:
            return -1;
        }
    }
    return count;
}

#define CHECK_REQUESTS 64

static int self_check(bw *w)
{
    static const long want_attrs[3] = { 26, 3, 13 };
    const uint8_t *a[1], *r[1], *sc[1], *sp[3 * CHECK_REQUESTS], *x[64];
    size_t al[1], rl[1], scl[1], spl[3 * CHECK_REQUESTS], xl[64];
    long k, nsp;
    int i;

    w->p = w->end;
    for (i = 0; i < CHECK_REQUESTS; i++)
        floor_request(w);
    floor_envelope(w);
    if (fields(w->p, bw_len(w), 1, a, al, 1) != 1 ||  /* resource_spans */
        fields(a[0], al[0], 1, r, rl, 1) != 1 ||      /* resource */
        fields(r[0], rl[0], 1, x, xl, 64) != 6 ||      /* its attributes */
        fields(a[0], al[0], 2, sc, scl, 1) != 1) {     /* scope_spans */
        fprintf(stderr, "bench_floor: bad envelope\n");
        return 1;
    }
    nsp = fields(sc[0], scl[0], 2, sp, spl, 3 * CHECK_REQUESTS);
    if (nsp != 3 * CHECK_REQUESTS) {
        fprintf(stderr, "bench_floor: %ld spans, want %d\n", nsp,
                3 * CHECK_REQUESTS);
        return 1;
    }
    for (k = 0; k < nsp; k++) {
        const uint8_t *id[1];
        size_t idl[1];
        long na = fields(sp[k], spl[k], 9, x, xl, 64);
        if (na != want_attrs[k % 3] ||
            fields(sp[k], spl[k], 1, id, idl, 1) != 1 || idl[0] != 16 ||
            fields(sp[k], spl[k], 2, id, idl, 1) != 1 || idl[0] != 8) {
            fprintf(stderr, "bench_floor: span %ld malformed (%ld "
                            "attributes)\n", k, na);
            return 1;
        }
    }
    printf("bench_floor: %d requests, %ld spans, %zu bytes: ok\n",
           CHECK_REQUESTS, nsp, bw_len(w));
    return 0;
}

/* ---- measurement ---------------------------------------------------- */

/*
 * The codecs (ISA-L's igzip, zstd) leave the upper halves of the AVX
 * registers dirty; on this machine the SSE code that follows on the same
 * thread (the next batch's encode) then runs about 2.5 times slower. An
 * exporter compresses on its own thread, so the floor clears that state
 * after each body instead of charging the penalty to the encode.
 */
static int have_avx;

static void clear_upper_state(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (have_avx)
        __asm__ volatile("vzeroupper");
#endif
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs `requests` requests in batches of `batch`, compressing each body
 * with c (NULL: none). Returns thread CPU ns per request; *bps gets the
 * body bytes per span, *comp_ns the part of the CPU spent compressing. */
static double run_mode(bw *w, pdti_compressor *c, pdti_buf *out,
                       long requests, long batch, double *bps,
                       double *comp_ns)
{
    uint64_t c0 = thread_cpu_ns(), bytes = 0, in_comp = 0;
    long done = 0;

    while (done < requests) {
        long k;
        w->p = w->end;
        for (k = 0; k < batch && done < requests; k++, done++)
            floor_request(w);
        floor_envelope(w);
        if (c != NULL) {
            uint64_t x0 = thread_cpu_ns();
            pdti_buf_reset(out);
            if (pdti_compressor_run(c, w->p, bw_len(w), out) != PDT_OK) {
                fprintf(stderr, "bench_floor: compression failed\n");
                exit(1);
            }
            bytes += out->len;
            clear_upper_state();
            in_comp += thread_cpu_ns() - x0;
        } else {
            bytes += bw_len(w);
        }
    }
    *bps = (double)bytes / (double)(3 * requests);
    *comp_ns = (double)in_comp / (double)requests;
    return (double)(thread_cpu_ns() - c0) / (double)requests;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "requests", required_argument, NULL, 'n' },
        { "batch", required_argument, NULL, 'b' },
        { "repeats", required_argument, NULL, 'k' },
        { "level-gzip", required_argument, NULL, 'g' },
        { "level-zstd", required_argument, NULL, 'z' },
        { "check", no_argument, NULL, 'c' },
        { NULL, 0, NULL, 0 }
    };
    long requests = 102400, batch = 512, repeats = 5;
    int lg = 6, lz = 3, ch, mi, r, check = 0;
    struct {
        const char *name;
        int kind, level;
    } modes[5];
    size_t cap;
    bw w;
    pdti_buf out = { 0 };
    double *v, *vc;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'n': requests = atol(optarg); break;
        case 'b': batch = atol(optarg); break;
        case 'k': repeats = atol(optarg); break;
        case 'g': lg = atoi(optarg); break;
        case 'z': lz = atoi(optarg); break;
        case 'c': check = 1; break;
        default: return 2;
        }
    }
    if (requests <= 0 || batch <= 0 || batch > 100000 || repeats <= 0 ||
        repeats > 99) {
        fprintf(stderr, "usage: bench_floor [--requests N>0] [--batch "
                        "1..100000] [--repeats 1..99] [--level-gzip L] "
                        "[--level-zstd L] | --check\n");
        return 2;
    }
    modes[0].name = "none";
    modes[0].kind = PDT_COMPRESSION_NONE;
    modes[0].level = 0;
    modes[1].name = "gzip";
    modes[1].kind = PDT_COMPRESSION_GZIP;
    modes[1].level = 0;
    modes[2].name = "zstd";
    modes[2].kind = PDT_COMPRESSION_ZSTD;
    modes[2].level = 0;
    modes[3].name = "gzip_l";
    modes[3].kind = PDT_COMPRESSION_GZIP;
    modes[3].level = lg;
    modes[4].name = "zstd_l";
    modes[4].kind = PDT_COMPRESSION_ZSTD;
    modes[4].level = lz;

#if defined(__x86_64__) && defined(__GNUC__)
    have_avx = __builtin_cpu_supports("avx");
#endif
    cap = (size_t)batch * 3 * 1024 + 4096; /* a span encodes to < 1 KiB */
    w.base = malloc(cap);
    v = malloc(sizeof(*v) * (size_t)repeats);
    vc = malloc(sizeof(*vc) * (size_t)repeats);
    if (w.base == NULL || v == NULL || vc == NULL)
        return 1;
    w.end = w.base + cap;
    w.p = w.end;
    if (check) {
        int rc = self_check(&w);
        free(w.base);
        free(v);
        free(vc);
        return rc;
    }

    /* Warm-up: page in the buffer, the code and the compressors' tables. */
    {
        double bps, cn;
        run_mode(&w, NULL, &out, batch * 4, batch, &bps, &cn);
    }
    printf("{\"impl\":\"floor\",\"requests\":%ld,\"batch\":%ld,"
           "\"repeats\":%ld,\"how\":\"thread CPU per request, median of "
           "repeats: 7 clock reads + one-pass encode (+ compression per "
           "batch)\"",
           requests, batch, repeats);
    for (mi = 0; mi < 5; mi++) {
        pdti_compressor *c = NULL;
        double bps = 0, cn = 0;
        if (modes[mi].kind != PDT_COMPRESSION_NONE &&
            pdti_compressor_new(&c, modes[mi].kind, modes[mi].level) !=
                PDT_OK) {
            fprintf(stderr, "bench_floor: %s level %d not available\n",
                    modes[mi].name, modes[mi].level);
            return 1;
        }
        for (r = 0; r < repeats; r++) {
            v[r] = run_mode(&w, c, &out, requests, batch, &bps, &cn);
            vc[r] = cn;
        }
        qsort(v, (size_t)repeats, sizeof(*v), cmp_double);
        qsort(vc, (size_t)repeats, sizeof(*vc), cmp_double);
        printf(",\"cpu_ns_per_req_%s\":%.1f,\"compress_ns_per_req_%s\":%.1f,"
               "\"bytes_per_span_%s\":%.1f",
               modes[mi].name, v[repeats / 2], modes[mi].name, vc[repeats / 2],
               modes[mi].name, bps);
        if (c != NULL)
            printf(",\"level_%s\":%d", modes[mi].name,
                   pdti_compressor_level(c));
        pdti_compressor_free(c);
    }
    printf("}\n");
    pdti_buf_free(&out);
    free(w.base);
    free(v);
    free(vc);
    return 0;
}
