/*
 * Internal: the tracer, span record and span handle structures shared by
 * span.c, request.c, tracer.c, exporter.c and encode.c.
 */
#ifndef PDTI_CORE_H
#define PDTI_CORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "pdtrace/tracer.h"
#include "pdtrace/span.h"
#include "pdtrace/request.h"
#include "buf.h"
#include "config.h"
#include "log.h"

/* Maximum events a span keeps; more are counted as dropped. */
#define PDTI_MAX_EVENTS 128
/* Tracestate kept per span (W3C asks to propagate at least 512 chars). */
#define PDTI_TRACESTATE_MAX 512
/* A span whose encoding would exceed this is dropped (the Collector's
 * request limit is 20 MiB). */
#define PDTI_MAX_SPAN_BYTES (8u << 20)
/* Initial room for a record's attributes (a traced P/D request span with
 * a handful of caller attributes needs about 1.1 KiB). */
#define PDTI_ATTRS_START 1536
/* Encoded request size at which a batch is cut. */
#define PDTI_MAX_REQUEST_BYTES (4u << 20)

/*
 * A frozen (or being-filled) span: everything the encoder needs, with the
 * attributes and events already in their protobuf form. Recycled through
 * the tracer's free list, so its buffers keep their capacity.
 */
typedef struct pdti_rec {
    /* What the calling thread writes, together in the first lines. */
    struct pdti_rec *next;
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    uint64_t start_unix_ns;
    uint64_t end_unix_ns;
    int has_parent;
    int parent_remote;
    int kind;
    int status_code;
    uint8_t trace_flags;
    uint32_t nattrs;
    uint32_t dropped_attrs;
    pdti_buf name;        /* UTF-8, not framed */
    pdti_buf attrs;       /* framed Span.attributes fields (tag 9) */
    /* The rest: events, status messages, tracestate. */
    pdti_buf tracestate;  /* not framed */
    pdti_buf status_msg;  /* not framed */
    pdti_buf events;      /* framed Span.events fields (tag 11) */
    pdti_buf ev_cur;      /* body of the event still open for attributes */
    int ev_open;
    uint32_t ev_nattrs;
    uint32_t ev_dropped_attrs;
    uint32_t nevents;
    uint32_t dropped_events;
} pdti_rec;

typedef struct pdti_stats_counters {
    uint64_t spans_started, spans_ended, spans_not_sampled, spans_exported,
        spans_rejected, dropped_queue_full, dropped_export_failed,
        dropped_shutdown, dropped_disabled, export_requests, export_retries,
        export_failures, bytes_sent, attributes_dropped, values_truncated,
        strings_sanitized, requests_completed, spans_spooled, spans_replayed,
        spool_dropped, spool_corrupt;
} pdti_stats_counters;

#define PDTI_COUNT(t, field, n) \
    __atomic_add_fetch(&(t)->counters.field, (uint64_t)(n), __ATOMIC_RELAXED)

struct pdt_tracer {
    pdti_config cfg;
    pdti_logger log;
    int64_t wall_offset_ns;  /* unix time = monotonic + wall_offset_ns */
    int export_enabled;      /* 0: disabled or exporter none */
    uint64_t ratio_bound;    /* trace-id ratio threshold */
    pdti_buf preamble;       /* framed Resource, then framed
                                InstrumentationScope at scope_off */
    size_t scope_off;

    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t cv_work;  /* exporter: work or stop */
    pthread_cond_t cv_done;  /* flushers and close: progress */
    pdti_rec *q_head, *q_tail;
    uint64_t q_len;
    pdti_rec **free_recs;     /* pooled records, clean (a stack) */
    uint64_t free_len, free_cap;
    uint64_t rec_count;       /* records in existence (atomic) */
    int pool_short;           /* a caller found the pool empty: the next
                                 batch release grows it by a quarter */
    uint64_t enqueued_total;  /* recs ever enqueued */
    uint64_t processed_total; /* recs taken off the queue and finished */
    uint64_t flush_target;    /* exporter exports without delay up to this */
    int stopping;
    int exited;
    int abort_flag;           /* read by the transport, atomically */
    int thread_started;
    int stuck;                /* the exporter thread was abandoned */
    unsigned fork_gen;        /* fork generation the thread belongs to */
    long pid;                 /* process the resource's process.pid names */
    int fork_claim;           /* serialises the restart after a fork */
    pthread_t thread;

