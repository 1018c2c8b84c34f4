/* Internal: rate-limited background logging through the user callback. */
#ifndef PDTI_LOG_H
#define PDTI_LOG_H

#include <pthread.h>
#include <stdint.h>

#include "pdtrace/tracer.h"
#include "error.h"

typedef struct pdti_logger {
    pdt_log_fn fn;        /* NULL: messages go to stderr (WARN and above) */
    void *userdata;
    pthread_mutex_t lock; /* guards the rate limiter */
    uint64_t window_start_ns;
    unsigned in_window;   /* messages logged in the current window */
    uint64_t suppressed;  /* messages swallowed by the limiter */
} pdti_logger;

void pdti_logger_init(pdti_logger *lg, pdt_log_fn fn, void *userdata);
void pdti_logger_destroy(pdti_logger *lg);
/*
 * Formats and delivers one message, at most 20 per second (the rest are
 * counted and summarised in the next message that passes). lg may be NULL
 * (message dropped). Never call it with a lock held that the callback
 * might take.
 */
void pdti_log(pdti_logger *lg, int level, const char *fmt, ...)
    PDTI_PRINTF(3, 4);

#endif
