/*
 * The persistent spool (see spool.h for the file format and names, and
 * docs/spool.md for the guarantees). Runs on the exporter thread only.
 *
 * Every file operation goes through a descriptor of the directory opened
 * once (openat, renameat, unlinkat), so the checks made at open time keep
 * holding even if the path is later replaced. Ownership of a frame moves
 * only by rename, which is atomic: whoever renames a frame to its claim
 * name is the only one to replay or evict it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "pdtrace/common.h"
#include "error.h"
#include "ids.h"
#include "spool.h"

#define SUFFIX_FRAME ".pdspool"
#define MARK_CLAIM ".claimed-"
#define PREFIX_TMP ".tmp-"
#define SUFFIX_CORRUPT ".corrupt"
#define ZSTD_LEVEL 1
/* The cached directory listing is trusted this long for the cap check. */
#define SCAN_FRESH_NS 1000000000ull
/* Without a scan for this long, frames from other processes may wait. */
#define RESCAN_NS 30000000000ull

typedef struct frame_ent {
    char name[128]; /* "<base>.pdspool" */
    uint64_t size;
} frame_ent;

struct pdti_spool {
    int dfd;               /* the directory */
    char *dir;             /* its path, for messages */
    uint64_t max_bytes;
    pdti_logger *lg;
    long pid;              /* process that opened the spool */
    uint32_t inst;         /* random, tells spools of a process apart */
    uint64_t seq;
    frame_ent *ents;       /* waiting frames of the last scan, oldest first */
    size_t nents, cap_ents, pos;
    uint64_t total_bytes;  /* every file of ours in the directory */
    uint64_t scanned_ns;   /* when the listing was made; 0: never */
    int pending;
    pdti_buf wbuf;         /* frame being written */
    pdti_buf rbuf;         /* frame file being read */
    pdti_spool_counts counts;
};

/* ---- identity of this process ------------------------------------------ */

static pthread_once_t nonce_once = PTHREAD_ONCE_INIT;
static uint64_t nonce_value;

static void nonce_init(void)
{
    uint64_t v;

    do
        v = pdti_random64();
    while (v == 0);
    nonce_value = v;
}

/* A random value fixed for the life of the process (a forked child keeps
 * it but has another pid, so (pid, nonce) is unique per process). */
static uint64_t proc_nonce(void)
{
    pthread_once(&nonce_once, nonce_init);
    return nonce_value;
}

/* 1 if the process that owns a claim or temporary file is gone. */
static int owner_gone(long pid, uint64_t nonce)
{
    if (pid <= 0 || (long)(pid_t)pid != pid)
        return 1;
    if ((pid_t)pid == getpid())
        return nonce != proc_nonce();
    if (kill((pid_t)pid, 0) == 0)
        return 0;
    return errno == ESRCH;
}

/* Parses "<pid>-<16 hex>" at p (the whole rest of the string, or up to
 * the next '-' after the nonce when `tail` is given). 0 on success. */
