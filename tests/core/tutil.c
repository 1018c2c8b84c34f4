/* Shared helpers of the core tests; see tutil.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pb_decode.h>

#include "otlp_trace.pb.h"
#include "tutil.h"

/* ---- JSON parser --------------------------------------------------------- */

typedef struct jp {
    const char *p, *end;
    int depth;
} jp;

static void ws(jp *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int put_utf8(char *o, size_t *n, uint32_t cp)
{
    if (cp < 0x80) {
        o[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*n)++] = (char)(0xc0 | (cp >> 6));
        o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        o[(*n)++] = (char)(0xe0 | (cp >> 12));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        o[(*n)++] = (char)(0xf0 | (cp >> 18));
        o[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
    return 0;
}

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n, i;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) { n = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { n = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 4; cp = c & 0x07; }
    else return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

static int jstring(jp *j, char **out, size_t *outlen)
{
    char *o;
    size_t n = 0;

    const char *q;

    if (j->p >= j->end || *j->p != '"')
        return -1;
    j->p++;
    /* The decoded string is never longer than its JSON form. */
    for (q = j->p; q < j->end && *q != '"'; q++)
        if (*q == '\\' && q + 1 < j->end)
            q++;
    o = malloc((size_t)(q - j->p) + 1);
    if (o == NULL)
        return -1;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            goto bad;
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                goto bad;
            switch (*j->p) {
            case '"': o[n++] = '"'; break;
            case '\\': o[n++] = '\\'; break;
            case '/': o[n++] = '/'; break;
            case 'b': o[n++] = '\b'; break;
            case 'f': o[n++] = '\f'; break;
            case 'n': o[n++] = '\n'; break;
            case 'r': o[n++] = '\r'; break;
            case 't': o[n++] = '\t'; break;
            case 'u': {
                uint32_t cp = 0;
                int k, h;
                if (j->end - j->p < 5)
                    goto bad;
                for (k = 1; k <= 4; k++) {
                    h = hexval(j->p[k]);
                    if (h < 0)
                        goto bad;
                    cp = cp * 16 + (uint32_t)h;
                }
                j->p += 4;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo = 0;
                    if (j->end - j->p < 7 || j->p[1] != '\\' || j->p[2] != 'u')
                        goto bad;
                    for (k = 3; k <= 6; k++) {
                        h = hexval(j->p[k]);
                        if (h < 0)
                            goto bad;
                        lo = lo * 16 + (uint32_t)h;
                    }
                    if (lo < 0xdc00 || lo > 0xdfff)
                        goto bad;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    j->p += 6;
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    goto bad;
                }
                put_utf8(o, &n, cp);
                break;
            }
            default:
                goto bad;
            }
            j->p++;
        } else {
            size_t k = utf8_seq((const unsigned char *)j->p,
                                (const unsigned char *)j->end);
            if (k == 0)
                goto bad;
            memcpy(o + n, j->p, k);
            n += k;
            j->p += k;
        }
    }
    if (j->p >= j->end)
        goto bad;
    j->p++;
    o[n] = '\0';
    *out = o;
    *outlen = n;
    return 0;
bad:
    free(o);
    return -1;
}

static int jnumber(jp *j, double *out)
{
    const char *s = j->p;
    char buf[64];

    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end)
        return -1;
    if (*j->p == '0') {
        j->p++;
    } else if (*j->p >= '1' && *j->p <= '9') {
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    } else {
        return -1;
    }
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return -1;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return -1;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if ((size_t)(j->p - s) >= sizeof(buf))
        return -1;
    memcpy(buf, s, (size_t)(j->p - s));
    buf[j->p - s] = '\0';
    *out = strtod(buf, NULL);
    return 0;
}

static int jvalue(jp *j, tjson *v);

static int jpush(tjson *v, tjson *item, char *key)
{
    if ((v->n & (v->n - 1)) == 0) { /* grow at powers of two */
        size_t cap = v->n == 0 ? 4 : v->n * 2;
        tjson *ni = realloc(v->items, cap * sizeof(*ni));
        if (ni == NULL)
            return -1;
        v->items = ni;
        if (v->type == 'o') {
            char **nk = realloc(v->keys, cap * sizeof(*nk));
            if (nk == NULL)
                return -1;
            v->keys = nk;
        }
    }
    v->items[v->n] = *item;
    if (v->type == 'o')
        v->keys[v->n] = key;
    v->n++;
    return 0;
}

