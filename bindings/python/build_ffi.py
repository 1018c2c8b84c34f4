"""cffi builder for the pdtrace extension (API, out-of-line mode).

The declarations below mirror include/pdtrace/*.h. Struct layouts and
constant values are taken from the headers by the C compiler (the "..."
markers), so the binding cannot drift from the library it is compiled
against.

Two ways to get libpdtrace:

- bundled (the default): libpdtrace's C sources (lib/*.c of this
  repository, or the copy an sdist carries in _csrc/) are compiled into the
  extension itself, with hidden visibility, so the installed package needs
  no libpdtrace on the machine, only the shared libraries libcurl, libzstd,
  zlib and nanopb's runtime (which `auditwheel repair` bundles into a
  manylinux wheel). Building needs their -dev packages and nanopb's
  generator (nanopb_generator.py) unless the sources already carry the
  generated otlp_trace.pb.c.
- system: with PDTRACE_SYSTEM_LIBRARY=1 in the environment, the extension
  links the libpdtrace that pkg-config finds (name "libpdtrace"; set
  PKG_CONFIG_PATH for a non-standard prefix) and records its library
  directory as the run path.
"""
import glob
import os
import shutil
import subprocess

from cffi import FFI

MIN_VERSION = (0, 1, 0)

CDEF = r"""
typedef enum pdt_status {
    PDT_OK, PDT_EINVAL, PDT_ENOMEM, PDT_ESTATE, PDT_ERANGE, PDT_EPARSE,
    PDT_ETIMEOUT, PDT_ELIMIT, PDT_EBUFSIZE, PDT_EIO, PDT_ECLOSED,
    PDT_ENOTSUP, PDT_EINTERNAL, ...
} pdt_status;

const char *pdt_status_str(int status);
const char *pdt_last_error(void);
int pdt_last_error_code(void);
void pdt_clear_error(void);
const char *pdt_version(void);
unsigned pdt_version_number(void);
uint64_t pdt_now_ns(void);

#define PDT_VERSION_NUMBER ...

/* tracer.h */
typedef struct pdt_tracer pdt_tracer;
typedef void (*pdt_log_fn)(void *userdata, int level, const char *message);

typedef struct pdt_tracer_options {
    size_t size;
    const char *service_name;
    const char *resource_attributes;
    int exporter;
    const char *endpoint;
    const char *headers;
    int compression;
    int64_t timeout_ms;
    const char *console_path;
    const char *ca_file;
    const char *client_cert;
    const char *client_key;
    int64_t schedule_delay_ms;
    int64_t export_timeout_ms;
    int64_t max_queue_size;
    int64_t max_export_batch_size;
    int64_t attribute_count_limit;
    int64_t attribute_value_length_limit;
    int sampler;
    double sampler_ratio;
    int sampler_ratio_set;
    double tail_ttft_threshold_ms;
    int tail_keep_errors;
    int disabled;
    int ignore_environment;
    pdt_log_fn log_fn;
    void *log_userdata;
    const char *spool_dir;
    int64_t spool_max_bytes;
    int64_t max_concurrent_exports;
    int compression_level;
    int protocol;
    const char *metrics_tenants;
    int64_t max_queue_bytes;
    ...;
} pdt_tracer_options;

int pdt_tracer_options_init(pdt_tracer_options *opts, size_t size);
int pdt_tracer_open(pdt_tracer **out, const pdt_tracer_options *opts);
int pdt_tracer_flush(pdt_tracer *tracer, int64_t timeout_ms,
                     uint64_t *pending_out);
int pdt_tracer_close(pdt_tracer *tracer, int64_t timeout_ms,
                     uint64_t *dropped_out);

typedef struct pdt_stats {
    size_t size;
    uint64_t spans_started;
    uint64_t spans_ended;
    uint64_t spans_not_sampled;
    uint64_t spans_exported;
    uint64_t spans_rejected;
    uint64_t dropped_queue_full;
    uint64_t dropped_export_failed;
    uint64_t dropped_shutdown;
    uint64_t dropped_disabled;
    uint64_t export_requests;
    uint64_t export_retries;
    uint64_t export_failures;
    uint64_t bytes_sent;
    uint64_t queue_depth;
    uint64_t attributes_dropped;
    uint64_t values_truncated;
    uint64_t strings_sanitized;
    uint64_t requests_completed;
    uint64_t spans_spooled;
    uint64_t spans_replayed;
    uint64_t spool_dropped;
    uint64_t spool_corrupt;
    ...;
} pdt_stats;

int pdt_tracer_stats(pdt_tracer *tracer, pdt_stats *out);

/* span.h */
typedef struct pdt_span pdt_span;

#define PDT_TRACEPARENT_SIZE ...

typedef struct pdt_propagation {
    size_t size;
    char traceparent[...];
    const char *tracestate;
    const char *request_id;
    ...;
} pdt_propagation;

int pdt_span_start(pdt_span **out, pdt_tracer *tracer, const char *name,
                   int kind, const pdt_span *parent, const char *traceparent,
                   const char *tracestate, uint64_t start_ns);
int pdt_span_set_str(pdt_span *span, const char *key, const char *value);
int pdt_span_set_strn(pdt_span *span, const char *key, const char *value,
                      size_t len);
int pdt_span_set_int(pdt_span *span, const char *key, int64_t value);
int pdt_span_set_double(pdt_span *span, const char *key, double value);
int pdt_span_set_bool(pdt_span *span, const char *key, int value);

typedef enum pdt_attr_type {
    PDT_ATTR_STRING, PDT_ATTR_INT, PDT_ATTR_DOUBLE, PDT_ATTR_BOOL, ...
} pdt_attr_type;

typedef struct pdt_attr {
    const char *key;
    int type;
    const char *str;
    size_t str_len;
    int64_t i;
    double d;
    ...;
} pdt_attr;

int pdt_span_set_attrs(pdt_span *span, const pdt_attr *attrs, size_t n);
int pdt_span_add_event(pdt_span *span, const char *name, uint64_t time_ns);
int pdt_span_event_set_str(pdt_span *span, const char *key,
                           const char *value);
int pdt_span_event_set_int(pdt_span *span, const char *key, int64_t value);
int pdt_span_event_set_double(pdt_span *span, const char *key, double value);
int pdt_span_event_set_bool(pdt_span *span, const char *key, int value);
int pdt_span_set_status(pdt_span *span, int code, const char *message);
int pdt_span_inject(const pdt_span *span, pdt_propagation *out);
int pdt_span_ids(const pdt_span *span, char *trace_buf, char *span_buf);
int pdt_span_is_sampled(const pdt_span *span);
int pdt_span_end(pdt_span *span, uint64_t end_ns);
void pdt_span_free(pdt_span *span);
int pdt_traceparent_parse(const char *value, uint8_t trace_id[16],
                          uint8_t span_id[8], uint8_t *flags);

/* request.h */
typedef struct pdt_request pdt_request;

int pdt_request_begin(pdt_request **out, pdt_tracer *tracer,
                      const char *traceparent, const char *tracestate,
                      uint64_t arrival_ns);
int pdt_request_set_id(pdt_request *req, const char *request_id);
const char *pdt_request_id(const pdt_request *req);
int pdt_request_set_mode(pdt_request *req, int mode, const char *reason);
int pdt_request_set_connector(pdt_request *req, const char *connector);
int pdt_request_mark(pdt_request *req, int mark, uint64_t ts_ns);
int pdt_request_tokens(pdt_request *req, uint64_t ts_ns, uint32_t count);
int pdt_request_set_usage(pdt_request *req, int64_t input_tokens,
                          int64_t output_tokens, int64_t cached_input_tokens);
int pdt_request_set_leg(pdt_request *req, int leg, const char *target,
                        int http_status, const char *error_type);
int pdt_request_set_response(pdt_request *req, int http_status,
                             const char *error_type);
int pdt_request_set_str(pdt_request *req, const char *key, const char *value);
int pdt_request_set_int(pdt_request *req, const char *key, int64_t value);
int pdt_request_set_double(pdt_request *req, const char *key, double value);
int pdt_request_set_bool(pdt_request *req, const char *key, int value);
int pdt_request_set_attrs(pdt_request *req, int leg, const pdt_attr *attrs,
                          size_t n);
pdt_span *pdt_request_span(pdt_request *req, int leg);
int pdt_request_inject(const pdt_request *req, int leg,
                       pdt_propagation *out);

#define PDT_BD_QUEUE ...
#define PDT_BD_PREFILL ...
#define PDT_BD_KV_TRANSFER ...
#define PDT_BD_DECODE_TTFT ...
#define PDT_BD_TRUE_TTFT ...
#define PDT_BD_DECODE_DURATION ...
#define PDT_BD_TOTAL ...
#define PDT_BD_TPOT ...

typedef struct pdt_breakdown {
    size_t size;
    uint32_t present;
    double queue_ms;
    double prefill_ms;
    double kv_transfer_overhead_ms;
    double decode_ttft_ms;
    double true_ttft_ms;
    double decode_duration_ms;
    double total_ms;
    double tpot_ms;
    int64_t output_tokens;
    int mode;
    int error;
    int sampled;
    ...;
} pdt_breakdown;

int pdt_request_end(pdt_request *req, uint64_t end_ns, pdt_breakdown *out);
void pdt_request_free(pdt_request *req);

/* metrics.h */
int pdt_request_set_model(pdt_request *req, const char *model);
int pdt_request_set_tenant(pdt_request *req, const char *tenant);
int pdt_tracer_metrics(pdt_tracer *tracer, char *buf, size_t cap,
                       size_t *len_out);

/* open, flush and close that release the GIL while they run. */
int pdtpy_tracer_open(pdt_tracer **out, const pdt_tracer_options *opts);
int pdtpy_tracer_flush(pdt_tracer *tracer, int64_t timeout_ms,
                       uint64_t *pending_out);
int pdtpy_tracer_close(pdt_tracer *tracer, int64_t timeout_ms,
                       uint64_t *dropped_out);
/* pdt_tracer_metrics, also without the GIL (rendering can take a while). */
int pdtpy_tracer_metrics(pdt_tracer *tracer, char *buf, size_t cap,
                         size_t *len_out);

/* Batch setters taking attributes packed in byte strings (see SOURCE). */
int pdtpy_request_attrs(pdt_request *req, int leg, size_t n,
                        const char *keys, const char *types,
                        const char *strs, const char *nums,
                        const char *dbls);
int pdtpy_span_attrs(pdt_span *span, size_t n, const char *keys,
                     const char *types, const char *strs, const char *nums,
                     const char *dbls);
/* Calls sequenced into one foreign call (see SOURCE). */
int pdtpy_request_begin(pdt_request **out, pdt_tracer *tracer,
                        const char *traceparent, const char *tracestate,
                        uint64_t arrival_ns, const char *request_id,
                        const char *connector, const char *model, size_t n,
                        const char *keys, const char *types,
                        const char *strs, const char *nums,
                        const char *dbls);
int pdtpy_request_send(pdt_request *req, int leg, int mark, uint64_t ts_ns,
                       pdt_propagation *out);
int pdtpy_request_leg_done(pdt_request *req, int leg, int mark,
                           uint64_t ts_ns, const char *target,
                           int http_status, const char *error_type);
int pdtpy_request_finish(pdt_request *req, int leg, const char *target,
                         int leg_status, const char *leg_error,
                         int64_t input_tokens, int64_t output_tokens,
                         int64_t cached_input_tokens, int http_status,
                         const char *error_type, uint64_t end_ns,
                         pdt_breakdown *out, int *end_rc);

/* The background log callback, implemented in Python. */
extern "Python" void _pdtrace_log_cb(void *userdata, int level,
                                     const char *message);
"""

