/*
 * The persistent spool (see spool.h): opening the directory with its
 * safety checks, closing, and the counters. Runs on the exporter thread
 * only; the rules for the directory are in spool_dir.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "pdtrace/common.h"
#include "buf.h"
#include "error.h"
#include "ids.h"
#include "log.h"
#include "spool.h"
#include "spool_dir.h"

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
        rc = pdti_spool_scan(s);
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

/* ---- counters ----------------------------------------------------------- */

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
