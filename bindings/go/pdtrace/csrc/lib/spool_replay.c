/*
 * Replay: handing out the oldest valid frame of the spool, claimed, and
 * telling the exporter whether frames may be waiting. Runs on the
 * exporter thread only.
 */
#include <stddef.h>
#include <stdint.h>

#include "pdtrace/common.h"
#include "buf.h"
#include "error.h"
#include "spool.h"
#include "spool_dir.h"
#include "spool_frame.h"

/* Without a scan for this long, frames from other processes may wait. */
#define RESCAN_NS 30000000000ull

int pdti_spool_next(pdti_spool *s, pdti_buf *body, uint32_t *nspans,
                    pdti_spool_item *item)
{
    int rescanned = 0;

    if (s == NULL || body == NULL || nspans == NULL || item == NULL)
        return pdti_err(PDT_EINVAL, "spool: NULL argument");
    item->active = 0;
    if (s->scanned_ns == 0 || pdt_now_ns() - s->scanned_ns > RESCAN_NS) {
        int rc = pdti_spool_scan(s);
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
            rc = pdti_spool_scan(s);
            if (rc != PDT_OK)
                return rc;
            rescanned = 1;
            continue;
        }
        if (pdti_spool_claim(s, s->ents[s->pos++].name, item) != 0)
            continue; /* taken by another process, or gone */
        rc = pdti_spool_read_claimed(s, item, 0, &why);
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
            /* The spans are lost: counted whenever the header said how
             * many there were. */
            s->counts.corrupt_spans += item->nspans;
            item->active = 0;
            if (s->total_bytes >= item->size)
                s->total_bytes -= item->size;
            pdti_spool_discard(s, item->name, why);
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
