/*
 * The OTLP/HTTP transport: one libcurl easy handle driven through a private
 * multi handle, so that connections are kept alive between exports and an
 * abort request is noticed within one short poll slice even while a peer
 * is silent.
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
 * message passes through redact() before it is returned.
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

#define RESP_MAX_BYTES ((size_t)4 << 20)  /* read at most this of a reply */
#define RETRY_AFTER_CAP_MS 30000
#define SLEEP_SLICE_MS 5                  /* abort checks while sleeping */
#define POLL_SLICE_MS 5                   /* abort checks during a request */
#define RESP_KEEP_BYTES ((size_t)64 << 10) /* response memory kept between */
#define REDACT_MIN_LEN 4                  /* shorter header values are not
                                             searched for in messages */

struct pdti_transport {
    const pdti_config *cfg;
    CURLM *multi;              /* owns the connection cache */
    CURL *easy;
    struct curl_slist *headers;
    pdti_compressor *comp;     /* created at the first compressed export */
    pdti_buf zbody;            /* compressed request body */
    pdti_buf resp;             /* response body, at most RESP_MAX_BYTES */
    int resp_over;             /* the response was longer than that */
    char retry_after[64];      /* Retry-After of the last response */
    int have_retry_after;
    uint64_t rng;              /* backoff jitter */
    const int *abort_flag;     /* of the export in progress */
    uint64_t deadline_ns;
    char errbuf[CURL_ERROR_SIZE];
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

/*
 * Sleeps ms milliseconds in short slices. Returns 0, or -1 as soon as the
 * abort flag is seen.
 */
static int sleep_sliced(int64_t ms, const int *abort_flag)
{
    uint64_t until = pdt_now_ns() + (uint64_t)ms * 1000000u, now;

    for (;;) {
        int64_t left;
        if (aborted(abort_flag))
            return -1;
        now = pdt_now_ns();
        if (now >= until)
            return 0;
        left = (int64_t)((until - now + 999999u) / 1000000u);
        sleep_ms(left < SLEEP_SLICE_MS ? left : SLEEP_SLICE_MS);
    }
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

/* Replaces every configured header value in msg with asterisks. */
static void redact(char *msg, const pdti_kvlist *headers)
{
    size_t i;

    for (i = 0; i < headers->count; i++) {
        const char *v = headers->items[i].value;
        size_t n = v != NULL ? strlen(v) : 0;
        char *p;

        if (n < REDACT_MIN_LEN)
            continue;
        while ((p = strstr(msg, v)) != NULL)
            memset(p, '*', n);
    }
}

/* 1 if name is an HTTP token and value has no control characters. */
static int header_ok(const char *name, const char *value)
{
    const unsigned char *p;

    if (name == NULL || value == NULL || name[0] == '\0')
        return 0;
    for (p = (const unsigned char *)name; *p != '\0'; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", *p))
            return 0;
    for (p = (const unsigned char *)value; *p != '\0'; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

/* Headers the transport sets itself; configured ones of that name are
 * ignored so the request stays well formed. */
static int header_reserved(const char *name)
{
    static const char *const reserved[] = {
        "content-type", "content-encoding", "content-length",
        "transfer-encoding", "expect"
    };
    size_t i;

    for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcasecmp(name, reserved[i]) == 0)
            return 1;
    return 0;
}

static int add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *n = curl_slist_append(*list, line);

    if (n == NULL)
        return -1;
    *list = n;
    return 0;
}

static int build_headers(pdti_transport *t)
{
    const pdti_config *cfg = t->cfg;
    size_t i;

    if (add_header(&t->headers, "Content-Type: application/x-protobuf") != 0)
        return -1;
    if (cfg->compression == PDT_COMPRESSION_GZIP &&
        add_header(&t->headers, "Content-Encoding: gzip") != 0)
        return -1;
    if (cfg->compression == PDT_COMPRESSION_ZSTD &&
        add_header(&t->headers, "Content-Encoding: zstd") != 0)
        return -1;
    /* No "Expect: 100-continue" round trip before large bodies. */
    if (add_header(&t->headers, "Expect:") != 0)
        return -1;
    for (i = 0; i < cfg->headers.count; i++) {
        const char *k = cfg->headers.items[i].key;
        const char *v = cfg->headers.items[i].value;
        size_t kl, vl;
        char *line;
        int rc;

        if (!header_ok(k, v) || header_reserved(k))
            continue;
        kl = strlen(k);
        vl = strlen(v);
        line = malloc(kl + vl + 3);
        if (line == NULL)
            return -1;
        memcpy(line, k, kl);
        if (vl == 0) {
            /* "name;" is how libcurl sends a header with an empty value. */
            line[kl] = ';';
            line[kl + 1] = '\0';
        } else {
            line[kl] = ':';
            line[kl + 1] = ' ';
            memcpy(line + kl + 2, v, vl + 1);
        }
        rc = add_header(&t->headers, line);
        memset(line, 0, kl + vl + 2);
        free(line);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- libcurl callbacks -------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    pdti_transport *t = ud;
    size_t n = size * nmemb, room = RESP_MAX_BYTES - t->resp.len;

    if (n > room) {
        /* Keep what fits and stop the transfer: the rest is never read. */
        (void)pdti_buf_append(&t->resp, data, room);
        t->resp_over = 1;
        return 0;
    }
    if (pdti_buf_append(&t->resp, data, n) != 0) {
        t->resp_over = 1; /* out of memory: treat as unreadable */
        return 0;
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    pdti_transport *t = ud;
    size_t n = size * nmemb, i, j;

    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        t->have_retry_after = 0; /* a new response (after 1xx) */
    } else if (n > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
        i = 12;
        j = n;
        while (i < j && (data[i] == ' ' || data[i] == '\t'))
            i++;
        while (j > i && (data[j - 1] == '\r' || data[j - 1] == '\n' ||
                         data[j - 1] == ' ' || data[j - 1] == '\t'))
            j--;
        if (j - i < sizeof(t->retry_after)) {
            memcpy(t->retry_after, data + i, j - i);
            t->retry_after[j - i] = '\0';
            t->have_retry_after = 1;
        } else {
            t->have_retry_after = 0; /* too long to be valid */
        }
    }
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    pdti_transport *t = ud;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return aborted(t->abort_flag) || pdt_now_ns() >= t->deadline_ns;
}

/* ---- construction ------------------------------------------------------- */

#define SETOPT(opt, val)                                             \
    do {                                                             \
        if (curl_easy_setopt(t->easy, opt, val) != CURLE_OK)         \
            goto fail;                                               \
    } while (0)

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
    t->easy = curl_easy_init();
    if (t->multi == NULL || t->easy == NULL)
        goto fail;
    if (build_headers(t) != 0) {
        status = PDT_ENOMEM;
        goto fail;
    }

    SETOPT(CURLOPT_URL, cfg->endpoint);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_HTTPHEADER, t->headers);
    SETOPT(CURLOPT_USERAGENT, "libpdtrace/" PDT_VERSION_STRING);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_ERRORBUFFER, t->errbuf);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, t);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, t);
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(CURLOPT_XFERINFODATA, t);
    if (cfg->ca_file != NULL && cfg->ca_file[0] != '\0')
        SETOPT(CURLOPT_CAINFO, cfg->ca_file);
    if (cfg->client_cert != NULL && cfg->client_cert[0] != '\0')
        SETOPT(CURLOPT_SSLCERT, cfg->client_cert);
    if (cfg->client_key != NULL && cfg->client_key[0] != '\0')
        SETOPT(CURLOPT_SSLKEY, cfg->client_key);

    *out = t;
    return PDT_OK;