static int jvalue(jp *j, tjson *v)
{
    memset(v, 0, sizeof(*v));
    ws(j);
    if (j->p >= j->end)
        return -1;
    if (++j->depth > 200)
        return -1;
    switch (*j->p) {
    case '{':
    case '[': {
        char close = *j->p == '{' ? '}' : ']';
        v->type = *j->p == '{' ? 'o' : 'a';
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            break;
        }
        for (;;) {
            tjson item;
            char *key = NULL;
            size_t klen;
            ws(j);
            if (v->type == 'o') {
                if (jstring(j, &key, &klen) != 0)
                    return -1;
                ws(j);
                if (j->p >= j->end || *j->p != ':') {
                    free(key);
                    return -1;
                }
                j->p++;
            }
            if (jvalue(j, &item) != 0 || jpush(v, &item, key) != 0) {
                tjson_free(&item);
                free(key);
                return -1;
            }
            ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                break;
            }
            return -1;
        }
        break;
    }
    case '"':
        v->type = 's';
        if (jstring(j, &v->s, &v->slen) != 0)
            return -1;
        break;
    case 't':
        if (j->end - j->p < 4 || memcmp(j->p, "true", 4) != 0)
            return -1;
        v->type = 'b';
        v->b = 1;
        j->p += 4;
        break;
    case 'f':
        if (j->end - j->p < 5 || memcmp(j->p, "false", 5) != 0)
            return -1;
        v->type = 'b';
        j->p += 5;
        break;
    case 'n':
        if (j->end - j->p < 4 || memcmp(j->p, "null", 4) != 0)
            return -1;
        v->type = 'z';
        j->p += 4;
        break;
    default:
        v->type = 'n';
        if (jnumber(j, &v->num) != 0)
            return -1;
    }
    j->depth--;
    return 0;
}

int tjson_parse(const char *text, size_t len, tjson *out)
{
    jp j = { text, text + len, 0 };

    if (jvalue(&j, out) != 0) {
        tjson_free(out);
        return -1;
    }
    ws(&j);
    if (j.p != j.end) {
        tjson_free(out);
        return -1;
    }
    return 0;
}

void tjson_free(tjson *v)
{
    size_t i;

    for (i = 0; i < v->n; i++) {
        tjson_free(&v->items[i]);
        if (v->keys != NULL)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->s);
    memset(v, 0, sizeof(*v));
}

const tjson *tjson_get(const tjson *obj, const char *key)
{
    size_t i;

    if (obj == NULL || obj->type != 'o')
        return NULL;
    for (i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}

/* ---- span model ---------------------------------------------------------- */

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    assert_non_null(d);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void attrs_free(tattr *a, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        free(a[i].key);
        free(a[i].s);
    }
    free(a);
}

void tspans_free(tspans *s)
{
    size_t i, k;

    for (i = 0; i < s->n; i++) {
        tspan *sp = &s->v[i];
        free(sp->trace_state);
        free(sp->name);
        free(sp->status_msg);
        free(sp->scope_name);
        free(sp->scope_version);
        attrs_free(sp->attrs, sp->nattrs);
        for (k = 0; k < sp->nevents; k++) {
            free(sp->events[k].name);
            attrs_free(sp->events[k].attrs, sp->events[k].nattrs);
        }
        free(sp->events);
    }
    free(s->v);
    for (i = 0; i < s->nres; i++)
        attrs_free(s->res[i].attrs, s->res[i].nattrs);
    free(s->res);
    memset(s, 0, sizeof(*s));
}

static tspan *new_span(tspans *s)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        assert_non_null(s->v);
    }
    memset(&s->v[s->n], 0, sizeof(s->v[0]));
    return &s->v[s->n++];
}

static size_t new_res(tspans *s)
{
    if (s->nres == s->rescap) {
        s->rescap = s->rescap ? s->rescap * 2 : 4;
        s->res = realloc(s->res, s->rescap * sizeof(*s->res));
        assert_non_null(s->res);
    }
    memset(&s->res[s->nres], 0, sizeof(s->res[0]));
    return s->nres++;
}

static tattr *push_attr(tattr **a, size_t *n)
{
    *a = realloc(*a, (*n + 1) * sizeof(**a));
    assert_non_null(*a);
    memset(&(*a)[*n], 0, sizeof(**a));
    return &(*a)[(*n)++];
}

/* JSON side. */

static uint64_t jstr_u64(const tjson *v)
{
    if (v == NULL || v->type != 's')
        return 0;
    return strtoull(v->s, NULL, 10);
}

