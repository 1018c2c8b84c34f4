/*
 * bench_compress: wire size and CPU cost of each compression setting on
 * the benchmark's real export bodies.
 *
 * Step 1 runs the workload of bench_c_rows (the same traced P/D request,
 * 3 spans, one shared inbound trace id unless --fresh-trace, batches of
 * 1536 spans = 512 requests, a flush every 8192 requests) through a tracer
 * with compression none into a loopback sink inside this process, which
 * keeps every request body it receives. Step 2 compresses those bodies
 * with each setting of the sweep and prints bytes per span and thread CPU
 * per span (best of --reps passes over all captured batches).
 *
 *   bench_compress [--batches N] [--reps N] [--fresh-trace]
 *                  [--save DIR] [--load DIR]
 *
 * --save writes the captured bodies as DIR/body-NNN.pb; --load sweeps saved
 * bodies instead of running the workload.
 *
 * Also measured: the same bodies with the spans of each ScopeSpans
 * regrouped by span name (requests, then prefill, then decode legs), which
 * is valid OTLP with the same content, to see what span order is worth to
 * the compressor.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>
#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif
#ifdef HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#include <pdtrace.h>

#include "transport.h"
#include "workload.h"

/* ---- captured bodies ---------------------------------------------------- */

#define MAX_BODIES 256

typedef struct body {
    uint8_t *data;
    size_t len;
    size_t spans;
} body;

static body bodies[MAX_BODIES];
static size_t nbodies;
static size_t want_bodies = 16;
static pthread_mutex_t bodies_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- protobuf walking (just enough of OTLP to count and regroup) ------- */

