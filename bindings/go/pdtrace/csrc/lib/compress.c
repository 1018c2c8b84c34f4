/*
 * Request body compression for the OTLP/HTTP transport: gzip and zstd.
 *
 * A compressor is kept by the transport for the life of the exporter
 * thread, so its state (zlib's window and hash tables, the zstd context,
 * ISA-L's level buffer) is allocated once and reset per body instead of
 * allocated and freed for every export request.
 *
 * Levels (docs/configuration.md, PDTRACE_COMPRESSION_LEVEL; ranges and
 * defaults in config.h): gzip 1..9, default 1; zstd -131072..22, default 1.
 * Measured on the benchmark's 1536-span bodies (tests/bench/bench_compress.c),
 * gzip levels above 3 cost 2-4x the CPU for 5-10 % fewer bytes; zstd 3 is
 * about 0.7 byte per span (1.6 %) smaller than zstd 1 for a quarter more
 * compression CPU (about 13 % more CPU per traced request in all), and
 * zstd 9 4.5 % smaller for 6 times the CPU.
 *
 * When the build found ISA-L (PDTI_HAVE_ISAL), gzip levels 1 and 2 use its
 * igzip levels 1 and 2: the same gzip format, slightly smaller than zlib's
 * level 1 on span batches and several times faster. Levels 3..9 always use
 * zlib.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>
#ifdef PDTI_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#include "pdtrace/tracer.h"
#include "transport.h"

struct pdti_compressor {
    int kind;        /* PDT_COMPRESSION_GZIP or _ZSTD */
    int level;       /* resolved, never 0 */
    z_stream zs;     /* gzip through zlib */
    int zs_ready;    /* zs initialised (deflateInit2 succeeded) */
    ZSTD_CCtx *cctx; /* zstd, parameters set once */
#ifdef PDTI_HAVE_ISAL
    uint8_t *isal_buf; /* igzip's level buffer */
    uint32_t isal_buf_size;
#endif
    int avx;         /* the CPU has AVX: vzeroupper after each body */
};

/*
 * igzip and zstd pick AVX code at run time and return with the upper
 * halves of the YMM registers dirty. The SSE code that runs next on the
 * exporter thread (libc's memcpy and the next batch's encode, curl) then
 * pays a state transition on its vector instructions: about 0.9 us per
 * traced request with gzip (docs/performance.md). A vzeroupper after each
 * body clears that state. It is only issued where the CPU has AVX (it
 * faults elsewhere); the library itself is not compiled for AVX, so an
 * asm statement rather than the intrinsic.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
static int cpu_has_avx(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") != 0;
}

static void clear_avx_upper(const pdti_compressor *c)
{
    if (c->avx)
        __asm__ __volatile__("vzeroupper" ::: "memory");
}
#else
static int cpu_has_avx(void)
{
    return 0;
}

static void clear_avx_upper(const pdti_compressor *c)
{
    (void)c;
}
#endif

int pdti_compress_level_range(int kind, int *min, int *max, int *def)
{
    int lo, hi, d;

    switch (kind) {
    case PDT_COMPRESSION_GZIP:
        lo = PDTI_GZIP_LEVEL_MIN;
        hi = PDTI_GZIP_LEVEL_MAX;
        d = PDTI_GZIP_LEVEL_DEFAULT;
        break;
    case PDT_COMPRESSION_ZSTD:
        lo = PDTI_ZSTD_LEVEL_MIN > ZSTD_minCLevel() ? PDTI_ZSTD_LEVEL_MIN
                                                    : ZSTD_minCLevel();
        hi = PDTI_ZSTD_LEVEL_MAX < ZSTD_maxCLevel() ? PDTI_ZSTD_LEVEL_MAX
                                                    : ZSTD_maxCLevel();
        d = PDTI_ZSTD_LEVEL_DEFAULT;
        break;
    default:
        return PDT_EINVAL;
    }
    if (min != NULL)
        *min = lo;
    if (max != NULL)
        *max = hi;
    if (def != NULL)
        *def = d;
    return PDT_OK;
}

#ifdef PDTI_HAVE_ISAL
/* The gzip levels that go to ISA-L. */
static int use_isal(const pdti_compressor *c)
{
    return c->kind == PDT_COMPRESSION_GZIP && c->level <= 2;
}
#endif