static int json_attrs(const tjson *arr, tattr **a, size_t *n)
{
    size_t i;

    if (arr == NULL)
        return 0;
    if (arr->type != 'a')
        return -1;
    for (i = 0; i < arr->n; i++) {
        const tjson *kv = &arr->items[i], *k = tjson_get(kv, "key"),
                    *val = tjson_get(kv, "value"), *x;
        tattr *t;
        if (k == NULL || k->type != 's' || val == NULL)
            return -1;
        t = push_attr(a, n);
        t->key = dupn(k->s, k->slen);
        t->type = '?';
        if ((x = tjson_get(val, "stringValue")) != NULL && x->type == 's') {
            t->type = 's';
            t->s = dupn(x->s, x->slen);
            t->slen = x->slen;
        } else if ((x = tjson_get(val, "boolValue")) != NULL &&
                   x->type == 'b') {
            t->type = 'b';
            t->b = x->b;
        } else if ((x = tjson_get(val, "intValue")) != NULL &&
                   x->type == 's') {
            t->type = 'i';
            t->i = strtoll(x->s, NULL, 10);
        } else if ((x = tjson_get(val, "doubleValue")) != NULL) {
            t->type = 'd';
            if (x->type == 'n')
                t->d = x->num;
            else if (x->type == 's')
                t->d = strtod(x->s, NULL); /* "NaN", "Infinity" */
            else
                return -1;
        }
    }
    return 0;
}

static void hexcopy(char *dst, size_t cap, const tjson *v)
{
    dst[0] = '\0';
    if (v != NULL && v->type == 's' && v->slen < cap)
        memcpy(dst, v->s, v->slen + 1);
}

static int json_span(tspans *s, const tjson *js, size_t res,
                     const tjson *scope)
{
    tspan *sp = new_span(s);
    const tjson *v, *ev;
    size_t i;

    sp->resource = res;
    hexcopy(sp->trace_id, sizeof(sp->trace_id), tjson_get(js, "traceId"));
    hexcopy(sp->span_id, sizeof(sp->span_id), tjson_get(js, "spanId"));
    hexcopy(sp->parent_id, sizeof(sp->parent_id),
            tjson_get(js, "parentSpanId"));
    if ((v = tjson_get(js, "traceState")) != NULL && v->type == 's')
        sp->trace_state = dupn(v->s, v->slen);
    if ((v = tjson_get(js, "name")) != NULL && v->type == 's')
        sp->name = dupn(v->s, v->slen);
    if ((v = tjson_get(js, "kind")) != NULL && v->type == 'n')
        sp->kind = (int)v->num;
    if ((v = tjson_get(js, "flags")) != NULL && v->type == 'n')
        sp->flags = (uint32_t)v->num;
    sp->start = jstr_u64(tjson_get(js, "startTimeUnixNano"));
    sp->end = jstr_u64(tjson_get(js, "endTimeUnixNano"));
    if (json_attrs(tjson_get(js, "attributes"), &sp->attrs, &sp->nattrs))
        return -1;
    if ((v = tjson_get(js, "droppedAttributesCount")) != NULL)
        sp->dropped_attrs = (uint32_t)v->num;
    if ((v = tjson_get(js, "droppedEventsCount")) != NULL)
        sp->dropped_events = (uint32_t)v->num;
    if ((ev = tjson_get(js, "events")) != NULL && ev->type == 'a') {
        sp->events = calloc(ev->n + 1, sizeof(*sp->events));
        assert_non_null(sp->events);
        for (i = 0; i < ev->n; i++) {
            tevent *e = &sp->events[sp->nevents++];
            const tjson *x = &ev->items[i];
            e->time = jstr_u64(tjson_get(x, "timeUnixNano"));
            if ((v = tjson_get(x, "name")) != NULL && v->type == 's')
                e->name = dupn(v->s, v->slen);
            if (json_attrs(tjson_get(x, "attributes"), &e->attrs,
                           &e->nattrs))
                return -1;
            if ((v = tjson_get(x, "droppedAttributesCount")) != NULL)
                e->dropped_attrs = (uint32_t)v->num;
        }
    }
    if ((v = tjson_get(js, "status")) != NULL && v->type == 'o') {
        const tjson *c = tjson_get(v, "code"), *m = tjson_get(v, "message");
        sp->has_status = 1;
        if (c != NULL)
            sp->status_code = (int)c->num;
        if (m != NULL && m->type == 's')
            sp->status_msg = dupn(m->s, m->slen);
    }
    if (scope != NULL) {
        if ((v = tjson_get(scope, "name")) != NULL && v->type == 's')
            sp->scope_name = dupn(v->s, v->slen);
        if ((v = tjson_get(scope, "version")) != NULL && v->type == 's')
            sp->scope_version = dupn(v->s, v->slen);
    }
    return 0;
}

