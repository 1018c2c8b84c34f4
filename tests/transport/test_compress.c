/* Unit tests: gzip and zstd request compression, checked by decompressing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>
#include <zstd.h>

#include "pdtrace/tracer.h"
#include "transport.h"

static const size_t sizes[] = { 0, 1, 17, 1000, 65536, 1 << 20, 3000001 };

/* Half repetitive (like span batches), half pseudo-random. */
static uint8_t *make_input(size_t n, uint64_t seed)
{
    uint8_t *p = malloc(n != 0 ? n : 1);
    size_t i;

    assert_non_null(p);
    for (i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        p[i] = (i / 4096) % 2 ? (uint8_t)seed : (uint8_t)("llm_d.pd_proxy."[i % 15]);
    }
    return p;
}

static uint8_t *gunzip(const uint8_t *in, size_t n, size_t expect)
{
    uint8_t *out = malloc(expect + 1);
    z_stream zs;

    assert_non_null(out);
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(inflateInit2(&zs, 31), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)expect + 1;
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    assert_int_equal(zs.total_out, expect);
    assert_int_equal(zs.avail_in, 0);
    inflateEnd(&zs);
    return out;
}

static void test_gzip_round_trip(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *in = make_input(sizes[i], i + 1), *back;
        pdti_buf out = PDTI_BUF_INIT;

        assert_int_equal(
            pdti_compress(PDT_COMPRESSION_GZIP, in, sizes[i], &out), PDT_OK);
        assert_true(out.len >= 18);
        assert_int_equal(out.data[0], 0x1f); /* gzip magic */
        assert_int_equal(out.data[1], 0x8b);
        back = gunzip(out.data, out.len, sizes[i]);
        if (sizes[i] != 0)
            assert_memory_equal(back, in, sizes[i]);
        free(back);
        free(in);
        pdti_buf_free(&out);
    }
}

static void test_zstd_round_trip(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *in = make_input(sizes[i], i + 7), *back;
        pdti_buf out = PDTI_BUF_INIT;
        unsigned long long fcs;
        size_t got;

        assert_int_equal(
            pdti_compress(PDT_COMPRESSION_ZSTD, in, sizes[i], &out), PDT_OK);
        assert_true(out.len >= 4);
        assert_int_equal(out.data[0], 0x28); /* zstd frame magic */
        assert_int_equal(out.data[3], 0xfd);
        fcs = ZSTD_getFrameContentSize(out.data, out.len);
        assert_true(fcs == sizes[i]);
        back = malloc(sizes[i] + 1);
        assert_non_null(back);
        got = ZSTD_decompress(back, sizes[i] + 1, out.data, out.len);
        assert_false(ZSTD_isError(got));
        assert_int_equal(got, sizes[i]);
        if (sizes[i] != 0)
            assert_memory_equal(back, in, sizes[i]);
        free(back);
        free(in);
        pdti_buf_free(&out);
    }
}

/* Output is appended: what the buffer held before stays. */
static void test_appends(void **state)
{
    pdti_buf out = PDTI_BUF_INIT;
    const uint8_t msg[] = "hello hello hello hello";
    uint8_t *back;
    size_t first;

    (void)state;
    assert_int_equal(pdti_buf_append(&out, "PREFIX", 6), 0);
    assert_int_equal(pdti_compress(PDT_COMPRESSION_GZIP, msg, sizeof(msg),
                                   &out), PDT_OK);
    assert_memory_equal(out.data, "PREFIX", 6);
    back = gunzip(out.data + 6, out.len - 6, sizeof(msg));
    assert_memory_equal(back, msg, sizeof(msg));
    free(back);
    first = out.len;
    assert_int_equal(pdti_compress(PDT_COMPRESSION_ZSTD, msg, sizeof(msg),
                                   &out), PDT_OK);
    assert_true(out.len > first);
    assert_memory_equal(out.data, "PREFIX", 6);
    pdti_buf_free(&out);
}

static void test_bad_kind(void **state)
{
    pdti_buf out = PDTI_BUF_INIT;
    const uint8_t x[1] = { 0 };

    (void)state;
    assert_int_equal(pdti_compress(PDT_COMPRESSION_NONE, x, 1, &out),
                     PDT_EINVAL);
    assert_int_equal(pdti_compress(PDT_COMPRESSION_DEFAULT, x, 1, &out),
                     PDT_EINVAL);
    assert_int_equal(pdti_compress(42, x, 1, &out), PDT_EINVAL);
    assert_int_equal(pdti_compress(PDT_COMPRESSION_GZIP, NULL, 1, &out),
                     PDT_EINVAL);
    assert_int_equal(pdti_compress(PDT_COMPRESSION_GZIP, x, 1, NULL),
                     PDT_EINVAL);
    assert_int_equal(out.len, 0);
    pdti_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gzip_round_trip),
        cmocka_unit_test(test_zstd_round_trip),
        cmocka_unit_test(test_appends),
        cmocka_unit_test(test_bad_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
