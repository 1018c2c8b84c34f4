/*
 * Unit tests for lib/config.c: the text parsers, k=v lists and the
 * resolution of options over the OTEL_* environment over defaults
 * (docs/configuration.md).
 *
 * Every test starts and ends with all variables the library reads unset,
 * so the result does not depend on the environment the test runs in.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "config_kvlist.h"
#include "config_text.h"

#ifdef PDTI_TEST_WRAP_MALLOC
/*
 * With -Wl,--wrap=malloc every malloc() call in the linked objects comes
 * here. fail_countdown > 0 makes the fail_countdown-th call from now fail;
 * 0 disables injection.
 */
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);

static long fail_countdown;
static long failures_injected;

void *__wrap_malloc(size_t n)
{
    if (fail_countdown > 0 && --fail_countdown == 0) {
        failures_injected++;
        return NULL;
    }
    return __real_malloc(n);
}
#endif

/* Every variable config.c reads. */
static const char *const all_vars[] = {
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "PDTRACE_CONSOLE_PATH",
    "PDTRACE_SPOOL_DIR",
    "PDTRACE_SPOOL_MAX_BYTES",
    "PDTRACE_MAX_QUEUE_BYTES",
    "PDTRACE_TAIL_TTFT_MS",
    "PDTRACE_EXPORT_MAX_CONCURRENT",
    "PDTRACE_COMPRESSION_LEVEL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
};
#define N_VARS (sizeof(all_vars) / sizeof(all_vars[0]))

static void clear_env(void)
{
    size_t i;

    for (i = 0; i < N_VARS; i++)
        unsetenv(all_vars[i]);
}

static void set(const char *name, const char *value)
{
    assert_int_equal(setenv(name, value, 1), 0);
}

/* Log messages captured through the user callback. */
typedef struct capture {
    int count;
    int warns;
    size_t len;
    char text[16384];
} capture;

static void capture_fn(void *userdata, int level, const char *message)
{
    capture *c = userdata;
    size_t n = strlen(message);

    c->count++;
    if (level == PDT_LOG_WARN)
        c->warns++;
    if (c->len + n + 2 < sizeof(c->text)) {
        memcpy(c->text + c->len, message, n);
        c->len += n;
        c->text[c->len++] = '\n';
        c->text[c->len] = '\0';
    }
}

typedef struct fixture {
    capture cap;
    pdti_logger lg;
    pdti_config cfg;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    clear_env();
    pdt_clear_error();
    pdti_logger_init(&f->lg, capture_fn, &f->cap);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    pdti_config_free(&f->cfg);
    pdti_logger_destroy(&f->lg);
    free(f);
    clear_env();
    return 0;
}

/* Resolves into f->cfg, freeing any earlier result first. */
static int resolve(fixture *f, const pdt_tracer_options *o)
{
    pdti_config_free(&f->cfg);
    return pdti_config_resolve(&f->cfg, o, &f->lg);
}

static void resolve_ok(fixture *f, const pdt_tracer_options *o)
{
    assert_int_equal(resolve(f, o), PDT_OK);
}

static void reset_log(fixture *f)
{
    memset(&f->cap, 0, sizeof(f->cap));
}

static int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    size_t len = strlen(needle);

    while ((hay = strstr(hay, needle)) != NULL) {
        n++;
        hay += len;
    }
    return n;
}

/* Exactly one warning, and it names the variable. */
static void expect_one_warning(fixture *f, const char *var)
{
    assert_int_equal(f->cap.warns, 1);
    assert_non_null(strstr(f->cap.text, var));
}

static void expect_no_log(fixture *f)
{
    if (f->cap.count != 0)
        fail_msg("unexpected log: %s", f->cap.text);
}

/* A bad option: the status, a last error, and nothing left allocated. */
static void expect_opt_error(fixture *f, const pdt_tracer_options *o,
                             int status, const char *needle)
{
    pdt_clear_error();
    assert_int_equal(resolve(f, o), status);
    assert_int_equal(pdt_last_error_code(), status);
    assert_true(strlen(pdt_last_error()) > 0);
    if (needle != NULL && strstr(pdt_last_error(), needle) == NULL)
        fail_msg("\"%s\" not in last error \"%s\"", needle, pdt_last_error());
    assert_null(f->cfg.endpoint);
    assert_null(f->cfg.service_name);
    assert_null(f->cfg.resource.items);
    assert_int_equal(f->cfg.resource.count, 0);
    assert_int_equal(f->cfg.headers.count, 0);
}

/* ------------------------------------------------------------------ */
/* pdti_parse_int */

static void test_parse_int_valid(void **state)
{
    int64_t v = -1;

    (void)state;
    assert_int_equal(pdti_parse_int("0", 0, 10, &v), PDT_OK);
    assert_int_equal(v, 0);
    assert_int_equal(pdti_parse_int("42", 0, 100, &v), PDT_OK);
    assert_int_equal(v, 42);
    assert_int_equal(pdti_parse_int("  42 \t\n", 0, 100, &v), PDT_OK);
    assert_int_equal(v, 42);
    assert_int_equal(pdti_parse_int("+7", 0, 100, &v), PDT_OK);
    assert_int_equal(v, 7);
    assert_int_equal(pdti_parse_int("-7", -10, 100, &v), PDT_OK);
    assert_int_equal(v, -7);
    assert_int_equal(pdti_parse_int("007", 0, 100, &v), PDT_OK);
    assert_int_equal(v, 7);
    /* Bounds are inclusive. */
    assert_int_equal(pdti_parse_int("1", 1, 3, &v), PDT_OK);
    assert_int_equal(pdti_parse_int("3", 1, 3, &v), PDT_OK);
    assert_int_equal(v, 3);
}

static void test_parse_int_malformed(void **state)
{
    static const char *const bad[] = {
        "", "   ", "abc", "12abc", "1 2", "0x10", "+", "-", "--1", "+-1",
        "1.0", "1e3", "\xd9\xa1", "12\x01", " 5 x",
    };
    size_t i;
    int64_t v = 99;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pdti_parse_int(bad[i], INT64_MIN, INT64_MAX, &v) != PDT_EPARSE)
            fail_msg("\"%s\" was accepted", bad[i]);
    }
    assert_int_equal(pdti_parse_int(NULL, 0, 10, &v), PDT_EPARSE);
    assert_int_equal(pdti_parse_int("1", 0, 10, NULL), PDT_EPARSE);
    /* Junk wins over overflow: the text is malformed, not just large. */
    assert_int_equal(pdti_parse_int("99999999999999999999x", 0, INT64_MAX,
                                    &v), PDT_EPARSE);
    assert_int_equal(v, 99); /* untouched on failure */
}

