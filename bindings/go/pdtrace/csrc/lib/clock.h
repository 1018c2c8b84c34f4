/* Internal, floor 0: the library's cheap clock (common.c). */
#ifndef PDTI_CLOCK_H
#define PDTI_CLOCK_H

#include <stdint.h>

/* Monotonic time, coarse (a few ms) but cheap: for sanity checks only. */
uint64_t pdti_coarse_now_ns(void);

#endif
