/*
 * Unit tests of the persistent spool (lib/spool*.c): the frame format and
 * every kind of corruption, the directory checks, cap eviction, claims
 * between processes, write errors, and the tracer integration with a
 * collector that is not there.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "pdtrace.h"
#include "spool.h"
#include "spool_frame.h"

static char root[256];

/* ---- helpers ------------------------------------------------------------ */

static void rm_rf(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    char sub[1024];

    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        chmod(path, 0700);
        d = opendir(path);
        if (d != NULL) {
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static char *path_in(const char *fmt, ...)
{
    static char bufs[8][512];
    static int k;
    char *p = bufs[k++ % 8];
    char rel[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    snprintf(p, 512, "%s/%s", root, rel);
    return p;
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof(root), "/tmp/pdt-spool-test-%ld", (long)getpid());
    rm_rf(root);
    if (mkdir(root, 0700) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(root);
    return 0;
}

/* A body that looks like an ExportTraceServiceRequest (starts with 0x0a). */
static void make_body(pdti_buf *b, size_t len, unsigned seed)
{
    size_t i;
    pdti_buf_reset(b);
    assert_int_equal(pdti_buf_reserve(b, len), 0);
    b->data[0] = 0x0a;
    for (i = 1; i < len; i++)
        b->data[i] = (uint8_t)((i * 131u + seed * 7u) ^ (i >> 3));
    b->len = len;
}

/* Entries of a directory whose name contains `part`. */
static int count_entries(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, part) != NULL)
            n++;
    closedir(d);
    return n;
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void put32(uint8_t *p, uint32_t v)
{
    int i;
    for (i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the header CRC after a field was changed on purpose, so the
 * deeper checks are the ones that must catch it. */
#include <zlib.h>
static void fix_header_crc(uint8_t *h)
{
    put32(h + 32, (uint32_t)crc32(crc32(0L, Z_NULL, 0), h, 32));
}

static pdti_spool *open_ok(const char *dir, int64_t cap)
{
    pdti_spool *s = NULL;
    int rc = pdti_spool_open(&s, dir, cap, NULL);
    if (rc != PDT_OK)
        fail_msg("open %s: %s", dir, pdt_last_error());
    return s;
}

/* ---- frame codec -------------------------------------------------------- */

static void test_codec_round_trip(void **state)
{
    pdti_buf body = PDTI_BUF_INIT, frame = PDTI_BUF_INIT, out = PDTI_BUF_INIT;
    uint32_t n = 0;
    size_t sizes[] = { 1, 2, 100, 4096, 1 << 20 };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        make_body(&body, sizes[i], (unsigned)i);
        assert_int_equal(pdti_spool_encode_frame(body.data, body.len,
                                                 (uint32_t)(i + 1), &frame),
                         PDT_OK);
        assert_memory_equal(frame.data, "PDSP", 4);
        assert_int_equal(pdti_spool_decode_frame(frame.data, frame.len, &out,
                                                 &n), PDT_OK);
        assert_int_equal(n, i + 1);
        assert_int_equal(out.len, body.len);
        assert_memory_equal(out.data, body.data, body.len);
    }
    assert_int_equal(pdti_spool_encode_frame(body.data, 0, 1, &frame),
                     PDT_EINVAL);
    assert_int_equal(pdti_spool_encode_frame(body.data, 10, 0, &frame),
                     PDT_EINVAL);
    pdti_buf_free(&body);
    pdti_buf_free(&frame);
    pdti_buf_free(&out);
}

static void test_codec_corruption(void **state)
{
    pdti_buf body = PDTI_BUF_INIT, frame = PDTI_BUF_INIT, out = PDTI_BUF_INIT;
    uint8_t *copy;
    size_t i;
    int bit;

    (void)state;
    make_body(&body, 3000, 9);
    assert_int_equal(pdti_spool_encode_frame(body.data, body.len, 7, &frame),
                     PDT_OK);
    copy = malloc(frame.len + 16);
    assert_non_null(copy);

    /* Every single flipped bit, anywhere, is caught. */
    for (i = 0; i < frame.len; i++) {
        for (bit = 0; bit < 8; bit += 3) {
            memcpy(copy, frame.data, frame.len);
            copy[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out,
                                                     NULL), PDT_EPARSE);
        }
    }
    /* Every truncation, including zero length and a lone header. */
    for (i = 0; i < frame.len; i++)
        assert_int_equal(pdti_spool_decode_frame(frame.data, i, &out, NULL),
                         PDT_EPARSE);
    /* Trailing bytes. */
    memcpy(copy, frame.data, frame.len);
    memset(copy + frame.len, 0, 16);
    assert_int_equal(pdti_spool_decode_frame(copy, frame.len + 1, &out, NULL),
                     PDT_EPARSE);
    /* Wrong magic, version, flags, with a valid header CRC. */
    memcpy(copy, frame.data, frame.len);
    memcpy(copy, "PDSQ", 4);
    fix_header_crc(copy);
    assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out, NULL),
                     PDT_EPARSE);
    memcpy(copy, frame.data, frame.len);
    copy[4] = 2;
    fix_header_crc(copy);
    assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out, NULL),
                     PDT_EPARSE);
    memcpy(copy, frame.data, frame.len);
    copy[6] = 3;
    fix_header_crc(copy);
    assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out, NULL),
                     PDT_EPARSE);
    /* Huge and inconsistent length fields (header CRC valid). */
    {
        uint64_t bad_raw[] = { UINT64_MAX, (uint64_t)1 << 40,
                               PDTI_SPOOL_MAX_RAW + 1, 0, 2999, 3001 };
        uint64_t bad_comp[] = { UINT64_MAX, (uint64_t)1 << 40, 0, 1 };
        for (i = 0; i < sizeof(bad_raw) / sizeof(bad_raw[0]); i++) {
            memcpy(copy, frame.data, frame.len);
            put64(copy + 12, bad_raw[i]);
            fix_header_crc(copy);
            assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out,
                                                     NULL), PDT_EPARSE);
        }
        for (i = 0; i < sizeof(bad_comp) / sizeof(bad_comp[0]); i++) {
            memcpy(copy, frame.data, frame.len);
            put64(copy + 20, bad_comp[i]);
            fix_header_crc(copy);
            assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out,
                                                     NULL), PDT_EPARSE);
        }
        /* nspans 0. */
        memcpy(copy, frame.data, frame.len);
        put32(copy + 8, 0);
        fix_header_crc(copy);
        assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out, NULL),
                         PDT_EPARSE);
    }
    /* A payload CRC that matches garbage: zstd must reject it. */
    memcpy(copy, frame.data, frame.len);
    memset(copy + PDTI_SPOOL_HEADER_SIZE, 0x5a, frame.len - 36);
    put32(copy + 28, (uint32_t)crc32(crc32(0L, Z_NULL, 0),
                                     copy + 36, (uInt)(frame.len - 36)));
    fix_header_crc(copy);
    assert_int_equal(pdti_spool_decode_frame(copy, frame.len, &out, NULL),
                     PDT_EPARSE);
    free(copy);
    pdti_buf_free(&body);
    pdti_buf_free(&frame);
    pdti_buf_free(&out);
}

