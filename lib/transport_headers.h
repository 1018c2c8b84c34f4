/*
 * Internal, floor 1: the request headers of an OTLP export (transport.c),
 * for each protocol, and the redaction of configured header values from
 * messages.
 */
#ifndef PDTI_TRANSPORT_HEADERS_H
#define PDTI_TRANSPORT_HEADERS_H

#include <curl/curl.h>

#include "config.h"

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

#endif
