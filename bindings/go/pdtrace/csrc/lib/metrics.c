/*
 * Prometheus metrics: per-request histograms and counters kept for every
 * finished request (sampled or not), rendered in the text exposition
 * format 0.0.4 by pdt_tracer_metrics(). See docs/metrics.md.
 *
 * Hot path: pdti_metrics_observe() hashes the label triple, probes a fixed
 * open-addressing table with acquire loads, and adds to the set's counters.
 * A request touches up to 17 counters; 17 locked read-modify-write
 * instructions cost about 90 ns on their own, so each set is split into
 * STRIPES stripes, a thread always uses the same stripe, and
 * a stripe is guarded by a one-word spin lock (one atomic exchange). Under
 * the lock the counters are updated with relaxed atomic loads and stores,
 * which are plain moves; the renderer reads them with relaxed atomic loads
 * without locking and adds the stripes up. Histogram counts are not stored
 * separately: the renderer derives _count from the buckets it read, so
 * _count always equals the +Inf bucket. Sums are whole nanoseconds, so
 * they are exact and independent of the order in which threads add.
 *
 * Why this file is longer than the 800 lines we aim for: the hot path
 * (observe) and the renderer share the private layout of the striped
 * label-set table; putting them in two files would expose that layout to
 * both through a header, for two readers who must read it together anyway.
 */
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/metrics.h"
#include "tracer_data.h"
#include "error.h"
#include "ids.h"
#include "metrics.h"
#include "propagation.h"

#define NB PDTI_METRICS_NBOUNDS
#define MAX_SETS PDTI_METRICS_MAX_SETS
/* Probe table size: a power of two, at least twice MAX_SETS so that
 * probe chains stay short and an empty slot always exists. */
#define SLOTS 128
#define NMODES 3
/* Stripes per label set; threads are spread over them round-robin. */
#define STRIPES 4
/* Failed lock attempts before the waiter yields its CPU. */
#define SPINS 128

/* Bucket bounds: 1 ms to 60 s, dense where LLM latencies live. The
 * strings are the `le` label values, written once here so that rendering
 * never formats a double. */
static const uint64_t bound_ns[NB] = {
    1000000ull,     2500000ull,     5000000ull,     10000000ull,
    20000000ull,    40000000ull,    60000000ull,    80000000ull,
    100000000ull,   150000000ull,   200000000ull,   300000000ull,
    500000000ull,   750000000ull,   1000000000ull,  1500000000ull,
    2500000000ull,  5000000000ull,  7500000000ull,  10000000000ull,
    20000000000ull, 30000000000ull, 60000000000ull,
};
static const char *const bound_str[NB] = {
    "0.001", "0.0025", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08",
    "0.1", "0.15", "0.2", "0.3", "0.5", "0.75", "1", "1.5", "2.5", "5",
    "7.5", "10", "20", "30", "60",
};

typedef struct hist {
    uint64_t buckets[NB + 1]; /* per bucket, not cumulative; [NB] = +Inf */
    uint64_t sum_ns;
} hist;

#define NT PDTI_METRICS_NTENANTS
/* The configuration's limits fit the table. */
typedef char pdti_tenants_fit[NT - 2 == PDTI_TENANTS_MAX &&
                              PDTI_METRICS_TENANT_NAME_MAX ==
                                  PDTI_TENANT_NAME_MAX ? 1 : -1];

/* Token counters, per tenant. */
enum { TOK_IN, TOK_OUT, TOK_CACHED, NTOK };

typedef struct stripe {
    uint32_t lock;        /* 0 free, 1 held; writers only */
    hist h[PDTI_H_COUNT];
    uint64_t requests[NT][2]; /* per tenant: ok, error */
    uint64_t tokens[NT][NTOK];
} stripe;

typedef struct mset {
    /* Written once before the set is published, then read-only. */
    uint64_t hash;
    int mode;
    size_t conn_len, model_len;
    char connector[PDTI_METRICS_CONNECTOR_MAX + 1];
    char model[PDTI_METRICS_MODEL_MAX + 1];
    stripe st[STRIPES];
} mset;

