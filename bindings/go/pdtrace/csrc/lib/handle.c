/*
 * Handle misuse detection: the messages for a bad magic, and the
 * quarantine that keeps freed handles readable for a while.
 *
 * The quarantine is a ring of PDTI_QUARANTINE_SLOTS blocks guarded by a
 * try-lock flag. A thread that finds the flag taken does not wait: it
 * releases its block at once (that block alone goes undetected), so the
 * quarantine never blocks a caller and cannot deadlock, not even in a
 * child forked while another thread held the flag.
 */
#include <stddef.h>

#include "pdtrace/common.h"
#include "error.h"
#include "handle.h"

typedef struct slot {
    void *block;
    void (*release)(void *);
} slot;

static slot ring[PDTI_QUARANTINE_SLOTS];
static unsigned next_slot;
static int busy;

void pdti_quarantine(void *block, void (*release)(void *))
{
    slot out = { NULL, NULL };

    if (block == NULL)
        return;
    if (__atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE) != 0) {
        release(block);
        return;
    }
    out = ring[next_slot];
    ring[next_slot].block = block;
    ring[next_slot].release = release;
    next_slot = (next_slot + 1) % PDTI_QUARANTINE_SLOTS;
    __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
    if (out.release != NULL)
        out.release(out.block);
}

/* Empties the quarantine when the library is unloaded or the process
 * exits, so that leak checkers see every block released. */
__attribute__((destructor)) static void quarantine_drain(void)
{
    unsigned i;

    if (__atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE) != 0)
        return;
    for (i = 0; i < PDTI_QUARANTINE_SLOTS; i++) {
        slot s = ring[i];
        ring[i].block = NULL;
        ring[i].release = NULL;
        if (s.release != NULL)
            s.release(s.block);
    }
    __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
}

int pdti_handle_bad(const char *fn, const char *what, uint32_t magic)
{
    if (magic == PDTI_MAGIC_TRACER_CLOSED)
        return pdti_err(PDT_ECLOSED, "%s: the tracer is closed", fn);
    if (magic == PDTI_MAGIC_FREED)
        return pdti_err(PDT_EINVAL, "%s: the %s was already freed or closed "
                        "(double free or use after free)", fn, what);
    return pdti_err(PDT_EINVAL, "%s: not a live %s handle (freed, or "
                    "another type of handle)", fn, what);
}
