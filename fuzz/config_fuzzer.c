/*
 * Fuzz target for the environment parsers: k=v lists with percent
 * decoding, integers, doubles, booleans. Checks that a successful list
 * parse yields non-empty NUL-free keys and that nothing crashes or leaks.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/common.h"
#include "config_kvlist.h"
#include "config_text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pdti_kvlist l = { NULL, 0 };
    char *text, *dec = NULL;
    int64_t iv;
    double dv;
    int bv;
    size_t i;

    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    if (pdti_kvlist_parse(text, size, &l) == PDT_OK) {
        for (i = 0; i < l.count; i++) {
            assert(l.items[i].key != NULL && l.items[i].key[0] != '\0');
            assert(l.items[i].value != NULL);
            assert(pdti_kvlist_get(&l, l.items[i].key) != NULL);
        }
    }
    pdti_kvlist_free(&l);
    if (pdti_percent_decode(text, size, &dec) == PDT_OK)
        assert(dec != NULL && strlen(dec) <= size);
    free(dec);
    if (pdti_parse_int(text, -1000, 1000, &iv) == PDT_OK)
        assert(iv >= -1000 && iv <= 1000);
    if (pdti_parse_double(text, 0.0, 1.0, &dv) == PDT_OK)
        assert(dv >= 0.0 && dv <= 1.0);
    if (pdti_parse_bool(text, &bv) == PDT_OK)
        assert(bv == 0 || bv == 1);
    free(text);
    return 0;
}