static void test_parse_int_range_overflow(void **state)
{
    int64_t v = 99;

    (void)state;
    assert_int_equal(pdti_parse_int("9223372036854775807", INT64_MIN,
                                    INT64_MAX, &v), PDT_OK);
    assert_true(v == INT64_MAX);
    assert_int_equal(pdti_parse_int("-9223372036854775808", INT64_MIN,
                                    INT64_MAX, &v), PDT_OK);
    assert_true(v == INT64_MIN);
    v = 99;
    assert_int_equal(pdti_parse_int("9223372036854775808", INT64_MIN,
                                    INT64_MAX, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_int("-9223372036854775809", INT64_MIN,
                                    INT64_MAX, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_int("123456789012345678901234567890",
                                    INT64_MIN, INT64_MAX, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_int("0", 1, 10, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_int("11", 1, 10, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_int("-1", 0, 10, &v), PDT_ERANGE);
    assert_int_equal(v, 99);
}

/* ------------------------------------------------------------------ */
/* pdti_parse_double */

static void test_parse_double_valid(void **state)
{
    double v = -1.0;

    (void)state;
    assert_int_equal(pdti_parse_double("0.5", 0, 1, &v), PDT_OK);
    assert_true(v == 0.5);
    assert_int_equal(pdti_parse_double("1", 0, 1, &v), PDT_OK);
    assert_true(v == 1.0);
    assert_int_equal(pdti_parse_double(".25", 0, 1, &v), PDT_OK);
    assert_true(v == 0.25);
    assert_int_equal(pdti_parse_double("5.", 0, 10, &v), PDT_OK);
    assert_true(v == 5.0);
    assert_int_equal(pdti_parse_double("1e-3", 0, 1, &v), PDT_OK);
    assert_true(v == 0.001);
    assert_int_equal(pdti_parse_double("2.5E+2", 0, 1000, &v), PDT_OK);
    assert_true(v == 250.0);
    assert_int_equal(pdti_parse_double(" \t0.125 \n", 0, 1, &v), PDT_OK);
    assert_true(v == 0.125);
    assert_int_equal(pdti_parse_double("+0.75", 0, 1, &v), PDT_OK);
    assert_true(v == 0.75);
    assert_int_equal(pdti_parse_double("-0", 0, 1, &v), PDT_OK);
    assert_true(v == 0.0);
    assert_int_equal(pdti_parse_double("-2.5", -10, 0, &v), PDT_OK);
    assert_true(v == -2.5);
    /* An underflow is a (tiny) number, not an error. */
    assert_int_equal(pdti_parse_double("1e-400", 0, 1, &v), PDT_OK);
    assert_true(v >= 0.0 && v < 1e-300);
}

static void test_parse_double_malformed(void **state)
{
    static const char *const bad[] = {
        "", "  ", "nan", "NaN", "-nan", "inf", "-inf", "INF", "infinity",
        "0x1p3", "0x10", "1e", "1e+", "e5", ".", "-.", "1.2.3", "0.5x",
        "0,5", "1 0", "abc", "+-1", "1e5.5",
    };
    size_t i;
    double v = 7.0;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pdti_parse_double(bad[i], -INFINITY, INFINITY, &v) != PDT_EPARSE)
            fail_msg("\"%s\" was accepted", bad[i]);
    }
    assert_int_equal(pdti_parse_double(NULL, 0, 1, &v), PDT_EPARSE);
    assert_int_equal(pdti_parse_double("1", 0, 1, NULL), PDT_EPARSE);
    assert_true(v == 7.0);
}

static void test_parse_double_range(void **state)
{
    double v = 7.0;

    (void)state;
    assert_int_equal(pdti_parse_double("1e999", 0, INFINITY, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_double("-1e999", -INFINITY, 0, &v),
                     PDT_ERANGE);
    assert_int_equal(pdti_parse_double("1.5", 0, 1, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_double("-0.1", 0, 1, &v), PDT_ERANGE);
    assert_int_equal(pdti_parse_double("1.0000001", 0, 1, &v), PDT_ERANGE);
    assert_true(v == 7.0);
    assert_int_equal(pdti_parse_double("1.0", 0, 1, &v), PDT_OK);
    assert_true(v == 1.0);
}

/* ------------------------------------------------------------------ */
/* pdti_parse_bool */

static void test_parse_bool(void **state)
{
    static const char *const bad[] = {
        "", " ", "1", "0", "yes", "no", "on", "truex", "tru", "t", "falsey",
        "true false",
    };
    size_t i;
    int b = 5;

    (void)state;
    assert_int_equal(pdti_parse_bool("true", &b), PDT_OK);
    assert_int_equal(b, 1);
    assert_int_equal(pdti_parse_bool("false", &b), PDT_OK);
    assert_int_equal(b, 0);
    assert_int_equal(pdti_parse_bool("TRUE", &b), PDT_OK);
    assert_int_equal(b, 1);
    assert_int_equal(pdti_parse_bool(" True\t", &b), PDT_OK);
    assert_int_equal(b, 1);
    assert_int_equal(pdti_parse_bool("FaLsE", &b), PDT_OK);
    assert_int_equal(b, 0);
    b = 5;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pdti_parse_bool(bad[i], &b) != PDT_EPARSE)
            fail_msg("\"%s\" was accepted", bad[i]);
    }
    assert_int_equal(pdti_parse_bool(NULL, &b), PDT_EPARSE);
    assert_int_equal(b, 5);
}

/* ------------------------------------------------------------------ */
/* pdti_percent_decode */

static void decodes_to(const char *src, const char *want)
{
    char *out = NULL;

    assert_int_equal(pdti_percent_decode(src, strlen(src), &out), PDT_OK);
    assert_string_equal(out, want);
    free(out);
}

static void decode_fails(const char *src)
{
    char *out = (char *)"sentinel";

    if (pdti_percent_decode(src, strlen(src), &out) != PDT_EPARSE)
        fail_msg("\"%s\" was accepted", src);
    assert_null(out);
}

static void test_percent_decode(void **state)
{
    char *out = NULL;

    (void)state;
    decodes_to("", "");
    decodes_to("plain", "plain");
    decodes_to("a%20b", "a b");
    decodes_to("%2C", ",");
    decodes_to("%2c%3d", ",=");
    decodes_to("%25", "%");
    decodes_to("a+b", "a+b"); /* not form encoding */
    decodes_to("%C3%A9", "\xc3\xa9");
    decodes_to("x%41%42y", "xABy");
    decode_fails("%G1");
    decode_fails("%1G");
    decode_fails("abc%");
    decode_fails("abc%2");
    decode_fails("%%");
    decode_fails("%00");
    decode_fails("a% 20");
    /* Only len bytes are read. */
    assert_int_equal(pdti_percent_decode("abc%20", 3, &out), PDT_OK);
    assert_string_equal(out, "abc");
    free(out);
    /* An escape cut by len is a trailing '%'. */
    assert_int_equal(pdti_percent_decode("ab%20", 4, &out), PDT_EPARSE);
    assert_null(out);
    /* An embedded NUL byte is refused. */
    assert_int_equal(pdti_percent_decode("a\0b", 3, &out), PDT_EPARSE);
    assert_int_equal(pdti_percent_decode(NULL, 0, &out), PDT_OK);
    assert_string_equal(out, "");
    free(out);
}

/* ------------------------------------------------------------------ */
/* k=v lists */

static void parse_list(const char *text, pdti_kvlist *l)
{
    assert_int_equal(pdti_kvlist_parse(text, strlen(text), l), PDT_OK);
}

static void test_kvlist_parse_valid(void **state)
{
    pdti_kvlist l;

    (void)state;
    parse_list("a=1,b=2", &l);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].key, "a");
    assert_string_equal(l.items[0].value, "1");
    assert_string_equal(l.items[1].key, "b");
    assert_string_equal(l.items[1].value, "2");
    pdti_kvlist_free(&l);

    parse_list("", &l);
    assert_int_equal(l.count, 0);
    assert_null(l.items);
    pdti_kvlist_free(&l);

    parse_list(" , ,, ", &l);
    assert_int_equal(l.count, 0);
    pdti_kvlist_free(&l);

    /* Empty entries skipped, '=' inside a value kept, empty value. */
    parse_list(",,a=x=y,,empty=,", &l);
    assert_int_equal(l.count, 2);
    assert_string_equal(pdti_kvlist_get(&l, "a"), "x=y");
    assert_string_equal(pdti_kvlist_get(&l, "empty"), "");
    pdti_kvlist_free(&l);
}

static void test_kvlist_parse_trim_decode(void **state)
{
    pdti_kvlist l;

    (void)state;
    parse_list("  key one = v 1 ,\tk2=\tv2\t", &l);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].key, "key one");
    assert_string_equal(l.items[0].value, "v 1");
    assert_string_equal(l.items[1].key, "k2");
    assert_string_equal(l.items[1].value, "v2");
    pdti_kvlist_free(&l);

    /* Decoding happens after splitting and trimming. */
    parse_list("k=a%2Cb%3Dc,k%20x=%20v%20,z=100%25", &l);
    assert_int_equal(l.count, 3);
    assert_string_equal(pdti_kvlist_get(&l, "k"), "a,b=c");
    assert_string_equal(pdti_kvlist_get(&l, "k x"), " v ");
    assert_string_equal(pdti_kvlist_get(&l, "z"), "100%");
    pdti_kvlist_free(&l);

    /* Only len bytes are parsed. */
    assert_int_equal(pdti_kvlist_parse("a=1,b=2", 3, &l), PDT_OK);
    assert_int_equal(l.count, 1);
    assert_string_equal(pdti_kvlist_get(&l, "a"), "1");
    pdti_kvlist_free(&l);
}

static void test_kvlist_parse_duplicates(void **state)
{
    pdti_kvlist l;

    (void)state;
    parse_list("a=1,b=2,a=3", &l);
    assert_int_equal(l.count, 2);
    /* The later value, at the first position. */
    assert_string_equal(l.items[0].key, "a");
    assert_string_equal(l.items[0].value, "3");
    assert_string_equal(l.items[1].key, "b");
    pdti_kvlist_free(&l);
}

static void test_kvlist_parse_bad(void **state)
{
    static const char *const bad[] = {
        "a=1,b", "novalue", "=v", " = v", "a=1,=2", "a=%G1", "a=1%",
        "a=%2", "%ZZ=1", "a=%00", "a=1, b ,c=2",
    };
    pdti_kvlist l;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        l.items = (pdti_kv *)&l; /* garbage the parser must overwrite */
        l.count = 77;
        if (pdti_kvlist_parse(bad[i], strlen(bad[i]), &l) != PDT_EPARSE)
            fail_msg("\"%s\" was accepted", bad[i]);
        assert_null(l.items);
        assert_int_equal(l.count, 0);
    }
}

static void test_kvlist_set_get_free(void **state)
{
    pdti_kvlist l = { NULL, 0 };
    char key[16];
    int i;

    (void)state;
    assert_null(pdti_kvlist_get(&l, "a"));
    assert_null(pdti_kvlist_get(NULL, "a"));
    assert_int_equal(pdti_kvlist_set(&l, "a", "1"), PDT_OK);
    assert_int_equal(pdti_kvlist_set(&l, "b", "2"), PDT_OK);
    assert_int_equal(pdti_kvlist_set(&l, "a", "3"), PDT_OK);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].key, "a");
    assert_string_equal(pdti_kvlist_get(&l, "a"), "3");
    assert_string_equal(pdti_kvlist_get(&l, "b"), "2");
    assert_null(pdti_kvlist_get(&l, "A")); /* keys are case-sensitive */
    for (i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(pdti_kvlist_set(&l, key, key), PDT_OK);
    }
    assert_int_equal(l.count, 102);
    assert_string_equal(pdti_kvlist_get(&l, "k57"), "k57");
    assert_string_equal(l.items[101].key, "k99");
    assert_int_equal(pdti_kvlist_set(&l, NULL, "x"), PDT_EINVAL);
    assert_int_equal(pdti_kvlist_set(&l, "x", NULL), PDT_EINVAL);
    pdti_kvlist_free(&l);
    assert_null(l.items);
    assert_int_equal(l.count, 0);
    pdti_kvlist_free(&l); /* again: a no-op */
    pdti_kvlist_free(NULL);
}