fail:
    pdti_transport_free(t);
    return status;
}

#undef SETOPT

void pdti_transport_free(pdti_transport *t)
{
    if (t == NULL)
        return;
    if (t->easy != NULL)
        curl_easy_cleanup(t->easy);
    if (t->multi != NULL)
        curl_multi_cleanup(t->multi);
    curl_slist_free_all(t->headers);
    pdti_compressor_free(t->comp);
    pdti_buf_free(&t->zbody);
    pdti_buf_free(&t->resp);
    free(t);
}

/* ---- one HTTP request --------------------------------------------------- */

typedef enum attempt_end {
    END_DONE,    /* libcurl finished; see the CURLcode */
    END_ABORTED, /* the abort flag was seen */
    END_DEADLINE /* the deadline passed mid-request */
} attempt_end;

/* Runs one POST to completion, abort or deadline. *rc gets the result. */
static attempt_end perform(pdti_transport *t, const uint8_t *data,
                           size_t len, long timeout_ms, CURLcode *rc)
{
    attempt_end end = END_DONE;
    int running = 1;
    CURLMsg *msg;
    int left;

    *rc = CURLE_OK;
    t->errbuf[0] = '\0';
    pdti_buf_reset(&t->resp);
    t->resp_over = 0;
    t->have_retry_after = 0;
    if (curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)len) != CURLE_OK ||
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS,
                         data != NULL ? (const void *)data : "") != CURLE_OK ||
        curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, timeout_ms) !=
            CURLE_OK ||
        curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) !=
            CURLE_OK) {
        *rc = CURLE_FAILED_INIT;
        return END_DONE;
    }
    if (curl_multi_add_handle(t->multi, t->easy) != CURLM_OK) {
        *rc = CURLE_FAILED_INIT;
        return END_DONE;
    }
    for (;;) {
        if (curl_multi_perform(t->multi, &running) != CURLM_OK) {
            *rc = CURLE_FAILED_INIT;
            break;
        }
        if (running == 0)
            break;
        if (aborted(t->abort_flag)) {
            end = END_ABORTED;
            break;
        }
        if (pdt_now_ns() >= t->deadline_ns) {
            end = END_DEADLINE;
            break;
        }
        if (curl_multi_poll(t->multi, NULL, 0, POLL_SLICE_MS, NULL) !=
            CURLM_OK) {
            *rc = CURLE_FAILED_INIT;
            break;
        }
    }
    if (end == END_DONE && running == 0) {
        while ((msg = curl_multi_info_read(t->multi, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == t->easy)
                *rc = msg->data.result;
    }
    /* Removing a handle mid-transfer cancels it and closes its connection. */
    curl_multi_remove_handle(t->multi, t->easy);
    if (end == END_DONE && *rc == CURLE_ABORTED_BY_CALLBACK)
        end = aborted(t->abort_flag) ? END_ABORTED : END_DEADLINE;
    return end;
}

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
static int64_t retry_after_ms(const pdti_transport *t)
{
    struct timespec now;
    int64_t ms;

    if (!t->have_retry_after)
        return -1;
    clock_gettime(CLOCK_REALTIME, &now);
    ms = pdti_parse_retry_after(t->retry_after, now.tv_sec);
    if (ms < 0)
        return -1;
    /* A date is exact to the second: count the part of it already gone. */
    if ((t->retry_after[0] < '0' || t->retry_after[0] > '9') && ms > 0) {
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
static void add_bytes_sent(pdti_transport *t, pdti_export_result *res)
{
    long head = 0;
    curl_off_t up = 0;

    if (curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &head) !=
            CURLE_OK || head < 0)
        head = 0;
    if (curl_easy_getinfo(t->easy, CURLINFO_SIZE_UPLOAD_T, &up) !=
            CURLE_OK || up < 0)
        up = 0;
    if ((curl_off_t)head >= up)
        res->bytes_sent += (uint64_t)head;
    else
        res->bytes_sent += (uint64_t)head + (uint64_t)up;
}

static const char *curl_text(const pdti_transport *t, CURLcode rc)
{
    return t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(rc);
}

/* Handles a 2xx: decode partial_success into res. */
static void delivered(pdti_transport *t, pdti_export_result *res)
{
    res->outcome = PDTI_DELIVERED;
    if (t->resp_over) {
        msgf(res->message, sizeof(res->message),
             "HTTP %ld: response body over %zu bytes, not decoded",
             res->http_status, RESP_MAX_BYTES);
        return;
    }
    if (pdti_decode_export_response(t->resp.data, t->resp.len,
                                    &res->rejected_spans, res->message,
                                    sizeof(res->message)) != PDT_OK) {
        res->rejected_spans = 0;
        msgf(res->message, sizeof(res->message),
             "HTTP %ld: response body is not an "
             "ExportTraceServiceResponse (%zu bytes), ignored",
             res->http_status, t->resp.len);
    }
}

/* ---- export with retries ------------------------------------------------ */

int pdti_transport_export(pdti_transport *t, const uint8_t *body, size_t len,
                          uint64_t deadline_ns, const int *abort_flag,
                          pdti_export_result *res)
{
    const uint8_t *payload = body;
    size_t plen = len;
    char why[160];

    if (t == NULL || res == NULL || (body == NULL && len != 0))
        return PDT_EINVAL;
    memset(res, 0, sizeof(*res));
    res->outcome = PDTI_FAILED;
    t->abort_flag = abort_flag;
    t->deadline_ns = deadline_ns;

    if (t->cfg->compression == PDT_COMPRESSION_GZIP ||
        t->cfg->compression == PDT_COMPRESSION_ZSTD) {
        int st = PDT_OK;

        pdti_buf_reset(&t->zbody);
        if (t->comp == NULL)
            st = pdti_compressor_new(&t->comp, t->cfg->compression,
                                     t->cfg->compression_level);
        if (st == PDT_OK)
            st = pdti_compressor_run(t->comp, body, len, &t->zbody);
        if (st != PDT_OK) {
            msgf(res->message, sizeof(res->message),
                 "compressing %zu bytes failed (%s)", len,
                 st == PDT_EINVAL ? "invalid compression level"
                                  : "out of memory");
            return PDT_OK;
        }
        payload = t->zbody.data;
        plen = t->zbody.len;
    }

    for (;;) {
        uint64_t now = pdt_now_ns();
        int64_t left_ms, wait_ms, ra_ms;
        long tmo;
        int by_deadline; /* the request timeout is the time left */
        attempt_end end;
        CURLcode rc;

        if (aborted(abort_flag)) {
            res->outcome = PDTI_ABORTED;
            msgf(res->message, sizeof(res->message),
                 "export aborted before attempt %u", res->attempts + 1);
            break;
        }
        left_ms = now < deadline_ns
                      ? (int64_t)((deadline_ns - now) / 1000000u) : 0;
        if (left_ms < 1) {
            res->outcome = PDTI_ABORTED;
            msgf(res->message, sizeof(res->message),
                 "deadline passed before attempt %u",
                 res->attempts + 1);
            break;
        }
        tmo = (long)(left_ms < LONG_MAX ? left_ms : LONG_MAX);
        by_deadline = 1;
        if (t->cfg->timeout_ms > 0 && t->cfg->timeout_ms < tmo) {
            tmo = (long)t->cfg->timeout_ms;
            by_deadline = 0;
        }

        end = perform(t, payload, plen, tmo, &rc);
        res->attempts++;
        add_bytes_sent(t, res);

        if (end == END_ABORTED) {
            res->outcome = PDTI_ABORTED;
            msgf(res->message, sizeof(res->message),
                 "export aborted during attempt %u", res->attempts);
            break;
        }
        if (end == END_DEADLINE ||
            (rc == CURLE_OPERATION_TIMEDOUT &&
             (by_deadline || pdt_now_ns() >= deadline_ns))) {
            res->outcome = PDTI_ABORTED;
            msgf(res->message, sizeof(res->message),
                 "deadline reached during attempt %u", res->attempts);
            break;
        }

        if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && t->resp_over)) {
            long status = 0;
            curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
            res->http_status = status;
            if (status >= 200 && status < 300) {
                delivered(t, res);
                break;
            }
            if (!pdti_status_retryable(status)) {
                res->outcome = PDTI_FAILED;
                msgf(res->message, sizeof(res->message),
                     "HTTP %ld from the collector, not retryable",
                     status);
                break;
            }
            wait_ms = pdti_backoff_ms(res->attempts, &t->rng);
            ra_ms = retry_after_ms(t);
            if (ra_ms > wait_ms)
                wait_ms = ra_ms;
            msgf(why, sizeof(why), "HTTP %ld", status);
        } else if (curl_retryable(rc)) {
            wait_ms = pdti_backoff_ms(res->attempts, &t->rng);
            msgf(why, sizeof(why), "%s", curl_text(t, rc));
        } else {
            res->outcome = PDTI_FAILED;
            msgf(res->message, sizeof(res->message), "%s",
                 curl_text(t, rc));
            break;
        }

        now = pdt_now_ns();
        left_ms = now < deadline_ns
                      ? (int64_t)((deadline_ns - now) / 1000000u) : 0;
        if (wait_ms >= left_ms) {
            res->outcome = PDTI_FAILED;
            msgf(res->message, sizeof(res->message),
                 "gave up after %u attempts (next retry in %lld ms "
                 "would pass the deadline): %s",
                 res->attempts, (long long)wait_ms, why);
            break;
        }
        if (sleep_sliced(wait_ms, abort_flag) != 0) {
            res->outcome = PDTI_ABORTED;
            msgf(res->message, sizeof(res->message),
                 "export aborted while waiting to retry (%s)", why);
            break;
        }
    }

    if (t->resp.cap > RESP_KEEP_BYTES)
        pdti_buf_free(&t->resp);
    t->abort_flag = NULL;
    redact(res->message, &t->cfg->headers);
    return PDT_OK;
}
