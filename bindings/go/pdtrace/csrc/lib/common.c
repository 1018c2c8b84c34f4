/* Status strings, the per-thread last error, version and clock. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pdtrace/common.h"
#include "clock.h"
#include "error.h"

#define PDTI_ERRMSG_MAX 512

typedef struct pdti_errstate {
    int code;
    char msg[PDTI_ERRMSG_MAX];
} pdti_errstate;

static pthread_key_t err_key;
static pthread_once_t err_once = PTHREAD_ONCE_INIT;
static int err_key_ok;

static void err_key_create(void)
{
    err_key_ok = pthread_key_create(&err_key, free) == 0;
}

/* Returns this thread's error slot, creating it; NULL only without memory. */
static pdti_errstate *err_state(int create)
{
    pdti_errstate *st;

    pthread_once(&err_once, err_key_create);
    if (!err_key_ok)
        return NULL;
    st = pthread_getspecific(err_key);
    if (st == NULL && create) {
        st = calloc(1, sizeof(*st));
        if (st != NULL && pthread_setspecific(err_key, st) != 0) {
            free(st);
            st = NULL;
        }
    }
    return st;
}

int pdti_err(int status, const char *fmt, ...)
{
    pdti_errstate *st = err_state(1);
    va_list ap;

    if (st == NULL)
        return status;
    st->code = status;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
    va_end(ap);
    return status;
}

const char *pdt_last_error(void)
{
    pdti_errstate *st = err_state(0);
    return st != NULL ? st->msg : "";
}

int pdt_last_error_code(void)
{
    pdti_errstate *st = err_state(0);
    return st != NULL ? st->code : PDT_OK;
}

void pdt_clear_error(void)
{
    pdti_errstate *st = err_state(0);
    if (st != NULL) {
        st->code = PDT_OK;
        st->msg[0] = '\0';
    }
}

const char *pdt_status_str(int status)
{
    switch (status) {
    case PDT_OK: return "PDT_OK: success";
    case PDT_EINVAL: return "PDT_EINVAL: invalid argument";
    case PDT_ENOMEM: return "PDT_ENOMEM: out of memory";
    case PDT_ESTATE: return "PDT_ESTATE: call out of order";
    case PDT_ERANGE: return "PDT_ERANGE: value out of range";
    case PDT_EPARSE: return "PDT_EPARSE: malformed text";
    case PDT_ETIMEOUT: return "PDT_ETIMEOUT: timed out";
    case PDT_ELIMIT: return "PDT_ELIMIT: limit reached";
    case PDT_EBUFSIZE: return "PDT_EBUFSIZE: buffer too small";
    case PDT_EIO: return "PDT_EIO: I/O error";
    case PDT_ECLOSED: return "PDT_ECLOSED: tracer closed";
    case PDT_ENOTSUP: return "PDT_ENOTSUP: not supported";
    case PDT_EINTERNAL: return "PDT_EINTERNAL: internal error";
    default: return "unknown status";
    }
}

const char *pdt_version(void)
{
    return PDT_VERSION_STRING;
}

unsigned pdt_version_number(void)
{
    return PDT_VERSION_NUMBER;
}

uint64_t pdt_now_ns(void)
{
    struct timespec ts;
    uint64_t ns;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return ns != 0 ? ns : 1;
}

uint64_t pdti_coarse_now_ns(void)
{
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#else
    return pdt_now_ns();
#endif
}