# Calls keep the GIL. Every libpdtrace call except open, flush and close
# returns without waiting (the library's thread rule), so releasing and
# re-taking the GIL around each of them (cffi's default, with errno saved
# and restored) would only cost time: about two thirds of a call's price.
# The three calls that may wait release the GIL through the pdtpy_*
# wrappers below, so other threads, and the exporter thread's log
# callback, run meanwhile.
SOURCE = r"""
#include <string.h>
#include <pdtrace.h>
#if PDT_VERSION_NUMBER < ((%d << 16) | (%d << 8) | %d)
#error "libpdtrace is too old for this binding"
#endif

static int pdtpy_tracer_open(pdt_tracer **out, const pdt_tracer_options *o)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pdt_tracer_open(out, o);
    Py_END_ALLOW_THREADS
    return rc;
}

static int pdtpy_tracer_flush(pdt_tracer *t, int64_t ms, uint64_t *pending)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pdt_tracer_flush(t, ms, pending);
    Py_END_ALLOW_THREADS
    return rc;
}

static int pdtpy_tracer_close(pdt_tracer *t, int64_t ms, uint64_t *dropped)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pdt_tracer_close(t, ms, dropped);
    Py_END_ALLOW_THREADS
    return rc;
}

static int pdtpy_tracer_metrics(pdt_tracer *t, char *buf, size_t cap,
                                size_t *len_out)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pdt_tracer_metrics(t, buf, cap, len_out);
    Py_END_ALLOW_THREADS
    return rc;
}

/*
 * Attribute batches come from Python packed in five byte strings, which
 * cffi passes as pointers without converting anything:
 *   keys   the n keys, each followed by its NUL;
 *   types  n bytes, each a pdt_attr_type;
 *   strs   the string values in order, each followed by its NUL;
 *   nums   the integer and bool values in order, as native int64_t;
 *   dbls   the double values in order, as native doubles.
 * They are unpacked into pdt_attr arrays on the stack, PDTPY_CHUNK at a
 * time, and handed to pdt_request_set_attrs() or pdt_span_set_attrs().
 * Like those, every entry is applied; the result is PDT_OK or the first
 * failure.
 */
#define PDTPY_CHUNK 32

static int pdtpy_attrs(pdt_request *req, int leg, pdt_span *span, size_t n,
                       const char *keys, const char *types, const char *strs,
                       const char *nums, const char *dbls)
{
    pdt_attr a[PDTPY_CHUNK];
    size_t j, m = 0;
    int rc = PDT_OK, r;
    if (n == 0)
        return span != NULL ? pdt_span_set_attrs(span, NULL, 0)
                            : pdt_request_set_attrs(req, leg, NULL, 0);
    for (j = 0; j < n; j++) {
        pdt_attr *e = &a[m];
        e->key = keys;
        keys += strlen(keys) + 1;
        e->type = (unsigned char)types[j];
        e->str = NULL;
        e->str_len = 0;
        e->i = 0;
        e->d = 0.0;
        if (e->type == PDT_ATTR_STRING) {
            e->str = strs;
            e->str_len = (size_t)-1;
            strs += strlen(strs) + 1;
        } else if (e->type == PDT_ATTR_DOUBLE) {
            memcpy(&e->d, dbls, sizeof(e->d));
            dbls += sizeof(e->d);
        } else {
            memcpy(&e->i, nums, sizeof(e->i));
            nums += sizeof(e->i);
        }
        if (++m == PDTPY_CHUNK || j + 1 == n) {
            r = span != NULL ? pdt_span_set_attrs(span, a, m)
                             : pdt_request_set_attrs(req, leg, a, m);
            if (rc == PDT_OK)
                rc = r;
            m = 0;
        }
    }
    return rc;
}

static int pdtpy_request_attrs(pdt_request *req, int leg, size_t n,
                               const char *keys, const char *types,
                               const char *strs, const char *nums,
                               const char *dbls)
{
    if (req == NULL)
        return pdt_request_set_attrs(NULL, leg, NULL, 0);
    return pdtpy_attrs(req, leg, NULL, n, keys, types, strs, nums, dbls);
}

static int pdtpy_span_attrs(pdt_span *span, size_t n, const char *keys,
                            const char *types, const char *strs,
                            const char *nums, const char *dbls)
{
    if (span == NULL)
        return pdt_span_set_attrs(NULL, NULL, 0);
    return pdtpy_attrs(NULL, 0, span, n, keys, types, strs, nums, dbls);
}

/*
 * The calls below only sequence public calls, to make one foreign call
 * where the binding would make several in a row. Each applies every step
 * even if an earlier one failed and returns PDT_OK or the first failure
 * (pdt_last_error() then describes the last one).
 */
#define PDTPY_STEP(call) do { int r_ = (call); if (rc == PDT_OK) rc = r_; } \
    while (0)

/* begin, then set_id, set_connector, set_model and the attributes, each
 * when given (NULL, n == 0: skipped). *out is NULL iff begin failed. */
static int pdtpy_request_begin(pdt_request **out, pdt_tracer *t,
                               const char *tp, const char *ts,
                               uint64_t arrival, const char *id,
                               const char *connector, const char *model,
                               size_t n, const char *keys,
                               const char *types, const char *strs,
                               const char *nums, const char *dbls)
{
    int rc;
    *out = NULL;
    rc = pdt_request_begin(out, t, tp, ts, arrival);
    if (rc != PDT_OK || *out == NULL)
        return rc;
    if (id != NULL)
        PDTPY_STEP(pdt_request_set_id(*out, id));
    if (connector != NULL)
        PDTPY_STEP(pdt_request_set_connector(*out, connector));
    if (model != NULL)
        PDTPY_STEP(pdt_request_set_model(*out, model));
    if (n != 0)
        PDTPY_STEP(pdtpy_attrs(*out, PDT_LEG_REQUEST, NULL, n, keys, types,
                               strs, nums, dbls));
    return rc;
}

/* inject the leg's headers into *out, then record the SENT mark. */
static int pdtpy_request_send(pdt_request *req, int leg, int mark,
                              uint64_t ts, pdt_propagation *out)
{
    int rc = pdt_request_inject(req, leg, out);
    PDTPY_STEP(pdt_request_mark(req, mark, ts));
    return rc;
}

/* a mark (0: none), then set_leg. */
static int pdtpy_request_leg_done(pdt_request *req, int leg, int mark,
                                  uint64_t ts, const char *target,
                                  int status, const char *error_type)
{
    int rc = mark != 0 ? pdt_request_mark(req, mark, ts) : PDT_OK;
    PDTPY_STEP(pdt_request_set_leg(req, leg, target, status, error_type));
    return rc;
}

/* set_leg (leg < 0: skipped), set_usage (all three negative: skipped),
 * set_response (http_status < 0: skipped), then end, whose own status
 * goes to *end_rc. */
static int pdtpy_request_finish(pdt_request *req, int leg, const char *target,
                                int leg_status, const char *leg_error,
                                int64_t in, int64_t outt, int64_t cached,
                                int status, const char *error_type,
                                uint64_t end_ns, pdt_breakdown *bd,
                                int *end_rc)
{
    int rc = PDT_OK;
    if (leg >= 0)
        PDTPY_STEP(pdt_request_set_leg(req, leg, target, leg_status,
                                       leg_error));
    if (in >= 0 || outt >= 0 || cached >= 0)
        PDTPY_STEP(pdt_request_set_usage(req, in, outt, cached));
    if (status >= 0)
        PDTPY_STEP(pdt_request_set_response(req, status, error_type));
    *end_rc = pdt_request_end(req, end_ns, bd);
    PDTPY_STEP(*end_rc);
    return rc;
}

/* From here on, the call wrappers cffi generates keep the GIL. */
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
#undef _cffi_restore_errno
#undef _cffi_save_errno
#define _cffi_restore_errno() ((void)0)
#define _cffi_save_errno() ((void)0)
""" % MIN_VERSION


HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "_csrc")


def use_system_library():
    """True when PDTRACE_SYSTEM_LIBRARY asks for the system libpdtrace."""
    v = os.environ.get("PDTRACE_SYSTEM_LIBRARY", "").strip().lower()
    if v in ("", "0", "no", "false", "off"):
        return False
    if v in ("1", "yes", "true", "on"):
        return True
    raise RuntimeError("PDTRACE_SYSTEM_LIBRARY must be 1 or 0, not %r" % v)


def source_root():
    """Directory holding lib/ and include/: the sdist's _csrc copy, or the
    repository this package directory sits in."""
    # The repository first: a stale _csrc/ of an earlier build never wins.
    for cand in (os.path.normpath(os.path.join(HERE, "..", "..")), CSRC):
        if (os.path.isfile(os.path.join(cand, "include", "pdtrace",
                                        "version.h"))
                and os.path.isfile(os.path.join(cand, "lib",
                                                "otlp_trace.proto"))):
            return cand
    raise RuntimeError(
        "libpdtrace sources not found (neither ../../lib nor _csrc/): "
        "build from the repository or from its sdist, or set "
        "PDTRACE_SYSTEM_LIBRARY=1 to use an installed libpdtrace")


def read_version(root=None):
    """The version string of include/pdtrace/version.h, the one place the
    library, the wheel and the Go module take it from."""
    import re
    root = root or source_root()
    with open(os.path.join(root, "include", "pdtrace", "version.h")) as f:
        m = re.search(r'PDT_VERSION_STRING "([0-9]+\.[0-9]+\.[0-9]+)"',
                      f.read())
    if not m:
        raise RuntimeError("no PDT_VERSION_STRING in version.h")
    return m.group(1)


