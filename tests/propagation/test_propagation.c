/* Unit tests for the traceparent and tracestate code in lib/propagation.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pdtrace/common.h"
#include "propagation.h"

#define VALID_TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static const uint8_t want_tid[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3,
                                     0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d,
                                     0x0e, 0x0e, 0x47, 0x36};
static const uint8_t want_sid[8] = {0x00, 0xf0, 0x67, 0xaa,
                                    0x0b, 0xa9, 0x02, 0xb7};

static int parse(const char *s, uint8_t tid[16], uint8_t sid[8], uint8_t *fl)
{
    return pdti_traceparent_parse(s, strlen(s), tid, sid, fl);
}

/* Parses s and expects failure with the outputs left as they were. */
static void expect_reject(const char *s)
{
    uint8_t tid[16], sid[8], fl = 0x5a;

    memset(tid, 0xa5, sizeof tid);
    memset(sid, 0xa5, sizeof sid);
    if (parse(s, tid, sid, &fl) != PDT_EPARSE)
        fail_msg("accepted: \"%s\"", s);
    {
        uint8_t t2[16], s2[8];
        memset(t2, 0xa5, sizeof t2);
        memset(s2, 0xa5, sizeof s2);
        assert_memory_equal(tid, t2, 16);
        assert_memory_equal(sid, s2, 8);
        assert_int_equal(fl, 0x5a);
    }
}

static void expect_accept(const char *s, uint8_t want_flags)
{
    uint8_t tid[16], sid[8], fl;

    if (parse(s, tid, sid, &fl) != PDT_OK)
        fail_msg("rejected: \"%s\"", s);
    assert_memory_equal(tid, want_tid, 16);
    assert_memory_equal(sid, want_sid, 8);
    assert_int_equal(fl, want_flags);
}