struct pdti_metrics {
    uint32_t slot[SLOTS];  /* 0: empty, else set index + 1; set once */
    uint32_t nsets;        /* sets published, in order of arrival */
    uint32_t next_stripe;  /* round-robin stripe assignment */
    uint64_t overflow;     /* requests sent to an "other" set */
    uint32_t ins_lock;     /* spin lock serialising new sets */
    unsigned fork_gen;     /* fork generation the locks belong to */
    int fork_claim;        /* serialises the reset after a fork */
    unsigned ntenants;     /* label values in use: 2 + configured */
    size_t tenant_len[NT];
    char tenant[NT][PDTI_METRICS_TENANT_NAME_MAX + 1]; /* [0] "", [1] other */
    mset sets[MAX_SETS + NMODES]; /* the last NMODES: "other", per mode */
};

static const char *const mode_str[NMODES] = {
    "sequential", "concurrent", "decode_only"
};

/* ---- table -------------------------------------------------------------- */

int pdti_metrics_new(pdti_metrics **out, const char *tenants)
{
    pdti_metrics *m = calloc(1, sizeof(*m));
    const char *p = tenants;
    int i;

    *out = NULL;
    if (m == NULL)
        return pdti_err(PDT_ENOMEM, "out of memory for the metrics table");
    memcpy(m->tenant[PDTI_METRICS_TENANT_OTHER], "other", 6);
    m->tenant_len[PDTI_METRICS_TENANT_OTHER] = 5;
    m->ntenants = 2;
    /* The list was checked by the configuration: names of 1..63 bytes,
     * no duplicates; anything beyond the table is ignored. */
    while (p != NULL && *p != '\0' && m->ntenants < NT) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n <= PDTI_METRICS_TENANT_NAME_MAX) {
            memcpy(m->tenant[m->ntenants], p, n);
            m->tenant[m->ntenants][n] = '\0';
            m->tenant_len[m->ntenants++] = n;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    pdti_fork_handler_install();
    m->fork_gen = pdti_fork_generation();
    for (i = 0; i < NMODES; i++) {
        mset *s = &m->sets[MAX_SETS + i];
        s->mode = i;
        memcpy(s->connector, "other", 6);
        memcpy(s->model, "other", 6);
        s->conn_len = s->model_len = 5;
    }
    *out = m;
    return PDT_OK;
}

void pdti_metrics_free(pdti_metrics *m)
{
    free(m);
}

unsigned pdti_metrics_tenant(const pdti_metrics *m, const char *name,
                             size_t n)
{
    unsigned i;

    if (m == NULL || name == NULL || n == 0)
        return PDTI_METRICS_TENANT_NONE;
    for (i = 2; i < m->ntenants; i++)
        if (m->tenant_len[i] == n && memcmp(m->tenant[i], name, n) == 0)
            return i;
    return PDTI_METRICS_TENANT_OTHER;
}

uint64_t pdti_metrics_bound_ns(unsigned i)
{
    return i < NB ? bound_ns[i] : UINT64_MAX;
}

/*
 * first_at[L]: the first bucket whose bound is >= 2^(L-1), the smallest
 * value of bit length L. A value of bit length L lands at most 2 buckets
 * further, so the search below takes at most 2 steps (generated from
 * bound_ns; test_metrics checks it against a plain search).
 */
static const uint8_t first_at[65] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    0,  0,  0,  0,  1,  1,  2,  3,  4,  5,  7,  9,  11, 13, 15, 16, 17,
    19, 20, 22, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,
};

/* First bucket whose bound is >= ns (Prometheus `le`), NB for +Inf. */
unsigned pdti_metrics_bucket(uint64_t ns)
{
    unsigned len = ns != 0 ? 64u - (unsigned)__builtin_clzll(ns) : 0u;
    unsigned i = first_at[len];

    while (i < NB && bound_ns[i] < ns)
        i++;
    return i;
}

/* Mixes one 64-bit word into the hash. */
static inline uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

