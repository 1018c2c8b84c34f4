/*
 * Helpers shared by the core tests: a strict little JSON parser, a span
 * model filled either from the console exporter's OTLP JSON lines or from
 * OTLP protobuf bytes (decoded with the nanopb descriptors), and tracer
 * set-up with a console file in a temporary directory.
 */
#ifndef PDT_TEST_TUTIL_H
#define PDT_TEST_TUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "pdtrace.h"

/* ---- JSON ---------------------------------------------------------------- */

typedef struct tjson {
    char type;            /* 'o' object, 'a' array, 's' string, 'n' number,
                             'b' bool, 'z' null */
    char *s;              /* string bytes (NUL-terminated, may hold NULs) */
    size_t slen;
    double num;
    int b;
    size_t n;             /* members or items */
    char **keys;          /* object keys */
    struct tjson *items;
} tjson;

/* Parses exactly one JSON value (surrounding whitespace allowed). Strict:
 * RFC 8259 grammar and valid UTF-8 in strings. Returns 0 or -1. */
int tjson_parse(const char *text, size_t len, tjson *out);
void tjson_free(tjson *v);
const tjson *tjson_get(const tjson *obj, const char *key);

/* ---- span model ---------------------------------------------------------- */

typedef struct tattr {
    char *key;
    char type;            /* 's', 'b', 'i', 'd' or '?' */
    char *s;
    size_t slen;
    int64_t i;
    double d;
    int b;
} tattr;

typedef struct tevent {
    uint64_t time;
    char *name;
    tattr *attrs;
    size_t nattrs;
    uint32_t dropped_attrs;
} tevent;

typedef struct tspan {
    char trace_id[33];
    char span_id[17];
    char parent_id[17];   /* "" for none */
    char *trace_state;
    char *name;
    int kind;
    uint64_t start, end;
    tattr *attrs;
    size_t nattrs;
    uint32_t dropped_attrs;
    tevent *events;
    size_t nevents;
    uint32_t dropped_events;
    int has_status;
    int status_code;
    char *status_msg;
    uint32_t flags;
    size_t body_len;      /* protobuf only: encoded Span body length */
    size_t resource;      /* index into tspans.res */
    char *scope_name, *scope_version;
} tspan;

typedef struct tres {
    tattr *attrs;
    size_t nattrs;
} tres;

typedef struct tspans {
    tspan *v;
    size_t n, cap;
    tres *res;
    size_t nres, rescap;
    size_t lines;         /* console lines read */
} tspans;

void tspans_free(tspans *s);
/* Reads every line of a console exporter file. 0 or -1 (bad JSON). */
int tspans_load_file(const char *path, tspans *out);
/* Adds the spans of one OTLP JSON request. 0 or -1. */
int tspans_add_json(tspans *s, const char *text, size_t len);
/* Adds the spans of one protobuf ExportTraceServiceRequest. 0 or -1. */
int tspans_add_pb(tspans *s, const uint8_t *data, size_t len);

const tspan *tspans_by_name(const tspans *s, const char *name, size_t nth);
const tspan *tspans_by_id(const tspans *s, const char *span_id);
size_t tspans_count_name(const tspans *s, const char *name);
const tattr *tspan_attr(const tspan *sp, const char *key);
size_t tspan_attr_count(const tspan *sp, const char *key);
const tattr *tres_attr(const tspans *s, const tspan *sp, const char *key);

/* ---- tracer set-up ------------------------------------------------------- */

/* Fills opts for the console exporter writing to a fresh temporary file
 * (path receives its name, at least 256 bytes), environment ignored. */
void topts_console(pdt_tracer_options *opts, char *path);
/* Removes the temporary file and its directory. */
void tpath_remove(const char *path);
/* Closes the tracer (asserting PDT_OK) and loads its console file. */
void tclose_and_load(pdt_tracer *t, const char *path, tspans *out);

#endif
