/*
 * Internal, floor 0: handle magic values and the quarantine of freed
 * handles (docs/abi.md, "Misuse of handles").
 *
 * Each handle (tracer, request, span) starts with a 32-bit magic that
 * every public entry point compares with the live value. Freeing poisons
 * it to PDTI_MAGIC_FREED, and the freed block is parked in a small
 * process-wide quarantine instead of going back to malloc, so that a
 * second free or a call through a stale pointer reads valid memory and is
 * refused, as long as the block has not left the quarantine.
 */
#ifndef PDTI_HANDLE_H
#define PDTI_HANDLE_H

#include <stdint.h>

#define PDTI_MAGIC_TRACER 0x50445454u        /* "PDTT" */
#define PDTI_MAGIC_TRACER_CLOSED 0x50445463u /* "PDTc": closed, still alive */
#define PDTI_MAGIC_REQUEST 0x50445452u       /* "PDTR" */
#define PDTI_MAGIC_SPAN 0x50445453u          /* "PDTS" */
#define PDTI_MAGIC_FREED 0xdeadf4eeu

/* Blocks the quarantine holds before it gives the oldest back to free(). */
#define PDTI_QUARANTINE_SLOTS 64

/*
 * Parks a freed block whose magic is already PDTI_MAGIC_FREED; the block
 * it pushes out (if any) goes to its own release function. Lock-free, safe
 * from any thread and after fork. release is called as release(block).
 */
void pdti_quarantine(void *block, void (*release)(void *));

/*
 * Sets the last error for a handle whose magic is not the live value of
 * `what` ("tracer", "request", "span") and returns the status: PDT_ECLOSED
 * for a closed tracer, PDT_EINVAL otherwise (freed, closed twice, or not a
 * handle of that type). fn names the public function, for the message.
 */
int pdti_handle_bad(const char *fn, const char *what, uint32_t magic);

#endif
