/*
 * Who owns a spool file: the temporary and claim names carry the pid of
 * the process that made them and a random nonce fixed for the life of
 * that process, so that a file left by a process that is gone (or by an
 * earlier process with the same pid) can be told apart and taken back.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include "ids.h"
#include "spool_owner.h"

static pthread_once_t nonce_once = PTHREAD_ONCE_INIT;
static uint64_t nonce_value;

static void nonce_init(void)
{
    uint64_t v;

    do
        v = pdti_random64();
    while (v == 0);
    nonce_value = v;
}

uint64_t pdti_spool_proc_nonce(void)
{
    pthread_once(&nonce_once, nonce_init);
    return nonce_value;
}

int pdti_spool_owner_gone(long pid, uint64_t nonce)
{
    if (pid <= 0 || (long)(pid_t)pid != pid)
        return 1;
    if ((pid_t)pid == getpid())
        return nonce != pdti_spool_proc_nonce();
    if (kill((pid_t)pid, 0) == 0)
        return 0;
    return errno == ESRCH;
}

int pdti_spool_parse_owner(const char *p, long *pid, uint64_t *nonce,
                           const char **tail)
{
    char *end;
    int i;

    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    *pid = strtol(p, &end, 10);
    if (errno != 0 || *end != '-')
        return -1;
    p = end + 1;
    *nonce = 0;
    for (i = 0; i < 16; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return -1;
        *nonce = (*nonce << 4) | (uint64_t)d;
    }
    p += 16;
    if (tail != NULL) {
        if (*p != '-')
            return -1;
        *tail = p + 1;
        return 0;
    }
    return *p == '\0' ? 0 : -1;
}