static int read_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *v)
{
    int shift = 0;

    *v = 0;
    while (*pos < n && shift < 64) {
        uint8_t b = p[(*pos)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
        shift += 7;
    }
    return -1;
}

/*
 * Next field of the message p[0..n) at *pos: its number, wire type and,
 * for length-delimited fields, the payload's start and length; for the
 * others, the whole field's extent. Returns 0, or -1 at the end or on
 * malformed input.
 */
typedef struct field {
    unsigned num, wt;
    size_t start, end;     /* the whole field, tag included */
    size_t pl_start, pl_len; /* payload of wire type 2 */
} field;

static int next_field(const uint8_t *p, size_t n, size_t *pos, field *f)
{
    uint64_t tag, v;

    if (*pos >= n)
        return -1;
    f->start = *pos;
    f->pl_start = 0; /* set for wire type 2 only */
    f->pl_len = 0;
    if (read_varint(p, n, pos, &tag) != 0)
        return -1;
    f->num = (unsigned)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    switch (f->wt) {
    case 0:
        if (read_varint(p, n, pos, &v) != 0)
            return -1;
        break;
    case 1:
        *pos += 8;
        break;
    case 5:
        *pos += 4;
        break;
    case 2:
        if (read_varint(p, n, pos, &v) != 0 || v > n - *pos)
            return -1;
        f->pl_start = *pos;
        f->pl_len = (size_t)v;
        *pos += (size_t)v;
        break;
    default:
        return -1;
    }
    if (*pos > n)
        return -1;
    f->end = *pos;
    return 0;
}

/* Calls fn on the payload of every ScopeSpans of a request body. */
static void for_each_scope(const uint8_t *p, size_t n,
                           void (*fn)(void *ctx, uint8_t *ss, size_t len),
                           void *ctx)
{
    size_t pos = 0;
    field rs, ss;

    while (next_field(p, n, &pos, &rs) == 0) {
        size_t rpos = 0;
        const uint8_t *r = p + rs.pl_start;

        if (rs.num != 1 || rs.wt != 2)
            continue;
        while (next_field(r, rs.pl_len, &rpos, &ss) == 0) {
            if (ss.num == 2 && ss.wt == 2)
                fn(ctx, (uint8_t *)(uintptr_t)(r + ss.pl_start), ss.pl_len);
        }
    }
}

static void count_scope(void *ctx, uint8_t *ss, size_t len)
{
    size_t pos = 0, *count = ctx;
    field f;

    while (next_field(ss, len, &pos, &f) == 0) {
        if (f.num == 2 && f.wt == 2)
            (*count)++;
    }
}

static size_t count_spans(const uint8_t *p, size_t n)
{
    size_t count = 0;

    for_each_scope(p, n, count_scope, &count);
    return count;
}

/* The span's name (field 5), for grouping. */
static void span_name(const uint8_t *s, size_t len, const uint8_t **name,
                      size_t *name_len)
{
    size_t pos = 0;
    field f;

    *name = NULL;
    *name_len = 0;
    while (next_field(s, len, &pos, &f) == 0) {
        if (f.num == 5 && f.wt == 2) {
            *name = s + f.pl_start;
            *name_len = f.pl_len;
            return;
        }
    }
}

/*
 * Regroups the spans of one ScopeSpans in place: a stable order by span
 * name in the order names first appear. Sizes don't change, so the outer
 * lengths stay valid.
 */
static void group_scope(void *ctx, uint8_t *ss, size_t len)
{
    size_t pos = 0, nf = 0, cap = 4096, i, out = 0;
    field *fs = malloc(cap * sizeof(*fs));
    uint8_t *tmp = malloc(len);
    int *done;
    (void)ctx;

    if (fs == NULL || tmp == NULL)
        abort();
    while (nf < cap && next_field(ss, len, &pos, &fs[nf]) == 0)
        nf++;
    done = calloc(nf + 1, sizeof(*done));
    /* Fields other than spans first (the scope), in place. */
    for (i = 0; i < nf; i++) {
        if (!(fs[i].num == 2 && fs[i].wt == 2)) {
            memcpy(tmp + out, ss + fs[i].start, fs[i].end - fs[i].start);
            out += fs[i].end - fs[i].start;
            done[i] = 1;
        }
    }
    for (i = 0; i < nf; i++) {
        const uint8_t *nm;
        size_t nl, j;

        if (done[i])
            continue;
        span_name(ss + fs[i].pl_start, fs[i].pl_len, &nm, &nl);
        for (j = i; j < nf; j++) {
            const uint8_t *nm2;
            size_t nl2;

            if (done[j])
                continue;
            span_name(ss + fs[j].pl_start, fs[j].pl_len, &nm2, &nl2);
            if (nl2 == nl && (nl == 0 || memcmp(nm, nm2, nl) == 0)) {
                memcpy(tmp + out, ss + fs[j].start, fs[j].end - fs[j].start);
                out += fs[j].end - fs[j].start;
                done[j] = 1;
            }
        }
    }
    if (out == len)
        memcpy(ss, tmp, len);
    free(done);
    free(tmp);
    free(fs);
}

/*
 * Moves the attributes field (9) of every span after all other fields of
 * the span, keeping their relative order: the random ids and timestamps
 * then sit together at the start of each span.
 */
static void attrs_last_span(uint8_t *s, size_t len, uint8_t *tmp)
{
    size_t pos = 0, out = 0, pass;
    field f;

    for (pass = 0; pass < 2; pass++) {
        pos = 0;
        while (next_field(s, len, &pos, &f) == 0) {
            int is_attr = f.num == 9 && f.wt == 2;
            if ((pass == 0) != is_attr) {
                memcpy(tmp + out, s + f.start, f.end - f.start);
                out += f.end - f.start;
            }
        }
    }
    if (out == len)
        memcpy(s, tmp, len);
}

static void attrs_last_scope(void *ctx, uint8_t *ss, size_t len)
{
    size_t pos = 0;
    field f;
    uint8_t *tmp = malloc(len);
    (void)ctx;

    if (tmp == NULL)
        abort();
    while (next_field(ss, len, &pos, &f) == 0) {
        if (f.num == 2 && f.wt == 2)
            attrs_last_span(ss + f.pl_start, f.pl_len, tmp);
    }
    free(tmp);
}

/* ---- a loopback sink that keeps the bodies ------------------------------ */

static volatile int sink_stop;

static void keep_body(const uint8_t *p, size_t n)
{
    pthread_mutex_lock(&bodies_mu);
    if (nbodies < want_bodies) {
        body *b = &bodies[nbodies];
        b->data = malloc(n);
        if (b->data != NULL) {
            memcpy(b->data, p, n);
            b->len = n;
            b->spans = count_spans(p, n);
            nbodies++;
        }
    }
    pthread_mutex_unlock(&bodies_mu);
}

static void *sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char hbuf[8192];
    uint8_t *bbuf = NULL;
    size_t have = 0, bcap = 0;

    for (;;) {
        ssize_t n;
        char *end, *cl;
        size_t hdr, blen = 0, got;

        while ((end = memmem(hbuf, have, "\r\n\r\n", 4)) == NULL) {
            if (have == sizeof(hbuf))
                goto out;
            n = read(fd, hbuf + have, sizeof(hbuf) - have);
            if (n <= 0)
                goto out;
            have += (size_t)n;
        }
        hdr = (size_t)(end - hbuf) + 4;
        hbuf[hdr - 1] = '\0';
        cl = strcasestr(hbuf, "content-length:");
        if (cl != NULL)
            blen = strtoull(cl + 15, NULL, 10);
        if (blen > bcap) {
            uint8_t *nb = realloc(bbuf, blen);
            if (nb == NULL)
                goto out;
            bbuf = nb;
            bcap = blen;
        }
        got = have - hdr < blen ? have - hdr : blen;
        memcpy(bbuf, hbuf + hdr, got);
        memmove(hbuf, hbuf + hdr + got, have - hdr - got);
        have -= hdr + got;
        while (got < blen) {
            n = read(fd, bbuf + got, blen - got);
            if (n <= 0)
                goto out;
            got += (size_t)n;
        }
        keep_body(bbuf, blen);
        {
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                                     "application/x-protobuf\r\n"
                                     "Content-Length: 0\r\n\r\n";
            if (write(fd, ok, sizeof(ok) - 1) < 0)
                goto out;
        }
    }
out:
    free(bbuf);
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

/* ---- the workload (as bench_c_rows) ------------------------------------ */

static int fresh_trace;
static char fresh[sizeof(PDTB_INBOUND)];
static uint64_t fresh_state = 0x9e3779b97f4a7c15u;

static void next_inbound(void)
{
    pdtb_fresh_traceparent(fresh, &fresh_state);
}

static void one_request(pdt_tracer *t)
{
    pdtb_request(t, fresh_trace ? fresh : PDTB_INBOUND, 0);
}

static int capture(void)
{
    char endpoint[64];
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t;
    int port = sink_start();
    long i, warm = 5000, flush_every = 8192;

    if (port < 0)
        return -1;
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d/v1/traces",
             port);
    memcpy(fresh, PDTB_INBOUND, sizeof(PDTB_INBOUND));
    o.endpoint = endpoint;
    o.exporter = PDT_EXPORTER_OTLP;
    o.compression = PDT_COMPRESSION_NONE;
    o.max_queue_size = 65536;
    o.max_export_batch_size = 1536;
    o.schedule_delay_ms = 200;
    o.ignore_environment = 1;
    if (pdt_tracer_open(&t, &o) != PDT_OK) {
        fprintf(stderr, "open: %s\n", pdt_last_error());
        return -1;
    }
    /* The warm-up's bodies are not kept: only the timed run's. */
    for (i = 0; i < warm; i++) {
        one_request(t);
        if ((i + 1) % flush_every == 0)
            pdt_tracer_flush(t, 30000, NULL);
    }
    pdt_tracer_flush(t, 30000, NULL);
    pthread_mutex_lock(&bodies_mu);
    for (i = 0; i < (long)nbodies; i++)
        free(bodies[i].data);
    nbodies = 0;
    pthread_mutex_unlock(&bodies_mu);
    for (i = 0; ; i++) {
        size_t have;
        if (fresh_trace)
            next_inbound();
        one_request(t);
        if ((i + 1) % flush_every == 0)
            pdt_tracer_flush(t, 30000, NULL);
        pthread_mutex_lock(&bodies_mu);
        have = nbodies;
        pthread_mutex_unlock(&bodies_mu);
        if (have >= want_bodies || i > 4000000)
            break;
    }
    pdt_tracer_close(t, 10000, NULL);
    sink_stop = 1;
    return 0;
}

