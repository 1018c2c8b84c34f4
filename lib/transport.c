/*
 * The OTLP/HTTP and OTLP/gRPC transport: exports driven through one
 * private libcurl multi handle, so that connections are kept alive between
 * exports, up to PDTI_TRANSPORT_MAX_XFERS exports run at once (each on its
 * own easy handle and connection), and an abort request is noticed within
 * one short poll slice even while a peer is silent.
 *
 * Each export (pdti_xfer) is a small state machine: an attempt in the
 * multi handle, a wait before the next attempt, or done. Nothing blocks
 * but pdti_transport_run(), which moves every export forward;
 * pdti_transport_export() is one export run to its end.
 *
 * Retry policy (the OTLP specification):
 *  - 2xx: delivered; the body is decoded for partial_success. A body that
 *    is not an ExportTraceServiceResponse, or that is over the 4 MiB read
 *    limit, still counts as delivered (the collector accepted the data).
 *  - 429, 502, 503, 504: retried after max(Retry-After, backoff), with
 *    Retry-After capped at 30 s.
 *  - Connection failures are retried with backoff: cannot resolve, cannot
 *    connect, send or receive errors, an empty reply, and a request that
 *    ran into its own timeout (cfg->timeout_ms): a collector that is slow
 *    once may answer the next time, and the deadline bounds the total.
 *  - Everything else (400, other 4xx and 5xx, TLS and URL errors) fails at
 *    once.
 *  - No attempt starts, and no sleep is begun, that would end past the
 *    deadline: when the next wait does not fit, the export FAILS with the
 *    last error. ABORTED means *abort_flag was set, or the deadline cut an
 *    attempt short.
 *
 * The message of a result never contains a configured header value: every
 * message passes through pdti_headers_redact() before it is returned.
 *
 * OTLP/gRPC (cfg->protocol) runs through the same state machine: the
 * request is one framed message POSTed over HTTP/2 to the Export method
 * (transport_grpc.c), and the outcome is the grpc-status of the trailers
 * instead of the HTTP status; see grpc_outcome(). OTLP/HTTP with JSON
 * sends the body converted by json.c (transport_request.c).
 *
 * Why this file is longer than the 800 lines we aim for: it is one state
 * machine (pdti_xfer) together with the libcurl callbacks and set-up that
 * read and write its private fields; the parts that stand alone are already
 * apart (retry.c: backoff and Retry-After; response.c: partial success;
 * compress.c: the body's compression; transport_request.c: the request's
 * headers and body; transport_grpc.c: gRPC framing and status).
 * Splitting the rest would move the curl handles into a shared header for
 * no reader's gain.
 */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "pdtrace/common.h"
#include "pdtrace/tracer.h"
#include "transport.h"
#include "transport_grpc.h"
#include "transport_request.h"

#define RESP_MAX_BYTES ((size_t)4 << 20)  /* read at most this of a reply */
#define RETRY_AFTER_CAP_MS 30000
#define POLL_SLICE_MS 5                   /* abort checks during a request
                                             or a wait between attempts */
#define RESP_KEEP_BYTES ((size_t)64 << 10) /* response memory kept between */

/* Where an export stands. */
enum xfer_state {
    XFER_IDLE = 0, /* never started, or its result was taken */
    XFER_ACTIVE,   /* an attempt is in the multi handle */
    XFER_WAITING,  /* between attempts, until retry_at_ns */
    XFER_DONE      /* finished; the result waits to be taken */
};

/* One export: its own easy handle, request and response state. */
struct pdti_xfer {
    pdti_transport *t;
    CURL *easy;
    int state;                 /* enum xfer_state */
    const uint8_t *payload;    /* body on the wire (maybe zbody) */
    size_t plen;
    pdti_buf zbody;            /* compressed, framed or JSON body */
    pdti_buf jbody;            /* http/json: the body before compression */
    struct curl_slist *hdrs;   /* gRPC: the transport's headers and */
    struct curl_slist *tmo_hdr; /* grpc-timeout, set at each attempt */
    pdti_grpc_reply grpc;      /* gRPC: status of the last response */
    pdti_buf resp;             /* response body, at most RESP_MAX_BYTES */
    int resp_over;             /* the response was longer than that */
    char retry_after[64];      /* Retry-After of the last response */
    int have_retry_after;
    const int *abort_flag;     /* of the export in progress */
    uint64_t deadline_ns;
    uint64_t retry_at_ns;      /* XFER_WAITING: next attempt at */
    int by_deadline;           /* the attempt's timeout is the time left */
    char why[160];             /* last retryable failure */
    pdti_export_result res;
    char errbuf[CURL_ERROR_SIZE];
};