/* Hash of n bytes, a word at a time. */
static inline uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
    uint64_t w;

    for (; n >= 8; n -= 8, s += 8) {
        memcpy(&w, s, 8);
        h = mix(h, w);
    }
    w = 0;
    memcpy(&w, s, n);
    return mix(h, w ^ ((uint64_t)n << 56));
}

static uint64_t label_hash(const char *c, size_t cn, const char *m,
                           size_t mn, int mode)
{
    uint64_t h = hash_bytes(0x243f6a8885a308d3ull ^ (uint64_t)mode, c, cn);
    return hash_bytes(h, m, mn);
}

static int same(const mset *s, uint64_t h, const char *c, size_t cn,
                const char *m, size_t mn, int mode)
{
    return s->hash == h && s->mode == mode && s->conn_len == cn &&
           s->model_len == mn && memcmp(s->connector, c, cn) == 0 &&
           memcmp(s->model, m, mn) == 0;
}

/*
 * Probes for the set; returns it, or NULL with *free_slot set to the
 * first empty slot of the chain.
 */
static mset *probe(pdti_metrics *m, uint64_t h, const char *c, size_t cn,
                   const char *md, size_t mn, int mode, unsigned *free_slot)
{
    unsigned i, pos;
    uint32_t idx;

    for (i = 0; i < SLOTS; i++) {
        pos = (unsigned)(h + i) & (SLOTS - 1);
        idx = __atomic_load_n(&m->slot[pos], __ATOMIC_ACQUIRE);
        if (idx == 0) {
            *free_slot = pos;
            return NULL;
        }
        if (same(&m->sets[idx - 1], h, c, cn, md, mn, mode))
            return &m->sets[idx - 1];
    }
    *free_slot = SLOTS; /* unreachable: SLOTS > MAX_SETS */
    return NULL;
}

static void spin_lock(uint32_t *lock)
{
    unsigned spins = 0;

    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE) != 0) {
        while (__atomic_load_n(lock, __ATOMIC_RELAXED) != 0) {
            if (++spins >= SPINS) {
                spins = 0;
                sched_yield();
            }
        }
    }
}

static void spin_unlock(uint32_t *lock)
{
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

/*
 * First use in a forked child: a lock held by a thread of the parent at
 * the fork would stay held forever. One thread frees every lock and
 * repairs the set count (a fork between publishing a slot and counting
 * the set); the others wait for it.
 */
static void after_fork(pdti_metrics *m, unsigned gen)
{
    int expected = 0;
    uint32_t i, top = 0;
    unsigned x;

    if (!__atomic_compare_exchange_n(&m->fork_claim, &expected, 1, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&m->fork_gen, __ATOMIC_ACQUIRE) != gen)
            sched_yield();
        return;
    }
    for (i = 0; i < MAX_SETS + NMODES; i++)
        for (x = 0; x < STRIPES; x++)
            __atomic_store_n(&m->sets[i].st[x].lock, 0, __ATOMIC_RELAXED);
    for (i = 0; i < SLOTS; i++) {
        uint32_t v = __atomic_load_n(&m->slot[i], __ATOMIC_RELAXED);
        if (v > top)
            top = v;
    }
    __atomic_store_n(&m->nsets, top, __ATOMIC_RELAXED);
    __atomic_store_n(&m->ins_lock, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&m->fork_gen, gen, __ATOMIC_RELEASE);
    __atomic_store_n(&m->fork_claim, 0, __ATOMIC_RELEASE);
}

