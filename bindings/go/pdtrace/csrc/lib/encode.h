/*
 * Internal, floor 1: the OTLP encoder (encode.c). A pure function of
 * frozen records: it reads them and writes only its output buffer, so the
 * exporter thread runs it without any lock.
 */
#ifndef PDTI_ENCODE_H
#define PDTI_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rec.h"
#include "tracer_data.h"

/* A span whose encoding would exceed this is dropped (the Collector's
 * request limit is 20 MiB). */
#define PDTI_MAX_SPAN_BYTES (8u << 20)
/* Encoded request size at which a batch is cut. */
#define PDTI_MAX_REQUEST_BYTES (4u << 20)

/* Encodes t->cfg's resource and scope into t->preamble (framed Resource,
 * then the InstrumentationScope at t->scope_off). */
int pdti_encode_preamble(pdt_tracer *t);
/* Encoded size of one Span message body. */
size_t pdti_span_body_size(const pdti_rec *r);
/* Encodes an ExportTraceServiceRequest holding recs[0..n) into out
 * (reset first), with the pre-encoded resource and scope fields. */
int pdti_encode_request(const uint8_t *resource, size_t resource_len,
                        const uint8_t *scope, size_t scope_len,
                        pdti_rec *const *recs, size_t n, pdti_buf *out);

/*
 * Cuts an ExportTraceServiceRequest written by pdti_encode_request() (one
 * ResourceSpans, one ScopeSpans) in two: the first k spans into `first`,
 * the others into `second` (both reset first), resource and scope copied
 * into each. *nspans gets the spans the request holds. PDT_OK, PDT_EPARSE
 * (not such a request), PDT_EINVAL (k is 0 or not below the span count) or
 * PDT_ENOMEM, with the last error set.
 */
int pdti_encode_split(const uint8_t *req, size_t len, size_t *nspans,
                      size_t k, pdti_buf *first, pdti_buf *second);

#endif
