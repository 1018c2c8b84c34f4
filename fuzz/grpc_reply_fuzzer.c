/*
 * Fuzz target for what a gRPC or http/json collector sends back: header
 * and trailer lines (grpc-status, grpc-message, grpc-status-details-bin
 * with its RetryInfo), the framed response message, and the OTLP JSON
 * reply. The first byte picks the parser; the rest is its input. Checks
 * the invariants each one promises.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "transport.h"
#include "transport_grpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void lines(const uint8_t *p, size_t n)
{
    pdti_grpc_reply r;
    size_t i, start = 0;

    pdti_grpc_reply_reset(&r);
    for (i = 0; i <= n; i++) {
        if (i == n || p[i] == '\n') {
            pdti_grpc_reply_header(&r, (const char *)p + start, i - start);
            start = i + 1;
        }
    }
    assert(memchr(r.message, '\0', sizeof(r.message)) != NULL);
    assert(r.status >= -1);
    assert(r.retry_delay_ms >= -1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *m;
    size_t mlen;
    int64_t ms, rejected = -12345;
    char msg[48];
    int rc;

    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        lines(data + 1, size - 1);
        break;
    case 1:
        rc = pdti_grpc_retry_info(data + 1, size - 1, &ms);
        assert(rc >= -1 && rc <= 1);
        assert(rc == 1 ? ms >= 0 : ms == -1);
        break;
    case 2:
        rc = pdti_grpc_unframe(data + 1, size - 1, &m, &mlen);
        if (rc == 1)
            assert(m == data + 6 && mlen <= size - 6);
        break;
    default:
        memset(msg, 'x', sizeof(msg));
        if (pdti_decode_export_response_json(data + 1, size - 1, &rejected,
                                             msg, sizeof(msg)) == PDT_OK) {
            assert(memchr(msg, '\0', sizeof(msg)) != NULL);
            assert(rejected >= 0);
        }
        break;
    }
    return 0;
}