/* Slow path: publishes a new set under the lock, or overflows. */
static mset *claim(pdti_metrics *m, uint64_t h, const char *c, size_t cn,
                   const char *md, size_t mn, int mode)
{
    mset *s;
    unsigned pos;
    uint32_t n;

    if (cn == 5 && mn == 5 && memcmp(c, "other", 5) == 0 &&
        memcmp(md, "other", 5) == 0)
        return &m->sets[MAX_SETS + mode]; /* the same labels: one series */
    if (__atomic_load_n(&m->nsets, __ATOMIC_ACQUIRE) >= MAX_SETS)
        goto overflow;
    spin_lock(&m->ins_lock);
    s = probe(m, h, c, cn, md, mn, mode, &pos); /* raced with a claimer? */
    if (s != NULL) {
        spin_unlock(&m->ins_lock);
        return s;
    }
    n = m->nsets;
    if (n >= MAX_SETS || pos >= SLOTS) {
        spin_unlock(&m->ins_lock);
        goto overflow;
    }
    s = &m->sets[n];
    s->hash = h;
    s->mode = mode;
    s->conn_len = cn;
    s->model_len = mn;
    memcpy(s->connector, c, cn);
    s->connector[cn] = '\0';
    memcpy(s->model, md, mn);
    s->model[mn] = '\0';
    /* Labels first, then the slot and the count that make them visible. */
    __atomic_store_n(&m->slot[pos], n + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&m->nsets, n + 1, __ATOMIC_RELEASE);
    spin_unlock(&m->ins_lock);
    return s;

overflow:
    __atomic_add_fetch(&m->overflow, 1, __ATOMIC_RELAXED);
    return &m->sets[MAX_SETS + mode];
}

/* A breakdown field (ms, never negative) as whole nanoseconds. */
static uint64_t to_ns(double v_ms)
{
    double v = v_ms * 1e6;

    if (!(v > 0)) /* 0, or NaN (absent fields are skipped before) */
        return 0;
    if (v >= 1.8e19)
        return UINT64_MAX / 2;
    return (uint64_t)(v + 0.5);
}

/* Adds v to a counter of a locked stripe: a relaxed load and store, so
 * that the lock-free renderer reads it without a data race. */
static inline void bump(uint64_t *c, uint64_t v)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v,
                     __ATOMIC_RELAXED);
}

static inline void observe_one(hist *h, double v_ms)
{
    uint64_t ns = to_ns(v_ms);

    bump(&h->buckets[pdti_metrics_bucket(ns)], 1);
    bump(&h->sum_ns, ns);
}

/* This thread's stripe, 1-based (0: not assigned yet). */
static __thread unsigned tls_stripe __attribute__((tls_model("initial-exec")));

static stripe *stripe_lock(pdti_metrics *m, mset *s)
{
    stripe *st;

    if (tls_stripe == 0)
        tls_stripe = __atomic_fetch_add(&m->next_stripe, 1,
                                        __ATOMIC_RELAXED) % STRIPES + 1;
    st = &s->st[tls_stripe - 1];
    spin_lock(&st->lock);
    return st;
}

void pdti_metrics_observe(pdti_metrics *m, const char *connector,
                          const char *model, const pdti_metrics_usage *u,
                          const pdt_breakdown *bd)
{
    size_t cn, mn;
    uint64_t h;
    uint32_t p;
    unsigned pos, gen, ten;
    int mode;
    mset *s;
    stripe *st;

    if (m == NULL)
        return;
    gen = pdti_fork_generation();
    if (__atomic_load_n(&m->fork_gen, __ATOMIC_ACQUIRE) != gen)
        after_fork(m, gen);
    if (connector == NULL || connector[0] == '\0')
        connector = "unknown";
    if (model == NULL || model[0] == '\0')
        model = "unknown";
    mode = bd->mode >= 0 && bd->mode < NMODES ? bd->mode : 0;
    cn = strnlen(connector, PDTI_METRICS_CONNECTOR_MAX);
    mn = strnlen(model, PDTI_METRICS_MODEL_MAX);
    h = label_hash(connector, cn, model, mn, mode);
    s = probe(m, h, connector, cn, model, mn, mode, &pos);
    if (s == NULL)
        s = claim(m, h, connector, cn, model, mn, mode);

    ten = u != NULL && u->tenant < m->ntenants ? u->tenant
                                               : PDTI_METRICS_TENANT_NONE;
    st = stripe_lock(m, s);
    bump(&st->requests[ten][bd->error ? 1 : 0], 1);
    if (bd->output_tokens > 0)
        bump(&st->tokens[ten][TOK_OUT], (uint64_t)bd->output_tokens);
    if (u != NULL && u->input_tokens > 0)
        bump(&st->tokens[ten][TOK_IN], (uint64_t)u->input_tokens);
    if (u != NULL && u->cached_tokens > 0)
        bump(&st->tokens[ten][TOK_CACHED], (uint64_t)u->cached_tokens);
    p = bd->present;
    if (p & PDT_BD_TRUE_TTFT)
        observe_one(&st->h[PDTI_H_TRUE_TTFT], bd->true_ttft_ms);
    if (p & PDT_BD_QUEUE)
        observe_one(&st->h[PDTI_H_QUEUE], bd->queue_ms);
    if (p & PDT_BD_PREFILL)
        observe_one(&st->h[PDTI_H_PREFILL], bd->prefill_ms);
    if (p & PDT_BD_KV_TRANSFER)
        observe_one(&st->h[PDTI_H_KV_TRANSFER], bd->kv_transfer_overhead_ms);
    if (p & PDT_BD_DECODE_TTFT)
        observe_one(&st->h[PDTI_H_DECODE_TTFT], bd->decode_ttft_ms);
    if (p & PDT_BD_DECODE_DURATION)
        observe_one(&st->h[PDTI_H_DECODE], bd->decode_duration_ms);
    if (p & PDT_BD_TOTAL)
        observe_one(&st->h[PDTI_H_TOTAL], bd->total_ms);
    if (p & PDT_BD_TPOT)
        observe_one(&st->h[PDTI_H_TPOT], bd->tpot_ms);
    __atomic_store_n(&st->lock, 0, __ATOMIC_RELEASE);
}

