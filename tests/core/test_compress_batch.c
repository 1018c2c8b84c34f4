/*
 * Compression levels on a real export body: the tracer exports a batch of
 * traced P/D requests (the benchmark's request: 3 spans, ~40 attributes)
 * with compression off to a loopback sink in this process, which keeps the
 * body. The body is then compressed with the library's compressor at two
 * levels of each codec; every result must decompress (zlib, libzstd) to
 * the same bytes, and the higher level must not be larger. The compressor
 * is reused across bodies as the transport reuses it.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>
#include <zstd.h>

#include "pdtrace.h"
#include "transport.h"
#include "../bench/workload.h"

#define REQUESTS 512

/* ---- a loopback sink that keeps the first request body ------------------ */

typedef struct sink {
    int lfd;
    pthread_t th;
    uint8_t *body; /* the first body received */
    size_t len;
} sink;

/* Reads one HTTP request from fd into s->body if it is the first; answers
 * 200. Returns 0, or -1 when the connection ends. */
static int serve_one(sink *s, int fd)
{
    char head[8192];
    size_t have = 0, hdr, blen = 0, got;
    char *end, *cl;
    uint8_t *body;
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                             "application/x-protobuf\r\nContent-Length: 0"
                             "\r\n\r\n";

    while ((end = memmem(head, have, "\r\n\r\n", 4)) == NULL) {
        ssize_t n;
        if (have == sizeof(head))
            return -1;
        n = read(fd, head + have, sizeof(head) - have);
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    hdr = (size_t)(end - head) + 4;
    head[hdr - 1] = '\0';
    cl = strcasestr(head, "content-length:");
    if (cl != NULL)
        blen = strtoull(cl + 15, NULL, 10);
    body = malloc(blen + 1);
    if (body == NULL)
        return -1;
    got = have - hdr < blen ? have - hdr : blen;
    memcpy(body, head + hdr, got);
    while (got < blen) {
        ssize_t n = read(fd, body + got, blen - got);
        if (n <= 0) {
            free(body);
            return -1;
        }
        got += (size_t)n;
    }
    if (s->body == NULL) {
        s->body = body;
        s->len = blen;
    } else {
        free(body);
    }
    return write(fd, ok, sizeof(ok) - 1) == (ssize_t)(sizeof(ok) - 1) ? 0
                                                                       : -1;
}

static void *sink_main(void *arg)
{
    sink *s = arg;
    int fd;

    /* The tracer keeps one connection; serve it until it closes. */
    while ((fd = accept(s->lfd, NULL, NULL)) >= 0) {
        while (serve_one(s, fd) == 0)
            ;
        close(fd);
    }
    return NULL;
}

static int sink_start(sink *s)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);

    memset(s, 0, sizeof(*s));
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &len), 0);
    assert_int_equal(pthread_create(&s->th, NULL, sink_main, s), 0);
    return ntohs(a.sin_port);
}

static void sink_stop(sink *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    close(s->lfd);
    pthread_join(s->th, NULL);
}

/* ---- the batch ------------------------------------------------------------ */

static void one_request(pdt_tracer *t)
{
    assert_int_equal(pdtb_request(t, PDTB_INBOUND, 0), PDT_OK);
}

static uint8_t *real_body(size_t *len)
{
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t;
    char endpoint[64];
    sink s;
    int i, port = sink_start(&s);

    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d/v1/traces",
             port);
    o.endpoint = endpoint;
    o.exporter = PDT_EXPORTER_OTLP;
    o.compression = PDT_COMPRESSION_NONE;
    o.max_queue_size = 3 * REQUESTS;
    o.max_export_batch_size = 3 * REQUESTS;
    o.schedule_delay_ms = 3600000;
    o.ignore_environment = 1;
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    for (i = 0; i < REQUESTS; i++)
        one_request(t);
    assert_int_equal(pdt_tracer_flush(t, 30000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_close(t, 10000, NULL), PDT_OK);
    sink_stop(&s);
    assert_non_null(s.body);
    /* About 660 bytes per span uncompressed. */
    assert_true(s.len > (size_t)REQUESTS * 3 * 300);
    *len = s.len;
    return s.body;
}

/* ---- checks --------------------------------------------------------------- */

static void expect_round_trip(int kind, const uint8_t *z, size_t zlen,
                              const uint8_t *want, size_t len)
{
    uint8_t *back = malloc(len + 1);
    size_t got;

    assert_non_null(back);
    if (kind == PDT_COMPRESSION_GZIP) {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        assert_int_equal(zlen >= 2 && z[0] == 0x1f && z[1] == 0x8b, 1);
        assert_int_equal(inflateInit2(&zs, 15 + 16), Z_OK);
        zs.next_in = (Bytef *)(uintptr_t)z;
        zs.avail_in = (uInt)zlen;
        zs.next_out = back;
        zs.avail_out = (uInt)(len + 1);
        assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
        assert_int_equal(zs.avail_in, 0);
        got = (size_t)zs.total_out;
        inflateEnd(&zs);
    } else {
        got = ZSTD_decompress(back, len + 1, z, zlen);
        assert_false(ZSTD_isError(got));
        assert_true(ZSTD_getFrameContentSize(z, zlen) == len);
    }
    assert_int_equal(got, len);
    assert_memory_equal(back, want, len);
    free(back);
}

/* Compresses body at lo and hi (twice each, through one compressor per
 * level) and checks the results. Returns the sizes through *lo_len and
 * *hi_len. */