struct pdti_transport {
    const pdti_config *cfg;
    int grpc;                  /* cfg->protocol is gRPC */
    char *url;                 /* gRPC: endpoint + the Export method */
    CURLM *multi;              /* owns the connection cache */
    struct curl_slist *headers;
    uint64_t rng;              /* backoff jitter */
    pdti_xfer *sync;           /* the one pdti_transport_export() uses */
    pdti_xfer *xfers[PDTI_TRANSPORT_MAX_XFERS + 1]; /* all, owned */
    unsigned nxfers;
    pdti_compressor *comp;     /* created at the first compressed export;
                                  used by the starting thread only */
};

/* ---- one-time libcurl initialisation ----------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ------------------------------------------------------ */

static int aborted(const int *flag)
{
    return flag != NULL && __atomic_load_n(flag, __ATOMIC_ACQUIRE) != 0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts;

    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* snprintf that is allowed to truncate (messages are bounded on purpose). */
static void msgf(char *dst, size_t cap, const char *fmt, ...)
    PDTI_PRINTF(3, 4);
static void msgf(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

/* ---- libcurl callbacks -------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    pdti_xfer *x = ud;
    size_t n = size * nmemb, room = RESP_MAX_BYTES - x->resp.len;

    if (n > room) {
        /* Keep what fits and stop the transfer: the rest is never read. */
        (void)pdti_buf_append(&x->resp, data, room);
        x->resp_over = 1;
        return 0;
    }
    if (pdti_buf_append(&x->resp, data, n) != 0) {
        x->resp_over = 1; /* out of memory: treat as unreadable */
        return 0;
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    pdti_xfer *x = ud;
    size_t n = size * nmemb, i, j;

    if (x->t->grpc)
        pdti_grpc_reply_header(&x->grpc, data, n); /* and the trailers */
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        x->have_retry_after = 0; /* a new response (after 1xx) */
    } else if (n > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
        i = 12;
        j = n;
        while (i < j && (data[i] == ' ' || data[i] == '\t'))
            i++;
        while (j > i && (data[j - 1] == '\r' || data[j - 1] == '\n' ||
                         data[j - 1] == ' ' || data[j - 1] == '\t'))
            j--;
        if (j - i < sizeof(x->retry_after)) {
            memcpy(x->retry_after, data + i, j - i);
            x->retry_after[j - i] = '\0';
            x->have_retry_after = 1;
        } else {
            x->have_retry_after = 0; /* too long to be valid */
        }
    }
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    pdti_xfer *x = ud;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return aborted(x->abort_flag) || pdt_now_ns() >= x->deadline_ns;
}

/* ---- construction ------------------------------------------------------- */

#define SETOPT(opt, val)                                             \
    do {                                                             \
        if (curl_easy_setopt(x->easy, opt, val) != CURLE_OK)         \
            goto fail;                                               \
    } while (0)