/* ---- rendering ---------------------------------------------------------- */

/* Writes into the caller's buffer while it has room and keeps counting
 * past it, so that one pass gives both the text and the size needed. */
typedef struct writer {
    char *buf;
    size_t cap; /* usable bytes, the NUL excluded */
    size_t len; /* bytes produced so far, written or not */
} writer;

static void put(writer *w, const char *s, size_t n)
{
    if (w->len < w->cap) {
        size_t room = w->cap - w->len;
        memcpy(w->buf + w->len, s, n < room ? n : room);
    }
    w->len += n;
}

static void puts_(writer *w, const char *s)
{
    put(w, s, strlen(s));
}

static void put_u64(writer *w, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(w, tmp + i, sizeof(tmp) - i);
}

/* Nanoseconds as exact decimal seconds: "12.000345678". */
static void put_seconds(writer *w, uint64_t ns)
{
    char frac[10];
    uint64_t f = ns % 1000000000u;
    int i;

    put_u64(w, ns / 1000000000u);
    frac[0] = '.';
    for (i = 9; i >= 1; i--) {
        frac[i] = (char)('0' + f % 10);
        f /= 10;
    }
    put(w, frac, sizeof(frac));
}

/* A label value, escaped (backslash, double quote, newline) and with
 * invalid UTF-8 replaced by U+FFFD so that every parser accepts it. */
static void put_label_value(writer *w, const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, run;

    while (i < n) {
        run = pdti_utf8_valid(u + i, n - i);
        while (run > 0) {
            size_t k = strcspn(s + i, "\\\"\n");
            if (k > run)
                k = run;
            put(w, s + i, k);
            i += k;
            run -= k;
            if (run > 0) {
                put(w, s[i] == '\\' ? "\\\\" : s[i] == '"' ? "\\\"" : "\\n",
                    2);
                i++;
                run--;
            }
        }
        if (i < n) {
            /* One invalid byte at a time: each becomes U+FFFD. */
            put(w, "\xef\xbf\xbd", 3);
            i++;
        }
    }
}

static void put_labels(writer *w, const mset *s)
{
    puts_(w, "connector=\"");
    put_label_value(w, s->connector, s->conn_len);
    puts_(w, "\",model=\"");
    put_label_value(w, s->model, s->model_len);
    puts_(w, "\",mode=\"");
    puts_(w, mode_str[s->mode]);
    put(w, "\"", 1);
}

static void header(writer *w, const char *name, const char *type,
                   const char *help)
{
    puts_(w, "# HELP ");
    puts_(w, name);
    put(w, " ", 1);
    puts_(w, help);
    puts_(w, "\n# TYPE ");
    puts_(w, name);
    put(w, " ", 1);
    puts_(w, type);
    put(w, "\n", 1);
}