/* ---- the sweep ---------------------------------------------------------- */

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef enum codec {
    C_GZIP,      /* zlib, new z_stream per body */
    C_GZIP_RESET,/* zlib, one z_stream, deflateReset per body */
    C_ZSTD,      /* ZSTD_compress (a new context per body) */
    C_ZSTD_CCTX, /* one ZSTD_CCtx, parameters set once */
    C_LIB,       /* pdti_compress as the library does it */
    C_LIBDEFLATE, /* libdeflate gzip, one compressor kept */
    C_ISAL        /* ISA-L igzip, gzip wrapper, level buffer kept */
} codec;

typedef struct setting {
    codec c;
    int level;
    int window_bits; /* gzip: 9..15 (+16 for the wrapper); zstd: windowLog */
    int mem_level;   /* gzip */
    int strategy;    /* zstd: ZSTD_c_strategy, 0 = level's */
    int ldm;         /* zstd: long-distance matching */
    int hash_log;    /* zstd */
    int chain_log;   /* zstd */
    int search_log;  /* zstd */
    int min_match;   /* zstd */
    int kind;        /* C_LIB: PDT_COMPRESSION_GZIP or _ZSTD */
    const char *label;
} setting;

static z_stream zs_keep;
static int zs_keep_ok;
static int zs_keep_level = -100;
static ZSTD_CCtx *cctx;
static int cctx_key = -100000;

