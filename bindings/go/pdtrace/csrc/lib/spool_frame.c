/*
 * The spool frame format (see spool_frame.h): a fixed little-endian
 * header with two CRC-32s, then the zstd-compressed request. A pure codec:
 * no files, no state, no last error.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>

#include "pdtrace/common.h"
#include "buf.h"
#include "spool_frame.h"

#define ZSTD_LEVEL 1

/* ---- little-endian fields ---------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    int i;
    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    int i;
    for (i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t crc(const uint8_t *p, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);

    /* zlib takes uInt lengths: feed large buffers in pieces. */
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

/* ---- the frame codec ---------------------------------------------------- */

int pdti_spool_encode_frame(const uint8_t *body, size_t len, uint32_t nspans,
                            pdti_buf *out)
{
    size_t bound, got;
    uint8_t *h;

    if (body == NULL || len == 0 || (uint64_t)len > PDTI_SPOOL_MAX_RAW ||
        nspans == 0 || out == NULL)
        return PDT_EINVAL;
    bound = ZSTD_compressBound(len);
    pdti_buf_reset(out);
    if (pdti_buf_reserve(out, PDTI_SPOOL_HEADER_SIZE + bound) != 0)
        return PDT_ENOMEM;
    got = ZSTD_compress(out->data + PDTI_SPOOL_HEADER_SIZE, bound, body, len,
                        ZSTD_LEVEL);
    if (ZSTD_isError(got))
        return PDT_ENOMEM; /* only allocation can fail with a full bound */
    h = out->data;
    memcpy(h, PDTI_SPOOL_MAGIC, 4);
    put_le(h + 4, PDTI_SPOOL_VERSION, 2);
    put_le(h + 6, PDTI_SPOOL_FLAG_ZSTD, 2);
    put_le(h + 8, nspans, 4);
    put_le(h + 12, len, 8);
    put_le(h + 20, got, 8);
    put_le(h + 28, crc(h + PDTI_SPOOL_HEADER_SIZE, got), 4);
    put_le(h + 32, crc(h, 32), 4);
    out->len = PDTI_SPOOL_HEADER_SIZE + got;
    return PDT_OK;
}

int pdti_spool_check_header(const uint8_t *h, uint64_t file_size,
                            uint32_t *nspans, uint64_t *raw_len,
                            uint64_t *comp_len)
{
    if (file_size < PDTI_SPOOL_HEADER_SIZE ||
        memcmp(h, PDTI_SPOOL_MAGIC, 4) != 0 ||
        get_le(h + 4, 2) != PDTI_SPOOL_VERSION ||
        get_le(h + 6, 2) != PDTI_SPOOL_FLAG_ZSTD ||
        (uint32_t)get_le(h + 32, 4) != crc(h, 32))
        return -1;
    *nspans = (uint32_t)get_le(h + 8, 4);
    *raw_len = get_le(h + 12, 8);
    *comp_len = get_le(h + 20, 8);
    if (*nspans == 0 || *raw_len == 0 || *raw_len > PDTI_SPOOL_MAX_RAW ||
        *comp_len == 0 || *comp_len > ZSTD_compressBound(*raw_len) ||
        *comp_len != file_size - PDTI_SPOOL_HEADER_SIZE)
        return -1;
    return 0;
}

uint32_t pdti_spool_header_nspans(const uint8_t *h)
{
    if (memcmp(h, PDTI_SPOOL_MAGIC, 4) != 0 ||
        (uint32_t)get_le(h + 32, 4) != crc(h, 32))
        return 0;
    return (uint32_t)get_le(h + 8, 4);
}

int pdti_spool_decode_frame(const uint8_t *data, size_t len, pdti_buf *body,
                            uint32_t *nspans)
{
    uint64_t raw_len, comp_len;
    unsigned long long content;
    const uint8_t *payload;
    size_t got;
    uint32_t n;

    if (data == NULL || body == NULL)
        return PDT_EPARSE;
    pdti_buf_reset(body);
    if (len < PDTI_SPOOL_HEADER_SIZE ||
        pdti_spool_check_header(data, len, &n, &raw_len, &comp_len) != 0)
        return PDT_EPARSE;
    payload = data + PDTI_SPOOL_HEADER_SIZE;
    if ((uint32_t)get_le(data + 28, 4) != crc(payload, (size_t)comp_len))
        return PDT_EPARSE;
    content = ZSTD_getFrameContentSize(payload, (size_t)comp_len);
    if (content != raw_len)
        return PDT_EPARSE;
    if (pdti_buf_reserve(body, (size_t)raw_len) != 0)
        return PDT_ENOMEM;
    got = ZSTD_decompress(body->data, (size_t)raw_len, payload,
                          (size_t)comp_len);
    /* An ExportTraceServiceRequest starts with resource_spans (field 1,
     * length-delimited): tag byte 0x0a. */
    if (ZSTD_isError(got) || got != raw_len || body->data[0] != 0x0a)
        return PDT_EPARSE;
    body->len = got;
    if (nspans != NULL)
        *nspans = n;
    return PDT_OK;
}