/* ---- write, replay, claims ---------------------------------------------- */

static void test_round_trip_files(void **state)
{
    pdti_buf body = PDTI_BUF_INIT, out = PDTI_BUF_INIT;
    pdti_spool *s;
    pdti_spool_item it;
    pdti_spool_counts c;
    char dir[512];
    struct stat st;
    DIR *d;
    struct dirent *e;
    uint32_t n;
    int i;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/rt", root);
    umask(0);
    s = open_ok(dir, 1 << 20);
    umask(022);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    for (i = 0; i < 3; i++) {
        make_body(&body, 500 + (size_t)i, (unsigned)i);
        assert_int_equal(pdti_spool_write(s, body.data, body.len,
                                          (uint32_t)(10 + i)), PDT_OK);
    }
    assert_int_equal(count_entries(dir, ".pdspool"), 3);
    assert_int_equal(count_entries(dir, ".tmp-"), 0);
    d = opendir(dir);
    while ((e = readdir(d)) != NULL) {
        char p[1024];
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
    }
    closedir(d);
    /* Oldest first; a released claim comes back first again. */
    assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
    assert_true(it.active);
    assert_int_equal(n, 10);
    assert_int_equal(count_entries(dir, ".claimed-"), 1);
    pdti_spool_done(s, &it, 0);
    assert_int_equal(count_entries(dir, ".claimed-"), 0);
    for (i = 0; i < 3; i++) {
        make_body(&body, 500 + (size_t)i, (unsigned)i);
        assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
        assert_true(it.active);
        assert_int_equal(n, 10 + i);
        assert_int_equal(out.len, body.len);
        assert_memory_equal(out.data, body.data, body.len);
        pdti_spool_done(s, &it, 1);
    }
    assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
    assert_false(it.active);
    assert_int_equal(count_entries(dir, "."), 2); /* "." and ".." */
    pdti_spool_take_counts(s, &c);
    assert_int_equal(c.corrupt_frames, 0);
    assert_int_equal(c.dropped_spans, 0);
    pdti_spool_close(s);

    /* Reopening finds frames left by an earlier spool. */
    s = open_ok(dir, 1 << 20);
    make_body(&body, 64, 1);
    assert_int_equal(pdti_spool_write(s, body.data, body.len, 5), PDT_OK);
    pdti_spool_close(s);
    s = open_ok(dir, 1 << 20);
    assert_true(pdti_spool_pending(s));
    assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
    assert_true(it.active);
    assert_int_equal(n, 5);
    pdti_spool_done(s, &it, 1);
    pdti_spool_close(s);
    pdti_spool_close(NULL);
    pdti_buf_free(&body);
    pdti_buf_free(&out);
}

