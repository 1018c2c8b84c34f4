/*
 * Internal, floor 1: the pieces of OTLP/gRPC that stand apart from the
 * transport's state machine (transport.c): the 5-byte message framing,
 * the status read from the response headers and trailers, the OTLP retry
 * rules for gRPC codes, and the google.rpc.RetryInfo a status may carry.
 * No function here does I/O or allocates.
 */
#ifndef PDTI_TRANSPORT_GRPC_H
#define PDTI_TRANSPORT_GRPC_H

#include <stddef.h>
#include <stdint.h>

/* The path of the one method OTLP/gRPC trace export uses. */
#define PDTI_GRPC_EXPORT_PATH \
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

/* Bytes before each gRPC message: 1 compressed flag, 4 length (big end). */
#define PDTI_GRPC_FRAME_HEADER 5

/* gRPC status codes (the ones the retry rules name, and the rest). */
enum {
    PDTI_GRPC_OK = 0,
    PDTI_GRPC_CANCELLED = 1,
    PDTI_GRPC_UNKNOWN = 2,
    PDTI_GRPC_INVALID_ARGUMENT = 3,
    PDTI_GRPC_DEADLINE_EXCEEDED = 4,
    PDTI_GRPC_NOT_FOUND = 5,
    PDTI_GRPC_ALREADY_EXISTS = 6,
    PDTI_GRPC_PERMISSION_DENIED = 7,
    PDTI_GRPC_RESOURCE_EXHAUSTED = 8,
    PDTI_GRPC_FAILED_PRECONDITION = 9,
    PDTI_GRPC_ABORTED = 10,
    PDTI_GRPC_OUT_OF_RANGE = 11,
    PDTI_GRPC_UNIMPLEMENTED = 12,
    PDTI_GRPC_INTERNAL = 13,
    PDTI_GRPC_UNAVAILABLE = 14,
    PDTI_GRPC_DATA_LOSS = 15,
    PDTI_GRPC_UNAUTHENTICATED = 16
};

/* What the headers and trailers of one gRPC response said. */
typedef struct pdti_grpc_reply {
    int status;             /* grpc-status, -1 until seen */
    int64_t retry_delay_ms; /* RetryInfo.retry_delay, -1 if none */
    char message[160];      /* grpc-message, percent-decoded, truncated */
} pdti_grpc_reply;

void pdti_grpc_reply_reset(pdti_grpc_reply *r);

/*
 * Feeds one header or trailer line as libcurl hands it over ("name:
 * value\r\n", not NUL-terminated). grpc-status, grpc-message and
 * grpc-status-details-bin are kept; anything else is ignored, and a
 * status line ("HTTP/2 200") starts a new reply.
 */
void pdti_grpc_reply_header(pdti_grpc_reply *r, const char *line, size_t n);

/* "CANCELLED", "UNAVAILABLE", ...; "code N" style text is the caller's. */
const char *pdti_grpc_code_name(int code);

/*
 * 1 if the OTLP specification says a failed export with this code may be
 * retried: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
 * UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED only when the server
 * said when to retry (has_retry_info).
 */
int pdti_grpc_code_retryable(int code, int has_retry_info);

/*
 * The gRPC code a response without grpc-status stands for, from its HTTP
 * status (the gRPC HTTP/2 mapping): 400 INTERNAL, 401 UNAUTHENTICATED,
 * 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429 502 503 504 UNAVAILABLE,
 * anything else UNKNOWN (200 with no status at all: INTERNAL).
 */
int pdti_grpc_code_from_http(long http_status);

/* Writes the frame header for a message of len bytes. */
void pdti_grpc_frame_header(uint8_t hdr[PDTI_GRPC_FRAME_HEADER],
                            int compressed, uint32_t len);

/*
 * Finds the first message of a response body. Returns 1 and the message
 * (*msg, *mlen) when the body holds one whole uncompressed frame, 0 for an
 * empty body (no message), -1 for a malformed or compressed frame.
 */
int pdti_grpc_unframe(const uint8_t *body, size_t len, const uint8_t **msg,
                      size_t *mlen);

/*
 * The retry delay of a google.rpc.Status (protobuf bytes) that carries a
 * google.rpc.RetryInfo detail. Returns 1 and *delay_ms (>= 0, saturated)
 * if it does, 0 if it does not, -1 if the bytes are malformed.
 */
int pdti_grpc_retry_info(const uint8_t *status, size_t len,
                         int64_t *delay_ms);

/*
 * A grpc-timeout header value for ms milliseconds ("1500m", or in seconds
 * "100000S" when the milliseconds do not fit gRPC's 8 digits). dst needs
 * 10 bytes. ms < 1 gives "1m".
 */
void pdti_grpc_timeout_value(char *dst, size_t cap, int64_t ms);

#endif
