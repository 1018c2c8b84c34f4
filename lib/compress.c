/*
 * Request body compression for the OTLP/HTTP transport: gzip (zlib,
 * windowBits 31 selects the gzip wrapper) and zstd, both at level 1 since
 * span batches compress well already and the exporter thread should stay
 * cheap.
 */
#include <stdint.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>

#include "pdtrace/tracer.h"
#include "transport.h"

static int compress_gzip(const uint8_t *in, size_t n, pdti_buf *out)
{
    const size_t max_chunk = (size_t)1 << 30; /* fits zlib's uInt */
    z_stream zs;
    size_t start = out->len, pos = 0, room;
    int rc;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return PDT_ENOMEM;
    /* Room for the whole result up front when the size fits zlib's types. */
    if (n <= max_chunk &&
        pdti_buf_reserve(out, (size_t)deflateBound(&zs, (uLong)n)) != 0)
        goto fail;
    do {
        if (zs.avail_in == 0 && pos < n) {
            size_t chunk = n - pos < max_chunk ? n - pos : max_chunk;
            zs.next_in = (Bytef *)(uintptr_t)(in + pos);
            zs.avail_in = (uInt)chunk;
            pos += chunk;
        }
        if (out->cap - out->len < 64 && pdti_buf_reserve(out, 65536) != 0)
            goto fail;
        room = out->cap - out->len;
        if (room > max_chunk)
            room = max_chunk;
        zs.next_out = out->data + out->len;
        zs.avail_out = (uInt)room;
        rc = deflate(&zs, pos == n ? Z_FINISH : Z_NO_FLUSH);
        out->len += room - zs.avail_out;
        if (rc == Z_STREAM_ERROR)
            goto fail;
    } while (rc != Z_STREAM_END);
    deflateEnd(&zs);
    return PDT_OK;
fail:
    deflateEnd(&zs);
    out->len = start;
    return PDT_ENOMEM;
}

static int compress_zstd(const uint8_t *in, size_t n, pdti_buf *out)
{
    size_t bound = ZSTD_compressBound(n), got;

    if (ZSTD_isError(bound) || pdti_buf_reserve(out, bound) != 0)
        return PDT_ENOMEM;
    got = ZSTD_compress(out->data + out->len, bound, in, n, 1);
    if (ZSTD_isError(got))
        return PDT_ENOMEM;
    out->len += got;
    return PDT_OK;
}

int pdti_compress(int kind, const uint8_t *in, size_t n, pdti_buf *out)
{
    if (out == NULL || (in == NULL && n != 0))
        return PDT_EINVAL;
    if (in == NULL)
        in = (const uint8_t *)"";
    switch (kind) {
    case PDT_COMPRESSION_GZIP:
        return compress_gzip(in, n, out);
    case PDT_COMPRESSION_ZSTD:
        return compress_zstd(in, n, out);
    default:
        return PDT_EINVAL;
    }
}