/* Writes a valid frame file with a chosen name (for ordering). */
static void plant_frame(const char *dir, const char *name, uint32_t nspans,
                        size_t len)
{
    pdti_buf body = PDTI_BUF_INIT, frame = PDTI_BUF_INIT;
    char p[600];

    make_body(&body, len, nspans);
    assert_int_equal(pdti_spool_encode_frame(body.data, body.len, nspans,
                                             &frame), PDT_OK);
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    write_file(p, frame.data, frame.len);
    pdti_buf_free(&body);
    pdti_buf_free(&frame);
}

static long dead_pid(void)
{
    long pid;
    for (pid = 4000000; pid > 100000; pid -= 7919)
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
            return pid;
    return 4194303;
}

static void test_corrupt_entries_skipped(void **state)
{
    pdti_buf frame = PDTI_BUF_INIT, body = PDTI_BUF_INIT, out = PDTI_BUF_INIT;
    pdti_spool *s;
    pdti_spool_item it;
    pdti_spool_counts c;
    char dir[512];
    char p[600], name[200];
    uint8_t junk[100];
    uint32_t n, got[8];
    int k = 0;
    long dead = dead_pid();

    (void)state;
    snprintf(dir, sizeof(dir), "%s/corrupt", root);
    s = open_ok(dir, 1 << 20);
    pdti_spool_close(s);
    /* Valid frames 1, 5 and 9 around corrupt entries 2..8. */
    plant_frame(dir, "00000000000000000001-1-00000000-1.pdspool", 1, 300);
    plant_frame(dir, "00000000000000000009-1-00000000-1.pdspool", 9, 300);
    plant_frame(dir, "00000000000000000005-1-00000000-1.pdspool", 5, 300);
    /* 2: flipped bit in the payload. */
    make_body(&body, 300, 2);
    assert_int_equal(pdti_spool_encode_frame(body.data, body.len, 2, &frame),
                     PDT_OK);
    frame.data[frame.len - 3] ^= 0x10;
    write_file(path_in("corrupt/00000000000000000002-1-00000000-1.pdspool"),
               frame.data, frame.len);
    /* 3: truncated payload (a torn write). */
    frame.data[frame.len - 3] ^= 0x10;
    write_file(path_in("corrupt/00000000000000000003-1-00000000-1.pdspool"),
               frame.data, frame.len - 10);
    /* 4: truncated header; 6: empty file; 7: garbage. */
    write_file(path_in("corrupt/00000000000000000004-1-00000000-1.pdspool"),
               frame.data, 20);
    write_file(path_in("corrupt/00000000000000000006-1-00000000-1.pdspool"),
               frame.data, 0);
    memset(junk, 'x', sizeof(junk));
    write_file(path_in("corrupt/00000000000000000007-1-00000000-1.pdspool"),
               junk, sizeof(junk));
    /* 8: a symbolic link to a valid frame elsewhere; 8b: a directory
     * with something in it; 8c: an empty directory. */
    plant_frame(root, "outside.pdspool", 77, 300);
    assert_int_equal(symlink(path_in("outside.pdspool"),
                             path_in("corrupt/00000000000000000008-1-00000000-1.pdspool")), 0);
    assert_int_equal(mkdir(path_in("corrupt/00000000000000000008-2-00000000-1.pdspool"), 0700), 0);
    write_file(path_in("corrupt/00000000000000000008-2-00000000-1.pdspool/x"),
               "x", 1);
    assert_int_equal(mkdir(path_in("corrupt/00000000000000000008-3-00000000-1.pdspool"), 0700), 0);
    /* Left over from a crash: a temporary file of a dead process (removed)
     * and one of a live process, pid 1 (kept). */
    snprintf(name, sizeof(name), "corrupt/.tmp-%ld-0123456789abcdef-00000000-1",
             dead);
    write_file(path_in("%s", name), junk, 10);
    write_file(path_in("corrupt/.tmp-1-0123456789abcdef-00000000-1"), junk, 10);
    /* One of a live process, but untouched for longer than a write can
     * take: removed. */
    write_file(path_in("corrupt/.tmp-1-0123456789abcdef-00000000-2"), junk, 10);
    {
        struct timespec old[2];
        old[0].tv_sec = old[1].tv_sec = time(NULL) - 3 * 3600;
        old[0].tv_nsec = old[1].tv_nsec = 0;
        assert_int_equal(utimensat(AT_FDCWD,
            path_in("corrupt/.tmp-1-0123456789abcdef-00000000-2"), old, 0),
            0);
    }
    /* Unrelated files are left alone. */
    write_file(path_in("corrupt/README"), "hi", 2);

    s = open_ok(dir, 1 << 20);
    assert_int_equal(count_entries(dir, ".tmp-"), 1);
    while (k < 8) {
        assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
        if (!it.active)
            break;
        got[k++] = n;
        pdti_spool_done(s, &it, 1);
    }
    assert_int_equal(k, 3);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 5);
    assert_int_equal(got[2], 9);
    pdti_spool_take_counts(s, &c);
    assert_int_equal(c.corrupt_frames, 8);
    /* The spans of the frames whose header could be read: 2 (damaged
     * payload) and 3 (torn payload) held 2 spans each; the others' counts
     * are unknown. */
    assert_int_equal(c.corrupt_spans, 2 + 2);
    assert_int_equal(c.dropped_spans, 0);
    /* The symlink's target is untouched; the full directory is set aside. */
    assert_int_equal(access(path_in("outside.pdspool"), F_OK), 0);
    assert_int_equal(count_entries(dir, ".corrupt"), 1);
    assert_int_equal(count_entries(dir, ".pdspool"), 0);
    assert_int_equal(access(path_in("corrupt/README"), F_OK), 0);
    /* Nothing more, and the set-aside entry is not counted again. */
    pdti_spool_rescan(s);
    assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
    assert_false(it.active);
    pdti_spool_take_counts(s, &c);
    assert_int_equal(c.corrupt_frames, 0);
    pdti_spool_close(s);
    snprintf(p, sizeof(p), "%s", path_in("outside.pdspool"));
    unlink(p);
    pdti_buf_free(&frame);
    pdti_buf_free(&body);
    pdti_buf_free(&out);
}