static void tp_valid(void **state)
{
    (void)state;
    expect_accept(VALID_TP, 0x01);
    expect_accept("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                  0x00);
    /* Flags: any hex byte, unknown bits kept. */
    expect_accept("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
                  0xff);
    expect_accept("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-a9",
                  0xa9);
}

static void tp_whitespace(void **state)
{
    (void)state;
    expect_accept("  " VALID_TP, 0x01);
    expect_accept(VALID_TP "\t ", 0x01);
    expect_accept("\t" VALID_TP "\t", 0x01);
    expect_reject("   ");
    expect_reject("");
    /* Whitespace inside is not trimmed. */
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736 -00f067aa0ba902b7-01");
    /* Only spaces and tabs count as whitespace. */
    expect_reject("\n" VALID_TP);
    expect_reject(VALID_TP "\r\n");
}

static void tp_uppercase(void **state)
{
    (void)state;
    expect_reject("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A");
    expect_reject("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

static void tp_lengths(void **state)
{
    (void)state;
    /* One char short in each field, one char long in each field. */
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011");
    expect_reject("0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect_reject("000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /* Version 00 with anything after the flags. */
    expect_reject(VALID_TP "-");
    expect_reject(VALID_TP "-extra");
    expect_reject("00");
    expect_reject("00-");
}

static void tp_separators(void **state)
{
    (void)state;
    expect_reject("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01");
    expect_reject("00 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 01");
    expect_reject("004bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-");
}

static void tp_non_hex(void **state)
{
    (void)state;
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x");
    expect_reject("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e473.-00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7--1");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01");
}

static void tp_embedded_nul(void **state)
{
    static const char s[] =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\0";
    uint8_t tid[16], sid[8], fl;

    (void)state;
    /* The length argument rules, not NUL termination. */
    assert_int_equal(pdti_traceparent_parse(s, 56, tid, sid, &fl), PDT_EPARSE);
    assert_int_equal(pdti_traceparent_parse(s, 55, tid, sid, &fl), PDT_OK);
    assert_int_equal(pdti_traceparent_parse(s, 54, tid, sid, &fl), PDT_EPARSE);
    assert_int_equal(pdti_traceparent_parse(NULL, 0, tid, sid, &fl),
                     PDT_EPARSE);
}

static void tp_version_ff(void **state)
{
    (void)state;
    expect_reject("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect_reject("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x");
}

static void tp_future_versions(void **state)
{
    (void)state;
    expect_accept("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                  0x01);
    expect_accept("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"
                  "what-the-future-will-be-like",
                  0x01);
    expect_accept("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-",
                  0x09);
    expect_accept("fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                  0x01);
    expect_accept("  01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x ",
                  0x01);
    /* Trailing data must start with '-'. */
    expect_reject("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01."
                  "what-the-future-will-be-like");
    expect_reject("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-012");
    expect_reject("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x");
    /* Fixed offsets still apply. */
    expect_reject("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7");
    expect_reject("01-4bf92f3577b34da6a3ce929d0e0e4736a-00f067aa0ba902b7-01");
    expect_reject("01-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01-x");
}

/* MUST: several traceparent header lines are invalid, a future version
 * with its extra fields as much as version 00. Joined per RFC 9110 they
 * arrive as one value with a ','. */
static void tp_duplicated_header_lines_rejected(void **state)
{
    (void)state;
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,"
                  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect_reject("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,"
                  "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    /* The case that used to pass: a future version whose first line has
     * extra fields, so the character after the flags is '-'. */
    expect_reject("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"
                  "future, 01-0af7651916cd43dd8448eb211c80319c-"
                  "b7ad6b7169203331-01");
    expect_reject("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-x,");
    /* A single future-version line with extra fields is still parsed. */
    expect_accept("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"
                  "future", 0x01);
}

static void tp_zero_ids(void **state)
{
    (void)state;
    expect_reject("00-00000000000000000000000000000000-00f067aa0ba902b7-01");
    expect_reject("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01");
    expect_reject("00-00000000000000000000000000000000-0000000000000000-01");
    expect_reject("01-00000000000000000000000000000000-00f067aa0ba902b7-01-x");
    /* One non-zero bit anywhere is enough. */
    {
        uint8_t tid[16], sid[8], fl;
        assert_int_equal(
            parse("00-00000000000000000000000000000001-0000000000000001-00",
                  tid, sid, &fl),
            PDT_OK);
        assert_int_equal(tid[15], 1);
        assert_int_equal(sid[7], 1);
        assert_int_equal(
            parse("00-10000000000000000000000000000000-1000000000000000-00",
                  tid, sid, &fl),
            PDT_OK);
        assert_int_equal(tid[0], 0x10);
        assert_int_equal(sid[0], 0x10);
    }
}

static void tp_format_roundtrip(void **state)
{
    char out[56];
    uint8_t tid[16], sid[8], fl, t2[16], s2[8], f2;
    unsigned i;

    (void)state;
    pdti_traceparent_format(out, want_tid, want_sid, 0x01);
    assert_string_equal(out, VALID_TP);

    /* Higher versions are re-emitted as 00. */
    assert_int_equal(parse("7f-4bf92f3577b34da6a3ce929d0e0e4736-"
                           "00f067aa0ba902b7-03-more",
                           tid, sid, &fl),
                     PDT_OK);
    pdti_traceparent_format(out, tid, sid, fl);
    assert_string_equal(out,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");

    /* Every flags value and a range of ids survive format then parse. */
    for (i = 0; i < 256; i++) {
        unsigned j;
        for (j = 0; j < 16; j++)
            tid[j] = (uint8_t)(i * 7u + j * 31u + 1u);
        for (j = 0; j < 8; j++)
            sid[j] = (uint8_t)(i * 13u + j * 17u + 1u);
        pdti_traceparent_format(out, tid, sid, (uint8_t)i);
        assert_int_equal(strlen(out), 55);
        assert_int_equal(parse(out, t2, s2, &f2), PDT_OK);
        assert_memory_equal(t2, tid, 16);
        assert_memory_equal(s2, sid, 8);
        assert_int_equal(f2, i);
    }
}

static void hex_basic(void **state)
{
    static const uint8_t b[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[13];

    (void)state;
    memset(out, 'x', sizeof out);
    pdti_hex(out, b, sizeof b);
    assert_string_equal(out, "00017f80abff");
    pdti_hex(out, b, 0);
    assert_string_equal(out, "");
}

/* ---- tracestate ---- */

static size_t norm(const char *s, char *out, size_t cap)
{
    return pdti_tracestate_normalize(s, strlen(s), out, cap);
}

static void expect_norm(const char *in, const char *want)
{
    char out[1024];
    size_t n = norm(in, out, sizeof out);

    if (strcmp(out, want) != 0)
        fail_msg("normalize(\"%s\") = \"%s\", want \"%s\"", in, out, want);
    assert_int_equal(n, strlen(want));
}

static void ts_basic(void **state)
{
    (void)state;
    expect_norm("rojo=00f067aa0ba902b7", "rojo=00f067aa0ba902b7");
    expect_norm("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    expect_norm("a=1,b=2,c=3", "a=1,b=2,c=3");
    /* Values: printable ASCII, inner and leading spaces allowed. */
    expect_norm("a=x y", "a=x y");
    expect_norm("a=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~",
                "a=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~");
    expect_norm("k= v", "k= v");
}

static void ts_empty(void **state)
{
    char out[16];

    (void)state;
    expect_norm("", "");
    expect_norm(",", "");
    expect_norm(" , ,\t,", "");
    expect_norm("a=1,,b=2", "a=1,b=2");
    expect_norm(",a=1,", "a=1");
    memset(out, 'x', sizeof out);
    assert_int_equal(pdti_tracestate_normalize(NULL, 0, out, sizeof out), 0);
    assert_int_equal(out[0], '\0');
    assert_int_equal(pdti_tracestate_normalize("a=1", 3, out, 0), 0);
    assert_int_equal(out[0], '\0');
}

static void ts_whitespace(void **state)
{
    (void)state;
    expect_norm("  a=1 ,\tb=2\t, c=3  ", "a=1,b=2,c=3");
    expect_norm("a=1 ", "a=1");
    /* No whitespace around '=': the member is invalid, the header goes. */
    expect_norm("a =1,b=2", "");
    /* Tabs are not allowed inside a value. */
    expect_norm("a=x\ty,b=2", "");
}

/* MUST (Level 2 key grammar): key = ( lcalpha / DIGIT ) 0*255 keychar,
 * keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@". */
static void ts_l2_key_grammar(void **state)
{
    (void)state;
    expect_norm("a-b_c*d/e=1", "a-b_c*d/e=1");
    expect_norm("z0123456789=1", "z0123456789=1");
    expect_norm("1a=1,b=2", "1a=1,b=2");          /* may start with a digit */
    expect_norm("0=1", "0=1");
    expect_norm("fw529a3039@dt=d7a2", "fw529a3039@dt=d7a2");
    expect_norm("t@sys-1_x*/=v", "t@sys-1_x*/=v");
    expect_norm("a@b@c=v", "a@b@c=v");            /* '@' is a keychar */
    expect_norm("t@1sys=v", "t@1sys=v");
    expect_norm("t@=v", "t@=v");
    expect_norm("t@abcdefghijklmnopq=v", "t@abcdefghijklmnopq=v");
    /* Not keys: the whole header is discarded. */
    expect_norm("A=1,b=2", "");                   /* uppercase */
    expect_norm("_a=1,b=2", "");                  /* first char */
    expect_norm("@sys=v,b=2", "");                /* '@' is not first */
    expect_norm("a.b=1,b=2", "");                 /* '.' not a keychar */
    expect_norm("=1,b=2", "");                    /* empty key */
    expect_norm("novalue,b=2", "");               /* no '=' */
}

/* MUST: a key has at most 256 characters. */
static void ts_l2_key_at_most_256_chars(void **state)
{
    char in[700];
    size_t i;

    (void)state;
    for (i = 0; i < 256; i++)
        in[i] = i == 100 ? '@' : 'k';
    memcpy(in + 256, "=v", 3);
    expect_norm(in, in);
    in[0] = '7';
    expect_norm(in, in);
    in[256] = 'k';
    memcpy(in + 257, "=v", 3);
    expect_norm(in, "");
}

/* MUST: value = 0*255 chr nblk-chr (printable ASCII but ',' and '='). */
static void ts_value_grammar(void **state)
{
    char in[700], want[700], out[1024];
    size_t i;

    (void)state;
    expect_norm("a=,b=2", "");           /* empty value */
    expect_norm("a=x=y,b=2", "");        /* '=' in value */
    expect_norm("a=\x7f,b=2", "");       /* DEL */
    expect_norm("a=\x01,b=2", "");       /* control */
    expect_norm("a=\xc3\xa9,b=2", "");   /* non-ASCII */
    expect_norm("a==,b=2", "");
    /* Value of 256 accepted, 257 rejected. */
    memcpy(in, "a=", 2);
    for (i = 0; i < 256; i++)
        in[2 + i] = 'v';
    in[258] = '\0';
    expect_norm(in, in);
    memcpy(in + 258, "v,b=2", 6);
    expect_norm(in, "");
    /* A 256-char value with trailing whitespace trimmed as OWS. */
    memcpy(in, "a=", 2);
    for (i = 0; i < 256; i++)
        in[2 + i] = 'v';
    memcpy(in + 258, "   ", 4);
    memcpy(want, in, 258);
    want[258] = '\0';
    assert_int_equal(norm(in, out, sizeof out), 258);
    assert_string_equal(out, want);
}

/* MUST/one documented way: an invalid member makes the whole tracestate
 * invalid; it is discarded (the traceparent is still used). */
static void ts_invalid_member_discards_header(void **state)
{
    (void)state;
    expect_norm("a=1,B=2,c=3", "");
    expect_norm("a=1,b=2,c", "");
    expect_norm("a=1,b=x\x01", "");
    expect_norm(" a=1 ,B=2,,a=3, t@s=x y\t,c=\x80,d=4", "");
}

/* MUST: at most 32 list members; a 33rd makes the header invalid: it is
 * discarded whole. Empty members do not count. */
static void ts_more_than_32_members_discards_header(void **state)
{
    char in[512], out[512];
    size_t i, n = 0;

    (void)state;
    for (i = 0; i < 32; i++)
        n += (size_t)sprintf(in + n, "%sk%zu=%zu", i ? ",," : "", i, i);
    n = norm(in, out, sizeof out);
    assert_int_equal(n, strlen(out));
    assert_non_null(strstr(out, "k0=0,k1=1,"));
    assert_non_null(strstr(out, ",k31=31"));
    (void)sprintf(in + strlen(in), ",k32=32");
    assert_int_equal(norm(in, out, sizeof out), 0);
    assert_string_equal(out, "");
}

/* MUST: keys are unique; a duplicated key makes the header invalid. */
static void ts_duplicated_key_discards_header(void **state)
{
    (void)state;
    expect_norm("a=1,a=2", "");
    expect_norm("a=1,b=2,a=3", "");
    /* Keys are compared exactly. */
    expect_norm("ab=1,a=2,t@s=3,t@s2=4", "ab=1,a=2,t@s=3,t@s2=4");
}

/* SHOULD: propagate at least 512 characters; when truncating, members
 * longer than 128 characters go first, then members from the end. */
static void ts_truncation_drops_long_members_first(void **state)
{
    char in[2048], big1[200], big2[200], small[40], out[513];
    size_t i, n = 0;

    (void)state;
    /* 512 characters exactly are kept whole. */
    for (i = 0; i < 16; i++) {
        /* 16 members of 31 characters + 15 commas = 511; then one more
         * character in the last value makes 512. */
        n += (size_t)sprintf(in + n, "%sk%02zu=%s", i ? "," : "", i,
                             "vvvvvvvvvvvvvvvvvvvvvvvvvvv");
    }
    in[n++] = 'v';
    in[n] = '\0';
    assert_int_equal(n, 512);
    assert_int_equal(norm(in, out, sizeof out), 512);
    assert_string_equal(out, in);

    /* Two long members (> 128) among short ones: over 512, the long ones
     * go first, rightmost first, and the short ones all stay. */
    memset(big1, 'x', sizeof big1);
    memcpy(big1, "big1=", 5);
    big1[150] = '\0';
    memset(big2, 'y', sizeof big2);
    memcpy(big2, "big2=", 5);
    big2[150] = '\0';
    n = (size_t)sprintf(in, "%s", big1);
    for (i = 0; i < 8; i++)
        n += (size_t)sprintf(in + n, ",s%zu=%s", i, "aaaaaaaaaaaaaaaaaaaaaaaaaa");
    n += (size_t)sprintf(in + n, ",%s", big2);
    for (i = 8; i < 12; i++)
        n += (size_t)sprintf(in + n, ",s%zu=%s", i, "aaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_true(n > 512 && n - 151 <= 512);
    norm(in, out, sizeof out);
    assert_null(strstr(out, "big2="));      /* rightmost long one went */
    assert_non_null(strstr(out, "big1="));  /* enough room after that */
    assert_non_null(strstr(out, "s11="));   /* no short member dropped */
    assert_true(strlen(out) <= 512);

    /* Still over: both long members go before any short one. */
    n = (size_t)sprintf(in, "%s,%s", big1, big2);
    for (i = 0; i < 13; i++)
        n += (size_t)sprintf(in + n, ",s%zu=%s", i, "aaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_true(n - 151 > 512);
    norm(in, out, sizeof out);
    assert_null(strstr(out, "big1="));
    assert_null(strstr(out, "big2="));
    assert_non_null(strstr(out, "s0="));
    assert_non_null(strstr(out, "s12="));

    /* Only short members: they go from the end. */
    n = 0;
    for (i = 0; i < 30; i++)
        n += (size_t)sprintf(in + n, "%sk%02zu=%s", i ? "," : "", i,
                             "vvvvvvvvvvvvvvvvvvvvvvvvvvv");
    norm(in, out, sizeof out);
    snprintf(small, sizeof small, "k%02d=", 15);
    assert_non_null(strstr(out, small));
    snprintf(small, sizeof small, "k%02d=", 16);
    assert_null(strstr(out, small));
    assert_int_equal(strncmp(out, "k00=", 4), 0);
}

static void ts_truncation(void **state)
{
    const char *in = "aa=1,bb=2,cc=3";
    char out[32];
    size_t cap;

    (void)state;
    for (cap = 0; cap < sizeof out; cap++) {
        size_t n;
        memset(out, '#', sizeof out);
        n = norm(in, out, cap);
        if (cap == 0) {
            assert_int_equal(n, 0);
            assert_int_equal(out[0], '#');
            continue;
        }
        assert_int_equal(strlen(out), n);
        assert_true(n < cap);
        assert_int_equal(out[cap], '#'); /* nothing written past outcap */
        if (cap < 5)
            assert_string_equal(out, "");
        else if (cap < 10)
            assert_string_equal(out, "aa=1");
        else if (cap < 15)
            assert_string_equal(out, "aa=1,bb=2");
        else
            assert_string_equal(out, "aa=1,bb=2,cc=3");
    }
    /* Members from the end go until the rest fits. */
    assert_int_equal(norm("a=1,bbbbbbbb=2,c=3", out, 8), 3);
    assert_string_equal(out, "a=1");
}

static void ts_idempotent(void **state)
{
    const char *in = " a=1 ,,a1=3, t@s=x y\t,c@d=!,d=4";
    char out1[64], out2[64];
    size_t n1, n2;

    (void)state;
    n1 = norm(in, out1, sizeof out1);
    assert_string_equal(out1, "a=1,a1=3,t@s=x y,c@d=!,d=4");
    n2 = pdti_tracestate_normalize(out1, n1, out2, sizeof out2);
    assert_int_equal(n1, n2);
    assert_string_equal(out1, out2);
}

/*
 * Every byte value at every hex position of the trace id, span id and
 * flags: accepted exactly for [0-9a-f], decoded to the right value (the
 * parser works on eight characters at a time, so each lane is checked).
 */
static void tp_every_byte_every_position(void **state)
{
    static const char base[] =
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    static const int starts[3] = { 3, 36, 53 }, lens[3] = { 32, 16, 2 };
    char tp[56];
    uint8_t tid[16], sid[8], fl;
    int f, pos, c;
    (void)state;

    for (f = 0; f < 3; f++) {
        for (pos = 0; pos < lens[f]; pos++) {
            for (c = 1; c < 256; c++) {
                int off = starts[f] + pos, hexv, rc;
                memcpy(tp, base, sizeof(base));
                tp[off] = (char)c;
                hexv = c >= '0' && c <= '9' ? c - '0'
                       : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                rc = pdti_traceparent_parse(tp, strlen(tp), tid, sid, &fl);
                if (hexv < 0) {
                    /* Whitespace at the ends is trimmed, then too short. */
                    assert_int_not_equal(rc, PDT_OK);
                    continue;
                }
                assert_int_equal(rc, PDT_OK);
                {
                    const uint8_t *b = f == 0 ? tid : f == 1 ? sid : &fl;
                    uint8_t byte = b[pos / 2];
                    int got = pos % 2 == 0 ? byte >> 4 : byte & 0x0f;
                    assert_int_equal(got, hexv);
                }
            }
        }
    }
}

/* Formatting agrees with a plain per-nibble formatter on many ids. */
static void tp_format_matches_reference(void **state)
{
    static const char digits[] = "0123456789abcdef";
    uint8_t tid[16], sid[8];
    char got[56], want[56];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int k, i;
    (void)state;

    for (k = 0; k < 2000; k++) {
        for (i = 0; i < 16; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            tid[i] = (uint8_t)x;
        }
        for (i = 0; i < 8; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            sid[i] = (uint8_t)(x >> 8);
        }
        if (k == 0)
            memset(tid, 0xff, 16); /* every nibble a letter */
        if (k == 1)
            memset(sid, 0x09, 8);  /* the digit/letter border */
        pdti_traceparent_format(got, tid, sid, (uint8_t)k);
        memcpy(want, "00-", 3);
        for (i = 0; i < 16; i++) {
            want[3 + 2 * i] = digits[tid[i] >> 4];
            want[4 + 2 * i] = digits[tid[i] & 15];
        }
        want[35] = '-';
        for (i = 0; i < 8; i++) {
            want[36 + 2 * i] = digits[sid[i] >> 4];
            want[37 + 2 * i] = digits[sid[i] & 15];
        }
        want[52] = '-';
        want[53] = digits[(k & 0xff) >> 4];
        want[54] = digits[k & 15];
        want[55] = '\0';
        assert_string_equal(got, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tp_valid),
        cmocka_unit_test(tp_whitespace),
        cmocka_unit_test(tp_uppercase),
        cmocka_unit_test(tp_lengths),
        cmocka_unit_test(tp_separators),
        cmocka_unit_test(tp_non_hex),
        cmocka_unit_test(tp_embedded_nul),
        cmocka_unit_test(tp_version_ff),
        cmocka_unit_test(tp_future_versions),
        cmocka_unit_test(tp_duplicated_header_lines_rejected),
        cmocka_unit_test(tp_zero_ids),
        cmocka_unit_test(tp_format_roundtrip),
        cmocka_unit_test(tp_every_byte_every_position),
        cmocka_unit_test(tp_format_matches_reference),
        cmocka_unit_test(hex_basic),
        cmocka_unit_test(ts_basic),
        cmocka_unit_test(ts_empty),
        cmocka_unit_test(ts_whitespace),
        cmocka_unit_test(ts_l2_key_grammar),
        cmocka_unit_test(ts_l2_key_at_most_256_chars),
        cmocka_unit_test(ts_value_grammar),
        cmocka_unit_test(ts_invalid_member_discards_header),
        cmocka_unit_test(ts_more_than_32_members_discards_header),
        cmocka_unit_test(ts_duplicated_key_discards_header),
        cmocka_unit_test(ts_truncation_drops_long_members_first),
        cmocka_unit_test(ts_truncation),
        cmocka_unit_test(ts_idempotent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
