/*
 * Internal, floor 1: what one OTLP export request carries, for each
 * protocol (transport.c sends it): its headers, its body on the wire, and
 * the redaction of configured header values from messages.
 */
#ifndef PDTI_TRANSPORT_REQUEST_H
#define PDTI_TRANSPORT_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "buf.h"
#include "config.h"
#include "transport.h"

/*
 * Appends to *list the headers every export of cfg sends: the content
 * type of cfg->protocol, the body's encoding (Content-Encoding, or
 * grpc-encoding with gRPC), and the configured headers that are well
 * formed and not one of those the transport sets itself. Returns 0, or -1
 * when out of memory (*list then holds what was appended; the caller
 * frees it).
 */
int pdti_headers_build(struct curl_slist **list, const pdti_config *cfg);

/*
 * A copy of base followed by one "grpc-timeout" header whose value the
 * caller rewrites before each attempt with pdti_headers_set_timeout().
 * Returns the list (free with curl_slist_free_all()) or NULL (memory);
 * *slot gets the timeout's node.
 */
struct curl_slist *pdti_headers_with_timeout(const struct curl_slist *base,
                                             struct curl_slist **slot);
void pdti_headers_set_timeout(struct curl_slist *slot, int64_t ms);

/* Replaces every configured header value in msg with asterisks. */
void pdti_headers_redact(char *msg, const pdti_kvlist *headers);

/*
 * The body on the wire for one ExportTraceServiceRequest (body, len):
 * http/json converts it to OTLP JSON (into jbody), gRPC frames it as one
 * message, and either is compressed as configured (into zbody, with the
 * compressor *comp created at the first use). *payload and *plen get the
 * bytes to send (body itself when nothing applies). Returns PDT_OK, or
 * PDT_EPARSE / PDT_ENOMEM / PDT_EINVAL with the reason in why.
 */
int pdti_request_body(const pdti_config *cfg, pdti_compressor **comp,
                      const uint8_t *body, size_t len, pdti_buf *jbody,
                      pdti_buf *zbody, const uint8_t **payload, size_t *plen,
                      char *why, size_t whycap);

#endif