static int parse_owner(const char *p, long *pid, uint64_t *nonce,
                       const char **tail)
{
    char *end;
    int i;

    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    *pid = strtol(p, &end, 10);
    if (errno != 0 || *end != '-')
        return -1;
    p = end + 1;
    *nonce = 0;
    for (i = 0; i < 16; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return -1;
        *nonce = (*nonce << 4) | (uint64_t)d;
    }
    p += 16;
    if (tail != NULL) {
        if (*p != '-')
            return -1;
        *tail = p + 1;
        return 0;
    }
    return *p == '\0' ? 0 : -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

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

/* Checks a header against the file size. 0 if sound; fills the fields. */
static int check_header(const uint8_t *h, uint64_t file_size,
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
        check_header(data, len, &n, &raw_len, &comp_len) != 0)
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

/* ---- small file helpers ------------------------------------------------- */

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes; -1 with errno (0 for a short file). */
static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = 0;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Removes an entry that is not a valid frame: a file or link is unlinked,
 * an empty directory removed, anything else renamed to "<name>.corrupt"
 * so that it is never looked at again. */
static void discard(pdti_spool *s, const char *name, const char *why)
{
    char aside[256];

    s->counts.corrupt_frames++;
    if (unlinkat(s->dfd, name, 0) == 0 || errno == ENOENT ||
        unlinkat(s->dfd, name, AT_REMOVEDIR) == 0) {
        pdti_log(s->lg, PDT_LOG_WARN, "spool %s: removed corrupt frame %s "
                 "(%s)", s->dir, name, why);
        return;
    }
    snprintf(aside, sizeof(aside), "%s%s", name, SUFFIX_CORRUPT);
    if (renameat(s->dfd, name, s->dfd, aside) == 0)
        pdti_log(s->lg, PDT_LOG_WARN, "spool %s: set aside corrupt entry "
                 "%s as %s (%s)", s->dir, name, aside, why);
    else
        pdti_log(s->lg, PDT_LOG_WARN, "spool %s: cannot remove corrupt "
                 "entry %s (%s): %s", s->dir, name, why, strerror(errno));
}

/* ---- scanning ----------------------------------------------------------- */

static int ent_cmp(const void *a, const void *b)
{
    return strcmp(((const frame_ent *)a)->name, ((const frame_ent *)b)->name);
}

static int add_ent(pdti_spool *s, const char *name, uint64_t size)
{
    if (s->nents == s->cap_ents) {
        size_t cap = s->cap_ents != 0 ? s->cap_ents * 2 : 64;
        frame_ent *e = realloc(s->ents, cap * sizeof(*e));
        if (e == NULL)
            return -1;
        s->ents = e;
        s->cap_ents = cap;
    }
    snprintf(s->ents[s->nents].name, sizeof(s->ents[s->nents].name), "%s",
             name);
    s->ents[s->nents].size = size;
    s->nents++;
    return 0;
}

/* A claim whose owner is gone goes back to the spool. 1 if it did. */
static int reclaim(pdti_spool *s, const char *name, const struct stat *st,
                   char *frame, size_t cap)
{
    const char *mark = strstr(name, MARK_CLAIM);
    size_t blen;
    long pid;
    uint64_t nonce;
    int stale;

    if (mark == NULL)
        return 0;
    blen = (size_t)(mark - name);
    if (blen == 0 || blen + sizeof(SUFFIX_FRAME) > cap)
        return 0;
    if (parse_owner(mark + strlen(MARK_CLAIM), &pid, &nonce, NULL) != 0)
        stale = 1;
    else
        stale = owner_gone(pid, nonce) ||
                (time(NULL) - st->st_ctime > PDTI_SPOOL_CLAIM_MAX_AGE_S &&
                 !((pid_t)pid == getpid() && nonce == proc_nonce()));
    if (!stale)
        return 0;
    memcpy(frame, name, blen);
    memcpy(frame + blen, SUFFIX_FRAME, sizeof(SUFFIX_FRAME));
    if (renameat(s->dfd, name, s->dfd, frame) != 0)
        return 0;
    pdti_log(s->lg, PDT_LOG_INFO, "spool %s: took back %s from a process "
             "that is gone", s->dir, frame);
    return 1;
}

/*
 * Lists the directory: waiting frames (sorted, oldest first) into s->ents
 * and the bytes of all our files into s->total_bytes. Temporary files and
 * claims of processes that are gone are cleaned up on the way.
 */
static int scan(pdti_spool *s)
{
    DIR *d;
    struct dirent *e;
    int fd;
    uint64_t total = 0;

    fd = openat(s->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return pdti_err(PDT_EIO, "spool %s: cannot list: %s", s->dir,
                        strerror(errno));
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return pdti_err(PDT_EIO, "spool %s: cannot list: %s", s->dir,
                        strerror(errno));
    }
    s->nents = 0;
    s->pos = 0;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        struct stat st;
        char frame[sizeof(s->ents[0].name)];

        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
            ends_with(name, SUFFIX_CORRUPT))
            continue;
        if (strncmp(name, PREFIX_TMP, strlen(PREFIX_TMP)) == 0) {
            long pid;
            uint64_t nonce;
            const char *tail;
            if (fstatat(s->dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue;
            if (parse_owner(name + strlen(PREFIX_TMP), &pid, &nonce,
                            &tail) != 0 || owner_gone(pid, nonce)) {
                /* Left by a crash in the middle of a write. */
                if (unlinkat(s->dfd, name, 0) != 0)
                    unlinkat(s->dfd, name, AT_REMOVEDIR);
                continue;
            }
            total += (uint64_t)st.st_size;
            continue;
        }
        if (name[0] == '.')
            continue;
        if (fstatat(s->dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (ends_with(name, SUFFIX_FRAME)) {
            if (strlen(name) >= sizeof(s->ents[0].name)) {
                discard(s, name, "name too long");
                continue;
            }
            if (add_ent(s, name, (uint64_t)st.st_size) != 0) {
                closedir(d);
                return pdti_err(PDT_ENOMEM, "out of memory");
            }
            total += (uint64_t)st.st_size;
        } else if (strstr(name, MARK_CLAIM) != NULL) {
            if (reclaim(s, name, &st, frame, sizeof(frame))) {
                if (add_ent(s, frame, (uint64_t)st.st_size) != 0) {
                    closedir(d);
                    return pdti_err(PDT_ENOMEM, "out of memory");
                }
            }
            total += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    if (s->nents > 1)
        qsort(s->ents, s->nents, sizeof(*s->ents), ent_cmp);
    s->total_bytes = total;
    s->scanned_ns = pdt_now_ns();
    s->pending = s->nents > 0;
    return PDT_OK;
}

/* ---- open and close ----------------------------------------------------- */

/* mkdir -p with mode 0700 for what it creates. 1 if `path` itself was
 * created, 0 if it existed, -1 with errno. */
static int make_dirs(const char *path)
{
    char *p, *q;
    int rc;

    if (mkdir(path, 0700) == 0)
        return 1;
    if (errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return -1;
    p = strdup(path);
    if (p == NULL)
        return -1;
    for (q = p + 1; *q != '\0'; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int err = errno;
            free(p);
            errno = err;
            return -1;
        }
        *q = '/';
    }
    free(p);
    rc = mkdir(path, 0700);
    if (rc == 0)
        return 1;
    return errno == EEXIST ? 0 : -1;
}

static int check_dir(pdti_spool *s, int created)
{
    struct stat lst, st;

    if (lstat(s->dir, &lst) != 0)
        return pdti_err(PDT_EIO, "spool directory %s: %s", s->dir,
                        strerror(errno));
    if (S_ISLNK(lst.st_mode))
        return pdti_err(PDT_EIO, "spool directory %s is a symbolic link; "
                        "give the real path", s->dir);
    if (!S_ISDIR(lst.st_mode))
        return pdti_err(PDT_EIO, "spool directory %s exists and is not a "
                        "directory", s->dir);
    s->dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s->dfd < 0)
        return pdti_err(PDT_EIO, "spool directory %s: cannot open: %s",
                        s->dir, strerror(errno));
    if (fstat(s->dfd, &st) != 0)
        return pdti_err(PDT_EIO, "spool directory %s: %s", s->dir,
                        strerror(errno));
    if (st.st_dev != lst.st_dev || st.st_ino != lst.st_ino)
        return pdti_err(PDT_EIO, "spool directory %s was replaced while "
                        "being opened", s->dir);
    if (created && fchmod(s->dfd, 0700) != 0)
        return pdti_err(PDT_EIO, "spool directory %s: chmod: %s", s->dir,
                        strerror(errno));
    if (st.st_uid != geteuid())
        return pdti_err(PDT_EIO, "spool directory %s is owned by uid %ld, "
                        "not by this process (uid %ld)", s->dir,
                        (long)st.st_uid, (long)geteuid());
    if (!created && (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return pdti_err(PDT_EIO, "spool directory %s is writable by group "
                        "or others (mode %04o); chmod 0700 it", s->dir,
                        (unsigned)(st.st_mode & 07777));
    if (faccessat(s->dfd, ".", W_OK | X_OK | R_OK, AT_EACCESS) != 0)
        return pdti_err(PDT_EIO, "spool directory %s is not writable: %s",
                        s->dir, strerror(errno));
    return PDT_OK;
}

int pdti_spool_open(pdti_spool **out, const char *dir, int64_t max_bytes,
                    pdti_logger *lg)
{
    pdti_spool *s;
    int created, rc;

    if (out == NULL)
        return pdti_err(PDT_EINVAL, "out is NULL");
    *out = NULL;
    if (dir == NULL || dir[0] == '\0' || max_bytes <= 0)
        return pdti_err(PDT_EINVAL, "spool: empty directory or cap <= 0");
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory");
    s->dfd = -1;
    s->lg = lg;
    s->max_bytes = (uint64_t)max_bytes;
    s->pid = (long)getpid();
    s->inst = (uint32_t)pdti_random64();
    s->dir = strdup(dir);
    if (s->dir == NULL) {
        free(s);
        return pdti_err(PDT_ENOMEM, "out of memory");
    }
    created = make_dirs(dir);
    if (created < 0) {
        rc = pdti_err(PDT_EIO, "spool directory %s: cannot create: %s", dir,
                      strerror(errno));
        pdti_spool_close(s);
        return rc;
    }
    rc = check_dir(s, created);
    if (rc == PDT_OK)
        rc = scan(s);
    if (rc != PDT_OK) {
        pdti_spool_close(s);
        return rc;
    }
    if (s->nents > 0)
        pdti_log(lg, PDT_LOG_INFO, "spool %s: %zu frames (%llu bytes) "
                 "waiting to be replayed", s->dir, s->nents,
                 (unsigned long long)s->total_bytes);
    *out = s;
    return PDT_OK;
}

void pdti_spool_close(pdti_spool *s)
{
    if (s == NULL)
        return;
    if (s->dfd >= 0)
        close(s->dfd);
    free(s->dir);
    free(s->ents);
    pdti_buf_free(&s->wbuf);
    pdti_buf_free(&s->rbuf);
    free(s);
}

/* ---- claims ------------------------------------------------------------- */

static void claim_name(char *out, size_t cap, const char *base)
{
    snprintf(out, cap, "%s%s%ld-%016" PRIx64, base, MARK_CLAIM,
             (long)getpid(), proc_nonce());
}

/* Claims frame `name` into *item (name and base set). 0 on success, -1 if
 * someone else has it or it is gone. */
static int claim(pdti_spool *s, const char *name, pdti_spool_item *item)
{
    size_t blen = strlen(name) - strlen(SUFFIX_FRAME);

    if (blen >= sizeof(item->base))
        return -1;
    memcpy(item->base, name, blen);
    item->base[blen] = '\0';
    claim_name(item->name, sizeof(item->name), item->base);
    if (renameat(s->dfd, name, s->dfd, item->name) != 0)
        return -1;
    item->active = 1;
    item->size = 0;
    item->nspans = 0;
    return 0;
}

void pdti_spool_done(pdti_spool *s, pdti_spool_item *item, int delivered)
{
    char frame[160];

    if (s == NULL || item == NULL || !item->active)
        return;
    item->active = 0;
    if (delivered) {
        if (unlinkat(s->dfd, item->name, 0) != 0 && errno != ENOENT)
            pdti_log(s->lg, PDT_LOG_WARN, "spool %s: cannot remove %s "
                     "after delivery (it will be sent again): %s", s->dir,
                     item->name, strerror(errno));
        else if (s->total_bytes >= item->size)
            s->total_bytes -= item->size;
        return;
    }
    snprintf(frame, sizeof(frame), "%s%s", item->base, SUFFIX_FRAME);
    if (renameat(s->dfd, item->name, s->dfd, frame) != 0)
        pdti_log(s->lg, PDT_LOG_WARN, "spool %s: cannot release %s: %s",
                 s->dir, item->name, strerror(errno));
    s->pending = 1;
    /* The frame goes back in front of the listing. */
    if (s->pos > 0 && strcmp(s->ents[s->pos - 1].name, frame) == 0)
        s->pos--;
}

/* ---- reading ------------------------------------------------------------ */

/* Reads the claimed file of *item into s->rbuf. 0, or -1 corrupt (why
 * set), or a negative status for an I/O or memory failure. */
static int read_claimed(pdti_spool *s, pdti_spool_item *item,
                        int header_only, const char **why)
{
    struct stat st;
    uint8_t h[PDTI_SPOOL_HEADER_SIZE];
    uint64_t raw_len, comp_len;
    uint32_t nspans;
    int fd, rc = 0;

    fd = openat(s->dfd, item->name,
                O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == EISDIR || errno == ENXIO) {
            *why = "not a regular file";
            return -1;
        }
        return pdti_err(PDT_EIO, "spool %s: cannot open %s: %s", s->dir,
                        item->name, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        close(fd);
        return pdti_err(PDT_EIO, "spool %s: %s", s->dir, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        *why = "not a regular file";
        rc = -1;
    } else if (st.st_size < PDTI_SPOOL_HEADER_SIZE) {
        *why = st.st_size == 0 ? "empty file" : "truncated header";
        rc = -1;
    } else if (read_all(fd, h, sizeof(h)) != 0) {
        if (errno == 0) {
            *why = "truncated header";
            rc = -1;
        } else {
            rc = pdti_err(PDT_EIO, "spool %s: reading %s: %s", s->dir,
                          item->name, strerror(errno));
        }
    } else if (check_header(h, (uint64_t)st.st_size, &nspans, &raw_len,
                            &comp_len) != 0) {
        *why = "bad header";
        rc = -1;
    } else {
        item->size = (uint64_t)st.st_size;
        item->nspans = nspans;
        if (!header_only) {
            pdti_buf_reset(&s->rbuf);
            if (pdti_buf_reserve(&s->rbuf, (size_t)st.st_size) != 0) {
                rc = pdti_err(PDT_ENOMEM, "out of memory");
            } else {
                memcpy(s->rbuf.data, h, sizeof(h));
                if (read_all(fd, s->rbuf.data + sizeof(h),
                             (size_t)comp_len) != 0) {
                    if (errno == 0) {
                        *why = "truncated payload";
                        rc = -1;
                    } else {
                        rc = pdti_err(PDT_EIO, "spool %s: reading %s: %s",
                                      s->dir, item->name, strerror(errno));
                    }
                } else {
                    s->rbuf.len = (size_t)st.st_size;
                }
            }
        }
    }
    close(fd);
    return rc;
}

int pdti_spool_next(pdti_spool *s, pdti_buf *body, uint32_t *nspans,
                    pdti_spool_item *item)
{
    int rescanned = 0;

    if (s == NULL || body == NULL || nspans == NULL || item == NULL)
        return pdti_err(PDT_EINVAL, "spool: NULL argument");
    item->active = 0;
    if (s->scanned_ns == 0 || pdt_now_ns() - s->scanned_ns > RESCAN_NS) {
        int rc = scan(s);
        if (rc != PDT_OK)
            return rc;
        rescanned = 1;
    }
    for (;;) {
        const char *why = NULL;
        int rc;

        if (s->pos >= s->nents) {
            if (rescanned || !s->pending) {
                s->pending = 0;
                return PDT_OK;
            }
            rc = scan(s);
            if (rc != PDT_OK)
                return rc;
            rescanned = 1;
            continue;
        }
        if (claim(s, s->ents[s->pos++].name, item) != 0)
            continue; /* taken by another process, or gone */
        rc = read_claimed(s, item, 0, &why);
        if (rc == 0) {
            rc = pdti_spool_decode_frame(s->rbuf.data, s->rbuf.len, body,
                                         nspans);
            if (rc == PDT_OK)
                return PDT_OK;
            if (rc == PDT_ENOMEM) {
                pdti_spool_done(s, item, 0);
                return pdti_err(PDT_ENOMEM, "out of memory");
            }
            why = "checksum, compression or length mismatch";
            rc = -1;
        }
        if (rc == -1) {
            item->active = 0;
            if (s->total_bytes >= item->size)
                s->total_bytes -= item->size;
            discard(s, item->name, why);
            continue;
        }
        pdti_spool_done(s, item, 0);
        return rc;
    }
}

int pdti_spool_pending(pdti_spool *s)
{
    if (s == NULL)
        return 0;
    return s->pending || s->pos < s->nents ||
           pdt_now_ns() - s->scanned_ns > RESCAN_NS;
}

void pdti_spool_rescan(pdti_spool *s)
{
    if (s != NULL) {
        s->pending = 1;
        s->nents = s->pos = 0;
    }
}

void pdti_spool_take_counts(pdti_spool *s, pdti_spool_counts *out)
{
    if (out == NULL)
        return;
    if (s == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = s->counts;
    memset(&s->counts, 0, sizeof(s->counts));
}

/* ---- writing ------------------------------------------------------------ */

/* Evicts the oldest frames until `need` more bytes fit under the cap. */
static int make_room(pdti_spool *s, uint64_t need)
{
    size_t i;
    int rc;

    if (need > s->max_bytes)
        return pdti_err(PDT_EIO, "spool %s: a frame of %llu bytes is larger "
                        "than the spool cap (%llu bytes)", s->dir,
                        (unsigned long long)need,
                        (unsigned long long)s->max_bytes);
    if (s->scanned_ns != 0 && pdt_now_ns() - s->scanned_ns < SCAN_FRESH_NS &&
        s->total_bytes + need <= s->max_bytes)
        return PDT_OK;
    rc = scan(s);
    if (rc != PDT_OK)
        return rc;
    for (i = 0; i < s->nents && s->total_bytes + need > s->max_bytes; i++) {
        pdti_spool_item it;
        const char *why = NULL;

        if (claim(s, s->ents[i].name, &it) != 0)
            continue;
        rc = read_claimed(s, &it, 1, &why);
        if (rc == -1) {
            s->total_bytes -= s->ents[i].size <= s->total_bytes
                                  ? s->ents[i].size : s->total_bytes;
            discard(s, it.name, why);
            continue;
        }
        if (rc != 0 || unlinkat(s->dfd, it.name, 0) != 0) {
            pdti_spool_done(s, &it, 0);
            continue;
        }
        s->counts.dropped_spans += it.nspans;
        s->counts.dropped_frames++;
        s->total_bytes -= s->ents[i].size <= s->total_bytes
                              ? s->ents[i].size : s->total_bytes;
        pdti_log(s->lg, PDT_LOG_WARN, "spool %s: full (cap %llu bytes): "
                 "evicted %s with %u spans", s->dir,
                 (unsigned long long)s->max_bytes, s->ents[i].name,
                 (unsigned)it.nspans);
    }
    /* The evicted entries are gone from the front of the listing. */
    s->pos = i;
    if (s->total_bytes + need > s->max_bytes)
        return pdti_err(PDT_EIO, "spool %s: no room for %llu bytes under "
                        "the cap of %llu bytes (frames being replayed)",
                        s->dir, (unsigned long long)need,
                        (unsigned long long)s->max_bytes);
    return PDT_OK;
}

int pdti_spool_write(pdti_spool *s, const uint8_t *body, size_t len,
                     uint32_t nspans)
{
    char tmp[128], name[128];
    struct timespec now;
    uint64_t ns;
    int fd, rc;

    if (s == NULL || body == NULL || len == 0 || nspans == 0)
        return pdti_err(PDT_EINVAL, "spool: empty frame");
    if ((uint64_t)len > PDTI_SPOOL_MAX_RAW)
        return pdti_err(PDT_EIO, "spool %s: a request of %zu bytes is too "
                        "large to spool", s->dir, len);
    rc = pdti_spool_encode_frame(body, len, nspans, &s->wbuf);
    if (rc != PDT_OK)
        return pdti_err(rc, "spool %s: cannot compress a frame", s->dir);
    rc = make_room(s, s->wbuf.len);
    if (rc != PDT_OK)
        return rc;

    clock_gettime(CLOCK_REALTIME, &now);
    ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    s->seq++;
    snprintf(name, sizeof(name), "%020" PRIu64 "-%ld-%08" PRIx32 "-%" PRIu64
             SUFFIX_FRAME, ns, s->pid, s->inst, s->seq);
    snprintf(tmp, sizeof(tmp), PREFIX_TMP "%ld-%016" PRIx64 "-%08" PRIx32
             "-%" PRIu64, (long)getpid(), proc_nonce(), s->inst, s->seq);

    fd = openat(s->dfd, tmp,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return pdti_err(PDT_EIO, "spool %s: cannot create a frame: %s",
                        s->dir, strerror(errno));
    if (fchmod(fd, 0600) != 0 || write_all(fd, s->wbuf.data, s->wbuf.len) != 0 ||
        fsync(fd) != 0) {
        int err = errno;
        close(fd);
        unlinkat(s->dfd, tmp, 0);
        return pdti_err(PDT_EIO, "spool %s: writing a frame of %zu bytes "
                        "failed: %s", s->dir, s->wbuf.len, strerror(err));
    }
    if (close(fd) != 0 || renameat(s->dfd, tmp, s->dfd, name) != 0) {
        int err = errno;
        unlinkat(s->dfd, tmp, 0);
        return pdti_err(PDT_EIO, "spool %s: storing a frame failed: %s",
                        s->dir, strerror(err));
    }
    /* The rename is durable once the directory is; some file systems do
     * not sync directories (EINVAL), which is not an error. */
    fsync(s->dfd);
    s->total_bytes += s->wbuf.len;
    s->pending = 1;
    if (s->wbuf.cap > ((size_t)1 << 20))
        pdti_buf_free(&s->wbuf);
    return PDT_OK;
}