static size_t run_one(const setting *s, const uint8_t *in, size_t n,
                      uint8_t *out, size_t cap)
{
    switch (s->c) {
    case C_GZIP: {
        z_stream zs;
        size_t got;
        memset(&zs, 0, sizeof(zs));
        if (deflateInit2(&zs, s->level, Z_DEFLATED, s->window_bits + 16,
                         s->mem_level, Z_DEFAULT_STRATEGY) != Z_OK)
            return 0;
        zs.next_in = (Bytef *)(uintptr_t)in;
        zs.avail_in = (uInt)n;
        zs.next_out = out;
        zs.avail_out = (uInt)cap;
        if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
            got = 0;
        else
            got = cap - zs.avail_out;
        deflateEnd(&zs);
        return got;
    }
    case C_GZIP_RESET: {
        int key = s->level * 1000 + s->window_bits * 10 + s->mem_level;
        if (!zs_keep_ok || zs_keep_level != key) {
            if (zs_keep_ok)
                deflateEnd(&zs_keep);
            memset(&zs_keep, 0, sizeof(zs_keep));
            if (deflateInit2(&zs_keep, s->level, Z_DEFLATED,
                             s->window_bits + 16, s->mem_level,
                             Z_DEFAULT_STRATEGY) != Z_OK)
                return 0;
            zs_keep_ok = 1;
            zs_keep_level = key;
        } else {
            deflateReset(&zs_keep);
        }
        zs_keep.next_in = (Bytef *)(uintptr_t)in;
        zs_keep.avail_in = (uInt)n;
        zs_keep.next_out = out;
        zs_keep.avail_out = (uInt)cap;
        if (deflate(&zs_keep, Z_FINISH) != Z_STREAM_END)
            return 0;
        return cap - zs_keep.avail_out;
    }
    case C_ZSTD: {
        size_t got = ZSTD_compress(out, cap, in, n, s->level);
        return ZSTD_isError(got) ? 0 : got;
    }
    case C_ZSTD_CCTX: {
        size_t got;
        if (cctx == NULL)
            cctx = ZSTD_createCCtx();
        if (cctx_key != s->level * 7 + s->ldm + s->window_bits * 131 +
                            s->strategy * 17 + s->hash_log * 1009 +
                            s->chain_log * 2003 + s->search_log * 4001 +
                            s->min_match * 8009) {
            ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, s->level);
            if (s->window_bits)
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog,
                                       s->window_bits);
            if (s->strategy)
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy, s->strategy);
            if (s->ldm)
                ZSTD_CCtx_setParameter(cctx,
                                       ZSTD_c_enableLongDistanceMatching, 1);
            if (s->hash_log)
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, s->hash_log);
            if (s->chain_log)
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_chainLog, s->chain_log);
            if (s->search_log)
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_searchLog, s->search_log);
            if (s->min_match)
                ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, s->min_match);
            cctx_key = s->level * 7 + s->ldm + s->window_bits * 131 +
                       s->strategy * 17 + s->hash_log * 1009 +
                       s->chain_log * 2003 + s->search_log * 4001 +
                       s->min_match * 8009;
        }
        got = ZSTD_compress2(cctx, out, cap, in, n);
        return ZSTD_isError(got) ? 0 : got;
    }
    case C_LIBDEFLATE: {
#ifdef HAVE_LIBDEFLATE
        static struct libdeflate_compressor *ld;
        static int ld_level = -1;
        if (ld_level != s->level) {
            if (ld != NULL)
                libdeflate_free_compressor(ld);
            ld = libdeflate_alloc_compressor(s->level);
            ld_level = s->level;
        }
        return ld != NULL ? libdeflate_gzip_compress(ld, in, n, out, cap) : 0;
#else
        return 0;
#endif
    }
    case C_ISAL: {
#ifdef HAVE_ISAL
        static uint8_t *lvl_buf;
        static struct isal_zstream st;
        if (lvl_buf == NULL)
            lvl_buf = malloc(ISAL_DEF_LVL3_DEFAULT);
        isal_deflate_init(&st);
        st.level = (uint32_t)s->level;
        st.level_buf = lvl_buf;
        st.level_buf_size = s->level == 0 ? 0
                            : s->level == 1 ? ISAL_DEF_LVL1_DEFAULT
                            : s->level == 2 ? ISAL_DEF_LVL2_DEFAULT
                                            : ISAL_DEF_LVL3_DEFAULT;
        st.gzip_flag = IGZIP_GZIP;
        st.end_of_stream = 1;
        st.flush = NO_FLUSH;
        st.next_in = (uint8_t *)(uintptr_t)in;
        st.avail_in = (uint32_t)n;
        st.next_out = out;
        st.avail_out = (uint32_t)cap;
        if (isal_deflate(&st) != COMP_OK || st.internal_state.state !=
                                                ZSTATE_END)
            return 0;
        return st.total_out;
#else
        return 0;
#endif
    }
    case C_LIB: {
        /* The library's compressor, kept across bodies as the transport
         * keeps it. */
        static pdti_compressor *lc;
        static pdti_buf b = PDTI_BUF_INIT;
        if (lc == NULL || pdti_compressor_kind(lc) != s->kind ||
            pdti_compressor_level(lc) != s->level) {
            pdti_compressor_free(lc);
            lc = NULL;
            if (pdti_compressor_new(&lc, s->kind, s->level) != PDT_OK)
                return 0;
        }
        pdti_buf_reset(&b);
        if (pdti_compressor_run(lc, in, n, &b) != PDT_OK || b.len > cap)
            return 0;
        memcpy(out, b.data, b.len);
        return b.len;
    }
    }
    return 0;
}