/* ------------------------------------------------------------------ */
/* Resolution: defaults and each variable */

static void test_defaults(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    resolve_ok(f, &o);
    assert_int_equal(f->cfg.disabled, 0);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_OTLP);
    assert_string_equal(f->cfg.endpoint, PDTI_DEFAULT_ENDPOINT);
    assert_string_equal(f->cfg.endpoint, "http://localhost:4318/v1/traces");
    assert_int_equal(f->cfg.headers.count, 0);
    assert_int_equal(f->cfg.compression, PDT_COMPRESSION_NONE);
    assert_int_equal(f->cfg.timeout_ms, 10000);
    assert_null(f->cfg.console_path);
    assert_null(f->cfg.ca_file);
    assert_null(f->cfg.client_cert);
    assert_null(f->cfg.client_key);
    assert_int_equal(f->cfg.schedule_delay_ms, 5000);
    assert_int_equal(f->cfg.export_timeout_ms, 30000);
    assert_int_equal(f->cfg.max_queue_size, 2048);
    assert_int_equal(f->cfg.max_export_batch_size, 512);
    assert_int_equal(f->cfg.attr_count_limit, 128);
    /* No value length limit: the cap that keeps one value from filling
     * the queue's 64 MiB. */
    assert_int_equal(f->cfg.attr_value_len_limit, 1024 * 1024);
    assert_int_equal(f->cfg.max_queue_bytes, 64 * 1024 * 1024);
    assert_int_equal(f->cfg.value_cap, 1024 * 1024);
    assert_int_equal(f->cfg.sampler, PDT_SAMPLER_PARENTBASED_ALWAYS_ON);
    assert_true(f->cfg.sampler_ratio == 1.0);
    assert_true(f->cfg.tail_ttft_threshold_ms == 0.0);
    assert_int_equal(f->cfg.tail_keep_errors, 1);
    assert_string_equal(f->cfg.service_name, "llm-d-pd-proxy");
    assert_null(f->cfg.spool_dir);
    assert_int_equal(f->cfg.spool_max_bytes, 256 * 1024 * 1024);
    expect_no_log(f);
}

static void test_null_options(void **state)
{
    fixture *f = *state;

    set("OTEL_SERVICE_NAME", "from-env");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.service_name, "from-env");
    assert_string_equal(f->cfg.endpoint, PDTI_DEFAULT_ENDPOINT);
    /* A NULL logger is allowed: warnings are then dropped. */
    set("OTEL_BSP_MAX_QUEUE_SIZE", "junk");
    pdti_config_free(&f->cfg);
    assert_int_equal(pdti_config_resolve(&f->cfg, NULL, NULL), PDT_OK);
    assert_int_equal(f->cfg.max_queue_size, 2048);
    assert_int_equal(pdti_config_resolve(NULL, NULL, NULL), PDT_EINVAL);
}

static void test_empty_env_is_unset(void **state)
{
    fixture *f = *state;
    size_t i;

    for (i = 0; i < N_VARS; i++)
        set(all_vars[i], "");
    resolve_ok(f, NULL);
    expect_no_log(f);
    assert_string_equal(f->cfg.endpoint, PDTI_DEFAULT_ENDPOINT);
    assert_string_equal(f->cfg.service_name, "llm-d-pd-proxy");
    assert_int_equal(f->cfg.timeout_ms, 10000);
    assert_int_equal(f->cfg.max_queue_size, 2048);
    assert_null(f->cfg.ca_file);
    assert_null(f->cfg.spool_dir);
    /* Only whitespace counts as empty too. */
    for (i = 0; i < N_VARS; i++)
        set(all_vars[i], "  \t");
    resolve_ok(f, NULL);
    expect_no_log(f);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_OTLP);
}

static void test_sdk_disabled_env(void **state)
{
    fixture *f = *state;

    set("OTEL_SDK_DISABLED", "true");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.disabled, 1);
    set("OTEL_SDK_DISABLED", " TRUE ");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.disabled, 1);
    set("OTEL_SDK_DISABLED", "false");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.disabled, 0);
    expect_no_log(f);
    set("OTEL_SDK_DISABLED", "yes");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.disabled, 0);
    expect_one_warning(f, "OTEL_SDK_DISABLED");
}

static void test_service_name_env(void **state)
{
    fixture *f = *state;

    set("OTEL_SERVICE_NAME", "vllm-router");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.service_name, "vllm-router");
    assert_string_equal(pdti_kvlist_get(&f->cfg.resource, "service.name"),
                        "vllm-router");
    expect_no_log(f);
}

static void test_exporter_env(void **state)
{
    fixture *f = *state;

    set("OTEL_TRACES_EXPORTER", "console");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_CONSOLE);
    set("OTEL_TRACES_EXPORTER", "none");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_NONE);
    set("OTEL_TRACES_EXPORTER", " OTLP ");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_OTLP);
    expect_no_log(f);

    set("OTEL_TRACES_EXPORTER", "zipkin");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_OTLP);
    expect_one_warning(f, "OTEL_TRACES_EXPORTER");

    /* A list: the first entry is used, the rest reported once. */
    reset_log(f);
    set("OTEL_TRACES_EXPORTER", "console,otlp");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_CONSOLE);
    expect_one_warning(f, "OTEL_TRACES_EXPORTER");
}

static void expect_endpoint(fixture *f, const char *base, const char *want)
{
    set("OTEL_EXPORTER_OTLP_ENDPOINT", base);
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, want);
}

static void test_endpoint_join(void **state)
{
    fixture *f = *state;

    expect_endpoint(f, "http://collector:4318",
                    "http://collector:4318/v1/traces");
    expect_endpoint(f, "http://collector:4318/",
                    "http://collector:4318/v1/traces");
    expect_endpoint(f, "https://collector:4318//",
                    "https://collector:4318/v1/traces");
    expect_endpoint(f, "http://collector:4318/custom",
                    "http://collector:4318/custom/v1/traces");
    expect_endpoint(f, "http://collector:4318/custom/",
                    "http://collector:4318/custom/v1/traces");
    expect_endpoint(f, "  HTTP://c  ", "HTTP://c/v1/traces");
    expect_no_log(f);
}

static void test_traces_endpoint(void **state)
{
    fixture *f = *state;

    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1234/x");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, "http://t:1234/x");
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1234/");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, "http://t:1234/");
    /* The signal-specific variable wins over the generic one. */
    set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, "http://t:1234/");
    expect_no_log(f);
}

static void test_endpoint_bad_env(void **state)
{
    fixture *f = *state;

    set("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, PDTI_DEFAULT_ENDPOINT);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_ENDPOINT");

    /* A bad signal-specific value falls back to the generic one. */
    reset_log(f);
    set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318");
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "ftp://user:hunter2@host/v1/traces");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, "http://generic:4318/v1/traces");
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    /* URLs may carry credentials: never logged. */
    assert_null(strstr(f->cap.text, "hunter2"));

    reset_log(f);
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, "http://generic:4318/v1/traces");
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");

    reset_log(f);
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://a b/");
    resolve_ok(f, NULL);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
}

static void test_headers_env(void **state)
{
    fixture *f = *state;

    set("OTEL_EXPORTER_OTLP_HEADERS",
        "Authorization=Bearer%20abc,x-tenant = team%2C1 ");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.headers.count, 2);
    assert_string_equal(f->cfg.headers.items[0].key, "Authorization");
    assert_string_equal(f->cfg.headers.items[0].value, "Bearer abc");
    assert_string_equal(f->cfg.headers.items[1].key, "x-tenant");
    assert_string_equal(f->cfg.headers.items[1].value, "team,1");
    expect_no_log(f);
}

static void test_headers_traces_wins(void **state)
{
    fixture *f = *state;

    set("OTEL_EXPORTER_OTLP_HEADERS", "a=generic,b=generic");
    set("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=traces");
    resolve_ok(f, NULL);
    /* Replaced, not merged. */
    assert_int_equal(f->cfg.headers.count, 1);
    assert_string_equal(pdti_kvlist_get(&f->cfg.headers, "a"), "traces");
    assert_null(pdti_kvlist_get(&f->cfg.headers, "b"));
    expect_no_log(f);
}

