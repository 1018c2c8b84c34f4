/* Unit tests: decoding ExportTraceServiceResponse for partial_success. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pb_encode.h>

#include "otlp_trace.pb.h"
#include "transport.h"

static bool put_string(pb_ostream_t *s, const pb_field_t *f, void *const *arg)
{
    const char *text = *arg;

    return pb_encode_tag_for_field(s, f) &&
           pb_encode_string(s, (const pb_byte_t *)text, strlen(text));
}

/* Encodes a response with nanopb; message NULL leaves it out. */
static size_t encode(uint8_t *buf, size_t cap, int has_ps, int64_t rejected,
                     const char *message)
{
    pdtrace_otlp_ExportTraceServiceResponse r;
    pb_ostream_t os = pb_ostream_from_buffer(buf, cap);

    memset(&r, 0, sizeof(r));
    r.has_partial_success = has_ps;
    r.partial_success.rejected_spans = rejected;
    if (message != NULL) {
        r.partial_success.error_message.funcs.encode = put_string;
        r.partial_success.error_message.arg = (void *)(uintptr_t)message;
    }
    assert_true(pb_encode(&os, pdtrace_otlp_ExportTraceServiceResponse_fields,
                          &r));
    return os.bytes_written;
}

static void test_empty_body(void **state)
{
    int64_t rej = 99;
    char msg[16] = "junk";

    (void)state;
    assert_int_equal(pdti_decode_export_response(NULL, 0, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 0);
    assert_string_equal(msg, "");
    assert_int_equal(pdti_decode_export_response((const uint8_t *)"", 0,
                                                 &rej, msg, sizeof(msg)),
                     PDT_OK);
}

static void test_partial_success(void **state)
{
    uint8_t buf[512];
    size_t n;
    int64_t rej = -1;
    char msg[256];

    (void)state;
    n = encode(buf, sizeof(buf), 1, 7, "7 spans had invalid trace ids");
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 7);
    assert_string_equal(msg, "7 spans had invalid trace ids");

    /* Only a message (a warning, nothing rejected). */
    n = encode(buf, sizeof(buf), 1, 0, "slow down");
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 0);
    assert_string_equal(msg, "slow down");

    /* Present but empty. */
    n = encode(buf, sizeof(buf), 1, 0, NULL);
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 0);
    assert_string_equal(msg, "");

    /* Outputs are optional. */
    n = encode(buf, sizeof(buf), 1, 3, "x");
    assert_int_equal(pdti_decode_export_response(buf, n, NULL, NULL, 0),
                     PDT_OK);
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, NULL, 0),
                     PDT_OK);
    assert_int_equal(rej, 3);
}

/* The same bytes written by hand: field 1 (len), inside 1 (varint) 2 (len). */
static void test_hand_built(void **state)
{
    static const uint8_t wire[] = {
        0x0a, 0x09,             /* partial_success, 9 bytes */
        0x08, 0xac, 0x02,       /* rejected_spans = 300 */
        0x12, 0x04, 'o', 'o', 'p', 's', /* error_message */
        0x1a, 0x00,             /* unknown field 3 at top level: skipped? */
    };
    int64_t rej;
    char msg[32];

    (void)state;
    /* The trailing bytes are an unknown empty field 3: skipped. */
    assert_int_equal(pdti_decode_export_response(wire, sizeof(wire), &rej,
                                                 msg, sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 300);
    assert_string_equal(msg, "oops");
}

static void test_long_message_truncated(void **state)
{
    uint8_t *buf = malloc(20000);
    char *text = malloc(10001);
    char msg[256];
    int64_t rej;
    size_t n;

    (void)state;
    assert_non_null(buf);
    assert_non_null(text);
    memset(text, 'm', 10000);
    text[10000] = '\0';
    n = encode(buf, 20000, 1, 12, text);
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 12);
    assert_int_equal(strlen(msg), 255);
    assert_memory_equal(msg, text, 255);

    /* Exactly 255 fits whole; a tiny buffer gets a tiny prefix. */
    text[255] = '\0';
    n = encode(buf, 20000, 1, 1, text);
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_int_equal(strlen(msg), 255);
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg, 4),
                     PDT_OK);
    assert_string_equal(msg, "mmm");
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg, 1),
                     PDT_OK);
    assert_string_equal(msg, "");
    free(buf);
    free(text);
}

/* A cut never splits a multi-byte UTF-8 character. */
static void test_utf8_cut(void **state)
{
    uint8_t buf[256];
    char msg[8];
    int64_t rej;
    size_t n;

    (void)state;
    /* "é" is 2 bytes: 7 bytes of room hold 3 whole ones. */
    n = encode(buf, sizeof(buf), 1, 1, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_string_equal(msg, "\xc3\xa9\xc3\xa9\xc3\xa9");
    /* "€" is 3 bytes: 7 bytes hold 2. */
    n = encode(buf, sizeof(buf), 1, 1, "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac");
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_string_equal(msg, "\xe2\x82\xac\xe2\x82\xac");
    /* A 4-byte character after 5 ASCII bytes is dropped whole. */
    n = encode(buf, sizeof(buf), 1, 1, "abcde\xf0\x9f\x98\x80z");
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, msg,
                                                 sizeof(msg)), PDT_OK);
    assert_string_equal(msg, "abcde");
}

static void test_garbage(void **state)
{
    static const char *const bad[] = {
        "\xff\xff\xff\xff",
        "<html><body>502 Bad Gateway</body></html>",
        "{\"partialSuccess\":{}}",
        "\x0a\x10\x08\x01",             /* length past the end */
        "\x0a\x03\x12\x05\x61\x62",        /* inner length past the outer */
        "\x0f",                         /* wire type 7 */
    };
    size_t i;
    int64_t rej;
    char msg[64];

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rej = 5;
        strcpy(msg, "junk");
        if (pdti_decode_export_response((const uint8_t *)bad[i],
                                        strlen(bad[i]), &rej, msg,
                                        sizeof(msg)) != PDT_EPARSE)
            fail_msg("accepted garbage #%zu", i);
        assert_int_equal(rej, 0);
        assert_string_equal(msg, "");
    }
    assert_int_equal(pdti_decode_export_response(NULL, 3, &rej, msg,
                                                 sizeof(msg)), PDT_EINVAL);
}

/* A negative count from a broken collector reads as 0. */
static void test_negative_rejected(void **state)
{
    uint8_t buf[64];
    int64_t rej;
    size_t n;

    (void)state;
    n = encode(buf, sizeof(buf), 1, -4, NULL);
    assert_int_equal(pdti_decode_export_response(buf, n, &rej, NULL, 0),
                     PDT_OK);
    assert_int_equal(rej, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_partial_success),
        cmocka_unit_test(test_hand_built),
        cmocka_unit_test(test_long_message_truncated),
        cmocka_unit_test(test_utf8_cut),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_negative_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
