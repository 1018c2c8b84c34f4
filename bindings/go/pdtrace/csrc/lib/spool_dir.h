/*
 * Internal: the spool directory, shared by the files of the spool module
 * (spool.c opens and closes it, spool_replay.c and spool_write.c read and
 * write frames). Not for use outside lib/spool*.c.
 *
 * File names (all in the spool directory):
 *   <unix-ns:20>-<pid>-<inst:8hex>-<seq>.pdspool  a frame, waiting
 *   <frame base>.claimed-<pid>-<nonce:16hex>      being replayed by <pid>
 *   .tmp-<pid>-<nonce:16hex>-<inst:8hex>-<seq>    a frame being written
 *   <name>.corrupt                                set aside, never read
 * Names sort by age.
 *
 * Every file operation goes through a descriptor of the directory opened
 * once (openat, renameat, unlinkat), so the checks made at open time keep
 * holding even if the path is later replaced. Ownership of a frame moves
 * only by rename, which is atomic: whoever renames a frame to its claim
 * name is the only one to replay or evict it.
 */
#ifndef PDTI_SPOOL_DIR_H
#define PDTI_SPOOL_DIR_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "log.h"
#include "spool.h"

#define PDTI_SPOOL_SUFFIX_FRAME ".pdspool"
#define PDTI_SPOOL_MARK_CLAIM ".claimed-"
#define PDTI_SPOOL_PREFIX_TMP ".tmp-"
#define PDTI_SPOOL_SUFFIX_CORRUPT ".corrupt"
/* A claim older than this is taken over even if its owner seems alive
 * (its pid may have been reused by an unrelated process). */
#define PDTI_SPOOL_CLAIM_MAX_AGE_S 3600
/* A temporary file not modified for this long is a leftover (a write takes
 * well under a second) and is removed even if its process is alive. */
#define PDTI_SPOOL_TMP_MAX_AGE_S 600

typedef struct pdti_spool_ent {
    char name[128]; /* "<base>.pdspool" */
    uint64_t size;
} pdti_spool_ent;

struct pdti_spool {
    int dfd;               /* the directory */
    char *dir;             /* its path, for messages */
    uint64_t max_bytes;
    pdti_logger *lg;
    long pid;              /* process that opened the spool */
    uint32_t inst;         /* random, tells spools of a process apart */
    uint64_t seq;
    pdti_spool_ent *ents;  /* waiting frames of the last scan, oldest first */
    size_t nents, cap_ents, pos;
    uint64_t total_bytes;  /* every file of ours in the directory */
    uint64_t scanned_ns;   /* when the listing was made; 0: never */
    int pending;
    pdti_buf wbuf;         /* frame being written */
    pdti_buf rbuf;         /* frame file being read */
    pdti_spool_counts counts;
};

/*
 * Lists the directory: waiting frames (sorted, oldest first) into s->ents
 * and the bytes of all our files into s->total_bytes. Temporary files and
 * claims of processes that are gone are cleaned up on the way. Returns
 * PDT_OK, PDT_ENOMEM or PDT_EIO with the last error set.
 */
int pdti_spool_scan(pdti_spool *s);

/* Removes an entry that is not a valid frame: a file or link is unlinked,
 * an empty directory removed, anything else renamed to "<name>.corrupt"
 * so that it is never looked at again. Counted in corrupt_frames. */
void pdti_spool_discard(pdti_spool *s, const char *name, const char *why);

/* Claims frame `name` into *item (name and base set). 0 on success, -1 if
 * someone else has it or it is gone. Ended by pdti_spool_done(). */
int pdti_spool_claim(pdti_spool *s, const char *name, pdti_spool_item *item);

/* Reads the claimed file of *item (its header only, if header_only) into
 * s->rbuf and sets item->size and item->nspans. 0, or -1 corrupt (why
 * set), or PDT_EIO or PDT_ENOMEM (last error set) for a failure that is
 * not the file's fault. */
int pdti_spool_read_claimed(pdti_spool *s, pdti_spool_item *item,
                            int header_only, const char **why);

#endif