static void test_headers_never_logged(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    /* Bad signal-specific list: warned without its value; generic used. */
    set("OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "authorization=Bearer%20s3cr3t-token,broken");
    set("OTEL_EXPORTER_OTLP_HEADERS", "x=ok");
    resolve_ok(f, NULL);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    assert_null(strstr(f->cap.text, "s3cr3t"));
    assert_null(strstr(f->cap.text, "Bearer"));
    assert_null(strstr(f->cap.text, "broken"));
    assert_int_equal(f->cfg.headers.count, 1);
    assert_string_equal(pdti_kvlist_get(&f->cfg.headers, "x"), "ok");

    /* Bad generic list with a bad escape: discarded, not shown. */
    reset_log(f);
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    set("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t%G1");
    resolve_ok(f, NULL);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_HEADERS");
    assert_null(strstr(f->cap.text, "s3cr3t"));
    assert_int_equal(f->cfg.headers.count, 0);

    /* Trailing '%'. */
    reset_log(f);
    set("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t%");
    resolve_ok(f, NULL);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_HEADERS");
    assert_null(strstr(f->cap.text, "s3cr3t"));

    /* Valid headers next to other warnings: still never shown. */
    reset_log(f);
    set("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr3t");
    set("OTEL_EXPORTER_OTLP_TIMEOUT", "soon");
    resolve_ok(f, NULL);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TIMEOUT");
    assert_null(strstr(f->cap.text, "s3cr3t"));

    /* A bad option: an error whose message does not show the value. */
    reset_log(f);
    o.headers = "api-key=s3cr3t,oops";
    expect_opt_error(f, &o, PDT_EPARSE, "headers");
    assert_null(strstr(pdt_last_error(), "s3cr3t"));
    assert_null(strstr(pdt_last_error(), "oops"));
    o.headers = "api-key=s3cr3t%ZZ";
    expect_opt_error(f, &o, PDT_EPARSE, "headers");
    assert_null(strstr(pdt_last_error(), "s3cr3t"));
    expect_no_log(f);
}

static void test_headers_injection_rejected(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    /* A decoded CR/LF would smuggle a second header. */
    set("OTEL_EXPORTER_OTLP_HEADERS", "a=1%0D%0AHost:%20evil");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.headers.count, 0);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_HEADERS");
    /* Header names must be HTTP tokens. */
    reset_log(f);
    set("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.headers.count, 0);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_HEADERS");
    o.headers = "x=%0A";
    expect_opt_error(f, &o, PDT_EPARSE, "headers");
    /* A tab inside a value is allowed; an empty options string means none. */
    o.headers = "x=a%09b";
    resolve_ok(f, &o);
    assert_string_equal(pdti_kvlist_get(&f->cfg.headers, "x"), "a\tb");
    o.headers = "";
    set("OTEL_EXPORTER_OTLP_HEADERS", "from=env");
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.headers.count, 0);
}

static void test_timeout_env(void **state)
{
    fixture *f = *state;

    set("OTEL_EXPORTER_OTLP_TIMEOUT", "2500");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.timeout_ms, 2500);
    set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.timeout_ms, 700);
    expect_no_log(f);
    /* Out of range: warned, the generic one used. */
    set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3600001");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.timeout_ms, 2500);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
    reset_log(f);
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
    set("OTEL_EXPORTER_OTLP_TIMEOUT", "0");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.timeout_ms, 10000);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TIMEOUT");
    reset_log(f);
    set("OTEL_EXPORTER_OTLP_TIMEOUT", "3600000");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.timeout_ms, 3600000);
    expect_no_log(f);
}

static void test_compression_env(void **state)
{
    fixture *f = *state;

    set("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression, PDT_COMPRESSION_GZIP);
    set("OTEL_EXPORTER_OTLP_COMPRESSION", "ZSTD");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression, PDT_COMPRESSION_ZSTD);
    set("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression, PDT_COMPRESSION_NONE);
    expect_no_log(f);
    set("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "brotli");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression, PDT_COMPRESSION_ZSTD);
    expect_one_warning(f, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION");
}

static void test_compression_level_env(void **state)
{
    fixture *f = *state;

    /* Without compression there is no level, whatever the variable says. */
    set("PDTRACE_COMPRESSION_LEVEL", "bogus");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression, PDT_COMPRESSION_NONE);
    assert_int_equal(f->cfg.compression_level, 0);
    expect_no_log(f);
    unsetenv("PDTRACE_COMPRESSION_LEVEL");

    /* The codecs' defaults. */
    set("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    set("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    expect_no_log(f);

    /* Valid values, trimmed; 0 is the default. */
    set("PDTRACE_COMPRESSION_LEVEL", " 19 ");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 19);
    set("PDTRACE_COMPRESSION_LEVEL", "-5");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, -5);
    set("PDTRACE_COMPRESSION_LEVEL", "0");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    set("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip");
    set("PDTRACE_COMPRESSION_LEVEL", "9");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 9);
    expect_no_log(f);

    /* Out of the codec's range or malformed: one warning, the default. */
    set("PDTRACE_COMPRESSION_LEVEL", "10");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    expect_one_warning(f, "PDTRACE_COMPRESSION_LEVEL");
    reset_log(f);
    set("PDTRACE_COMPRESSION_LEVEL", "-1");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    expect_one_warning(f, "PDTRACE_COMPRESSION_LEVEL");
    reset_log(f);
    set("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd");
    set("PDTRACE_COMPRESSION_LEVEL", "23");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    expect_one_warning(f, "PDTRACE_COMPRESSION_LEVEL");
    reset_log(f);
    set("PDTRACE_COMPRESSION_LEVEL", "3.5");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    expect_one_warning(f, "PDTRACE_COMPRESSION_LEVEL");
    reset_log(f);
    set("PDTRACE_COMPRESSION_LEVEL", "99999999999999999999");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.compression_level, 1);
    expect_one_warning(f, "PDTRACE_COMPRESSION_LEVEL");
}

static void test_compression_level_option(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    set("PDTRACE_COMPRESSION_LEVEL", "7");
    o.compression = PDT_COMPRESSION_ZSTD;
    /* 0: the environment. */
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.compression_level, 7);
    /* Set: wins over the environment. */
    o.compression_level = 12;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.compression_level, 12);
    o.compression_level = -131072;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.compression_level, -131072);
    expect_no_log(f);
    /* Out of the codec's range: an error, not a fallback. */
    o.compression_level = 23;
    expect_opt_error(f, &o, PDT_EINVAL, "compression_level");
    o.compression = PDT_COMPRESSION_GZIP;
    o.compression_level = 12;
    expect_opt_error(f, &o, PDT_EINVAL, "compression_level");
    o.compression_level = -1;
    expect_opt_error(f, &o, PDT_EINVAL, "compression_level");
    o.compression_level = 6;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.compression_level, 6);
    /* Ignored without compression. */
    o.compression = PDT_COMPRESSION_NONE;
    o.compression_level = 99;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.compression_level, 0);
    /* An older header (size before the field): the field is not read. */
    o.compression = PDT_COMPRESSION_GZIP;
    o.compression_level = 99;
    o.size = offsetof(pdt_tracer_options, compression_level);
    set("PDTRACE_COMPRESSION_LEVEL", "4");
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.compression_level, 4);
    unsetenv("PDTRACE_COMPRESSION_LEVEL");
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.compression_level, 1);
    expect_no_log(f);
}

static void test_tls_env(void **state)
{
    fixture *f = *state;

    set("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem");
    set("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/key.pem");
    set("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/cert.pem");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.ca_file, "/etc/ca.pem");
    assert_string_equal(f->cfg.client_key, "/etc/key.pem");
    assert_string_equal(f->cfg.client_cert, "/etc/cert.pem");
    set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/t/ca.pem");
    set("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/t/key.pem");
    set("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "/t/cert.pem");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.ca_file, "/t/ca.pem");
    assert_string_equal(f->cfg.client_key, "/t/key.pem");
    assert_string_equal(f->cfg.client_cert, "/t/cert.pem");
    expect_no_log(f);
}

static void test_sampler_env(void **state)
{
    static const struct {
        const char *name;
        int kind;
    } names[] = {
        { "always_on", PDT_SAMPLER_ALWAYS_ON },
        { "always_off", PDT_SAMPLER_ALWAYS_OFF },
        { "traceidratio", PDT_SAMPLER_TRACEIDRATIO },
        { "parentbased_always_on", PDT_SAMPLER_PARENTBASED_ALWAYS_ON },
        { "parentbased_always_off", PDT_SAMPLER_PARENTBASED_ALWAYS_OFF },
        { "ParentBased_TraceIdRatio", PDT_SAMPLER_PARENTBASED_TRACEIDRATIO },
    };
    fixture *f = *state;
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        set("OTEL_TRACES_SAMPLER", names[i].name);
        resolve_ok(f, NULL);
        assert_int_equal(f->cfg.sampler, names[i].kind);
        assert_true(f->cfg.sampler_ratio == 1.0);
    }
    expect_no_log(f);
    set("OTEL_TRACES_SAMPLER", "jaeger_remote");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.sampler, PDT_SAMPLER_PARENTBASED_ALWAYS_ON);
    expect_one_warning(f, "OTEL_TRACES_SAMPLER");
}