    uint64_t refs;            /* 1 for the tracer + 1 per live request or
                                 span handle; the last release frees it */
    void *free_reqs;          /* recycled pdt_request objects */
    uint64_t free_reqs_len;

    pdti_stats_counters counters;
    void *exporter_state;     /* exporter.c private */
    struct pdti_metrics *metrics; /* metrics.c: Prometheus histograms */
};

/* Span handle. For requests, the handles live inside pdt_request. */
struct pdt_span {
    pdt_tracer *tracer;
    pdti_rec *rec;            /* NULL when not recorded or ended */
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t trace_flags;
    int sampled;
    int ended;
    int in_request;           /* owned by a pdt_request: no end/free */
    uint64_t start_ns;        /* monotonic */
    char tracestate[PDTI_TRACESTATE_MAX + 1];
};

/* The sizes of the caller-filled structs as of 0.1.0: the smallest the
 * library accepts. Fields added later are written only when out->size
 * covers them. */
#define PDTI_PROPAGATION_V0_1_SIZE \
    (offsetof(pdt_propagation, request_id) + sizeof(const char *))
/* The options before spool_dir: the smallest pdt_tracer_open accepts. */
#define PDTI_OPTIONS_V0_1_SIZE offsetof(pdt_tracer_options, spool_dir)
#define PDTI_BREAKDOWN_V0_1_SIZE \
    (offsetof(pdt_breakdown, sampled) + sizeof(int))

/* Handle references: taken by pdt_request_begin / pdt_span_start, dropped
 * by the matching free; the tracer is destroyed at the last release. */
void pdti_tracer_ref(pdt_tracer *t);
void pdti_tracer_unref(pdt_tracer *t);

/*
 * Records. Pooled records are clean: released records are reset by the
 * thread that releases them (mostly the exporter, which has just read
 * them), so taking one costs the calling thread no more than its use.
 */
pdti_rec *pdti_rec_acquire(pdt_tracer *t);
/* A new, clean record of t (NULL when out of memory). */
pdti_rec *pdti_rec_new(pdt_tracer *t);
/* Takes up to n pooled records (lock held by the caller), ready for use;
 * returns how many it took. */
size_t pdti_rec_take_locked(pdt_tracer *t, pdti_rec **out, size_t n);
/* Gives a clean record taken but never used back to the pool (lock
 * held). */
void pdti_rec_put_locked(pdt_tracer *t, pdti_rec *r);
void pdti_rec_release(pdt_tracer *t, pdti_rec *r);
/* The same with t->mu held by the caller. */
void pdti_rec_release_locked(pdt_tracer *t, pdti_rec *r);
/* Releases n records under one lock (the exporter's batches). */
void pdti_rec_release_many(pdt_tracer *t, pdti_rec **recs, size_t n);
/* Hands finished records (linked by ->next) to the exporter, or drops and
 * counts them if the queue is full. Never blocks on the exporter. */
void pdti_enqueue(pdt_tracer *t, pdti_rec *list, uint64_t n);

/* Monotonic to unix nanoseconds. */
uint64_t pdti_unix_ns(const pdt_tracer *t, uint64_t mono_ns);

/* Sampling decision for a new root (no parent): 1 = sample. */
int pdti_sample_root(const pdt_tracer *t, const uint8_t trace_id[16]);
/* Decision with a parent whose sampled flag is given. */
int pdti_sample_with_parent(const pdt_tracer *t, const uint8_t trace_id[16],
                            int parent_sampled, int parent_remote);

/* Span internals shared with request.c. name_lit_len > 0: name is a
 * library literal of that length (no UTF-8 check). spare: a record to use
 * instead of taking one from the pool (consumed: *spare is set to NULL),
 * or NULL. */
int pdti_span_init(pdt_span *s, pdt_tracer *t, const char *name,
                   size_t name_lit_len, int kind, const pdt_span *parent,
                   const char *traceparent, const char *tracestate,
                   uint64_t start_ns, int record, pdti_rec **spare);
/* Freezes the span at end_ns: returns the record (caller enqueues). */
pdti_rec *pdti_span_finish(pdt_span *s, uint64_t end_ns);

/* Attribute encoding into a record (tag 9 for spans, 3 for events). */
int pdti_attr_str(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  const char *value, size_t vlen);
int pdti_attr_int(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                  int64_t v);
int pdti_attr_double(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                     const char *key, double v);
int pdti_attr_bool(pdt_tracer *t, pdti_buf *b, uint8_t tag, const char *key,
                   int v);
