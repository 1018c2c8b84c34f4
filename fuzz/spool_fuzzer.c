/*
 * Fuzz target for the spool reader: the input is the content of one frame
 * file. It goes through the in-memory decoder and, as a file in a private
 * spool directory, through pdti_spool_next(), which must either hand out
 * a frame that decodes to a request of the stated length or count the
 * file as corrupt and remove it; in both cases nothing is left behind.
 */
#include <assert.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pdtrace/common.h"
#include "spool.h"
#include "spool_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static pdti_spool *spool;
static pdti_buf body;

static void cleanup(void)
{
    pdti_spool_close(spool);
    pdti_buf_free(&body);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pdti_spool_item item;
    pdti_spool_counts c;
    uint32_t n = 0, n2 = 0;
    char path[128];
    int fd, ok;

    ok = pdti_spool_decode_frame(data, size, &body, &n) == PDT_OK;
    if (ok)
        assert(n > 0 && body.len > 0 && body.data[0] == 0x0a);

    if (spool == NULL) {
        snprintf(dir, sizeof(dir), "/tmp/pdt-spool-fuzz-%ld", (long)getpid());
        if (pdti_spool_open(&spool, dir, (int64_t)1 << 30, NULL) != PDT_OK)
            abort();
        atexit(cleanup);
    }
    snprintf(path, sizeof(path), "%s/00000000000000000001-1-00000000-1"
             ".pdspool", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    if (size > 0 && write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    pdti_spool_rescan(spool);
    if (pdti_spool_next(spool, &body, &n2, &item) != PDT_OK)
        abort();
    pdti_spool_take_counts(spool, &c);
    if (item.active) {
        /* The file reader and the memory decoder agree. */
        assert(ok && n2 == n && c.corrupt_frames == 0);
        pdti_spool_done(spool, &item, 1);
    } else {
        assert(!ok && c.corrupt_frames == 1);
    }
    assert(access(path, F_OK) != 0);
    return 0;
}
