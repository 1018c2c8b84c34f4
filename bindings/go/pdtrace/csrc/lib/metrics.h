/*
 * Internal: the Prometheus metrics kept by a tracer (docs/metrics.md).
 *
 * One table of label sets (connector, model, P/D mode), each with a
 * histogram per breakdown stage and a request counter per outcome. The
 * table has a fixed size: the hot path (pdti_metrics_observe) finds a set
 * by hashing the label triple without locking, then adds to one of the
 * set's stripes under that stripe's spin lock, and never allocates. The
 * request and token counters of a set are kept per tenant label (a small
 * index resolved when the tenant is set, so the hot path compares no
 * string).
 * Claiming a new set takes a short insert lock. Sets beyond
 * PDTI_METRICS_MAX_SETS go to an "other" set of their mode and are counted.
 * After a fork, the first observation in the child frees the locks that
 * threads of the parent held.
 */
#ifndef PDTI_METRICS_H
#define PDTI_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "pdtrace/request.h"

/* Distinct (connector, model, mode) label sets kept before overflow. */
#define PDTI_METRICS_MAX_SETS 64
/* Longest connector and model label values kept (bytes). */
#define PDTI_METRICS_CONNECTOR_MAX 63
#define PDTI_METRICS_MODEL_MAX 255

/* Histograms, in the order they are rendered. */
enum {
    PDTI_H_TRUE_TTFT,
    PDTI_H_QUEUE,
    PDTI_H_PREFILL,
    PDTI_H_KV_TRANSFER,
    PDTI_H_DECODE_TTFT,
    PDTI_H_DECODE,
    PDTI_H_TOTAL,
    PDTI_H_TPOT,
    PDTI_H_COUNT
};

/* Tenant label values: index 0 is "" (no tenant given), 1 is "other"
 * (a tenant outside the configured set), 2.. the configured tenants. */
#define PDTI_METRICS_TENANT_NONE 0
#define PDTI_METRICS_TENANT_OTHER 1
#define PDTI_METRICS_NTENANTS (2 + 32) /* 32: PDTI_TENANTS_MAX */
#define PDTI_METRICS_TENANT_NAME_MAX 63

/* Finite bucket bounds (the +Inf bucket comes on top of these). */
#define PDTI_METRICS_NBOUNDS 23

typedef struct pdti_metrics pdti_metrics;

struct pdt_tracer;

/* Allocates the table (the only allocation metrics ever make). tenants:
 * NULL, or the checked list "a,b,c" of pdti_config_tenants() (at most
 * PDTI_METRICS_NTENANTS - 2 names). Returns PDT_OK or PDT_ENOMEM. */
int pdti_metrics_new(pdti_metrics **out, const char *tenants);

/* The tenant label index of a tenant name (n bytes): its index if it is
 * one of the configured tenants, else PDTI_METRICS_TENANT_OTHER; NULL m
 * or n == 0 gives PDTI_METRICS_TENANT_NONE. Any thread. */
unsigned pdti_metrics_tenant(const pdti_metrics *m, const char *name,
                             size_t n);
/* Frees it; NULL is accepted. */
void pdti_metrics_free(pdti_metrics *m);

/* What a finished request adds to the counters labelled by tenant. */
typedef struct pdti_metrics_usage {
    unsigned tenant;       /* pdti_metrics_tenant() index */
    int64_t input_tokens;  /* < 0: unknown, not counted */
    int64_t cached_tokens; /* < 0: unknown, not counted */
} pdti_metrics_usage;

/*
 * Records one finished request: every present field of bd goes into its
 * histogram, the request is counted as ok or error under its tenant, and
 * its token counts (bd->output_tokens and u's) are added to the tenant's
 * token counters. connector and model may be NULL or "" (rendered as
 * "unknown"). u may be NULL (no tenant, no input tokens). Any thread.
 * NULL m is a no-op.
 */
void pdti_metrics_observe(pdti_metrics *m, const char *connector,
                          const char *model, const pdti_metrics_usage *u,
                          const pdt_breakdown *bd);

/* The bucket bound i (0 <= i < PDTI_METRICS_NBOUNDS) in nanoseconds, and
 * the bucket index a value in nanoseconds falls into (NBOUNDS: +Inf). */
uint64_t pdti_metrics_bound_ns(unsigned i);
unsigned pdti_metrics_bucket(uint64_t ns);

#endif
