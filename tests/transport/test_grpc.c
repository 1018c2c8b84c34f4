/* Unit tests: the OTLP/gRPC pieces (lib/transport_grpc.c) and the JSON
 * reply of http/json (lib/response.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport.h"
#include "transport_grpc.h"
#include "wire.h"

/* ---- a tiny protobuf writer for google.rpc.Status ------------------------ */

static uint8_t *put_bytes(uint8_t *p, unsigned field, const void *d, size_t n)
{
    p = pdti_put_varint(p, (uint64_t)field << 3 | 2);
    p = pdti_put_varint(p, n);
    memcpy(p, d, n);
    return p + n;
}

/* Status{code, message, details=[Any{type_url, RetryInfo{Duration}}]}. */
static size_t status_with_delay(uint8_t *out, const char *type,
                                int64_t secs, int32_t nanos)
{
    uint8_t dur[32], ri[40], any[160], *p;
    size_t nd, nr, na;

    p = dur;
    p = pdti_put_varint(p, 1 << 3);
    p = pdti_put_varint(p, (uint64_t)secs);
    p = pdti_put_varint(p, 2 << 3);
    p = pdti_put_varint(p, (uint64_t)(uint32_t)nanos);
    nd = (size_t)(p - dur);
    nr = (size_t)(put_bytes(ri, 1, dur, nd) - ri);
    p = put_bytes(any, 1, type, strlen(type));
    p = put_bytes(p, 2, ri, nr);
    na = (size_t)(p - any);
    p = out;
    p = pdti_put_varint(p, 1 << 3);
    p = pdti_put_varint(p, 8); /* RESOURCE_EXHAUSTED */
    p = put_bytes(p, 2, "slow down", 9);
    p = put_bytes(p, 3, any, na);
    return (size_t)(p - out);
}

static void b64(const uint8_t *in, size_t n, char *out)
{
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    char *o = out;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
                     in[i + 2];
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = t[(v >> 6) & 63];
        *o++ = t[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = t[(v >> 6) & 63];
    }
    *o = '\0'; /* unpadded, as gRPC sends -bin values */
}

static void feed(pdti_grpc_reply *r, const char *line)
{
    pdti_grpc_reply_header(r, line, strlen(line));
}

/* ---- tests ---------------------------------------------------------------- */

static void test_frame_roundtrip(void **state)
{
    uint8_t buf[5 + 300];
    const uint8_t *m;
    size_t n;

    (void)state;
    memset(buf + 5, 0xab, 300);
    pdti_grpc_frame_header(buf, 0, 300);
    assert_int_equal(buf[0], 0);
    assert_int_equal(buf[3], 1);
    assert_int_equal(buf[4], 300 - 256);
    assert_int_equal(pdti_grpc_unframe(buf, sizeof(buf), &m, &n), 1);
    assert_ptr_equal(m, buf + 5);
    assert_int_equal(n, 300);
    pdti_grpc_frame_header(buf, 1, 0x01020304u);
    assert_memory_equal(buf, "\x01\x01\x02\x03\x04", 5);
}

static void test_unframe_bad(void **state)
{
    uint8_t buf[16] = { 0, 0, 0, 0, 20 };
    const uint8_t *m;
    size_t n;

    (void)state;
    assert_int_equal(pdti_grpc_unframe(buf, 0, &m, &n), 0); /* no message */
    assert_int_equal(pdti_grpc_unframe(buf, 3, &m, &n), -1); /* short */
    assert_int_equal(pdti_grpc_unframe(buf, sizeof(buf), &m, &n), -1);
    buf[4] = 2;
    buf[0] = 1; /* compressed: never asked for */
    assert_int_equal(pdti_grpc_unframe(buf, sizeof(buf), &m, &n), -1);
    buf[0] = 0;
    assert_int_equal(pdti_grpc_unframe(buf, sizeof(buf), &m, &n), 1);
    assert_int_equal(n, 2);
}

