/* Internal: random trace/span ids and request ids, fork-aware. */
#ifndef PDTI_IDS_H
#define PDTI_IDS_H

#include <stdint.h>

/* A random 64-bit value from the calling thread's generator. */
uint64_t pdti_random64(void);
/* Fills a non-zero 16-byte trace id / 8-byte span id. */
void pdti_new_trace_id(uint8_t id[16]);
void pdti_new_span_id(uint8_t id[8]);
/* Writes a random UUID v4 string (36 chars + NUL) into out[37]. */
void pdti_new_uuid(char out[37]);
/* Called once from the fork child handler: async-signal-safe. */
void pdti_ids_after_fork(void);
/* Number of forks this process descends through (0 in the original). */
unsigned pdti_fork_generation(void);
/* Installs the fork handler once per process. */
void pdti_fork_handler_install(void);

#endif