static void xfer_free(pdti_xfer *x)
{
    if (x == NULL)
        return;
    if (x->easy != NULL) {
        if (x->state == XFER_ACTIVE)
            curl_multi_remove_handle(x->t->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    pdti_buf_free(&x->zbody);
    pdti_buf_free(&x->jbody);
    pdti_buf_free(&x->resp);
    curl_slist_free_all(x->hdrs);
    free(x);
}

/* A configured easy handle for one export. PDT_OK or PDT_EINTERNAL. */
static int xfer_setup(pdti_transport *t, pdti_xfer *x)
{
    const pdti_config *cfg = t->cfg;

    x->t = t;
    x->easy = curl_easy_init();
    if (x->easy == NULL)
        return PDT_EINTERNAL;
    SETOPT(CURLOPT_URL, t->url != NULL ? t->url : cfg->endpoint);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_POST, 1L);
    if (t->grpc) {
        int tls = strncasecmp(cfg->endpoint, "https:", 6) == 0;

        x->hdrs = pdti_headers_with_timeout(t->headers, &x->tmo_hdr);
        if (x->hdrs == NULL)
            goto fail;
        /* h2c with prior knowledge, or HTTP/2 negotiated by ALPN. */
        SETOPT(CURLOPT_HTTP_VERSION,
               tls ? (long)CURL_HTTP_VERSION_2TLS
                   : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
        /* libcurl before 8.0 fails the second request on a reused
         * prior-knowledge connection at once, unsent (error 16, curl
         * issue 10634): there, each h2c request gets its own. */
        if (!tls && curl_version_info(CURLVERSION_NOW)->version_num <
                        0x080000) {
            SETOPT(CURLOPT_FRESH_CONNECT, 1L);
            SETOPT(CURLOPT_FORBID_REUSE, 1L);
        }
    }
    SETOPT(CURLOPT_HTTPHEADER, x->hdrs != NULL ? x->hdrs : t->headers);
    SETOPT(CURLOPT_USERAGENT, "libpdtrace/" PDT_VERSION_STRING);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, x);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, x);
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(CURLOPT_XFERINFODATA, x);
    SETOPT(CURLOPT_PRIVATE, (void *)x);
    if (cfg->ca_file != NULL && cfg->ca_file[0] != '\0')
        SETOPT(CURLOPT_CAINFO, cfg->ca_file);
    if (cfg->client_cert != NULL && cfg->client_cert[0] != '\0')
        SETOPT(CURLOPT_SSLCERT, cfg->client_cert);
    if (cfg->client_key != NULL && cfg->client_key[0] != '\0')
        SETOPT(CURLOPT_SSLKEY, cfg->client_key);
    return PDT_OK;
fail:
    return PDT_EINTERNAL;
}

#undef SETOPT

int pdti_xfer_new(pdti_transport *t, pdti_xfer **out)
{
    pdti_xfer *x;
    int rc;

    if (out == NULL)
        return PDT_EINVAL;
    *out = NULL;
    if (t == NULL)
        return PDT_EINVAL;
    if (t->nxfers >= sizeof(t->xfers) / sizeof(t->xfers[0]))
        return PDT_EINVAL;
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return PDT_ENOMEM;
    rc = xfer_setup(t, x);
    if (rc != PDT_OK) {
        xfer_free(x);
        return rc;
    }
    t->xfers[t->nxfers++] = x;
    *out = x;
    return PDT_OK;
}

int pdti_transport_new(pdti_transport **out, const pdti_config *cfg)
{
    pdti_transport *t;
    int status = PDT_EINTERNAL;

    if (out == NULL)
        return PDT_EINVAL;
    *out = NULL;
    if (cfg == NULL || cfg->endpoint == NULL)
        return PDT_EINVAL;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return PDT_EINTERNAL;

    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return PDT_ENOMEM;
    t->cfg = cfg;
    t->rng = pdt_now_ns() ^ ((uint64_t)(uintptr_t)t << 16) ^
             UINT64_C(0x2545F4914F6CDD1D);
    t->multi = curl_multi_init();
    if (t->multi == NULL)
        goto fail;
    t->grpc = cfg->protocol == PDT_PROTOCOL_GRPC;
    if (t->grpc) {
        size_t n = strlen(cfg->endpoint);
        while (n > 0 && cfg->endpoint[n - 1] == '/')
            n--;
        t->url = malloc(n + sizeof(PDTI_GRPC_EXPORT_PATH));
        if (t->url == NULL) {
            status = PDT_ENOMEM;
            goto fail;
        }
        memcpy(t->url, cfg->endpoint, n);
        memcpy(t->url + n, PDTI_GRPC_EXPORT_PATH,
               sizeof(PDTI_GRPC_EXPORT_PATH));
    }
    if (pdti_headers_build(&t->headers, cfg) != 0) {
        status = PDT_ENOMEM;
        goto fail;
    }
    status = pdti_xfer_new(t, &t->sync);
    if (status != PDT_OK)
        goto fail;
    *out = t;
    return PDT_OK;
fail:
    pdti_transport_free(t);
    return status;
}