/* "name value\n" or "name{labels} value\n" for a tracer-wide counter. */
static void sample(writer *w, const char *name, const char *labels,
                   uint64_t v)
{
    puts_(w, name);
    if (labels != NULL) {
        put(w, "{", 1);
        puts_(w, labels);
        put(w, "}", 1);
    }
    put(w, " ", 1);
    put_u64(w, v);
    put(w, "\n", 1);
}

static const struct {
    const char *name;
    const char *help;
} hist_info[PDTI_H_COUNT] = {
    {"pdtrace_true_ttft_seconds",
     "True time to first token: arrival at the coordinator to the first "
     "token forwarded to the client (F - A)."},
    {"pdtrace_queue_seconds",
     "Coordinator queueing before the first prefill is sent (Ps - A)."},
    {"pdtrace_prefill_seconds",
     "Prefill leg, first prefill sent to the last prefill response read "
     "(Pe - Ps)."},
    {"pdtrace_kv_transfer_overhead_seconds",
     "Coordination between prefill done and decode sent, sequential P/D "
     "only (Ds - Pe)."},
    {"pdtrace_decode_ttft_seconds",
     "Decode sent to the first token forwarded (F - Ds)."},
    {"pdtrace_decode_seconds",
     "Decode leg, decode sent to response complete (E - Ds)."},
    {"pdtrace_request_duration_seconds",
     "Total request duration, arrival to response complete (E - A)."},
    {"pdtrace_time_per_output_token_seconds",
     "Time per output token after the first ((L - F) / (tokens - 1))."},
};

static void render_hist(writer *w, pdti_metrics *m, uint32_t nsets, int k)
{
    const char *name = hist_info[k].name;
    uint64_t b[NB + 1], cum, sum;
    uint32_t i;
    unsigned j, x;

    header(w, name, "histogram", hist_info[k].help);
    for (i = 0; i < MAX_SETS + NMODES; i++) {
        const mset *s;
        if (i >= nsets && i < MAX_SETS)
            continue;
        s = &m->sets[i];
        cum = sum = 0;
        memset(b, 0, sizeof(b));
        for (x = 0; x < STRIPES; x++) {
            const hist *hh = &s->st[x].h[k];
            for (j = 0; j <= NB; j++) {
                uint64_t v = __atomic_load_n(&hh->buckets[j],
                                             __ATOMIC_RELAXED);
                b[j] += v;
                cum += v;
            }
            sum += __atomic_load_n(&hh->sum_ns, __ATOMIC_RELAXED);
        }
        if (cum == 0)
            continue; /* a series appears with its first observation */
        cum = 0;
        for (j = 0; j <= NB; j++) {
            cum += b[j];
            puts_(w, name);
            puts_(w, "_bucket{");
            put_labels(w, s);
            puts_(w, ",le=\"");
            puts_(w, j < NB ? bound_str[j] : "+Inf");
            puts_(w, "\"} ");
            put_u64(w, cum);
            put(w, "\n", 1);
        }
        puts_(w, name);
        puts_(w, "_sum{");
        put_labels(w, s);
        puts_(w, "} ");
        put_seconds(w, sum);
        put(w, "\n", 1);
        puts_(w, name);
        puts_(w, "_count{");
        put_labels(w, s);
        puts_(w, "} ");
        put_u64(w, cum);
        put(w, "\n", 1);
    }
}

/* The request and token counters of one set and tenant, summed over the
 * stripes. */
static void tenant_counts(const mset *s, unsigned ten, uint64_t req[2],
                          uint64_t tok[NTOK])
{
    unsigned x, k;

    req[0] = req[1] = 0;
    for (k = 0; k < NTOK; k++)
        tok[k] = 0;
    for (x = 0; x < STRIPES; x++) {
        const stripe *st = &s->st[x];
        req[0] += __atomic_load_n(&st->requests[ten][0], __ATOMIC_RELAXED);
        req[1] += __atomic_load_n(&st->requests[ten][1], __ATOMIC_RELAXED);
        for (k = 0; k < NTOK; k++)
            tok[k] += __atomic_load_n(&st->tokens[ten][k], __ATOMIC_RELAXED);
    }
}