static void test_stale_claims(void **state)
{
    pdti_buf out = PDTI_BUF_INIT;
    pdti_spool *s;
    pdti_spool_item it;
    char dir[512];
    char name[200];
    uint32_t n;
    int seen = 0;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/claims", root);
    s = open_ok(dir, 1 << 20);
    pdti_spool_close(s);
    /* A dead process's claim: taken back. */
    snprintf(name, sizeof(name), "claims/00000000000000000001-1-00000000-1"
             ".claimed-%ld-0123456789abcdef", dead_pid());
    plant_frame(root, name, 1, 200);
    /* This pid with another nonce: an earlier process with the same pid
     * (containers): taken back. */
    snprintf(name, sizeof(name), "claims/00000000000000000002-1-00000000-1"
             ".claimed-%ld-0000000000000001", (long)getpid());
    plant_frame(root, name, 2, 200);
    /* A live process (pid 1): left alone. */
    plant_frame(root, "claims/00000000000000000003-1-00000000-1"
                ".claimed-1-0123456789abcdef", 3, 200);
    s = open_ok(dir, 1 << 20);
    for (;;) {
        assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
        if (!it.active)
            break;
        seen += (int)n;
        pdti_spool_done(s, &it, 1);
    }
    assert_int_equal(seen, 3);
    assert_int_equal(count_entries(dir, ".claimed-1-"), 1);
    pdti_spool_close(s);
    pdti_buf_free(&out);
}