void pdti_transport_free(pdti_transport *t)
{
    unsigned i;

    if (t == NULL)
        return;
    /* The easy handles go first: each leaves the multi handle. */
    for (i = 0; i < t->nxfers; i++)
        xfer_free(t->xfers[i]);
    if (t->multi != NULL)
        curl_multi_cleanup(t->multi);
    curl_slist_free_all(t->headers);
    pdti_compressor_free(t->comp);
    free(t->url);
    free(t);
}

/* ---- one export: attempts and retries ------------------------------------ */

typedef enum attempt_end {
    END_DONE,    /* libcurl finished; see the CURLcode */
    END_ABORTED, /* the abort flag was seen */
    END_DEADLINE /* the deadline passed mid-request */
} attempt_end;

/* Transport failures worth another attempt. */
static int curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

/* Retry-After of the last response in ms, capped; -1 if absent or bad. */
static int64_t retry_after_ms(const pdti_xfer *x)
{
    struct timespec now;
    int64_t ms;

    if (!x->have_retry_after)
        return -1;
    clock_gettime(CLOCK_REALTIME, &now);
    ms = pdti_parse_retry_after(x->retry_after, now.tv_sec);
    if (ms < 0)
        return -1;
    /* A date is exact to the second: count the part of it already gone. */
    if ((x->retry_after[0] < '0' || x->retry_after[0] > '9') && ms > 0) {
        ms -= now.tv_nsec / 1000000L;
        if (ms < 0)
            ms = 0;
    }
    return ms > RETRY_AFTER_CAP_MS ? RETRY_AFTER_CAP_MS : ms;
}

/*
 * Request bytes of the last attempt. libcurl's request size counts the
 * headers, plus the body when it went out together with them (small
 * bodies); a large body is counted only by the upload size.
 */
static void add_bytes_sent(pdti_xfer *x)
{
    long head = 0;
    curl_off_t up = 0;

    if (curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &head) !=
            CURLE_OK || head < 0)
        head = 0;
    if (curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &up) !=
            CURLE_OK || up < 0)
        up = 0;
    if ((curl_off_t)head >= up)
        x->res.bytes_sent += (uint64_t)head;
    else
        x->res.bytes_sent += (uint64_t)head + (uint64_t)up;
}

static const char *curl_text(const pdti_xfer *x, CURLcode rc)
{
    return x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(rc);
}

/*
 * What to check after a TLS failure, or NULL. libcurl's own words ("SSL
 * certificate problem: ...", "error setting certificate file: ...") do not
 * say which setting is wrong. A server that requires a client certificate
 * refuses a missing or untrusted one with a TLS alert that libcurl reports,
 * after a TLS 1.3 handshake, as a send or receive error: only the alert's
 * text tells it from a dropped connection.
 */
static const char *tls_hint(const pdti_xfer *x, CURLcode rc)
{
    const char *alert;

    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ISSUER_ERROR:
        return "TLS certificate verification failed (check "
               "OTEL_EXPORTER_OTLP_CERTIFICATE / ca_file)";
    case CURLE_SSL_CACERT_BADFILE:
        return "cannot load the CA certificate file (check "
               "OTEL_EXPORTER_OTLP_CERTIFICATE / ca_file)";
    case CURLE_SSL_CERTPROBLEM:
        return "cannot load the client certificate or key (check "
               "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE / client_cert and "
               "OTEL_EXPORTER_OTLP_CLIENT_KEY / client_key)";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        alert = strstr(curl_text(x, rc), "alert ");
        if (alert != NULL && strstr(alert, "certificate required") != NULL)
            return "the collector requires a client certificate (set "
                   "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and "
                   "OTEL_EXPORTER_OTLP_CLIENT_KEY)";
        if (alert != NULL && (strstr(alert, "unknown ca") != NULL ||
                              strstr(alert, "certificate") != NULL))
            return "the collector refused the client certificate (check "
                   "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE / client_cert)";
        if (rc == CURLE_SSL_CONNECT_ERROR)
            return "TLS handshake failed";
        return NULL;
    default:
        return NULL;
    }
}

