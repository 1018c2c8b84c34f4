/*
 * Storing frames: each batch is encoded, written to a temporary file,
 * fsync'd and renamed into place, after evicting the oldest frames that
 * keep it from fitting under the cap. Runs on the exporter thread only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "pdtrace/common.h"
#include "buf.h"
#include "error.h"
#include "log.h"
#include "spool.h"
#include "spool_dir.h"
#include "spool_frame.h"
#include "spool_owner.h"

/* The cached directory listing is trusted this long for the cap check. */
#define SCAN_FRESH_NS 1000000000ull

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

/* ---- eviction ----------------------------------------------------------- */

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
    rc = pdti_spool_scan(s);
    if (rc != PDT_OK)
        return rc;
    for (i = 0; i < s->nents && s->total_bytes + need > s->max_bytes; i++) {
        pdti_spool_item it;
        const char *why = NULL;

        if (pdti_spool_claim(s, s->ents[i].name, &it) != 0)
            continue;
        rc = pdti_spool_read_claimed(s, &it, 1, &why);
        if (rc == -1) {
            s->counts.corrupt_spans += it.nspans;
            s->total_bytes -= s->ents[i].size <= s->total_bytes
                                  ? s->ents[i].size : s->total_bytes;
            pdti_spool_discard(s, it.name, why);
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

/* ---- writing ------------------------------------------------------------ */

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
             PDTI_SPOOL_SUFFIX_FRAME, ns, s->pid, s->inst, s->seq);
    snprintf(tmp, sizeof(tmp), PDTI_SPOOL_PREFIX_TMP "%ld-%016" PRIx64
             "-%08" PRIx32 "-%" PRIu64, (long)getpid(),
             pdti_spool_proc_nonce(), s->inst, s->seq);

    fd = openat(s->dfd, tmp,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return pdti_err(PDT_EIO, "spool %s: cannot create a frame: %s",
                        s->dir, strerror(errno));
    if (fchmod(fd, 0600) != 0 ||
        write_all(fd, s->wbuf.data, s->wbuf.len) != 0 || fsync(fd) != 0) {
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