static void test_cap_eviction(void **state)
{
    pdti_buf body = PDTI_BUF_INIT, frame = PDTI_BUF_INIT, out = PDTI_BUF_INIT;
    pdti_spool *s;
    pdti_spool_item it;
    pdti_spool_counts c;
    char dir[512];
    uint32_t n;
    int i;
    int64_t cap;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/cap", root);
    /* Incompressible-ish bodies of a known frame size. */
    make_body(&body, 4000, 1);
    for (i = 1; i < 4000; i++)
        body.data[i] = (uint8_t)(rand() & 0xff);
    assert_int_equal(pdti_spool_encode_frame(body.data, body.len, 1, &frame),
                     PDT_OK);
    cap = (int64_t)frame.len * 3 + 10; /* room for three frames */
    s = open_ok(dir, cap);
    for (i = 1; i <= 5; i++)
        assert_int_equal(pdti_spool_write(s, body.data, body.len,
                                          (uint32_t)(10 * i)), PDT_OK);
    pdti_spool_take_counts(s, &c);
    assert_int_equal(c.dropped_frames, 2);
    assert_int_equal(c.dropped_spans, 10 + 20);
    assert_int_equal(count_entries(dir, ".pdspool"), 3);
    for (i = 3; i <= 5; i++) {
        assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
        assert_true(it.active);
        assert_int_equal(n, 10 * i);
        pdti_spool_done(s, &it, 1);
    }
    /* A frame larger than the cap is refused; nothing is left behind. */
    pdti_spool_close(s);
    s = open_ok(dir, 100);
    assert_int_equal(pdti_spool_write(s, body.data, body.len, 1), PDT_EIO);
    assert_non_null(strstr(pdt_last_error(), "cap"));
    assert_int_equal(count_entries(dir, "."), 2);
    pdti_spool_close(s);
    pdti_buf_free(&body);
    pdti_buf_free(&frame);
    pdti_buf_free(&out);
}

/* ---- directory checks ---------------------------------------------------- */

static void expect_refused(const char *dir, const char *words)
{
    pdti_spool *s = (pdti_spool *)1;
    assert_int_equal(pdti_spool_open(&s, dir, 1 << 20, NULL), PDT_EIO);
    assert_null(s);
    if (strstr(pdt_last_error(), words) == NULL)
        fail_msg("message '%s' lacks '%s'", pdt_last_error(), words);
}

