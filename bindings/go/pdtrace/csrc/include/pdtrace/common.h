/*
 * libpdtrace common definitions: export marker, status codes, the per-thread
 * last-error message, the library version and the clock.
 *
 * Thread rules: every function in this header may be called from any thread
 * at any time, before or after any tracer exists.
 */
#ifndef PDTRACE_COMMON_H
#define PDTRACE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "version.h"

#if defined(PDT_STATIC)
#define PDT_API
#elif defined(_WIN32)
#if defined(PDT_BUILDING)
#define PDT_API __declspec(dllexport)
#else
#define PDT_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#define PDT_API __attribute__((visibility("default")))
#else
#define PDT_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Status codes. PDT_OK is 0; every error has a fixed value that is never
 * renumbered. Functions return one of these as an int.
 */
typedef enum pdt_status {
    PDT_OK = 0,
    PDT_EINVAL = 1,    /* an argument is invalid: NULL handle, bad enum... */
    PDT_ENOMEM = 2,    /* an allocation failed; nothing was changed */
    PDT_ESTATE = 3,    /* call out of order: mark after end, end twice... */
    PDT_ERANGE = 4,    /* a timestamp or number is outside its range */
    PDT_EPARSE = 5,    /* malformed text: traceparent, k=v list, number */
    PDT_ETIMEOUT = 6,  /* flush or close did not finish within its timeout */
    PDT_ELIMIT = 7,    /* a configured limit dropped or truncated data */
    PDT_EBUFSIZE = 8,  /* the caller's buffer is too small */
    PDT_EIO = 9,       /* file or directory I/O failed */
    PDT_ECLOSED = 10,  /* the tracer is closed or closing */
    PDT_ENOTSUP = 11,  /* not supported by this build or configuration */
    PDT_EINTERNAL = 12 /* a bug in libpdtrace; please report it */
} pdt_status;

/*
 * Returns a static, human-readable name for a status code ("PDT_EINVAL:
 * invalid argument"). Unknown values give "unknown status". Never NULL.
 * Since 0.1.0.
 */
PDT_API const char *pdt_status_str(int status);

/*
 * Returns the message of the last error raised on the calling thread by a
 * libpdtrace function that returned a status other than PDT_OK, or "" if
 * there was none. The string is owned by the library and stays valid until
 * the next libpdtrace call on the same thread; copy it if you keep it.
 * Successful calls do not clear it. Export failures on the background
 * thread never land here (see the log callback and pdt_tracer_stats()).
 * Since 0.1.0.
 */
PDT_API const char *pdt_last_error(void);

/*
 * Returns the status code that goes with pdt_last_error() on this thread,
 * or PDT_OK if no error was raised. Since 0.1.0.
 */
PDT_API int pdt_last_error_code(void);

/* Forgets the calling thread's last error. Since 0.1.0. */
PDT_API void pdt_clear_error(void);

/*
 * Returns the runtime library version as a string, e.g. "0.1.0" (static).
 * Compare with PDT_VERSION_STRING to detect a header/library mismatch.
 * Since 0.1.0.
 */
PDT_API const char *pdt_version(void);

/* Returns PDT_VERSION_NUMBER of the runtime library. Since 0.1.0. */
PDT_API unsigned pdt_version_number(void);

/*
 * Returns the current CLOCK_MONOTONIC time in nanoseconds. Every timestamp
 * a caller passes to libpdtrace is on this clock (Python's
 * time.monotonic_ns() is the same clock on Linux). 0 is never returned.
 * Since 0.1.0.
 */
PDT_API uint64_t pdt_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif /* PDTRACE_COMMON_H */
