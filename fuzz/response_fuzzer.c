/*
 * Fuzz target for the ExportTraceServiceResponse decoder (partial
 * success). Checks that the message is always NUL-terminated within its
 * buffer and the rejected count is only written on success.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[64];
    int64_t rejected = -12345;

    memset(msg, 'x', sizeof(msg));
    if (pdti_decode_export_response(data, size, &rejected, msg,
                                    sizeof(msg)) == PDT_OK) {
        assert(memchr(msg, '\0', sizeof(msg)) != NULL);
        assert(rejected != -12345);
    }
    return 0;
}