static void test_sampler_arg_env(void **state)
{
    fixture *f = *state;

    set("OTEL_TRACES_SAMPLER", "traceidratio");
    set("OTEL_TRACES_SAMPLER_ARG", "0.25");
    resolve_ok(f, NULL);
    assert_true(f->cfg.sampler_ratio == 0.25);
    set("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
    set("OTEL_TRACES_SAMPLER_ARG", "0");
    resolve_ok(f, NULL);
    assert_true(f->cfg.sampler_ratio == 0.0);
    expect_no_log(f);

    set("OTEL_TRACES_SAMPLER_ARG", "1.5");
    resolve_ok(f, NULL);
    assert_true(f->cfg.sampler_ratio == 1.0);
    expect_one_warning(f, "OTEL_TRACES_SAMPLER_ARG");
    reset_log(f);
    set("OTEL_TRACES_SAMPLER_ARG", "nan");
    resolve_ok(f, NULL);
    assert_true(f->cfg.sampler_ratio == 1.0);
    expect_one_warning(f, "OTEL_TRACES_SAMPLER_ARG");

    /* Samplers without an argument ignore it, silently. */
    reset_log(f);
    set("OTEL_TRACES_SAMPLER", "always_on");
    set("OTEL_TRACES_SAMPLER_ARG", "junk");
    resolve_ok(f, NULL);
    assert_true(f->cfg.sampler_ratio == 1.0);
    expect_no_log(f);
}

static void test_bsp_env(void **state)
{
    fixture *f = *state;

    set("OTEL_BSP_SCHEDULE_DELAY", "100");
    set("OTEL_BSP_EXPORT_TIMEOUT", "2000");
    set("OTEL_BSP_MAX_QUEUE_SIZE", "4096");
    set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1024");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.schedule_delay_ms, 100);
    assert_int_equal(f->cfg.export_timeout_ms, 2000);
    assert_int_equal(f->cfg.max_queue_size, 4096);
    assert_int_equal(f->cfg.max_export_batch_size, 1024);
    expect_no_log(f);

    set("OTEL_BSP_SCHEDULE_DELAY", "-1");
    set("OTEL_BSP_EXPORT_TIMEOUT", "5s");
    set("OTEL_BSP_MAX_QUEUE_SIZE", "1048577");
    set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.schedule_delay_ms, 5000);
    assert_int_equal(f->cfg.export_timeout_ms, 30000);
    assert_int_equal(f->cfg.max_queue_size, 2048);
    assert_int_equal(f->cfg.max_export_batch_size, 512);
    assert_int_equal(f->cap.warns, 4);
    assert_int_equal(count_substr(f->cap.text, "OTEL_BSP_SCHEDULE_DELAY"), 1);
    assert_int_equal(count_substr(f->cap.text, "OTEL_BSP_EXPORT_TIMEOUT"), 1);
    assert_int_equal(count_substr(f->cap.text, "OTEL_BSP_MAX_QUEUE_SIZE"), 1);
    assert_int_equal(count_substr(f->cap.text,
                                  "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"), 1);
}

static void test_batch_clamped(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    /* The default batch follows a small queue without a word. */
    set("OTEL_BSP_MAX_QUEUE_SIZE", "100");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.max_queue_size, 100);
    assert_int_equal(f->cfg.max_export_batch_size, 100);
    expect_no_log(f);
    /* A batch chosen in the environment is clamped with a warning. */
    set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "300");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.max_export_batch_size, 100);
    assert_int_equal(f->cap.warns, 1);
    /* Equal is fine. */
    reset_log(f);
    set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.max_export_batch_size, 100);
    expect_no_log(f);
    /* Queue from the options, batch from the environment: clamped. */
    set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "300");
    o.max_queue_size = 50;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_queue_size, 50);
    assert_int_equal(f->cfg.max_export_batch_size, 50);
    /* Both in the options and inconsistent: an error. */
    o.max_export_batch_size = 51;
    expect_opt_error(f, &o, PDT_EINVAL, "max_export_batch_size");
}

static void test_limits_env(void **state)
{
    fixture *f = *state;

    set("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4096");
    set("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "0");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.attr_value_len_limit, 4096);
    assert_int_equal(f->cfg.attr_count_limit, 0);
    expect_no_log(f);
    set("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-5");
    set("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "65537");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.attr_value_len_limit, 1024 * 1024);
    assert_int_equal(f->cfg.attr_count_limit, 128);
    assert_int_equal(f->cap.warns, 2);
    assert_int_equal(count_substr(f->cap.text,
                     "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"), 1);
    assert_int_equal(count_substr(f->cap.text,
                     "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"), 1);
    reset_log(f);
    set("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "0");
    set("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "65536");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.attr_value_len_limit, 0);
    assert_int_equal(f->cfg.attr_count_limit, 65536);
    expect_no_log(f);
}

static void test_console_path(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    set("PDTRACE_CONSOLE_PATH", "/tmp/spans.jsonl");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.console_path, "/tmp/spans.jsonl");
    set("PDTRACE_CONSOLE_PATH", "-");
    resolve_ok(f, NULL);
    assert_null(f->cfg.console_path);
    o.console_path = "/var/log/x.jsonl";
    resolve_ok(f, &o);
    assert_string_equal(f->cfg.console_path, "/var/log/x.jsonl");
    o.console_path = "-";
    set("PDTRACE_CONSOLE_PATH", "/tmp/spans.jsonl");
    resolve_ok(f, &o);
    assert_null(f->cfg.console_path);
    expect_no_log(f);
}

static void test_spool_env(void **state)
{
    fixture *f = *state;

    set("PDTRACE_SPOOL_DIR", "/var/spool/pdtrace");
    set("PDTRACE_SPOOL_MAX_BYTES", "1048576");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.spool_dir, "/var/spool/pdtrace");
    assert_int_equal(f->cfg.spool_max_bytes, 1048576);
    expect_no_log(f);
    set("PDTRACE_SPOOL_MAX_BYTES", "lots");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.spool_max_bytes, 256 * 1024 * 1024);
    expect_one_warning(f, "PDTRACE_SPOOL_MAX_BYTES");
}

static void test_max_queue_bytes(void **state)
{
    static const char *const bad[] = { "65535", "0", "-1", "lots", "1e9" };
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    size_t i;

    set("PDTRACE_MAX_QUEUE_BYTES", "4194304");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.max_queue_bytes, 4194304);
    /* A budget under 8 MiB caps values at an eighth of it. */
    assert_int_equal(f->cfg.value_cap, 524288);
    assert_int_equal(f->cfg.attr_value_len_limit, 524288);
    expect_no_log(f);
    /* A length limit that is set wins over the cap, for attributes only. */
    set("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "2000000");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.attr_value_len_limit, 2000000);
    assert_int_equal(f->cfg.value_cap, 524288);
    /* The option wins over the variable; 0 leaves it to the variable. */
    o.max_queue_bytes = 65536;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_queue_bytes, 65536);
    assert_int_equal(f->cfg.value_cap, 8192);
    o.max_queue_bytes = 0;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_queue_bytes, 4194304);
    /* Options that end before the field do not read it. */
    o.max_queue_bytes = 1;
    o.size = offsetof(pdt_tracer_options, max_queue_bytes);
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_queue_bytes, 4194304);
    o.size = sizeof(o);
    expect_opt_error(f, &o, PDT_EINVAL, "max_queue_bytes");
    o.max_queue_bytes = -5;
    expect_opt_error(f, &o, PDT_EINVAL, "max_queue_bytes");
    expect_no_log(f);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set("PDTRACE_MAX_QUEUE_BYTES", bad[i]);
        reset_log(f);
        resolve_ok(f, NULL);
        assert_int_equal(f->cfg.max_queue_bytes, 64 * 1024 * 1024);
        expect_one_warning(f, "PDTRACE_MAX_QUEUE_BYTES");
    }
}

static void test_max_concurrent(void **state)
{
    static const char *const bad[] = { "0", "65", "-1", "two", "4.5" };
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    size_t i;

    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.max_concurrent, 4);
    set("PDTRACE_EXPORT_MAX_CONCURRENT", " 16 ");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.max_concurrent, 16);
    expect_no_log(f);
    /* The option wins; 0 leaves it to the environment. */
    o.max_concurrent_exports = 1;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_concurrent, 1);
    o.max_concurrent_exports = 0;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_concurrent, 16);
    /* Options that end before the field do not read it. */
    o.max_concurrent_exports = 1000;
    o.size = offsetof(pdt_tracer_options, max_concurrent_exports);
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_concurrent, 16);
    o.size = sizeof(o);
    expect_opt_error(f, &o, PDT_EINVAL, "max_concurrent_exports");
    o.max_concurrent_exports = -2;
    expect_opt_error(f, &o, PDT_EINVAL, "max_concurrent_exports");
    o.max_concurrent_exports = 64;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.max_concurrent, 64);
    expect_no_log(f);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set("PDTRACE_EXPORT_MAX_CONCURRENT", bad[i]);
        reset_log(f);
        resolve_ok(f, NULL);
        assert_int_equal(f->cfg.max_concurrent, 4);
        expect_one_warning(f, "PDTRACE_EXPORT_MAX_CONCURRENT");
    }
}

static void test_tail_ttft_env(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    set("PDTRACE_TAIL_TTFT_MS", "250.5");
    resolve_ok(f, NULL);
    assert_true(f->cfg.tail_ttft_threshold_ms == 250.5);
    expect_no_log(f);
    o.tail_ttft_threshold_ms = 900.0;
    resolve_ok(f, &o);
    assert_true(f->cfg.tail_ttft_threshold_ms == 900.0);
    set("PDTRACE_TAIL_TTFT_MS", "-3");
    resolve_ok(f, NULL);
    assert_true(f->cfg.tail_ttft_threshold_ms == 0.0);
    expect_one_warning(f, "PDTRACE_TAIL_TTFT_MS");
    reset_log(f);
    set("PDTRACE_TAIL_TTFT_MS", "inf");
    resolve_ok(f, NULL);
    assert_true(f->cfg.tail_ttft_threshold_ms == 0.0);
    expect_one_warning(f, "PDTRACE_TAIL_TTFT_MS");
    o.tail_keep_errors = -1;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.tail_keep_errors, 0);
    o.tail_keep_errors = 1;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.tail_keep_errors, 1);
}

