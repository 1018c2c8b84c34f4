/*
 * Fuzz target for the OTLP protobuf to JSON converter behind the console
 * exporter: arbitrary bytes must be either converted or refused, never
 * crash, and a conversion must produce balanced braces and brackets.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "pdtrace/common.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pdti_buf out = PDTI_BUF_INIT;
    size_t i;
    long depth = 0;
    int in_str = 0;

    if (pdti_otlp_to_json(data, size, &out) == PDT_OK) {
        assert(out.len >= 2 && out.data[0] == '{');
        for (i = 0; i < out.len; i++) {
            uint8_t c = out.data[i];
            if (in_str) {
                if (c == '\\')
                    i++;
                else if (c == '"')
                    in_str = 0;
                continue;
            }
            if (c == '"')
                in_str = 1;
            else if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']')
                depth--;
            assert(depth >= 0);
        }
        assert(depth == 0 && !in_str);
    }
    pdti_buf_free(&out);
    return 0;
}