static int reps = 5;

/* 1 if out[0..n) decompresses (gzip or zstd by its magic) to want. */
static int round_trips(const uint8_t *out, size_t n, const body *want)
{
    uint8_t *back = malloc(want->len + 1);
    size_t got = 0;
    int ok;

    if (back == NULL)
        return 0;
    if (n >= 2 && out[0] == 0x1f && out[1] == 0x8b) {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        if (inflateInit2(&zs, 31) != Z_OK) {
            free(back);
            return 0;
        }
        zs.next_in = (Bytef *)(uintptr_t)out;
        zs.avail_in = (uInt)n;
        zs.next_out = back;
        zs.avail_out = (uInt)want->len + 1;
        ok = inflate(&zs, Z_FINISH) == Z_STREAM_END && zs.avail_in == 0;
        got = want->len + 1 - zs.avail_out;
        inflateEnd(&zs);
    } else {
        got = ZSTD_decompress(back, want->len + 1, out, n);
        ok = !ZSTD_isError(got);
    }
    ok = ok && got == want->len && memcmp(back, want->data, got) == 0;
    free(back);
    return ok;
}

/* Best-of-reps CPU over all bodies; bytes are summed over the bodies. */
static void measure(const setting *s, body *bs, size_t nb, const char *what)
{
    size_t cap = 0, i, spans = 0, bytes = 0, raw = 0;
    uint8_t *out;
    uint64_t best = UINT64_MAX;
    int r;

    for (i = 0; i < nb; i++) {
        size_t b = ZSTD_compressBound(bs[i].len) + 4096;
        if (b > cap)
            cap = b;
        spans += bs[i].spans;
        raw += bs[i].len;
    }
    out = malloc(cap);
    for (r = 0; r < reps; r++) {
        uint64_t c0 = thread_cpu_ns(), c1;
        size_t sum = 0;
        for (i = 0; i < nb; i++)
            sum += run_one(s, bs[i].data, bs[i].len, out, cap);
        c1 = thread_cpu_ns();
        if (c1 - c0 < best)
            best = c1 - c0;
        bytes = sum;
    }
    {
        size_t n0 = run_one(s, bs[0].data, bs[0].len, out, cap);
        if (n0 == 0 || !round_trips(out, n0, &bs[0]))
            printf("| %s | %s | ROUND TRIP FAILED | | | |\n", what, s->label);
    }
    printf("| %s | %s | %.1f | %.1f | %.0f | %.1f |\n", what, s->label,
           (double)bytes / (double)spans, (double)raw / (double)bytes,
           (double)best / (double)spans,
           (double)best / (double)spans * 3.0 / 1000.0);
    fflush(stdout);
    free(out);
}