static void test_directory_checks(void **state)
{
    pdti_spool *s = NULL;
    struct stat st;

    (void)state;
    /* Created with parents. */
    s = open_ok(path_in("a/b/c"), 1 << 20);
    pdti_spool_close(s);
    assert_int_equal(stat(path_in("a/b/c"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    /* Others or group can write. */
    assert_int_equal(mkdir(path_in("open"), 0700), 0);
    chmod(path_in("open"), 0777);
    expect_refused(path_in("open"), "writable by group or others");
    chmod(path_in("open"), 0770);
    expect_refused(path_in("open"), "writable by group or others");
    chmod(path_in("open"), 0755); /* readable by others is fine */
    s = open_ok(path_in("open"), 1 << 20);
    pdti_spool_close(s);
    /* A symbolic link to a good directory. */
    assert_int_equal(symlink(path_in("open"), path_in("link")), 0);
    expect_refused(path_in("link"), "symbolic link");
    /* A file where a directory is expected. */
    write_file(path_in("file"), "x", 1);
    expect_refused(path_in("file"), "not a directory");
    expect_refused(path_in("file/sub"), "cannot create");
    /* A place nobody can create a directory in. */
    expect_refused("/proc/pdtrace-spool-test", "cannot create");
    /* Bad arguments. */
    assert_int_equal(pdti_spool_open(&s, "", 1, NULL), PDT_EINVAL);
    assert_int_equal(pdti_spool_open(&s, path_in("open"), 0, NULL),
                     PDT_EINVAL);
    /* Owned by someone else. */
    if (geteuid() == 0) {
        assert_int_equal(mkdir(path_in("nobody"), 0700), 0);
        assert_int_equal(chown(path_in("nobody"), 65534, 65534), 0);
        expect_refused(path_in("nobody"), "owned by uid 65534");
    } else {
        printf("# not root: skipping the foreign-owner check\n");
    }
}

/* ---- write errors -------------------------------------------------------- */

static void test_write_errors(void **state)
{
    pdti_buf body = PDTI_BUF_INIT;
    pdti_spool *s;
    struct rlimit old, lim;
    char dir[512];
    int i;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/werr", root);
    make_body(&body, 20000, 3);
    for (i = 1; i < 20000; i++)
        body.data[i] = (uint8_t)(rand() & 0xff);
    s = open_ok(dir, 1 << 20);
    /* A full disk, as far as this process can tell: the file size limit
     * makes write() fail (EFBIG) half-way. */
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1000;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(pdti_spool_write(s, body.data, body.len, 1), PDT_EIO);
    setrlimit(RLIMIT_FSIZE, &old);
    assert_non_null(strstr(pdt_last_error(), "failed"));
    assert_int_equal(count_entries(dir, ".tmp-"), 0);
    assert_int_equal(count_entries(dir, ".pdspool"), 0);
    /* It works again once there is room. */
    assert_int_equal(pdti_spool_write(s, body.data, body.len, 1), PDT_OK);
    /* The directory disappears under the spool. */
    rm_rf(dir);
    assert_int_equal(pdti_spool_write(s, body.data, body.len, 1), PDT_EIO);
    pdti_spool_close(s);
    pdti_buf_free(&body);
}

/* ---- processes ------------------------------------------------------------ */

/* Several processes drain one directory at once: every frame is replayed
 * by exactly one of them. */
static void test_concurrent_claims(void **state)
{
    pdti_buf body = PDTI_BUF_INIT;
    pdti_spool *s;
    char dir[512];
    int fds[2], k;
    pid_t kids[4];
    uint32_t expect = 0, total = 0, v;
    unsigned char seen[200];

    (void)state;
    snprintf(dir, sizeof(dir), "%s/multi", root);
    s = open_ok(dir, 64 << 20);
    make_body(&body, 200, 1);
    for (k = 1; k <= 200; k++) {
        assert_int_equal(pdti_spool_write(s, body.data, body.len, (uint32_t)k),
                         PDT_OK);
        expect += (uint32_t)k;
    }
    pdti_spool_close(s);
    assert_int_equal(pipe(fds), 0);
    for (k = 0; k < 4; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            pdti_buf out = PDTI_BUF_INIT;
            pdti_spool_item it;
            uint32_t n;
            pdti_spool *c = NULL;
            close(fds[0]);
            if (pdti_spool_open(&c, dir, 64 << 20, NULL) != PDT_OK)
                _exit(1);
            for (;;) {
                if (pdti_spool_next(c, &out, &n, &it) != PDT_OK)
                    _exit(2);
                if (!it.active)
                    break;
                if (write(fds[1], &n, sizeof(n)) != sizeof(n))
                    _exit(3);
                pdti_spool_done(c, &it, 1);
            }
            pdti_spool_close(c);
            pdti_buf_free(&out);
            _exit(0);
        }
    }
    close(fds[1]);
    memset(seen, 0, sizeof(seen));
    while (read(fds[0], &v, sizeof(v)) == sizeof(v)) {
        assert_true(v >= 1 && v <= 200);
        assert_int_equal(seen[v - 1], 0); /* never twice */
        seen[v - 1] = 1;
        total += v;
    }
    close(fds[0]);
    for (k = 0; k < 4; k++) {
        int st;
        waitpid(kids[k], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(total, expect);
    assert_int_equal(count_entries(dir, "."), 2);
    pdti_buf_free(&body);
}

/* A frame claimed by the parent is never replayed by a forked child. */
static void test_fork_claim(void **state)
{
    pdti_buf body = PDTI_BUF_INIT, out = PDTI_BUF_INIT;
    pdti_spool *s;
    pdti_spool_item it;
    char dir[512];
    uint32_t n;
    pid_t kid;
    int st;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/forkc", root);
    s = open_ok(dir, 1 << 20);
    make_body(&body, 100, 1);
    assert_int_equal(pdti_spool_write(s, body.data, body.len, 1), PDT_OK);
    assert_int_equal(pdti_spool_write(s, body.data, body.len, 2), PDT_OK);
    assert_int_equal(pdti_spool_next(s, &out, &n, &it), PDT_OK);
    assert_int_equal(n, 1);
    kid = fork();
    assert_true(kid >= 0);
    if (kid == 0) {
        pdti_spool *c = NULL;
        pdti_spool_item ci;
        uint32_t m = 0;
        int got = 0;
        pdti_spool_close(s); /* the parent's copy: touches no file */
        if (pdti_spool_open(&c, dir, 1 << 20, NULL) != PDT_OK)
            _exit(1);
        for (;;) {
            if (pdti_spool_next(c, &out, &m, &ci) != PDT_OK)
                _exit(2);
            if (!ci.active)
                break;
            if (m != 2)
                _exit(3); /* the parent's frame */
            got++;
            pdti_spool_done(c, &ci, 1);
        }
        pdti_spool_close(c);
        _exit(got == 1 ? 0 : 4);
    }
    waitpid(kid, &st, 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(count_entries(dir, ".claimed-"), 1);
    pdti_spool_done(s, &it, 1);
    assert_int_equal(count_entries(dir, "."), 2);
    pdti_spool_close(s);
    pdti_buf_free(&body);
    pdti_buf_free(&out);
}

/* ---- tracer integration --------------------------------------------------- */

/* A loopback port with nobody listening. */
static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void tracer_opts(pdt_tracer_options *o, char *url, size_t cap,
                        const char *dir)
{
    pdt_tracer_options init = PDT_TRACER_OPTIONS_INIT;
    *o = init;
    snprintf(url, cap, "http://127.0.0.1:%d/v1/traces", closed_port());
    o->ignore_environment = 1;
    o->exporter = PDT_EXPORTER_OTLP;
    o->endpoint = url;
    o->sampler = PDT_SAMPLER_ALWAYS_ON;
    o->export_timeout_ms = 300;
    o->timeout_ms = 200;
    o->schedule_delay_ms = 50;
    o->max_export_batch_size = 10;
    o->spool_dir = dir;
}

static void end_spans(pdt_tracer *t, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        pdt_span *sp = NULL;
        assert_int_equal(pdt_span_start(&sp, t, "x", PDT_SPAN_KIND_INTERNAL,
                                        NULL, NULL, NULL, 0), PDT_OK);
        pdt_span_end(sp, 0);
        pdt_span_free(sp);
    }
}

static void test_tracer_spools_when_down(void **state)
{
    pdt_tracer_options o;
    pdt_tracer *t = NULL;
    pdt_stats st = PDT_STATS_INIT;
    char url[128];
    char dir[512];
    uint64_t dropped = 1;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/tracer", root);
    tracer_opts(&o, url, sizeof(url), dir);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    end_spans(t, 35);
    assert_int_equal(pdt_tracer_flush(t, 5000, NULL), PDT_OK);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_spooled, 35);
    assert_int_equal(st.spans_exported, 0);
    assert_int_equal(st.dropped_export_failed, 0);
    assert_true(count_entries(dir, ".pdspool") +
                count_entries(dir, ".claimed-") >= 1);
    /* Spans still queued at close go to the spool, not to dropped. */
    end_spans(t, 7);
    assert_int_equal(pdt_tracer_close(t, 2000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(count_entries(dir, ".claimed-"), 0);

    /* Without a spool the same spans are dropped and counted. */
    tracer_opts(&o, url, sizeof(url), NULL);
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    end_spans(t, 12);
    pdt_tracer_flush(t, 5000, NULL);
    assert_int_equal(pdt_tracer_stats(t, &st), PDT_OK);
    assert_int_equal(st.spans_spooled, 0);
    assert_int_equal(st.dropped_export_failed, 12);
    assert_int_equal(pdt_tracer_close(t, 1000, NULL), PDT_OK);
}

static void test_tracer_open_refuses_bad_spool(void **state)
{
    pdt_tracer_options o;
    pdt_tracer *t = (pdt_tracer *)1;
    char url[128];

    (void)state;
    assert_int_equal(mkdir(path_in("shared"), 0700), 0);
    chmod(path_in("shared"), 0777);
    tracer_opts(&o, url, sizeof(url), path_in("shared"));
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_EIO);
    assert_null(t);
    assert_non_null(strstr(pdt_last_error(), "writable by group or others"));
    /* The console exporter ignores the spool. */
    o.exporter = PDT_EXPORTER_CONSOLE;
    o.console_path = "/dev/null";
    assert_int_equal(pdt_tracer_open(&t, &o), PDT_OK);
    assert_int_equal(pdt_tracer_close(t, 1000, NULL), PDT_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_round_trip),
        cmocka_unit_test(test_codec_corruption),
        cmocka_unit_test_setup_teardown(test_round_trip_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_entries_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cap_eviction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_checks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_write_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_claims, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fork_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tracer_spools_when_down, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tracer_open_refuses_bad_spool,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
