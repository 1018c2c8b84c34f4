/*
 * Internal: which process owns a spool file. Temporary and claim names
 * carry "<pid>-<nonce:16hex>"; the nonce tells a process apart from an
 * earlier one that had the same pid.
 */
#ifndef PDTI_SPOOL_OWNER_H
#define PDTI_SPOOL_OWNER_H

#include <stdint.h>

/* A random value fixed for the life of the process (a forked child keeps
 * it but has another pid, so (pid, nonce) is unique per process). */
uint64_t pdti_spool_proc_nonce(void);

/* 1 if the process that owns a claim or temporary file is gone. */
int pdti_spool_owner_gone(long pid, uint64_t nonce);

/* Parses "<pid>-<16 hex>" at p (the whole rest of the string, or up to
 * the next '-' after the nonce when `tail` is given). 0 on success. */
int pdti_spool_parse_owner(const char *p, long *pid, uint64_t *nonce,
                           const char **tail);

#endif