static void put_tenant(writer *w, const pdti_metrics *m, unsigned ten)
{
    puts_(w, ",tenant=\"");
    put_label_value(w, m->tenant[ten], m->tenant_len[ten]);
    put(w, "\"", 1);
}

/*
 * pdtrace_requests_total (kind NTOK) or one token counter (kind TOK_*):
 * a series per set and tenant label that saw a request.
 */
static void render_counter(writer *w, pdti_metrics *m, uint32_t nsets,
                           int kind)
{
    static const char *const outcome[2] = {"ok", "error"};
    static const struct {
        const char *name, *help;
    } info[NTOK + 1] = {
        {"pdtrace_input_tokens_total", "Input (prompt) tokens of ended "
         "requests, from the usage the caller gave."},
        {"pdtrace_output_tokens_total", "Output tokens of ended requests "
         "(usage, else the tokens counted while streaming)."},
        {"pdtrace_cached_input_tokens_total", "Input tokens served from a "
         "prefix cache, from the usage the caller gave."},
        {"pdtrace_requests_total", "P/D requests ended, by outcome (error: "
         "the client got an error, the request was abandoned, or a leg "
         "failed and no response status was given)."},
    };
    const char *name = info[kind].name;
    uint32_t i;
    unsigned ten;
    int o;

    header(w, name, "counter", info[kind].help);
    for (i = 0; i < MAX_SETS + NMODES; i++) {
        const mset *s = &m->sets[i];
        if (i >= nsets && i < MAX_SETS)
            continue;
        for (ten = 0; ten < m->ntenants; ten++) {
            uint64_t req[2], tok[NTOK];
            tenant_counts(s, ten, req, tok);
            if (req[0] == 0 && req[1] == 0)
                continue; /* a series appears with its first request */
            if (kind < NTOK) {
                puts_(w, name);
                put(w, "{", 1);
                put_labels(w, s);
                put_tenant(w, m, ten);
                puts_(w, "} ");
                put_u64(w, tok[kind]);
                put(w, "\n", 1);
                continue;
            }
            for (o = 0; o < 2; o++) {
                puts_(w, name);
                put(w, "{", 1);
                put_labels(w, s);
                put_tenant(w, m, ten);
                puts_(w, ",outcome=\"");
                puts_(w, outcome[o]);
                puts_(w, "\"} ");
                put_u64(w, req[o]);
                put(w, "\n", 1);
            }
        }
    }
}

static void render_tracer(writer *w, pdt_tracer *t, pdti_metrics *m,
                          uint32_t nsets)
{
    const pdti_stats_counters *c = &t->counters;
    uint64_t depth;

#define LOAD(f) __atomic_load_n(&c->f, __ATOMIC_RELAXED)
    header(w, "pdtrace_spans_exported_total", "counter",
           "Spans accepted by the receiver.");
    sample(w, "pdtrace_spans_exported_total", NULL, LOAD(spans_exported));
    header(w, "pdtrace_spans_dropped_total", "counter",
           "Spans given up, by reason.");
    sample(w, "pdtrace_spans_dropped_total", "reason=\"queue_full\"",
           LOAD(dropped_queue_full));
    sample(w, "pdtrace_spans_dropped_total", "reason=\"export_failed\"",
           LOAD(dropped_export_failed));
    sample(w, "pdtrace_spans_dropped_total", "reason=\"shutdown\"",
           LOAD(dropped_shutdown));
    sample(w, "pdtrace_spans_dropped_total", "reason=\"disabled\"",
           LOAD(dropped_disabled));
    {
        /* Plain counters: one sample each, straight from the tracer. */
        static const struct {
            const char *name, *help;
            size_t off;
        } plain[] = {
#define C(n, h, f) { n, h, offsetof(pdti_stats_counters, f) }
            C("pdtrace_spans_rejected_total", "Spans the receiver rejected "
              "through an OTLP partial success.", spans_rejected),
            C("pdtrace_spans_not_sampled_total", "Spans ended but not "
              "exported because of the sampler.", spans_not_sampled),
            C("pdtrace_spans_spooled_total",
              "Spans written to the persistent spool.", spans_spooled),
            C("pdtrace_spans_replayed_total", "Spans read back from the "
              "spool and delivered.", spans_replayed),
            C("pdtrace_spool_dropped_total",
              "Spans evicted from a full spool.", spool_dropped),
            C("pdtrace_spool_corrupt_total",
              "Corrupt spool frames skipped.", spool_corrupt),
            C("pdtrace_export_requests_total", "OTLP export requests sent, "
              "retries included.", export_requests),
            C("pdtrace_export_retries_total",
              "OTLP export requests that were retries.", export_retries),
            C("pdtrace_export_failures_total",
              "OTLP export requests that failed.", export_failures),
            C("pdtrace_export_bytes_total", "OTLP request body bytes sent, "
              "after compression.", bytes_sent),
#undef C
        };
        size_t i;

        for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
            const uint64_t *f = (const uint64_t *)(const void *)
                ((const char *)c + plain[i].off);
            header(w, plain[i].name, "counter", plain[i].help);
            sample(w, plain[i].name, NULL,
                   __atomic_load_n(f, __ATOMIC_RELAXED));
        }
    }