/* Handles a 2xx (gRPC: status OK): decode partial_success into the
 * result. */
static void delivered(pdti_xfer *x)
{
    pdti_export_result *res = &x->res;
    const uint8_t *m = x->resp.data;
    size_t mlen = x->resp.len;
    int st;

    res->outcome = PDTI_DELIVERED;
    if (x->resp_over) {
        msgf(res->message, sizeof(res->message),
             "HTTP %ld: response body over %zu bytes, not decoded",
             res->http_status, RESP_MAX_BYTES);
        return;
    }
    if (x->t->grpc &&
        pdti_grpc_unframe(x->resp.data, x->resp.len, &m, &mlen) < 0) {
        msgf(res->message, sizeof(res->message),
             "gRPC response is not one uncompressed message (%zu bytes), "
             "ignored", x->resp.len);
        return;
    }
    if (x->t->cfg->protocol == PDT_PROTOCOL_HTTP_JSON)
        st = pdti_decode_export_response_json(m, mlen, &res->rejected_spans,
                                              res->message,
                                              sizeof(res->message));
    else
        st = pdti_decode_export_response(m, mlen, &res->rejected_spans,
                                         res->message, sizeof(res->message));
    if (st != PDT_OK) {
        res->rejected_spans = 0;
        msgf(res->message, sizeof(res->message),
             "HTTP %ld: response body is not an "
             "ExportTraceServiceResponse (%zu bytes), ignored",
             res->http_status, x->resp.len);
    }
}

/* The export is over: its result waits in x->res. */
static void finish(pdti_xfer *x, int outcome)
{
    x->res.outcome = outcome;
    x->state = XFER_DONE;
    if (x->resp.cap > RESP_KEEP_BYTES)
        pdti_buf_free(&x->resp);
    x->abort_flag = NULL;
    pdti_headers_redact(x->res.message, &x->t->cfg->headers);
}

static void end_attempt(pdti_xfer *x, attempt_end end, CURLcode rc);

/*
 * gRPC: a response's outcome is its grpc-status (the trailers, or the
 * headers of a trailers-only response); one without a status is mapped
 * from its HTTP status as gRPC clients do. Returns 1 when the export is
 * over, else 0 with the wait before the next attempt in *wait_ms.
 */
static int grpc_outcome(pdti_xfer *x, int64_t *wait_ms)
{
    pdti_export_result *res = &x->res;
    int code = x->grpc.status;
    int info = x->grpc.retry_delay_ms >= 0;
    const char *sep = x->grpc.message[0] != '\0' ? ": " : "";

    if (code < 0)
        code = pdti_grpc_code_from_http(res->http_status);
    res->grpc_status = code;
    if (code == PDTI_GRPC_OK) {
        delivered(x);
        finish(x, PDTI_DELIVERED);
        return 1;
    }
    res->retryable = pdti_grpc_code_retryable(code, info);
    if (!res->retryable) {
        msgf(res->message, sizeof(res->message),
             "gRPC status %d %s%s%s, not retryable", code,
             pdti_grpc_code_name(code), sep, x->grpc.message);
        finish(x, PDTI_FAILED);
        return 1;
    }
    *wait_ms = pdti_backoff_ms(res->attempts, &x->t->rng);
    if (info && x->grpc.retry_delay_ms > *wait_ms)
        *wait_ms = x->grpc.retry_delay_ms < RETRY_AFTER_CAP_MS
                       ? x->grpc.retry_delay_ms : RETRY_AFTER_CAP_MS;
    msgf(x->why, sizeof(x->why), "gRPC status %d %s%s%s", code,
         pdti_grpc_code_name(code), sep, x->grpc.message);
    return 0;
}