/* The same for keys known to be valid ASCII of length klen (the library's
 * own attribute names): no scan, no strlen. */
int pdti_attr_double_lit(pdti_buf *b, uint8_t tag, const char *key,
                         size_t klen, double v);
int pdti_attr_int_lit(pdti_buf *b, uint8_t tag, const char *key, size_t klen,
                      int64_t v);
int pdti_attr_bool_lit(pdti_buf *b, uint8_t tag, const char *key,
                       size_t klen, int v);
int pdti_attr_str_lit(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                      const char *key, size_t klen, const char *value,
                      size_t vlen);
#define PDTI_LIT(s) (s), (sizeof(s) - 1)
/* Appends validated UTF-8 (sanitized, optionally truncated) as a framed
 * string field `tag` to b. limit < 0: no truncation. */
int pdti_put_string_field(pdt_tracer *t, pdti_buf *b, uint8_t tag,
                          const char *s, size_t n, int64_t limit);
/* Copies UTF-8-sanitized s[0..n) into b (unframed). */
int pdti_put_utf8(pdt_tracer *t, pdti_buf *b, const char *s, size_t n);

/* Attribute kinds of pdti_span_attr(). */
enum { PDTI_ATTR_STR = 1, PDTI_ATTR_INT, PDTI_ATTR_DOUBLE, PDTI_ATTR_BOOL };

/* The attribute setters of spans (and of a request's root span): checks,
 * count limit, then the encoding. v: int, bool, or the bits of a double. */
int pdti_span_attr(pdt_span *s, int kind, const char *key, const void *val,
                   size_t vlen, int64_t v);

/* Span-level checks before adding an attribute: 0 = go ahead. */
int pdti_rec_attr_room(pdt_tracer *t, pdti_rec *r);

/*
 * 1 if s[0..n) is plain ASCII (hence valid UTF-8): the fast path in front
 * of pdti_utf8_valid() for the short keys and values of the hot path.
 */
static inline int pdti_ascii(const uint8_t *s, size_t n)
{
    uint64_t acc = 0, w;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= s[i];
    return (acc & 0x8080808080808080ull) == 0;
}

/* Monotonic time, coarse (a few ms) but cheap: for sanity checks only. */
uint64_t pdti_coarse_now_ns(void);

/* Varint helpers. */
static inline size_t pdti_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *pdti_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Encoding (encode.c). */
int pdti_encode_preamble(pdt_tracer *t);
/* Encoded size of one Span message body. */
size_t pdti_span_body_size(const pdti_rec *r);
/* Encodes an ExportTraceServiceRequest holding recs[0..n) into out
 * (reset first), with the pre-encoded resource and scope fields. A pure
 * function of the frozen records: it reads them and writes only out. */
int pdti_encode_request(const uint8_t *resource, size_t resource_len,
                        const uint8_t *scope, size_t scope_len,
                        pdti_rec *const *recs, size_t n, pdti_buf *out);

/* Exporter (exporter.c). */
int pdti_exporter_start(pdt_tracer *t);
/* Stops the thread within the deadline (monotonic ns); returns the number
 * of spans dropped because time ran out. */
uint64_t pdti_exporter_stop(pdt_tracer *t, uint64_t deadline_ns);
void pdti_exporter_free(pdt_tracer *t);
/* Makes sure the exporter thread runs in this process (after fork). */
int pdti_exporter_ensure(pdt_tracer *t);
/*
 * Call before taking t->mu on an entry path: in a forked child, the
 * exporter thread may have held t->mu at the fork; pdti_exporter_ensure()
 * re-creates the lock (and the thread) before anyone waits on it.
 */
static inline void pdti_fork_check(pdt_tracer *t)
{
    pdti_exporter_ensure(t); /* also repairs the locks of a tracer that
                                does not export */
}
/* The queue is nearly full: with a spool, an export that has been running
 * for a while is cut short and its batch spooled. Only an atomic store;
 * callable with t->mu held. */
void pdti_exporter_pressure(pdt_tracer *t);
/* Work for the exporter (with t->mu held): wakes it also while it waits on
 * exports in flight rather than on cv_work. */
void pdti_exporter_wake(pdt_tracer *t);

#endif