def generate_pb(lib_dir, out_dir):
    """Runs nanopb's generator on lib/otlp_trace.proto into out_dir, unless
    lib_dir already carries the generated pair (an sdist does)."""
    if all(os.path.isfile(os.path.join(lib_dir, "otlp_trace.pb." + x))
           for x in ("c", "h")):
        return lib_dir
    gen = shutil.which("nanopb_generator.py") or shutil.which(
        "nanopb_generator")
    if gen is None:
        raise RuntimeError(
            "nanopb_generator.py not found: install nanopb's generator "
            "(Debian: apt-get install nanopb) to build libpdtrace's sources")
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([gen, "-q", "-I", lib_dir,
                    "-f", os.path.join(lib_dir, "otlp_trace.options"),
                    "-D", out_dir, os.path.join(lib_dir, "otlp_trace.proto")],
                   check=True)
    return out_dir


def _pkgconfig_version():
    if shutil.which("pkg-config") is None:
        raise RuntimeError("pkg-config is required to find libpdtrace")
    try:
        out = subprocess.run(["pkg-config", "--modversion", "libpdtrace"],
                             check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            "libpdtrace not found by pkg-config (install the library or set "
            "PKG_CONFIG_PATH): " + exc.stderr.strip()) from None
    return tuple(int(x) for x in out.stdout.strip().split(".")[:3])