/*
 * Starts the next attempt, or finishes the export when it is aborted or
 * out of time. No attempt starts that the deadline leaves no ms for.
 */
static void begin_attempt(pdti_xfer *x)
{
    pdti_export_result *res = &x->res;
    uint64_t now = pdt_now_ns();
    int64_t left_ms;
    long tmo;

    if (aborted(x->abort_flag)) {
        msgf(res->message, sizeof(res->message),
             "export aborted before attempt %u", res->attempts + 1);
        finish(x, PDTI_ABORTED);
        return;
    }
    left_ms = now < x->deadline_ns
                  ? (int64_t)((x->deadline_ns - now) / 1000000u) : 0;
    if (left_ms < 1) {
        msgf(res->message, sizeof(res->message),
             "deadline passed before attempt %u", res->attempts + 1);
        finish(x, PDTI_ABORTED);
        return;
    }
    tmo = (long)(left_ms < LONG_MAX ? left_ms : LONG_MAX);
    x->by_deadline = 1;
    if (x->t->cfg->timeout_ms > 0 && x->t->cfg->timeout_ms < tmo) {
        tmo = (long)x->t->cfg->timeout_ms;
        x->by_deadline = 0;
    }
    x->errbuf[0] = '\0';
    pdti_buf_reset(&x->resp);
    x->resp_over = 0;
    x->have_retry_after = 0;
    pdti_grpc_reply_reset(&x->grpc);
    pdti_headers_set_timeout(x->tmo_hdr, tmo);
    if (curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)x->plen) != CURLE_OK ||
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS,
                         x->payload != NULL ? (const void *)x->payload
                                            : "") != CURLE_OK ||
        curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, tmo) != CURLE_OK ||
        curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, tmo) !=
            CURLE_OK ||
        curl_multi_add_handle(x->t->multi, x->easy) != CURLM_OK) {
        x->state = XFER_WAITING; /* not in the multi handle */
        end_attempt(x, END_DONE, CURLE_FAILED_INIT);
        return;
    }
    x->state = XFER_ACTIVE;
}

/*
 * An attempt ended (its handle already left the multi handle): finish the
 * export, or schedule the retry its outcome allows.
 */
static void end_attempt(pdti_xfer *x, attempt_end end, CURLcode rc)
{
    pdti_export_result *res = &x->res;
    int64_t left_ms, wait_ms, ra_ms;
    uint64_t now;

    if (end == END_DONE && rc == CURLE_ABORTED_BY_CALLBACK)
        end = aborted(x->abort_flag) ? END_ABORTED : END_DEADLINE;
    res->attempts++;
    add_bytes_sent(x);

    if (end == END_ABORTED) {
        msgf(res->message, sizeof(res->message),
             "export aborted during attempt %u", res->attempts);
        finish(x, PDTI_ABORTED);
        return;
    }
    if (end == END_DEADLINE ||
        (rc == CURLE_OPERATION_TIMEDOUT &&
         (x->by_deadline || pdt_now_ns() >= x->deadline_ns))) {
        msgf(res->message, sizeof(res->message),
             "deadline reached during attempt %u", res->attempts);
        finish(x, PDTI_ABORTED);
        return;
    }

    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && x->resp_over)) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        res->http_status = status;
        if (x->t->grpc) {
            if (grpc_outcome(x, &wait_ms))
                return;
        } else if (status >= 200 && status < 300) {
            delivered(x);
            finish(x, PDTI_DELIVERED);
            return;
        } else if (!pdti_status_retryable(status)) {
            msgf(res->message, sizeof(res->message),
                 "HTTP %ld from the collector, not retryable", status);
            finish(x, PDTI_FAILED);
            return;
        } else {
            wait_ms = pdti_backoff_ms(res->attempts, &x->t->rng);
            ra_ms = retry_after_ms(x);
            if (ra_ms > wait_ms)
                wait_ms = ra_ms;
            msgf(x->why, sizeof(x->why), "HTTP %ld", status);
        }
    } else if (tls_hint(x, rc) != NULL) {
        /* Configuration errors: another attempt would fail the same way. */
        msgf(res->message, sizeof(res->message), "%s: %s", tls_hint(x, rc),
             curl_text(x, rc));
        finish(x, PDTI_FAILED);
        return;
    } else if (curl_retryable(rc)) {
        wait_ms = pdti_backoff_ms(res->attempts, &x->t->rng);
        msgf(x->why, sizeof(x->why), "%s", curl_text(x, rc));
    } else {
        msgf(res->message, sizeof(res->message), "%s", curl_text(x, rc));
        finish(x, PDTI_FAILED);
        return;
    }

    now = pdt_now_ns();
    left_ms = now < x->deadline_ns
                  ? (int64_t)((x->deadline_ns - now) / 1000000u) : 0;
    if (wait_ms >= left_ms) {
        msgf(res->message, sizeof(res->message),
             "gave up after %u attempts (next retry in %lld ms "
             "would pass the deadline): %s",
             res->attempts, (long long)wait_ms, x->why);
        finish(x, PDTI_FAILED);
        return;
    }
    x->state = XFER_WAITING;
    x->retry_at_ns = now + (uint64_t)wait_ms * 1000000u;
}