int tspans_add_json(tspans *s, const char *text, size_t len)
{
    tjson root;
    const tjson *rss;
    size_t i, k, m;
    int rc = 0;

    if (tjson_parse(text, len, &root) != 0)
        return -1;
    rss = tjson_get(&root, "resourceSpans");
    if (rss == NULL || rss->type != 'a') {
        tjson_free(&root);
        return -1;
    }
    for (i = 0; i < rss->n && rc == 0; i++) {
        const tjson *rs = &rss->items[i];
        const tjson *resource = tjson_get(rs, "resource");
        const tjson *sss = tjson_get(rs, "scopeSpans");
        size_t ri = new_res(s);
        rc = json_attrs(tjson_get(resource, "attributes"), &s->res[ri].attrs,
                        &s->res[ri].nattrs);
        for (k = 0; rc == 0 && sss != NULL && k < sss->n; k++) {
            const tjson *ss = &sss->items[k];
            const tjson *spans = tjson_get(ss, "spans");
            for (m = 0; rc == 0 && spans != NULL && m < spans->n; m++)
                rc = json_span(s, &spans->items[m], ri,
                               tjson_get(ss, "scope"));
        }
    }
    tjson_free(&root);
    return rc;
}

int tspans_load_file(const char *path, tspans *out)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (f == NULL)
        return -1;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') {
            rc = -1; /* every export ends with a newline */
            break;
        }
        out->lines++;
        if (tspans_add_json(out, line, (size_t)n - 1) != 0) {
            rc = -1;
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* Protobuf side, through nanopb callbacks. */

typedef struct pbctx {
    tspans *s;
    size_t res;
    char *scope_name, *scope_version;
} pbctx;

static bool cb_str(pb_istream_t *st, const pb_field_t *f, void **arg)
{
    char **dst = *arg;
    size_t n = st->bytes_left;
    (void)f;
    free(*dst);
    *dst = malloc(n + 1);
    if (*dst == NULL || !pb_read(st, (pb_byte_t *)*dst, n))
        return false;
    (*dst)[n] = '\0';
    return true;
}

typedef struct strlen_dst {
    char **s;
    size_t *len;
} strlen_dst;

static bool cb_strlen(pb_istream_t *st, const pb_field_t *f, void **arg)
{
    strlen_dst *d = *arg;
    char **dst = d->s;
    size_t n = st->bytes_left;
    (void)f;
    free(*dst);
    *dst = malloc(n + 1);
    if (*dst == NULL || !pb_read(st, (pb_byte_t *)*dst, n))
        return false;
    (*dst)[n] = '\0';
    *d->len = n;
    return true;
}

typedef struct hexdst {
    char *out;
    size_t cap;
} hexdst;

static bool cb_hex(pb_istream_t *st, const pb_field_t *f, void **arg)
{
    hexdst *d = *arg;
    uint8_t b[64];
    size_t n = st->bytes_left, i;
    (void)f;
    if (n > sizeof(b) || 2 * n + 1 > d->cap || !pb_read(st, b, n))
        return false;
    for (i = 0; i < n; i++)
        snprintf(d->out + 2 * i, 3, "%02x", b[i]);
    d->out[2 * n] = '\0';
    return true;
}

typedef struct attrdst {
    tattr **a;
    size_t *n;
} attrdst;

static bool cb_kv(pb_istream_t *st, const pb_field_t *f, void **arg)
{
    attrdst *d = *arg;
    pdtrace_otlp_KeyValue kv;
    tattr *t = push_attr(d->a, d->n);
    strlen_dst sd = { &t->s, &t->slen };
    (void)f;
    memset(&kv, 0, sizeof(kv));
    kv.key.funcs.decode = cb_str;
    kv.key.arg = &t->key;
    kv.value.value.string_value.funcs.decode = cb_strlen;
    kv.value.value.string_value.arg = &sd;
    if (!pb_decode_ex(st, pdtrace_otlp_KeyValue_fields, &kv,
                      PB_DECODE_NOINIT))
        return false;
    switch (kv.value.which_value) {
    case pdtrace_otlp_AnyValue_bool_value_tag:
        t->type = 'b';
        t->b = kv.value.value.bool_value;
        break;
    case pdtrace_otlp_AnyValue_int_value_tag:
        t->type = 'i';
        t->i = kv.value.value.int_value;
        break;
    case pdtrace_otlp_AnyValue_double_value_tag:
        t->type = 'd';
        t->d = kv.value.value.double_value;
        break;
    default:
        /* Callback members of the oneof leave which_value unset. */
        t->type = t->s != NULL ? 's' : '?';
    }
    return true;
}

static bool cb_event(pb_istream_t *st, const pb_field_t *f, void **arg)
{
    tspan *sp = *arg;
    pdtrace_otlp_Event ev;
    tevent *e;
    attrdst ad;
    (void)f;
    sp->events = realloc(sp->events, (sp->nevents + 1) * sizeof(*e));
    if (sp->events == NULL)
        return false;
    e = &sp->events[sp->nevents++];
    memset(e, 0, sizeof(*e));
    ad.a = &e->attrs;
    ad.n = &e->nattrs;
    memset(&ev, 0, sizeof(ev));
    ev.name.funcs.decode = cb_str;
    ev.name.arg = &e->name;
    ev.attributes.funcs.decode = cb_kv;
    ev.attributes.arg = &ad;
    if (!pb_decode_ex(st, pdtrace_otlp_Event_fields, &ev, PB_DECODE_NOINIT))
        return false;
    e->time = ev.time_unix_nano;
    e->dropped_attrs = ev.dropped_attributes_count;
    return true;
}

static bool cb_span(pb_istream_t *st, const pb_field_t *f, void **arg)
{
    pbctx *c = *arg;
    pdtrace_otlp_Span m;
    tspan *sp = new_span(c->s);
    hexdst tid = { sp->trace_id, sizeof(sp->trace_id) };
    hexdst sid = { sp->span_id, sizeof(sp->span_id) };
    hexdst pid = { sp->parent_id, sizeof(sp->parent_id) };
    attrdst ad = { &sp->attrs, &sp->nattrs };
    (void)f;
    sp->body_len = st->bytes_left;
    sp->resource = c->res;
    if (c->scope_name != NULL)
        sp->scope_name = dupn(c->scope_name, strlen(c->scope_name));
    if (c->scope_version != NULL)
        sp->scope_version = dupn(c->scope_version, strlen(c->scope_version));
    memset(&m, 0, sizeof(m));
    m.trace_id.funcs.decode = cb_hex;
    m.trace_id.arg = &tid;
    m.span_id.funcs.decode = cb_hex;
    m.span_id.arg = &sid;
    m.parent_span_id.funcs.decode = cb_hex;
    m.parent_span_id.arg = &pid;
    m.trace_state.funcs.decode = cb_str;
    m.trace_state.arg = &sp->trace_state;
    m.name.funcs.decode = cb_str;
    m.name.arg = &sp->name;
    m.attributes.funcs.decode = cb_kv;
    m.attributes.arg = &ad;
    m.events.funcs.decode = cb_event;
    m.events.arg = sp;
    m.status.message.funcs.decode = cb_str;
    m.status.message.arg = &sp->status_msg;
    if (!pb_decode_ex(st, pdtrace_otlp_Span_fields, &m, PB_DECODE_NOINIT))
        return false;
    sp->kind = m.kind;
    sp->start = m.start_time_unix_nano;
    sp->end = m.end_time_unix_nano;
    sp->dropped_attrs = m.dropped_attributes_count;
    sp->dropped_events = m.dropped_events_count;
    sp->has_status = m.has_status;
    sp->status_code = m.status.code;
    sp->flags = m.flags;
    return true;
}

static bool cb_scope_spans(pb_istream_t *st, const pb_field_t *f, void **arg)
{
    pbctx *c = *arg;
    pdtrace_otlp_ScopeSpans m;
    bool ok;
    (void)f;
    free(c->scope_name);
    free(c->scope_version);
    c->scope_name = c->scope_version = NULL;
    /* The scope comes before the spans in our encoding; spans decoded
     * first would miss it, which the tests would notice. */
    memset(&m, 0, sizeof(m));
    m.scope.name.funcs.decode = cb_str;
    m.scope.name.arg = &c->scope_name;
    m.scope.version.funcs.decode = cb_str;
    m.scope.version.arg = &c->scope_version;
    m.spans.funcs.decode = cb_span;
    m.spans.arg = c;
    ok = pb_decode_ex(st, pdtrace_otlp_ScopeSpans_fields, &m,
                      PB_DECODE_NOINIT);
    return ok;
}

static bool cb_resource_spans(pb_istream_t *st, const pb_field_t *f,
                              void **arg)
{
    pbctx *c = *arg;
    pdtrace_otlp_ResourceSpans m;
    attrdst ad;
    (void)f;
    c->res = new_res(c->s);
    ad.a = &c->s->res[c->res].attrs;
    ad.n = &c->s->res[c->res].nattrs;
    memset(&m, 0, sizeof(m));
    m.resource.attributes.funcs.decode = cb_kv;
    m.resource.attributes.arg = &ad;
    m.scope_spans.funcs.decode = cb_scope_spans;
    m.scope_spans.arg = c;
    return pb_decode_ex(st, pdtrace_otlp_ResourceSpans_fields, &m,
                        PB_DECODE_NOINIT);
}

int tspans_add_pb(tspans *s, const uint8_t *data, size_t len)
{
    pdtrace_otlp_ExportTraceServiceRequest m;
    pb_istream_t st = pb_istream_from_buffer(data, len);
    pbctx c;
    bool ok;

    memset(&c, 0, sizeof(c));
    c.s = s;
    memset(&m, 0, sizeof(m));
    m.resource_spans.funcs.decode = cb_resource_spans;
    m.resource_spans.arg = &c;
    ok = pb_decode_ex(&st, pdtrace_otlp_ExportTraceServiceRequest_fields, &m,
                      PB_DECODE_NOINIT);
    free(c.scope_name);
    free(c.scope_version);
    return ok ? 0 : -1;
}

/* Queries. */

const tspan *tspans_by_name(const tspans *s, const char *name, size_t nth)
{
    size_t i;
    for (i = 0; i < s->n; i++)
        if (s->v[i].name != NULL && strcmp(s->v[i].name, name) == 0 &&
            nth-- == 0)
            return &s->v[i];
    return NULL;
}

const tspan *tspans_by_id(const tspans *s, const char *span_id)
{
    size_t i;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->v[i].span_id, span_id) == 0)
            return &s->v[i];
    return NULL;
}