/* ------------------------------------------------------------------ */
/* Precedence, ignore_environment, warnings */

static void test_options_win(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    set("OTEL_SDK_DISABLED", "true");
    set("OTEL_TRACES_EXPORTER", "none");
    set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318");
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/t");
    set("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "from=env");
    set("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd");
    set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "111");
    set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/env/ca");
    set("OTEL_TRACES_SAMPLER", "traceidratio");
    set("OTEL_TRACES_SAMPLER_ARG", "0.1");
    set("OTEL_BSP_SCHEDULE_DELAY", "1");
    set("OTEL_BSP_MAX_QUEUE_SIZE", "10");
    set("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "5");
    set("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "5");
    set("PDTRACE_SPOOL_DIR", "/env/spool");
    set("PDTRACE_SPOOL_MAX_BYTES", "5000");
    set("OTEL_SERVICE_NAME", "env-name");

    o.disabled = -1;
    o.exporter = PDT_EXPORTER_CONSOLE;
    o.endpoint = "https://opt:4318/v1/traces";
    o.headers = "from=options";
    o.compression = PDT_COMPRESSION_GZIP;
    o.timeout_ms = 222;
    o.ca_file = "/opt/ca";
    o.sampler = PDT_SAMPLER_PARENTBASED_TRACEIDRATIO;
    o.sampler_ratio = 0.5;
    o.sampler_ratio_set = 1;
    o.schedule_delay_ms = 333;
    o.max_queue_size = 444;
    o.attribute_count_limit = 7;
    o.attribute_value_length_limit = 77;
    o.spool_dir = "/opt/spool";
    o.spool_max_bytes = 9999;
    o.service_name = "opt-name";
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.disabled, 0);
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_CONSOLE);
    assert_string_equal(f->cfg.endpoint, "https://opt:4318/v1/traces");
    assert_string_equal(pdti_kvlist_get(&f->cfg.headers, "from"), "options");
    assert_int_equal(f->cfg.compression, PDT_COMPRESSION_GZIP);
    assert_int_equal(f->cfg.timeout_ms, 222);
    assert_string_equal(f->cfg.ca_file, "/opt/ca");
    assert_int_equal(f->cfg.sampler, PDT_SAMPLER_PARENTBASED_TRACEIDRATIO);
    assert_true(f->cfg.sampler_ratio == 0.5);
    assert_int_equal(f->cfg.schedule_delay_ms, 333);
    assert_int_equal(f->cfg.max_queue_size, 444);
    assert_int_equal(f->cfg.attr_count_limit, 7);
    assert_int_equal(f->cfg.attr_value_len_limit, 77);
    assert_string_equal(f->cfg.spool_dir, "/opt/spool");
    assert_int_equal(f->cfg.spool_max_bytes, 9999);
    assert_string_equal(f->cfg.service_name, "opt-name");
    expect_no_log(f);

    /* disabled = 1 wins over OTEL_SDK_DISABLED=false. */
    set("OTEL_SDK_DISABLED", "false");
    o.disabled = 1;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.disabled, 1);
    /* Unset option fields still come from the environment. */
    assert_int_equal(f->cfg.export_timeout_ms, 30000);
    o.timeout_ms = 0;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.timeout_ms, 111);
    /* A ratio from the options with the sampler from the environment. */
    o.sampler = 0;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.sampler, PDT_SAMPLER_TRACEIDRATIO);
    assert_true(f->cfg.sampler_ratio == 0.5);
    o.sampler_ratio_set = 0;
    resolve_ok(f, &o);
    assert_true(f->cfg.sampler_ratio == 0.1);
    /* A negative value length limit in the options means "environment". */
    o.attribute_value_length_limit = -1;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.attr_value_len_limit, 5);
}

static void test_ignore_environment(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    size_t i;

    /* Every variable set, most of them to junk. */
    for (i = 0; i < N_VARS; i++)
        set(all_vars[i], "%G1 junk");
    set("OTEL_SDK_DISABLED", "true");
    set("OTEL_SERVICE_NAME", "env-name");
    set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318");
    o.ignore_environment = 1;
    resolve_ok(f, &o);
    expect_no_log(f);
    assert_int_equal(f->cfg.disabled, 0);
    assert_string_equal(f->cfg.service_name, "llm-d-pd-proxy");
    assert_string_equal(f->cfg.endpoint, PDTI_DEFAULT_ENDPOINT);
    assert_int_equal(f->cfg.headers.count, 0);
    assert_null(f->cfg.ca_file);
    assert_null(f->cfg.console_path);
    assert_null(f->cfg.spool_dir);
    assert_int_equal(f->cfg.max_queue_size, 2048);
    assert_int_equal(f->cfg.timeout_ms, 10000);
    assert_string_equal(pdti_kvlist_get(&f->cfg.resource, "service.name"),
                        "llm-d-pd-proxy");
    /* Options still apply. */
    o.service_name = "opt";
    o.resource_attributes = "a=1";
    resolve_ok(f, &o);
    assert_string_equal(f->cfg.service_name, "opt");
    assert_string_equal(pdti_kvlist_get(&f->cfg.resource, "a"), "1");
    expect_no_log(f);
}

static void test_bad_env_warned_once(void **state)
{
    static const char *const vars[] = {
        "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_TRACES_SAMPLER", "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "PDTRACE_SPOOL_MAX_BYTES",
        "PDTRACE_TAIL_TTFT_MS", "PDTRACE_EXPORT_MAX_CONCURRENT",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_ENDPOINT",
    };
    fixture *f = *state;
    char needle[64];
    size_t i;
    int n;

    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        set(vars[i], "bogus");
    resolve_ok(f, NULL);
    assert_int_equal(f->cap.warns, (int)(sizeof(vars) / sizeof(vars[0])));
    assert_int_equal(f->cap.count, f->cap.warns);
    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        /* The name followed by '=' or ':' so prefixes do not collide. */
        snprintf(needle, sizeof(needle), "%s=", vars[i]);
        n = count_substr(f->cap.text, needle);
        snprintf(needle, sizeof(needle), "%s:", vars[i]);
        n += count_substr(f->cap.text, needle);
        if (n != 1)
            fail_msg("%s reported %d times:\n%s", vars[i], n, f->cap.text);
    }
    /* The configuration is the default one. */
    assert_int_equal(f->cfg.exporter, PDT_EXPORTER_OTLP);
    assert_string_equal(f->cfg.endpoint, PDTI_DEFAULT_ENDPOINT);
    assert_int_equal(f->cfg.max_queue_size, 2048);
    /* A bad environment value never lands in the last error. */
    assert_int_equal(pdt_last_error_code(), PDT_OK);
}

/* ------------------------------------------------------------------ */
/* Resource */

static void test_resource_defaults(void **state)
{
    fixture *f = *state;
    const pdti_kvlist *r = &f->cfg.resource;
    char pid[32], host[256];

    resolve_ok(f, NULL);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    assert_string_equal(pdti_kvlist_get(r, "service.name"), "llm-d-pd-proxy");
    assert_string_equal(pdti_kvlist_get(r, "telemetry.sdk.name"),
                        "libpdtrace");
    assert_string_equal(pdti_kvlist_get(r, "telemetry.sdk.language"), "c");
    assert_string_equal(pdti_kvlist_get(r, "telemetry.sdk.version"),
                        PDT_VERSION_STRING);
    assert_string_equal(pdti_kvlist_get(r, "process.pid"), pid);
    memset(host, 0, sizeof(host));
    if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0')
        assert_string_equal(pdti_kvlist_get(r, "host.name"), host);
    /* The order is fixed. */
    assert_string_equal(r->items[0].key, "service.name");
    assert_string_equal(r->items[1].key, "telemetry.sdk.name");
    assert_string_equal(r->items[2].key, "telemetry.sdk.language");
    assert_string_equal(r->items[3].key, "telemetry.sdk.version");
    assert_string_equal(r->items[4].key, "process.pid");
}

static void test_resource_merge(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    const pdti_kvlist *r = &f->cfg.resource;

    set("OTEL_RESOURCE_ATTRIBUTES",
        "a=1,deployment.environment=prod%20eu,b=2");
    o.resource_attributes = "b=3,c=x%2Cy";
    resolve_ok(f, &o);
    assert_true(r->count >= 8);
    assert_string_equal(r->items[0].key, "a");
    assert_string_equal(r->items[0].value, "1");
    assert_string_equal(r->items[1].key, "deployment.environment");
    assert_string_equal(r->items[1].value, "prod eu");
    assert_string_equal(r->items[2].key, "b");
    assert_string_equal(r->items[2].value, "3"); /* options win */
    assert_string_equal(r->items[3].key, "c");
    assert_string_equal(r->items[3].value, "x,y");
    assert_string_equal(r->items[4].key, "service.name");
    assert_string_equal(r->items[4].value, "llm-d-pd-proxy");
    assert_string_equal(r->items[5].key, "telemetry.sdk.name");
    expect_no_log(f);
}

