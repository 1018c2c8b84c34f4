/*
 * Internal: the persistent spool. Batches that could not be delivered are
 * kept in a directory, one file per batch ("frame"), and replayed oldest
 * first. Used only by the exporter thread of a tracer; several tracers and
 * processes may share one directory. See docs/spool.md for the format and
 * the guarantees.
 *
 * The module's files, from the bottom up: spool_frame.c (the frame
 * format, a pure codec), spool_owner.c (which process owns a file),
 * spool_dir.c (listing, claims, cleanup; spool_dir.h has the file names),
 * spool.c (open, close, counters), spool_replay.c (handing frames out)
 * and spool_write.c (storing frames under the cap).
 */
#ifndef PDTI_SPOOL_H
#define PDTI_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "log.h"

typedef struct pdti_spool pdti_spool;

/* A frame handed out by pdti_spool_next(), claimed by this spool until
 * pdti_spool_done(). Lives in the caller's storage. */
typedef struct pdti_spool_item {
    char name[192];   /* claimed file name, relative to the directory */
    char base[128];   /* frame name without ".pdspool" */
    uint64_t size;    /* file size in bytes */
    uint32_t nspans;
    int active;
} pdti_spool_item;

/* Counters accumulated by a spool since the last pdti_spool_take_counts(). */
typedef struct pdti_spool_counts {
    uint64_t dropped_spans;  /* spans in frames evicted by the cap */
    uint64_t dropped_frames;
    uint64_t corrupt_frames; /* frames found corrupt and removed */
    uint64_t corrupt_spans;  /* spans they held, when their header could
                                be read */
} pdti_spool_counts;

/*
 * Opens (and creates, mode 0700, parents included) the spool directory
 * `dir`. Refuses, with PDT_EIO and a message naming the reason, a path
 * that is a symbolic link or not a directory, a directory not owned by the
 * effective uid or writable by group or others, or one it cannot write.
 * Cleans up what dead processes left behind (temporary files, claims).
 * max_bytes caps the total size of the frames (> 0). lg may be NULL; it
 * must outlive the spool. Returns PDT_OK, PDT_EINVAL, PDT_ENOMEM or
 * PDT_EIO.
 */
int pdti_spool_open(pdti_spool **out, const char *dir, int64_t max_bytes,
                    pdti_logger *lg);

/*
 * Closes the spool: frees memory and descriptors. Touches no file, so it
 * is safe in a forked child on the parent's spool. NULL is accepted.
 */
void pdti_spool_close(pdti_spool *s);

/*
 * Stores one encoded ExportTraceServiceRequest holding nspans spans as a
 * new frame: compressed, written to a temporary file, fsync'd, renamed,
 * and the directory fsync'd. First evicts the oldest frames (counted in
 * dropped_spans) until the new one fits under the cap. Returns PDT_OK,
 * PDT_EINVAL (bad arguments), PDT_ENOMEM, or PDT_EIO (the frame is larger
 * than the cap, the disk is full, ...), with the last error set; on error
 * nothing of the frame remains in the directory.
 */
int pdti_spool_write(pdti_spool *s, const uint8_t *body, size_t len,
                     uint32_t nspans);

/*
 * Claims the oldest valid frame and decompresses it into body (reset
 * first). Corrupt, torn or foreign entries met on the way are removed (or
 * set aside as .corrupt when they cannot be removed), counted in
 * corrupt_frames, and skipped. Returns PDT_OK with item->active set
 * (and *nspans) when a frame was claimed, PDT_OK with item->active 0 when
 * none is waiting, or PDT_EINVAL, PDT_ENOMEM, PDT_EIO on a failure that
 * is not the frame's fault (no claim is then held).
 */
int pdti_spool_next(pdti_spool *s, pdti_buf *body, uint32_t *nspans,
                    pdti_spool_item *item);

/*
 * Ends a claim: delivered != 0 deletes the frame; otherwise it goes back
 * to the spool under its old name, keeping its place in the order.
 * Inactive items are ignored.
 */
void pdti_spool_done(pdti_spool *s, pdti_spool_item *item, int delivered);

/* 1 if frames may be waiting (written here, found at the last scan or not
 * scanned for a while), else 0. Cheap. */
int pdti_spool_pending(pdti_spool *s);
/* Marks the spool for a rescan at the next pdti_spool_next(), to pick up
 * frames other processes left. */
void pdti_spool_rescan(pdti_spool *s);

/* Moves the counters accumulated since the last call into *out. */
void pdti_spool_take_counts(pdti_spool *s, pdti_spool_counts *out);

#endif