def _set_source_system(ffi):
    if _pkgconfig_version() < MIN_VERSION:
        raise RuntimeError("libpdtrace >= %d.%d.%d is required" % MIN_VERSION)
    # The library directory is also recorded as the extension's run path,
    # so a libpdtrace under a prefix the dynamic linker does not search
    # still loads.
    libdir = subprocess.run(["pkg-config", "--variable=libdir", "libpdtrace"],
                            check=True, capture_output=True,
                            text=True).stdout.strip()
    ffi.set_source_pkgconfig(
        "pdtrace._pdtrace_cffi", ["libpdtrace"], SOURCE,
        runtime_library_dirs=[libdir] if libdir else [])


def stage_sources(root):
    """Copies lib/*.c, lib/*.h, the .proto and .options, the generated
    protobuf pair and include/ from the repository root into _csrc/
    (setuptools takes only source paths inside this directory). The sdist
    carries _csrc/, so a build from it needs neither the repository nor
    nanopb's generator."""
    lib_dir = os.path.join(root, "lib")
    pb_dir = generate_pb(lib_dir, os.path.join(HERE, "build", "pdtrace-pb"))
    shutil.rmtree(CSRC, ignore_errors=True)
    os.makedirs(os.path.join(CSRC, "lib"))
    # Every C file of lib/, whatever it holds today, plus the generated
    # protobuf descriptors.
    files = []
    for pat in ("*.c", "*.h", "*.proto", "*.options"):
        files += glob.glob(os.path.join(lib_dir, pat))
    if pb_dir != lib_dir:
        files += [os.path.join(pb_dir, "otlp_trace.pb." + x)
                  for x in ("c", "h")]
    for f in files:
        shutil.copy2(f, os.path.join(CSRC, "lib"))
    shutil.copytree(os.path.join(root, "include"),
                    os.path.join(CSRC, "include"))


