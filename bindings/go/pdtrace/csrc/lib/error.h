/* Internal: setting the per-thread last error. */
#ifndef PDTI_ERROR_H
#define PDTI_ERROR_H

#include "pdtrace/common.h"

#if defined(__GNUC__)
#define PDTI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PDTI_PRINTF(a, b)
#endif

/*
 * Records `status` and a formatted message as the calling thread's last
 * error and returns `status`, so that error paths read
 * `return pdti_err(PDT_EINVAL, "...")`. Never allocates on the caller's
 * behalf beyond a one-time per-thread buffer; never fails.
 */
int pdti_err(int status, const char *fmt, ...) PDTI_PRINTF(2, 3);

#endif
