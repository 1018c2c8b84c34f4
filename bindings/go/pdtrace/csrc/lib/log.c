/* Rate-limited background logging. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define PDTI_LOG_PER_SECOND 20u

void pdti_logger_init(pdti_logger *lg, pdt_log_fn fn, void *userdata)
{
    memset(lg, 0, sizeof(*lg));
    lg->fn = fn;
    lg->userdata = userdata;
    pthread_mutex_init(&lg->lock, NULL);
}

void pdti_logger_destroy(pdti_logger *lg)
{
    if (lg != NULL)
        pthread_mutex_destroy(&lg->lock);
}

static const char *level_name(int level)
{
    switch (level) {
    case PDT_LOG_ERROR: return "error";
    case PDT_LOG_WARN: return "warning";
    case PDT_LOG_INFO: return "info";
    default: return "debug";
    }
}

void pdti_log(pdti_logger *lg, int level, const char *fmt, ...)
{
    char msg[512];
    uint64_t now, suppressed = 0;
    int pass;
    va_list ap;
    size_t used;

    if (lg == NULL)
        return;
    if (lg->fn == NULL && level > PDT_LOG_WARN)
        return;
    now = pdt_now_ns();
    pthread_mutex_lock(&lg->lock);
    if (now - lg->window_start_ns >= 1000000000u) {
        lg->window_start_ns = now;
        lg->in_window = 0;
    }
    pass = lg->in_window < PDTI_LOG_PER_SECOND;
    if (pass) {
        lg->in_window++;
        suppressed = lg->suppressed;
        lg->suppressed = 0;
    } else {
        lg->suppressed++;
    }
    pthread_mutex_unlock(&lg->lock);
    if (!pass)
        return;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (suppressed != 0) {
        used = strlen(msg);
        snprintf(msg + used, sizeof(msg) - used,
                 " (%llu earlier messages suppressed)",
                 (unsigned long long)suppressed);
    }
    if (lg->fn != NULL)
        lg->fn(lg->userdata, level, msg);
    else
        fprintf(stderr, "libpdtrace %s: %s\n", level_name(level), msg);
}