int pdti_compressor_new(pdti_compressor **out, int kind, int level)
{
    pdti_compressor *c;
    int lo, hi, def;

    if (out == NULL)
        return PDT_EINVAL;
    *out = NULL;
    if (pdti_compress_level_range(kind, &lo, &hi, &def) != PDT_OK)
        return PDT_EINVAL;
    if (level == 0)
        level = def;
    if (level < lo || level > hi)
        return PDT_EINVAL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return PDT_ENOMEM;
    c->kind = kind;
    c->level = level;
    c->avx = cpu_has_avx();
    if (kind == PDT_COMPRESSION_ZSTD) {
        c->cctx = ZSTD_createCCtx();
        if (c->cctx == NULL ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx,
                                                ZSTD_c_compressionLevel,
                                                level)))
            goto nomem;
    }
#ifdef PDTI_HAVE_ISAL
    else if (use_isal(c)) {
        c->isal_buf_size = level == 1 ? ISAL_DEF_LVL1_DEFAULT
                                      : ISAL_DEF_LVL2_DEFAULT;
        /* Zeroed: igzip checks every match it finds, so stale hash
         * entries are harmless to it, but never-written ones would be
         * read uninitialised (and reported by memory checkers). */
        c->isal_buf = calloc(1, c->isal_buf_size);
        if (c->isal_buf == NULL)
            goto nomem;
    }
