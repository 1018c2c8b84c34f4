/*
 * Internal: the Prometheus metrics kept by a tracer (docs/metrics.md).
 *
 * One table of label sets (connector, model, P/D mode), each with a
 * histogram per breakdown stage and a request counter per outcome. The
 * table has a fixed size: the hot path (pdti_metrics_observe) finds a set
 * by hashing the label triple without locking, then adds to one of the
 * set's stripes under that stripe's spin lock, and never allocates.
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

/* Finite bucket bounds (the +Inf bucket comes on top of these). */
#define PDTI_METRICS_NBOUNDS 23

typedef struct pdti_metrics pdti_metrics;

struct pdt_tracer;

/* Allocates the table (the only allocation metrics ever make). Returns
 * PDT_OK or PDT_ENOMEM. */
int pdti_metrics_new(pdti_metrics **out);
/* Frees it; NULL is accepted. */
void pdti_metrics_free(pdti_metrics *m);

/*
 * Records one finished request: every present field of bd goes into its
 * histogram, and the request is counted as ok or error. connector and
 * model may be NULL or "" (rendered as "unknown"). Any thread. NULL m is
 * a no-op.
 */
void pdti_metrics_observe(pdti_metrics *m, const char *connector,
                          const char *model, const pdt_breakdown *bd);

/* The bucket bound i (0 <= i < PDTI_METRICS_NBOUNDS) in nanoseconds, and
 * the bucket index a value in nanoseconds falls into (NBOUNDS: +Inf). */
uint64_t pdti_metrics_bound_ns(unsigned i);
unsigned pdti_metrics_bucket(uint64_t ns);

#endif