def _set_source_bundled(ffi):
    root = source_root()
    if os.path.abspath(root) != CSRC:
        stage_sources(root)
    sources = sorted(glob.glob(os.path.join(CSRC, "lib", "*.c")))
    if not sources:
        raise RuntimeError("no C sources in " + os.path.join(CSRC, "lib"))
    ffi.set_source(
        "pdtrace._pdtrace_cffi", SOURCE,
        sources=[os.path.relpath(s, HERE) for s in sources],
        include_dirs=[os.path.join(CSRC, "include"),
                      os.path.join(CSRC, "lib")],
        # PDT_STATIC: no symbol is exported but the module's init, so the
        # copy inside the extension never meets a system libpdtrace.
        define_macros=[("PDT_STATIC", "1"), ("PDT_BUILDING", "1"),
                       ("_POSIX_C_SOURCE", "200809L")],
        extra_compile_args=["-fvisibility=hidden"],
        # nanopb may come as a static archive: keep its symbols private too.
        extra_link_args=["-Wl,--exclude-libs,ALL"],
        libraries=["curl", "zstd", "z", "protobuf-nanopb", "pthread", "m"])


ffibuilder = FFI()
ffibuilder.cdef(CDEF)
if use_system_library():
    _set_source_system(ffibuilder)
else:
    _set_source_bundled(ffibuilder)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