/*
 * The body on the wire (transport_request.c). PDT_OK, or the export is
 * finished as FAILED with the reason.
 */
static int prepare_body(pdti_xfer *x, const uint8_t *body, size_t len)
{
    pdti_transport *t = x->t;
    int st = pdti_request_body(t->cfg, &t->comp, body, len, &x->jbody,
                               &x->zbody, &x->payload, &x->plen,
                               x->res.message, sizeof(x->res.message));

    if (st != PDT_OK)
        finish(x, PDTI_FAILED);
    return st;
}

int pdti_xfer_start(pdti_xfer *x, const uint8_t *body, size_t len,
                    uint64_t deadline_ns, const int *abort_flag)
{
    if (x == NULL || (body == NULL && len != 0))
        return PDT_EINVAL;
    if (x->state == XFER_ACTIVE || x->state == XFER_WAITING)
        return PDT_EINVAL; /* still busy */
    memset(&x->res, 0, sizeof(x->res));
    x->res.outcome = PDTI_FAILED;
    x->res.grpc_status = -1;
    x->abort_flag = abort_flag;
    x->deadline_ns = deadline_ns;
    if (prepare_body(x, body, len) != PDT_OK)
        return PDT_OK; /* finished with the reason */
    begin_attempt(x);
    return PDT_OK;
}

int pdti_xfer_busy(const pdti_xfer *x)
{
    return x != NULL &&
           (x->state == XFER_ACTIVE || x->state == XFER_WAITING);
}

int pdti_xfer_retrying(const pdti_xfer *x)
{
    return pdti_xfer_busy(x) && x->res.attempts > 0;
}

int pdti_xfer_take(pdti_xfer *x, pdti_export_result *res)
{
    if (x == NULL || x->state != XFER_DONE)
        return 0;
    if (res != NULL)
        *res = x->res;
    x->state = XFER_IDLE;
    return 1;
}

/* ---- driving every export ------------------------------------------------ */

/*
 * One pass without waiting: lets libcurl work, ends the attempts that
 * completed, were aborted or ran out of time, and starts the retries that
 * are due. Returns the exports still busy; *next_ns gets the earliest
 * retry time among the waiting ones (UINT64_MAX if none), *active whether
 * any request is in the multi handle.
 */