static void test_resource_service_name_precedence(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    const pdti_kvlist *r = &f->cfg.resource;

    set("OTEL_RESOURCE_ATTRIBUTES", "x=1,service.name=from-attrs");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.service_name, "from-attrs");
    /* The key keeps its place in the list. */
    assert_string_equal(r->items[1].key, "service.name");
    assert_string_equal(r->items[1].value, "from-attrs");

    set("OTEL_SERVICE_NAME", "from-service-name");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.service_name, "from-service-name");
    assert_string_equal(pdti_kvlist_get(r, "service.name"),
                        "from-service-name");

    o.resource_attributes = "service.name=from-opt-attrs";
    resolve_ok(f, &o);
    assert_string_equal(f->cfg.service_name, "from-opt-attrs");
    assert_string_equal(pdti_kvlist_get(r, "service.name"), "from-opt-attrs");

    o.service_name = "from-opt";
    resolve_ok(f, &o);
    assert_string_equal(f->cfg.service_name, "from-opt");
    assert_string_equal(pdti_kvlist_get(r, "service.name"), "from-opt");

    /* An empty service.name in the attributes does not count. */
    unsetenv("OTEL_SERVICE_NAME");
    set("OTEL_RESOURCE_ATTRIBUTES", "service.name=");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.service_name, "llm-d-pd-proxy");
    assert_string_equal(pdti_kvlist_get(r, "service.name"), "llm-d-pd-proxy");
    expect_no_log(f);
}

static void test_resource_bad_env_discarded(void **state)
{
    fixture *f = *state;
    const pdti_kvlist *r = &f->cfg.resource;

    set("OTEL_SERVICE_NAME", "svc");
    set("OTEL_RESOURCE_ATTRIBUTES", "good=1,service.name=x,bad=%G1");
    resolve_ok(f, NULL);
    expect_one_warning(f, "OTEL_RESOURCE_ATTRIBUTES");
    assert_null(pdti_kvlist_get(r, "good"));
    assert_string_equal(f->cfg.service_name, "svc");
    assert_string_equal(pdti_kvlist_get(r, "service.name"), "svc");

    reset_log(f);
    unsetenv("OTEL_SERVICE_NAME");
    set("OTEL_RESOURCE_ATTRIBUTES", "good=1,service.name=x,trailing%");
    resolve_ok(f, NULL);
    expect_one_warning(f, "OTEL_RESOURCE_ATTRIBUTES");
    assert_null(pdti_kvlist_get(r, "good"));
    assert_string_equal(f->cfg.service_name, "llm-d-pd-proxy");
}

static void test_resource_user_keys_kept(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    const pdti_kvlist *r = &f->cfg.resource;
    size_t i;
    int seen = 0;

    set("OTEL_RESOURCE_ATTRIBUTES",
        "telemetry.sdk.language=python,host.name=pod-7");
    o.resource_attributes = "process.pid=1,telemetry.sdk.name=wrapper";
    resolve_ok(f, &o);
    assert_string_equal(pdti_kvlist_get(r, "telemetry.sdk.language"),
                        "python");
    assert_string_equal(pdti_kvlist_get(r, "host.name"), "pod-7");
    assert_string_equal(pdti_kvlist_get(r, "process.pid"), "1");
    assert_string_equal(pdti_kvlist_get(r, "telemetry.sdk.name"), "wrapper");
    assert_string_equal(pdti_kvlist_get(r, "telemetry.sdk.version"),
                        PDT_VERSION_STRING);
    /* No key appears twice. */
    for (i = 0; i < r->count; i++) {
        if (strcmp(r->items[i].key, "host.name") == 0)
            seen++;
    }
    assert_int_equal(seen, 1);
}

/* ------------------------------------------------------------------ */
/* Bad options */

static void test_bad_option_size(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    o.size = 0;
    expect_opt_error(f, &o, PDT_EINVAL, "size");
    o.size = offsetof(pdt_tracer_options, spool_dir) - 1;
    expect_opt_error(f, &o, PDT_EINVAL, "size");
    o.size = offsetof(pdt_tracer_options, spool_dir);
    resolve_ok(f, &o);
    /* Larger than this library knows (a newer header): fine. */
    o.size = sizeof(o) + 64;
    resolve_ok(f, &o);
}

static void test_short_size_skips_spool(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    set("PDTRACE_SPOOL_DIR", "/env/spool");
    /* Fields past `size` are not read, whatever they contain. */
    o.spool_dir = "/must/not/read";
    o.spool_max_bytes = -42;
    o.size = offsetof(pdt_tracer_options, spool_dir);
    resolve_ok(f, &o);
    assert_string_equal(f->cfg.spool_dir, "/env/spool");
    assert_int_equal(f->cfg.spool_max_bytes, 256 * 1024 * 1024);
    /* spool_dir covered, spool_max_bytes not. */
    o.size = offsetof(pdt_tracer_options, spool_max_bytes);
    resolve_ok(f, &o);
    assert_string_equal(f->cfg.spool_dir, "/must/not/read");
    assert_int_equal(f->cfg.spool_max_bytes, 256 * 1024 * 1024);
    /* Both covered: the bad size is now seen. */
    o.size = sizeof(o);
    expect_opt_error(f, &o, PDT_EINVAL, "spool_max_bytes");
}

static void test_bad_option_enums(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    o.endpoint = "http://x:4318/v1/traces"; /* allocated before the error */
    o.exporter = 4;
    expect_opt_error(f, &o, PDT_EINVAL, "exporter");
    o.exporter = -1;
    expect_opt_error(f, &o, PDT_EINVAL, "exporter");
    o.exporter = 0;
    o.compression = 9;
    expect_opt_error(f, &o, PDT_EINVAL, "compression");
    o.compression = 0;
    o.sampler = 7;
    o.headers = "a=b"; /* allocated before the error */
    expect_opt_error(f, &o, PDT_EINVAL, "sampler");
    o.sampler = 0;
    o.disabled = 2;
    expect_opt_error(f, &o, PDT_EINVAL, "disabled");
    o.disabled = 0;
    o.tail_keep_errors = 3;
    expect_opt_error(f, &o, PDT_EINVAL, "tail_keep_errors");
}

static void test_bad_option_numbers(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    o.resource_attributes = "a=1";
    o.ca_file = "/x";
    o.timeout_ms = -1;
    expect_opt_error(f, &o, PDT_EINVAL, "timeout_ms");
    o.timeout_ms = 3600001;
    expect_opt_error(f, &o, PDT_EINVAL, "timeout_ms");
    o.timeout_ms = 0;
    o.schedule_delay_ms = -5;
    expect_opt_error(f, &o, PDT_EINVAL, "schedule_delay_ms");
    o.schedule_delay_ms = 0;
    o.export_timeout_ms = INT64_MAX;
    expect_opt_error(f, &o, PDT_EINVAL, "export_timeout_ms");
    o.export_timeout_ms = 0;
    o.max_queue_size = -5;
    expect_opt_error(f, &o, PDT_EINVAL, "max_queue_size");
    o.max_queue_size = 1048577;
    expect_opt_error(f, &o, PDT_EINVAL, "max_queue_size");
    o.max_queue_size = 0;
    o.max_export_batch_size = -1;
    expect_opt_error(f, &o, PDT_EINVAL, "max_export_batch_size");
    o.max_export_batch_size = 0;
    o.attribute_count_limit = -1;
    expect_opt_error(f, &o, PDT_EINVAL, "attribute_count_limit");
    o.attribute_count_limit = 65537;
    expect_opt_error(f, &o, PDT_EINVAL, "attribute_count_limit");
    o.attribute_count_limit = 0;
    o.sampler_ratio_set = 1;
    o.sampler_ratio = 1.5;
    expect_opt_error(f, &o, PDT_EINVAL, "sampler_ratio");
    o.sampler_ratio = -0.1;
    expect_opt_error(f, &o, PDT_EINVAL, "sampler_ratio");
    o.sampler_ratio = NAN;
    expect_opt_error(f, &o, PDT_EINVAL, "sampler_ratio");
    o.sampler_ratio = 1.0;
    resolve_ok(f, &o);
    o.sampler_ratio = 0.0;
    resolve_ok(f, &o);
    assert_true(f->cfg.sampler_ratio == 0.0);
    o.sampler_ratio_set = 0;
    o.sampler_ratio = NAN; /* not looked at */
    resolve_ok(f, &o);
    o.tail_ttft_threshold_ms = -1.0;
    expect_opt_error(f, &o, PDT_EINVAL, "tail_ttft_threshold_ms");
    o.tail_ttft_threshold_ms = NAN;
    expect_opt_error(f, &o, PDT_EINVAL, "tail_ttft_threshold_ms");
    o.tail_ttft_threshold_ms = INFINITY;
    expect_opt_error(f, &o, PDT_EINVAL, "tail_ttft_threshold_ms");
    o.tail_ttft_threshold_ms = 0.0;
    o.spool_max_bytes = -1;
    expect_opt_error(f, &o, PDT_EINVAL, "spool_max_bytes");
    o.spool_max_bytes = 0;
    resolve_ok(f, &o);
}