static void sweep(body *bs, size_t nb, const char *what, int full)
{
    static char labels[128][64];
    setting s;
    int l, k = 0;

    for (l = 0; l <= 1; l++) {
        int kind = l == 0 ? PDT_COMPRESSION_GZIP : PDT_COMPRESSION_ZSTD;
        memset(&s, 0, sizeof(s));
        s.c = C_LIB;
        s.kind = kind;
        pdti_compress_level_range(kind, NULL, NULL, &s.level);
        snprintf(labels[k], sizeof(labels[k]), "library %s default (%d)",
                 l == 0 ? "gzip" : "zstd", s.level);
        s.label = labels[k++];
        measure(&s, bs, nb, what);
    }
    for (l = 1; l <= 9; l++) {
        if (!full && l > 1 && l != 6)
            continue;
        memset(&s, 0, sizeof(s));
        s.c = C_GZIP_RESET;
        s.level = l;
        s.window_bits = 15;
        s.mem_level = 8;
        snprintf(labels[k], sizeof(labels[k]), "gzip %d (reused stream)", l);
        s.label = labels[k++];
        measure(&s, bs, nb, what);
    }
#ifdef HAVE_LIBDEFLATE
    for (l = 1; l <= 9; l++) {
        if (!full && l != 1 && l != 6)
            continue;
        memset(&s, 0, sizeof(s));
        s.c = C_LIBDEFLATE;
        s.level = l;
        snprintf(labels[k], sizeof(labels[k]), "libdeflate gzip %d", l);
        s.label = labels[k++];
        measure(&s, bs, nb, what);
    }
#endif
#ifdef HAVE_ISAL
    for (l = 0; l <= 3; l++) {
        memset(&s, 0, sizeof(s));
        s.c = C_ISAL;
        s.level = l;
        snprintf(labels[k], sizeof(labels[k]), "ISA-L igzip %d", l);
        s.label = labels[k++];
        measure(&s, bs, nb, what);
    }
#endif
    if (full) {
        int ml;
        memset(&s, 0, sizeof(s));
        s.c = C_GZIP;
        s.level = 1;
        s.window_bits = 15;
        s.mem_level = 8;
        s.label = "gzip 1 (new stream per body)";
        measure(&s, bs, nb, what);
        for (ml = 9; ml >= 5; ml -= 2) {
            memset(&s, 0, sizeof(s));
            s.c = C_GZIP_RESET;
            s.level = 1;
            s.window_bits = 15;
            s.mem_level = ml;
            snprintf(labels[k], sizeof(labels[k]), "gzip 1 memLevel %d", ml);
            s.label = labels[k++];
            measure(&s, bs, nb, what);
        }
    }
    for (l = -7; l <= 12; l++) {
        static const int fast[] = { -7, -5, -3, -1, 1, 2, 3, 4, 5, 6, 7, 8,
                                    9, 12 };
        size_t j;
        int ok = 0;
        for (j = 0; j < sizeof(fast) / sizeof(fast[0]); j++)
            ok |= fast[j] == l;
        if (!ok || (!full && l != 1 && l != 3 && l != -1))
            continue;
        memset(&s, 0, sizeof(s));
        s.c = C_ZSTD_CCTX;
        s.level = l;
        snprintf(labels[k], sizeof(labels[k]), "zstd %d (reused context)", l);
        s.label = labels[k++];
        measure(&s, bs, nb, what);
    }
    if (full) {
        static const int lv[] = { 1, 3, 5 };
        size_t j;
        memset(&s, 0, sizeof(s));
        s.c = C_ZSTD;
        s.level = 1;
        s.label = "zstd 1 (ZSTD_compress, new context)";
        measure(&s, bs, nb, what);
        for (j = 0; j < sizeof(lv) / sizeof(lv[0]); j++) {
            memset(&s, 0, sizeof(s));
            s.c = C_ZSTD_CCTX;
            s.level = lv[j];
            s.ldm = 1;
            snprintf(labels[k], sizeof(labels[k]), "zstd %d + long-distance "
                     "matching", lv[j]);
            s.label = labels[k++];
            measure(&s, bs, nb, what);
        }
        memset(&s, 0, sizeof(s));
        s.c = C_ZSTD_CCTX;
        s.level = 1;
        s.window_bits = 22;
        s.label = "zstd 1 windowLog 22";
        measure(&s, bs, nb, what);
        s.window_bits = 0;
        s.hash_log = 17;
        s.label = "zstd 1 hashLog 17";
        measure(&s, bs, nb, what);
        s.hash_log = 0;
        s.strategy = ZSTD_dfast;
        s.label = "zstd 1 strategy dfast";
        measure(&s, bs, nb, what);
        s.strategy = ZSTD_greedy;
        s.label = "zstd 1 strategy greedy";
        measure(&s, bs, nb, what);
        s.strategy = ZSTD_lazy2;
        s.label = "zstd 1 strategy lazy2";
        measure(&s, bs, nb, what);
        s.strategy = ZSTD_btopt;
        s.label = "zstd 1 strategy btopt";
        measure(&s, bs, nb, what);
        s.strategy = 0;
        s.level = 3;
        s.min_match = 6;
        s.label = "zstd 3 minMatch 6";
        measure(&s, bs, nb, what);
        s.min_match = 4;
        s.label = "zstd 3 minMatch 4";
        measure(&s, bs, nb, what);
    }
}