static void test_trailers(void **state)
{
    pdti_grpc_reply r;

    (void)state;
    pdti_grpc_reply_reset(&r);
    feed(&r, "HTTP/2 200\r\n");
    feed(&r, "content-type: application/grpc\r\n");
    assert_int_equal(r.status, -1);
    feed(&r, "\r\n");
    /* trailers, after the body */
    feed(&r, "Grpc-Status: 14\r\n");
    feed(&r, "grpc-message: collector%20busy%3A%20try%0Alater\r\n");
    assert_int_equal(r.status, PDTI_GRPC_UNAVAILABLE);
    assert_string_equal(r.message, "collector busy: try?later");
    assert_int_equal(r.retry_delay_ms, -1);
    /* a new response starts clean */
    feed(&r, "HTTP/2 200\r\n");
    assert_int_equal(r.status, -1);
    assert_string_equal(r.message, "");
}

static void test_trailers_only(void **state)
{
    pdti_grpc_reply r;

    (void)state;
    pdti_grpc_reply_reset(&r);
    feed(&r, "HTTP/2 200\r\n");
    feed(&r, "content-type: application/grpc\r\n");
    feed(&r, "grpc-status: 3\r\n");
    feed(&r, "grpc-message: bad\r\n");
    feed(&r, "\r\n");
    assert_int_equal(r.status, PDTI_GRPC_INVALID_ARGUMENT);
    assert_string_equal(r.message, "bad");
    pdti_grpc_reply_reset(&r);
    feed(&r, "grpc-status: 1x\r\n");
    assert_int_equal(r.status, PDTI_GRPC_UNKNOWN);
    feed(&r, "grpc-status:\r\n");
    assert_int_equal(r.status, PDTI_GRPC_UNKNOWN);
    feed(&r, "grpc-statusx: 0\r\n"); /* another header */
    assert_int_equal(r.status, PDTI_GRPC_UNKNOWN);
}