static void test_bad_option_strings(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    o.endpoint = "localhost:4318";
    expect_opt_error(f, &o, PDT_EPARSE, "endpoint");
    o.endpoint = "";
    expect_opt_error(f, &o, PDT_EPARSE, "endpoint");
    o.endpoint = "http://host/with space";
    expect_opt_error(f, &o, PDT_EPARSE, "endpoint");
    o.endpoint = NULL;
    o.resource_attributes = "a=1,b";
    expect_opt_error(f, &o, PDT_EPARSE, "resource_attributes");
    o.resource_attributes = "a=%G1";
    expect_opt_error(f, &o, PDT_EPARSE, "resource_attributes");
    o.resource_attributes = NULL;
    o.service_name = "";
    expect_opt_error(f, &o, PDT_EINVAL, "service_name");
    o.service_name = NULL;
    o.ca_file = "";
    expect_opt_error(f, &o, PDT_EINVAL, "ca_file");
    o.ca_file = NULL;
    o.client_cert = "";
    expect_opt_error(f, &o, PDT_EINVAL, "client_cert");
    o.client_cert = NULL;
    o.client_key = "";
    expect_opt_error(f, &o, PDT_EINVAL, "client_key");
    o.client_key = NULL;
    o.console_path = "";
    expect_opt_error(f, &o, PDT_EINVAL, "console_path");
    o.console_path = NULL;
    o.spool_dir = "";
    expect_opt_error(f, &o, PDT_EINVAL, "spool_dir");
    o.spool_dir = NULL;
    /* Options set in code are used as given: no path appended. */
    o.endpoint = "http://h:1/custom";
    resolve_ok(f, &o);
    assert_string_equal(f->cfg.endpoint, "http://h:1/custom");
    expect_no_log(f);
}

static void test_config_free(void **state)
{
    pdti_config cfg;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    pdti_config_free(&cfg);
    pdti_config_free(NULL);
    assert_int_equal(pdti_config_resolve(&cfg, NULL, NULL), PDT_OK);
    pdti_config_free(&cfg);
    assert_null(cfg.endpoint);
    assert_null(cfg.resource.items);
    pdti_config_free(&cfg); /* twice: harmless */
}

#ifdef PDTI_TEST_WRAP_MALLOC
/*
 * Fails the 1st, 2nd, ... allocation of a resolution that uses every
 * source, until one succeeds: each attempt must return PDT_ENOMEM with
 * the configuration freed (valgrind and ASan check nothing leaks), or
 * PDT_OK with the same result as without injection.
 */
static void test_out_of_memory(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    long n;
    int st;

    set("OTEL_RESOURCE_ATTRIBUTES", "a=1,b=x%20y,service.name=r");
    set("OTEL_SERVICE_NAME", "svc");
    set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/");
    set("OTEL_EXPORTER_OTLP_HEADERS", "k=v,k2=v%2C2");
    set("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca");
    set("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/key");
    set("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/cert");
    set("PDTRACE_CONSOLE_PATH", "/tmp/x");
    set("PDTRACE_SPOOL_DIR", "/tmp/spool");
    o.resource_attributes = "b=2,c=3";
    for (n = 1; n < 10000; n++) {
        pdti_config_free(&f->cfg);
        failures_injected = 0;
        fail_countdown = n;
        st = pdti_config_resolve(&f->cfg, &o, &f->lg);
        fail_countdown = 0;
        if (failures_injected == 0) {
            assert_int_equal(st, PDT_OK);
            break;
        }
        if (st != PDT_ENOMEM)
            fail_msg("allocation %ld failed: status %d", n, st);
        assert_int_equal(pdt_last_error_code(), PDT_ENOMEM);
        assert_null(f->cfg.endpoint);
        assert_null(f->cfg.resource.items);
    }
    assert_true(n > 10); /* the injection did reach config.c */
    assert_string_equal(f->cfg.service_name, "svc");
    assert_string_equal(pdti_kvlist_get(&f->cfg.resource, "b"), "2");
    assert_string_equal(f->cfg.endpoint, "http://c:4318/v1/traces");
    assert_string_equal(pdti_kvlist_get(&f->cfg.headers, "k2"), "v,2");
}

/* The same for the parsers used on their own. */
static void test_out_of_memory_parsers(void **state)
{
    pdti_kvlist l = { NULL, 0 };
    char *s = NULL;
    long n;
    int st;

    (void)state;
    for (n = 1; n < 1000; n++) {
        failures_injected = 0;
        fail_countdown = n;
        st = pdti_kvlist_parse("a=1,b=%20,a=3,c=4", 17, &l);
        fail_countdown = 0;
        if (failures_injected == 0) {
            assert_int_equal(st, PDT_OK);
            break;
        }
        assert_int_equal(st, PDT_ENOMEM);
        assert_null(l.items);
        assert_int_equal(l.count, 0);
    }
    assert_int_equal(l.count, 3);
    for (n = 1; n < 10; n++) {
        failures_injected = 0;
        fail_countdown = n;
        st = pdti_kvlist_set(&l, "new", "value");
        fail_countdown = 0;
        if (failures_injected == 0)
            break;
        assert_int_equal(st, PDT_ENOMEM);
        assert_int_equal(l.count, 3); /* unchanged */
    }
    assert_int_equal(l.count, 4);
    pdti_kvlist_free(&l);
    fail_countdown = 1;
    assert_int_equal(pdti_percent_decode("abc", 3, &s), PDT_ENOMEM);
    fail_countdown = 0;
    assert_null(s);
}
#endif

static void test_protocol_env(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.protocol, PDT_PROTOCOL_HTTP_PROTOBUF);
    set("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.protocol, PDT_PROTOCOL_GRPC);
    /* gRPC's default port, and no /v1/traces on the generic variable */
    assert_string_equal(f->cfg.endpoint, "http://localhost:4317");
    set("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317");
    resolve_ok(f, NULL);
    assert_string_equal(f->cfg.endpoint, "https://collector:4317");
    /* the signal's variable wins */
    set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", " http/json ");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.protocol, PDT_PROTOCOL_HTTP_JSON);
    assert_string_equal(f->cfg.endpoint, "https://collector:4317/v1/traces");
    set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.protocol, PDT_PROTOCOL_HTTP_PROTOBUF);
    /* the option wins over both */
    o.protocol = PDT_PROTOCOL_GRPC;
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.protocol, PDT_PROTOCOL_GRPC);
    expect_no_log(f);
}

static void test_protocol_bad(void **state)
{
    fixture *f = *state;
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;

    /* never ignored: an unknown value fails the open */
    set("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc/json");
    expect_opt_error(f, NULL, PDT_EINVAL, "OTEL_EXPORTER_OTLP_PROTOCOL");
    set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http");
    expect_opt_error(f, NULL, PDT_EINVAL,
                     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
    /* empty is unset, as for every variable: the generic one decides */
    set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "");
    set("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    resolve_ok(f, NULL);
    assert_int_equal(f->cfg.protocol, PDT_PROTOCOL_GRPC);
    clear_env();
    o.protocol = 4;
    expect_opt_error(f, &o, PDT_EINVAL, "protocol");
    o.protocol = -1;
    expect_opt_error(f, &o, PDT_EINVAL, "protocol");
    /* a caller built against the older struct: the field is not read */
    o.size = offsetof(pdt_tracer_options, protocol);
    resolve_ok(f, &o);
    assert_int_equal(f->cfg.protocol, PDT_PROTOCOL_HTTP_PROTOBUF);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_parse_int_valid),
        T(test_protocol_env),
        T(test_protocol_bad),
        T(test_parse_int_malformed),
        T(test_parse_int_range_overflow),
        T(test_parse_double_valid),
        T(test_parse_double_malformed),
        T(test_parse_double_range),
        T(test_parse_bool),
        T(test_percent_decode),
        T(test_kvlist_parse_valid),
        T(test_kvlist_parse_trim_decode),
        T(test_kvlist_parse_duplicates),
        T(test_kvlist_parse_bad),
        T(test_kvlist_set_get_free),
        T(test_defaults),
        T(test_null_options),
        T(test_empty_env_is_unset),
        T(test_sdk_disabled_env),
        T(test_service_name_env),
        T(test_exporter_env),
        T(test_endpoint_join),
        T(test_traces_endpoint),
        T(test_endpoint_bad_env),
        T(test_headers_env),
        T(test_headers_traces_wins),
        T(test_headers_never_logged),
        T(test_headers_injection_rejected),
        T(test_timeout_env),
        T(test_compression_env),
        T(test_compression_level_env),
        T(test_compression_level_option),
        T(test_tls_env),
        T(test_sampler_env),
        T(test_sampler_arg_env),
        T(test_bsp_env),
        T(test_batch_clamped),
        T(test_limits_env),
        T(test_console_path),
        T(test_spool_env),
        T(test_max_queue_bytes),
        T(test_max_concurrent),
        T(test_tail_ttft_env),
        T(test_options_win),
        T(test_ignore_environment),
        T(test_bad_env_warned_once),
        T(test_resource_defaults),
        T(test_resource_merge),
        T(test_resource_service_name_precedence),
        T(test_resource_bad_env_discarded),
        T(test_resource_user_keys_kept),
        T(test_bad_option_size),
        T(test_short_size_skips_spool),
        T(test_bad_option_enums),
        T(test_bad_option_numbers),
        T(test_bad_option_strings),
        T(test_config_free),
#ifdef PDTI_TEST_WRAP_MALLOC
        T(test_out_of_memory),
        T(test_out_of_memory_parsers),
#endif
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