static body *copy_bodies(void)
{
    body *c = calloc(nbodies, sizeof(*c));
    size_t i;

    for (i = 0; i < nbodies; i++) {
        c[i] = bodies[i];
        c[i].data = malloc(bodies[i].len);
        memcpy(c[i].data, bodies[i].data, bodies[i].len);
    }
    return c;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "batches", required_argument, NULL, 'b' },
        { "reps", required_argument, NULL, 'r' },
        { "fresh-trace", no_argument, NULL, 't' },
        { "save", required_argument, NULL, 's' },
        { "load", required_argument, NULL, 'l' },
        { "quick", no_argument, NULL, 'q' },
        { NULL, 0, NULL, 0 }
    };
    const char *save = NULL, *load = NULL;
    int c, full = 1;
    size_t i, spans = 0, raw = 0;
    body *g, *a, *ga;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'b': want_bodies = (size_t)atol(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 't': fresh_trace = 1; break;
        case 's': save = optarg; break;
        case 'l': load = optarg; break;
        case 'q': full = 0; break;
        default: return 2;
        }
    }
    if (want_bodies == 0 || want_bodies > MAX_BODIES || reps < 1)
        return 2;
    if (load != NULL) {
        for (i = 0; i < want_bodies; i++) {
            char path[4096];
            FILE *f;
            long len;
            snprintf(path, sizeof(path), "%s/body-%03zu.pb", load, i);
            f = fopen(path, "rb");
            if (f == NULL)
                break;
            fseek(f, 0, SEEK_END);
            len = ftell(f);
            fseek(f, 0, SEEK_SET);
            bodies[i].data = malloc((size_t)len);
            bodies[i].len = fread(bodies[i].data, 1, (size_t)len, f);
            bodies[i].spans = count_spans(bodies[i].data, bodies[i].len);
            fclose(f);
            nbodies++;
        }
    } else if (capture() != 0) {
        return 1;
    }
    if (nbodies == 0) {
        fprintf(stderr, "no bodies\n");
        return 1;
    }
    for (i = 0; i < nbodies; i++) {
        spans += bodies[i].spans;
        raw += bodies[i].len;
        if (save != NULL) {
            char path[4096];
            FILE *f;
            snprintf(path, sizeof(path), "%s/body-%03zu.pb", save, i);
            f = fopen(path, "wb");
            if (f == NULL || fwrite(bodies[i].data, 1, bodies[i].len, f) !=
                                 bodies[i].len) {
                perror(path);
                return 1;
            }
            fclose(f);
        }
    }
    printf("%zu bodies, %zu spans, %.1f spans/body, %.1f B/span "
           "uncompressed (%s)\n\n", nbodies, spans,
           (double)spans / (double)nbodies, (double)raw / (double)spans,
           fresh_trace ? "a new trace id per request"
                       : "one inbound trace id for all requests");
    printf("| bodies | setting | B/span | ratio | CPU ns/span | "
           "CPU us/request |\n|---|---|---|---|---|---|\n");
    sweep(bodies, nbodies, "as encoded", full);

    g = copy_bodies();
    for (i = 0; i < nbodies; i++)
        for_each_scope(g[i].data, g[i].len, group_scope, NULL);
    sweep(g, nbodies, "spans grouped by name", 0);

    a = copy_bodies();
    for (i = 0; i < nbodies; i++)
        for_each_scope(a[i].data, a[i].len, attrs_last_scope, NULL);
    sweep(a, nbodies, "attributes after other span fields", 0);

    ga = copy_bodies();
    for (i = 0; i < nbodies; i++) {
        for_each_scope(ga[i].data, ga[i].len, group_scope, NULL);
        for_each_scope(ga[i].data, ga[i].len, attrs_last_scope, NULL);
    }
    sweep(ga, nbodies, "grouped + attributes last", 0);
    return 0;
}
