/*
 * The spool directory (names and rules in spool_dir.h): listing it,
 * cleaning up what dead processes left, setting corrupt entries aside,
 * and claiming frames by rename. Runs on the exporter thread only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- small helpers ------------------------------------------------------ */

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

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

void pdti_spool_discard(pdti_spool *s, const char *name, const char *why)
{
    char aside[256];

    s->counts.corrupt_frames++;
    if (unlinkat(s->dfd, name, 0) == 0 || errno == ENOENT ||
        unlinkat(s->dfd, name, AT_REMOVEDIR) == 0) {
        pdti_log(s->lg, PDT_LOG_WARN, "spool %s: removed corrupt frame %s "
                 "(%s)", s->dir, name, why);
        return;
    }
    snprintf(aside, sizeof(aside), "%s%s", name, PDTI_SPOOL_SUFFIX_CORRUPT);
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
    return strcmp(((const pdti_spool_ent *)a)->name,
                  ((const pdti_spool_ent *)b)->name);
}

static int add_ent(pdti_spool *s, const char *name, uint64_t size)
{
    if (s->nents == s->cap_ents) {
        size_t cap = s->cap_ents != 0 ? s->cap_ents * 2 : 64;
        pdti_spool_ent *e = realloc(s->ents, cap * sizeof(*e));
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
    const char *mark = strstr(name, PDTI_SPOOL_MARK_CLAIM);
    size_t blen;
    long pid;
    uint64_t nonce;
    int stale;

    if (mark == NULL)
        return 0;
    blen = (size_t)(mark - name);
    if (blen == 0 || blen + sizeof(PDTI_SPOOL_SUFFIX_FRAME) > cap)
        return 0;
    if (pdti_spool_parse_owner(mark + strlen(PDTI_SPOOL_MARK_CLAIM), &pid,
                               &nonce, NULL) != 0)
        stale = 1;
    else
        stale = pdti_spool_owner_gone(pid, nonce) ||
                (time(NULL) - st->st_ctime > PDTI_SPOOL_CLAIM_MAX_AGE_S &&
                 !((pid_t)pid == getpid() &&
                   nonce == pdti_spool_proc_nonce()));
    if (!stale)
        return 0;
    memcpy(frame, name, blen);
    memcpy(frame + blen, PDTI_SPOOL_SUFFIX_FRAME,
           sizeof(PDTI_SPOOL_SUFFIX_FRAME));
    if (renameat(s->dfd, name, s->dfd, frame) != 0)
        return 0;
    pdti_log(s->lg, PDT_LOG_INFO, "spool %s: took back %s from a process "
             "that is gone", s->dir, frame);
    return 1;
}

int pdti_spool_scan(pdti_spool *s)
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
            ends_with(name, PDTI_SPOOL_SUFFIX_CORRUPT))
            continue;
        if (strncmp(name, PDTI_SPOOL_PREFIX_TMP,
                    strlen(PDTI_SPOOL_PREFIX_TMP)) == 0) {
            long pid;
            uint64_t nonce;
            const char *tail;
            if (fstatat(s->dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue;
            if (pdti_spool_parse_owner(name + strlen(PDTI_SPOOL_PREFIX_TMP),
                                       &pid, &nonce, &tail) != 0 ||
                pdti_spool_owner_gone(pid, nonce) ||
                time(NULL) - st.st_mtime > PDTI_SPOOL_TMP_MAX_AGE_S) {
                /* Left by a crash in the middle of a write, or by a write
                 * of a live process that failed without cleaning up. */
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
        if (ends_with(name, PDTI_SPOOL_SUFFIX_FRAME)) {
            if (strlen(name) >= sizeof(s->ents[0].name)) {
                pdti_spool_discard(s, name, "name too long");
                continue;
            }
            if (add_ent(s, name, (uint64_t)st.st_size) != 0) {
                closedir(d);
                return pdti_err(PDT_ENOMEM, "out of memory");
            }
            total += (uint64_t)st.st_size;
        } else if (strstr(name, PDTI_SPOOL_MARK_CLAIM) != NULL) {
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

/* ---- claims ------------------------------------------------------------- */

static void claim_name(char *out, size_t cap, const char *base)
{
    snprintf(out, cap, "%s%s%ld-%016" PRIx64, base, PDTI_SPOOL_MARK_CLAIM,
             (long)getpid(), pdti_spool_proc_nonce());
}

int pdti_spool_claim(pdti_spool *s, const char *name, pdti_spool_item *item)
{
    size_t blen = strlen(name) - strlen(PDTI_SPOOL_SUFFIX_FRAME);

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
    snprintf(frame, sizeof(frame), "%s%s", item->base,
             PDTI_SPOOL_SUFFIX_FRAME);
    if (renameat(s->dfd, item->name, s->dfd, frame) != 0)
        pdti_log(s->lg, PDT_LOG_WARN, "spool %s: cannot release %s: %s",
                 s->dir, item->name, strerror(errno));
    s->pending = 1;
    /* The frame goes back in front of the listing. */
    if (s->pos > 0 && strcmp(s->ents[s->pos - 1].name, frame) == 0)
        s->pos--;
}

int pdti_spool_read_claimed(pdti_spool *s, pdti_spool_item *item,
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
    } else if (pdti_spool_check_header(h, (uint64_t)st.st_size, &nspans,
                                       &raw_len, &comp_len) != 0) {
        *why = "bad header";
        item->nspans = pdti_spool_header_nspans(h); /* for the counts */
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