#endif
    else {
        /* windowBits 31: a 32 KiB window with the gzip wrapper. */
        if (deflateInit2(&c->zs, level, Z_DEFLATED, 31, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            goto nomem;
        c->zs_ready = 1;
    }
    *out = c;
    return PDT_OK;
nomem:
    pdti_compressor_free(c);
    return PDT_ENOMEM;
}

void pdti_compressor_free(pdti_compressor *c)
{
    if (c == NULL)
        return;
    if (c->zs_ready)
        deflateEnd(&c->zs);
    ZSTD_freeCCtx(c->cctx);
#ifdef PDTI_HAVE_ISAL
    free(c->isal_buf);
#endif
    free(c);
}

int pdti_compressor_kind(const pdti_compressor *c)
{
    return c != NULL ? c->kind : 0;
}

int pdti_compressor_level(const pdti_compressor *c)
{
    return c != NULL ? c->level : 0;
}

static int compress_zlib(pdti_compressor *c, const uint8_t *in, size_t n,
                         pdti_buf *out)
{
    const size_t max_chunk = (size_t)1 << 30; /* fits zlib's uInt */
    z_stream *zs = &c->zs;
    size_t pos = 0, room;
    int rc;

    if (deflateReset(zs) != Z_OK)
        return PDT_ENOMEM;
    /* Room for the whole result up front when the size fits zlib's types. */
    if (n <= max_chunk &&
        pdti_buf_reserve(out, (size_t)deflateBound(zs, (uLong)n)) != 0)
        return PDT_ENOMEM;
    zs->avail_in = 0;
    do {
        if (zs->avail_in == 0 && pos < n) {
            size_t chunk = n - pos < max_chunk ? n - pos : max_chunk;
            zs->next_in = (Bytef *)(uintptr_t)(in + pos);
            zs->avail_in = (uInt)chunk;
            pos += chunk;
        }
        if (out->cap - out->len < 64 && pdti_buf_reserve(out, 65536) != 0)
            return PDT_ENOMEM;
        room = out->cap - out->len;
        if (room > max_chunk)
            room = max_chunk;
        zs->next_out = out->data + out->len;
        zs->avail_out = (uInt)room;
        rc = deflate(zs, pos == n ? Z_FINISH : Z_NO_FLUSH);
        out->len += room - zs->avail_out;
        if (rc == Z_STREAM_ERROR)
            return PDT_ENOMEM;
    } while (rc != Z_STREAM_END);
    return PDT_OK;
}

#ifdef PDTI_HAVE_ISAL
static int compress_isal(pdti_compressor *c, const uint8_t *in, size_t n,
                         pdti_buf *out)
{
    const size_t max_chunk = (size_t)1 << 30; /* fits uint32_t */
    struct isal_zstream zs;
    size_t pos = 0, room;

    memset(&zs, 0, sizeof(zs));
    isal_deflate_init(&zs);
    zs.level = (uint32_t)c->level;
    zs.level_buf = c->isal_buf;
    zs.level_buf_size = c->isal_buf_size;
    zs.gzip_flag = IGZIP_GZIP;
    zs.flush = NO_FLUSH;
    zs.avail_in = 0;
    /* A first guess of the size (incompressible data plus block and gzip
     * overhead); the loop grows the buffer if it is not enough. */
    if (n <= max_chunk &&
        pdti_buf_reserve(out, n + n / 16384 * 5 + 1024) != 0)
        return PDT_ENOMEM;
    for (;;) {
        if (zs.avail_in == 0 && pos < n) {
            size_t chunk = n - pos < max_chunk ? n - pos : max_chunk;
            zs.next_in = (uint8_t *)(uintptr_t)(in + pos);
            zs.avail_in = (uint32_t)chunk;
            pos += chunk;
        }
        zs.end_of_stream = pos == n;
        if (out->cap - out->len < 64 && pdti_buf_reserve(out, 65536) != 0)
            return PDT_ENOMEM;
        room = out->cap - out->len;
        if (room > max_chunk)
            room = max_chunk;
        zs.next_out = out->data + out->len;
        zs.avail_out = (uint32_t)room;
        if (isal_deflate(&zs) != COMP_OK)
            return PDT_ENOMEM;
        out->len += room - zs.avail_out;
        if (zs.internal_state.state == ZSTATE_END)
            return PDT_OK;
    }
}
#endif

static int compress_zstd(pdti_compressor *c, const uint8_t *in, size_t n,
                         pdti_buf *out)
{
    size_t bound = ZSTD_compressBound(n), got;

    if (ZSTD_isError(bound) || pdti_buf_reserve(out, bound) != 0)
        return PDT_ENOMEM;
    /* A new frame; the parameters set at creation stay. */
    ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
    got = ZSTD_compress2(c->cctx, out->data + out->len, bound, in, n);
    if (ZSTD_isError(got))
        return PDT_ENOMEM;
    out->len += got;
    return PDT_OK;
}

int pdti_compressor_run(pdti_compressor *c, const uint8_t *in, size_t n,
                        pdti_buf *out)
{
    size_t start;
    int st;

    if (c == NULL || out == NULL || (in == NULL && n != 0))
        return PDT_EINVAL;
    if (in == NULL)
        in = (const uint8_t *)"";
    start = out->len;
    if (c->kind == PDT_COMPRESSION_ZSTD)
        st = compress_zstd(c, in, n, out);
#ifdef PDTI_HAVE_ISAL
    else if (use_isal(c))
        st = compress_isal(c, in, n, out);
#endif
    else
        st = compress_zlib(c, in, n, out);
    clear_avx_upper(c);
    if (st != PDT_OK)
        out->len = start;
    return st;
}

int pdti_compress(int kind, const uint8_t *in, size_t n, pdti_buf *out)
{
    pdti_compressor *c;
    int st;

    if (out == NULL || (in == NULL && n != 0))
        return PDT_EINVAL;
    st = pdti_compressor_new(&c, kind, 0);
    if (st != PDT_OK)
        return st;
    st = pdti_compressor_run(c, in, n, out);
    pdti_compressor_free(c);
    return st;
}