size_t tspans_count_name(const tspans *s, const char *name)
{
    size_t i, n = 0;
    for (i = 0; i < s->n; i++)
        if (s->v[i].name != NULL && strcmp(s->v[i].name, name) == 0)
            n++;
    return n;
}

const tattr *tspan_attr(const tspan *sp, const char *key)
{
    size_t i;
    if (sp == NULL)
        return NULL;
    for (i = 0; i < sp->nattrs; i++)
        if (strcmp(sp->attrs[i].key, key) == 0)
            return &sp->attrs[i];
    return NULL;
}

size_t tspan_attr_count(const tspan *sp, const char *key)
{
    size_t i, n = 0;
    for (i = 0; sp != NULL && i < sp->nattrs; i++)
        if (strcmp(sp->attrs[i].key, key) == 0)
            n++;
    return n;
}

const tattr *tres_attr(const tspans *s, const tspan *sp, const char *key)
{
    const tres *r;
    size_t i;
    if (sp == NULL || sp->resource >= s->nres)
        return NULL;
    r = &s->res[sp->resource];
    for (i = 0; i < r->nattrs; i++)
        if (strcmp(r->attrs[i].key, key) == 0)
            return &r->attrs[i];
    return NULL;
}

/* ---- tracer set-up ------------------------------------------------------- */

void topts_console(pdt_tracer_options *opts, char *path)
{
    const char *tmp = getenv("TMPDIR");
    char dir[200];

    snprintf(dir, sizeof(dir), "%s/pdtcoreXXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, 256, "%s/spans.jsonl", dir);
    pdt_tracer_options_init(opts, sizeof(*opts));
    opts->exporter = PDT_EXPORTER_CONSOLE;
    opts->console_path = path;
    opts->ignore_environment = 1;
}

void tpath_remove(const char *path)
{
    char dir[256];
    char *slash;

    unlink(path);
    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        rmdir(dir);
    }
}

void tclose_and_load(pdt_tracer *t, const char *path, tspans *out)
{
    uint64_t dropped = 99;
    assert_int_equal(pdt_tracer_close(t, 10000, &dropped), PDT_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(tspans_load_file(path, out), 0);
}