#undef LOAD
    pthread_mutex_lock(&t->queue.mu);
    depth = t->queue.len;
    pthread_mutex_unlock(&t->queue.mu);
    header(w, "pdtrace_queue_depth", "gauge",
           "Spans waiting for the exporter right now.");
    sample(w, "pdtrace_queue_depth", NULL, depth);
    header(w, "pdtrace_label_overflow_total", "counter",
           "Requests recorded under connector=\"other\",model=\"other\" "
           "because the label-set table was full.");
    sample(w, "pdtrace_label_overflow_total", NULL,
           __atomic_load_n(&m->overflow, __ATOMIC_RELAXED));
    header(w, "pdtrace_label_sets", "gauge",
           "Distinct connector, model and mode label sets in use (at most "
           "64, plus the overflow sets).");
    sample(w, "pdtrace_label_sets", NULL, nsets);
    header(w, "pdtrace_build_info", "gauge",
           "libpdtrace version; always 1.");
    sample(w, "pdtrace_build_info", "version=\"" PDT_VERSION_STRING "\"", 1);
}

int pdt_tracer_metrics(pdt_tracer *tracer, char *buf, size_t cap,
                       size_t *len_out)
{
    writer w;
    pdti_metrics *m;
    uint32_t nsets;
    int k;

    if (len_out != NULL)
        *len_out = 0;
    if (tracer == NULL)
        return pdti_err(PDT_EINVAL, "tracer is NULL");
    if (buf == NULL && cap != 0)
        return pdti_err(PDT_EINVAL, "buf is NULL but cap is not 0");
    m = tracer->metrics;
    if (m == NULL)
        return pdti_err(PDT_EINTERNAL, "tracer has no metrics table");
    w.buf = buf;
    w.cap = cap > 0 ? cap - 1 : 0;
    w.len = 0;
    nsets = __atomic_load_n(&m->nsets, __ATOMIC_ACQUIRE);
    for (k = 0; k < PDTI_H_COUNT; k++)
        render_hist(&w, m, nsets, k);
    render_counter(&w, m, nsets, NTOK);
    render_counter(&w, m, nsets, TOK_IN);
    render_counter(&w, m, nsets, TOK_OUT);
    render_counter(&w, m, nsets, TOK_CACHED);
    render_tracer(&w, tracer, m, nsets);
    if (w.len >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        if (len_out != NULL)
            *len_out = w.len + 1;
        return pdti_err(PDT_EBUFSIZE, "metrics need %zu bytes, buffer has "
                                      "%zu", w.len + 1, cap);
    }
    buf[w.len] = '\0';
    if (len_out != NULL)
        *len_out = w.len;
    return PDT_OK;
}
