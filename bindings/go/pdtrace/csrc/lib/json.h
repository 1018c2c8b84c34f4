/* Internal: OTLP protobuf to OTLP JSON (the console/file exporter). */
#ifndef PDTI_JSON_H
#define PDTI_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/*
 * Converts one ExportTraceServiceRequest (protobuf bytes) into its OTLP
 * JSON form (one line, no newline) in out (reset first): lowerCamelCase
 * field names, trace and span ids as hex, 64-bit integers as strings,
 * enums as numbers, bytes as base64. Returns PDT_OK, PDT_EPARSE (bytes that
 * are not a request) or PDT_ENOMEM.
 */
int pdti_otlp_to_json(const uint8_t *data, size_t len, pdti_buf *out);

#endif