static void test_retry_info_header(void **state)
{
    uint8_t st[256];
    char line[512], enc[400];
    size_t n;
    pdti_grpc_reply r;

    (void)state;
    n = status_with_delay(st, "type.googleapis.com/google.rpc.RetryInfo", 2,
                          500000000);
    b64(st, n, enc);
    snprintf(line, sizeof(line), "grpc-status-details-bin: %s\r\n", enc);
    pdti_grpc_reply_reset(&r);
    feed(&r, "grpc-status: 8\r\n");
    feed(&r, line);
    assert_int_equal(r.status, PDTI_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(r.retry_delay_ms, 2500);

    /* another detail type: no retry info */
    n = status_with_delay(st, "type.googleapis.com/google.rpc.DebugInfo", 2,
                          0);
    b64(st, n, enc);
    snprintf(line, sizeof(line), "grpc-status-details-bin: %s\r\n", enc);
    pdti_grpc_reply_reset(&r);
    feed(&r, line);
    assert_int_equal(r.retry_delay_ms, -1);

    /* not base64 at all */
    pdti_grpc_reply_reset(&r);
    feed(&r, "grpc-status-details-bin: !!!\r\n");
    assert_int_equal(r.retry_delay_ms, -1);
}

static void test_retry_info_bytes(void **state)
{
    uint8_t st[256];
    int64_t ms;
    size_t n;

    (void)state;
    n = status_with_delay(st, "type.googleapis.com/google.rpc.RetryInfo", 0,
                          -5);
    assert_int_equal(pdti_grpc_retry_info(st, n, &ms), 1);
    assert_int_equal(ms, 0); /* negative delays are "now" */
    n = status_with_delay(st, "type.googleapis.com/google.rpc.RetryInfo",
                          INT64_C(1) << 62, 0);
    assert_int_equal(pdti_grpc_retry_info(st, n, &ms), 1);
    assert_true(ms > 0); /* saturated, not wrapped */
    /* every truncation is either "no info" or malformed, never a crash */
    n = status_with_delay(st, "type.googleapis.com/google.rpc.RetryInfo", 1,
                          0);
    while (n-- > 0) {
        int rc = pdti_grpc_retry_info(st, n, &ms);
        assert_true(rc == 0 || rc == -1);
    }
    assert_int_equal(pdti_grpc_retry_info(NULL, 0, &ms), 0);
}

static void test_codes(void **state)
{
    int c;

    (void)state;
    for (c = 0; c <= 16; c++) {
        int want = c == PDTI_GRPC_CANCELLED ||
                   c == PDTI_GRPC_DEADLINE_EXCEEDED ||
                   c == PDTI_GRPC_ABORTED || c == PDTI_GRPC_OUT_OF_RANGE ||
                   c == PDTI_GRPC_UNAVAILABLE || c == PDTI_GRPC_DATA_LOSS;
        assert_int_equal(pdti_grpc_code_retryable(c, 0), want);
    }
    assert_int_equal(pdti_grpc_code_retryable(PDTI_GRPC_RESOURCE_EXHAUSTED,
                                              1), 1);
    assert_int_equal(pdti_grpc_code_retryable(PDTI_GRPC_INVALID_ARGUMENT,
                                              1), 0);
    assert_string_equal(pdti_grpc_code_name(14), "UNAVAILABLE");
    assert_string_equal(pdti_grpc_code_name(99), "UNKNOWN");
    assert_string_equal(pdti_grpc_code_name(-1), "UNKNOWN");
    assert_int_equal(pdti_grpc_code_from_http(503), PDTI_GRPC_UNAVAILABLE);
    assert_int_equal(pdti_grpc_code_from_http(429), PDTI_GRPC_UNAVAILABLE);
    assert_int_equal(pdti_grpc_code_from_http(401),
                     PDTI_GRPC_UNAUTHENTICATED);
    assert_int_equal(pdti_grpc_code_from_http(404),
                     PDTI_GRPC_UNIMPLEMENTED);
    assert_int_equal(pdti_grpc_code_from_http(200), PDTI_GRPC_INTERNAL);
    assert_int_equal(pdti_grpc_code_from_http(418), PDTI_GRPC_UNKNOWN);
}

static void test_timeout_value(void **state)
{
    char v[16];

    (void)state;
    pdti_grpc_timeout_value(v, sizeof(v), 1500);
    assert_string_equal(v, "1500m");
    pdti_grpc_timeout_value(v, sizeof(v), 0);
    assert_string_equal(v, "1m");
    pdti_grpc_timeout_value(v, sizeof(v), INT64_C(100000000));
    assert_string_equal(v, "100000S");
    pdti_grpc_timeout_value(v, sizeof(v), INT64_MAX);
    assert_string_equal(v, "99999999S");
}

static void test_json_reply(void **state)
{
    static const char *ok[] = {
        "", "{}", " {\"partialSuccess\":{}} ",
        "{\"other\":[1,{\"a\":\"}\"}],\"partialSuccess\":null}"
    };
    const char *j;
    int64_t rej = 7;
    char msg[32];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        rej = 7;
        assert_int_equal(pdti_decode_export_response_json(
                             (const uint8_t *)ok[i], strlen(ok[i]), &rej,
                             msg, sizeof(msg)), PDT_OK);
        assert_int_equal(rej, 0);
    }
    j = "{\"partialSuccess\":{\"rejectedSpans\":\"12\",\"errorMessage\":"
        "\"too \\\"old\\\"\"}}";
    assert_int_equal(pdti_decode_export_response_json(
                         (const uint8_t *)j, strlen(j), &rej, msg,
                         sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 12);
    assert_string_equal(msg, "too \"old\"");
    j = "{\"partialSuccess\": {\"errorMessage\": \"x\", \"rejectedSpans\": 3}}";
    assert_int_equal(pdti_decode_export_response_json(
                         (const uint8_t *)j, strlen(j), &rej, msg,
                         sizeof(msg)), PDT_OK);
    assert_int_equal(rej, 3);
    assert_string_equal(msg, "x");
    j = "{\"partialSuccess\":{\"rejectedSpans\":3";
    assert_int_equal(pdti_decode_export_response_json(
                         (const uint8_t *)j, strlen(j), &rej, msg,
                         sizeof(msg)), PDT_EPARSE);
    assert_int_equal(pdti_decode_export_response_json(
                         (const uint8_t *)"[]", 2, &rej, msg, sizeof(msg)),
                     PDT_EPARSE);
    assert_int_equal(pdti_decode_export_response_json(
                         (const uint8_t *)"<html>", 6, &rej, msg,
                         sizeof(msg)), PDT_EPARSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_roundtrip),
        cmocka_unit_test(test_unframe_bad),
        cmocka_unit_test(test_trailers),
        cmocka_unit_test(test_trailers_only),
        cmocka_unit_test(test_retry_info_header),
        cmocka_unit_test(test_retry_info_bytes),
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_timeout_value),
        cmocka_unit_test(test_json_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