static void two_levels(int kind, int lo, int hi, const uint8_t *body,
                       size_t len, size_t *lo_len, size_t *hi_len)
{
    int levels[2];
    size_t sizes[2];
    int l;

    levels[0] = lo;
    levels[1] = hi;
    for (l = 0; l < 2; l++) {
        pdti_compressor *c;
        pdti_buf out = PDTI_BUF_INIT;
        size_t first;
        int rep;

        assert_int_equal(pdti_compressor_new(&c, kind, levels[l]), PDT_OK);
        assert_int_equal(pdti_compressor_level(c), levels[l]);
        for (rep = 0; rep < 2; rep++) {
            /* The second run appends after the first: same bytes again. */
            first = out.len;
            assert_int_equal(pdti_compressor_run(c, body, len, &out),
                             PDT_OK);
            expect_round_trip(kind, out.data + first, out.len - first, body,
                              len);
            if (rep == 1)
                assert_int_equal(out.len - first, first);
        }
        sizes[l] = first;
        pdti_compressor_free(c);
        pdti_buf_free(&out);
    }
    *lo_len = sizes[0];
    *hi_len = sizes[1];
}

static uint8_t *g_body;
static size_t g_len;

static int setup(void **state)
{
    (void)state;
    g_body = real_body(&g_len);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(g_body);
    return 0;
}

static void test_gzip_levels(void **state)
{
    size_t l1, l9, l2, l6;

    (void)state;
    two_levels(PDT_COMPRESSION_GZIP, 1, 9, g_body, g_len, &l1, &l9);
    assert_true(l9 <= l1);
    /* Span batches compress at least 5:1 even at the fastest level. */
    assert_true(l1 * 5 < g_len);
    /* Level 2 (ISA-L when built with it) and 6 (always zlib). */
    two_levels(PDT_COMPRESSION_GZIP, 2, 6, g_body, g_len, &l2, &l6);
    assert_true(l6 <= l1);
}

static void test_zstd_levels(void **state)
{
    size_t l1, l9, lneg, l3;

    (void)state;
    two_levels(PDT_COMPRESSION_ZSTD, 1, 9, g_body, g_len, &l1, &l9);
    assert_true(l9 <= l1);
    assert_true(l1 * 8 < g_len);
    two_levels(PDT_COMPRESSION_ZSTD, -5, 3, g_body, g_len, &lneg, &l3);
    assert_true(l3 <= lneg);
}

static void test_default_levels(void **state)
{
    pdti_compressor *c;
    int min, max, def;

    (void)state;
    assert_int_equal(pdti_compressor_new(&c, PDT_COMPRESSION_GZIP, 0),
                     PDT_OK);
    assert_int_equal(pdti_compressor_level(c), 1);
    assert_int_equal(pdti_compressor_kind(c), PDT_COMPRESSION_GZIP);
    pdti_compressor_free(c);
    assert_int_equal(pdti_compressor_new(&c, PDT_COMPRESSION_ZSTD, 0),
                     PDT_OK);
    assert_int_equal(pdti_compressor_level(c), 1);
    pdti_compressor_free(c);

    assert_int_equal(pdti_compress_level_range(PDT_COMPRESSION_GZIP, &min,
                                               &max, &def), PDT_OK);
    assert_int_equal(min, 1);
    assert_int_equal(max, 9);
    assert_int_equal(def, 1);
    assert_int_equal(pdti_compress_level_range(PDT_COMPRESSION_ZSTD, &min,
                                               &max, &def), PDT_OK);
    assert_true(min < 0);
    assert_int_equal(max, ZSTD_maxCLevel() < 22 ? ZSTD_maxCLevel() : 22);
    assert_int_equal(def, 1);
    assert_int_equal(pdti_compress_level_range(PDT_COMPRESSION_NONE, NULL,
                                               NULL, NULL), PDT_EINVAL);
}

static void test_bad_levels(void **state)
{
    pdti_compressor *c = (pdti_compressor *)&c;
    pdti_buf out = PDTI_BUF_INIT;
    const uint8_t x[1] = { 0 };

    (void)state;
    assert_int_equal(pdti_compressor_new(&c, PDT_COMPRESSION_GZIP, 10),
                     PDT_EINVAL);
    assert_null(c);
    assert_int_equal(pdti_compressor_new(&c, PDT_COMPRESSION_GZIP, -1),
                     PDT_EINVAL);
    assert_int_equal(pdti_compressor_new(&c, PDT_COMPRESSION_ZSTD, 23),
                     PDT_EINVAL);
    assert_int_equal(pdti_compressor_new(&c, PDT_COMPRESSION_NONE, 0),
                     PDT_EINVAL);
    assert_int_equal(pdti_compressor_new(NULL, PDT_COMPRESSION_GZIP, 1),
                     PDT_EINVAL);
    assert_int_equal(pdti_compressor_run(NULL, x, 1, &out), PDT_EINVAL);
    assert_int_equal(pdti_compressor_new(&c, PDT_COMPRESSION_ZSTD, 1),
                     PDT_OK);
    assert_int_equal(pdti_compressor_run(c, NULL, 1, &out), PDT_EINVAL);
    assert_int_equal(pdti_compressor_run(c, x, 1, NULL), PDT_EINVAL);
    assert_int_equal(out.len, 0);
    pdti_compressor_free(c);
    pdti_compressor_free(NULL);
    pdti_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gzip_levels),
        cmocka_unit_test(test_zstd_levels),
        cmocka_unit_test(test_default_levels),
        cmocka_unit_test(test_bad_levels),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