static unsigned step(pdti_transport *t, uint64_t *next_ns, int *active)
{
    CURLMsg *msg;
    int running = 0, left;
    unsigned i, busy = 0;
    uint64_t now;

    if (curl_multi_perform(t->multi, &running) != CURLM_OK) {
        /* The multi handle is unusable: fail what it holds. */
        for (i = 0; i < t->nxfers; i++) {
            pdti_xfer *x = t->xfers[i];
            if (x->state == XFER_ACTIVE) {
                curl_multi_remove_handle(t->multi, x->easy);
                x->state = XFER_WAITING;
                end_attempt(x, END_DONE, CURLE_FAILED_INIT);
            }
        }
    }
    while ((msg = curl_multi_info_read(t->multi, &left)) != NULL) {
        pdti_xfer *x = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
                              (char **)&x) != CURLE_OK || x == NULL ||
            x->state != XFER_ACTIVE)
            continue;
        /* msg is invalid once the handle is removed: read it first. */
        {
            CURLcode rc = msg->data.result;
            curl_multi_remove_handle(t->multi, x->easy);
            x->state = XFER_WAITING;
            end_attempt(x, END_DONE, rc);
        }
    }
    now = pdt_now_ns();
    *next_ns = UINT64_MAX;
    *active = 0;
    for (i = 0; i < t->nxfers; i++) {
        pdti_xfer *x = t->xfers[i];
        if (x->state == XFER_ACTIVE) {
            attempt_end end = END_DONE;
            if (aborted(x->abort_flag))
                end = END_ABORTED;
            else if (now >= x->deadline_ns)
                end = END_DEADLINE;
            if (end != END_DONE) {
                /* Removing a handle mid-transfer cancels it and closes
                 * its connection. */
                curl_multi_remove_handle(t->multi, x->easy);
                x->state = XFER_WAITING;
                end_attempt(x, end, CURLE_OK);
            }
        } else if (x->state == XFER_WAITING) {
            if (aborted(x->abort_flag)) {
                msgf(x->res.message, sizeof(x->res.message),
                     "export aborted while waiting to retry (%s)", x->why);
                finish(x, PDTI_ABORTED);
            } else if (now >= x->retry_at_ns) {
                begin_attempt(x);
            }
        }
        if (x->state == XFER_ACTIVE) {
            *active = 1;
            busy++;
        } else if (x->state == XFER_WAITING) {
            if (x->retry_at_ns < *next_ns)
                *next_ns = x->retry_at_ns;
            busy++;
        }
    }
    return busy;
}

unsigned pdti_transport_run(pdti_transport *t, int wait_ms)
{
    uint64_t next_ns, now;
    unsigned busy, i;
    int active, wait, done_before = 0;

    if (t == NULL)
        return 0;
    for (i = 0; i < t->nxfers; i++)
        done_before += t->xfers[i]->state == XFER_DONE;
    busy = step(t, &next_ns, &active);
    if (wait_ms <= 0)
        return busy;
    for (i = 0; i < t->nxfers; i++)
        done_before -= t->xfers[i]->state == XFER_DONE;
    if (done_before < 0)
        return busy; /* something finished: the caller has work */
    wait = wait_ms < POLL_SLICE_MS ? wait_ms : POLL_SLICE_MS;
    now = pdt_now_ns();
    if (next_ns != UINT64_MAX) {
        uint64_t until = next_ns > now ? (next_ns - now + 999999u) / 1000000u
                                       : 0;
        if (until < (uint64_t)wait)
            wait = (int)until;
    }
    if (wait > 0) {
        /* With nothing in the multi handle, curl_multi_poll just waits
         * (or until pdti_transport_wakeup()). */
        if (curl_multi_poll(t->multi, NULL, 0, wait, NULL) != CURLM_OK &&
            !active)
            sleep_ms(wait);
    }
    return step(t, &next_ns, &active);
}

void pdti_transport_wakeup(pdti_transport *t)
{
    if (t != NULL)
        curl_multi_wakeup(t->multi);
}

/* ---- export and wait ----------------------------------------------------- */

int pdti_transport_export(pdti_transport *t, const uint8_t *body, size_t len,
                          uint64_t deadline_ns, const int *abort_flag,
                          pdti_export_result *res)
{
    int rc;

    if (t == NULL || res == NULL || (body == NULL && len != 0))
        return PDT_EINVAL;
    rc = pdti_xfer_start(t->sync, body, len, deadline_ns, abort_flag);
    if (rc != PDT_OK)
        return rc;
    while (pdti_xfer_busy(t->sync))
        pdti_transport_run(t, POLL_SLICE_MS);
    pdti_xfer_take(t->sync, res);
    return PDT_OK;
}
