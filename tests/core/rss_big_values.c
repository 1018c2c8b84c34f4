/*
 * Measures the memory a process keeps for spans carrying large values:
 * N P/D requests, each with one string attribute of SIZE bytes, ended
 * while the collector is unreachable (so nothing leaves the queue), then
 * the resident set size and its peak. Public API only.
 *
 *   rss_big_values [N [SIZE [ENDPOINT]]]   (defaults: 150, 10000000,
 *                                           http://127.0.0.1:9/v1/traces)
 *
 * ENDPOINT "console" writes the spans to /dev/null instead (everything is
 * exported), and the set is run twice with a flush after each: what the
 * process keeps once the spans are gone.
 *
 * Not a test: docs/operating.md quotes its numbers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdtrace/request.h"
#include "pdtrace/tracer.h"

/* A field of /proc/self/status in KiB ("VmRSS:", "VmHWM:"), or -1. */
static long status_kib(const char *field)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, strlen(field)) == 0) {
            v = strtol(line + strlen(field), NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 150;
    long size = argc > 2 ? strtol(argv[2], NULL, 10) : 10000000;
    const char *endpoint = argc > 3 ? argv[3]
                                    : "http://127.0.0.1:9/v1/traces";
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_stats st = PDT_STATS_INIT;
    pdt_tracer *t = NULL;
    char *value;
    long i;
    int rc;

    if (n <= 0 || size <= 0) {
        fprintf(stderr, "usage: %s [N [SIZE [ENDPOINT]]]\n", argv[0]);
        return 2;
    }
    value = malloc((size_t)size + 1);
    if (value == NULL)
        return 1;
    memset(value, 'x', (size_t)size);
    value[size] = '\0';
    o.ignore_environment = 1;
    if (strcmp(endpoint, "console") == 0) {
        o.exporter = PDT_EXPORTER_CONSOLE;
        o.console_path = "/dev/null";
    } else {
        o.endpoint = endpoint;
    }
    rc = pdt_tracer_open(&t, &o);
    if (rc != PDT_OK) {
        fprintf(stderr, "open: %s\n", pdt_last_error());
        return 1;
    }
    printf("rss_open_kib %ld\n", status_kib("VmRSS:"));
    for (i = 0; i < (o.exporter == PDT_EXPORTER_CONSOLE ? 2 * n : n); i++) {
        pdt_request *r = NULL;
        if (pdt_request_begin(&r, t, NULL, NULL, 0) != PDT_OK) {
            fprintf(stderr, "begin: %s\n", pdt_last_error());
            return 1;
        }
        (void)pdt_request_set_str(r, "payload", value);
        (void)pdt_request_end(r, 0, NULL);
        pdt_request_free(r);
        if (o.exporter == PDT_EXPORTER_CONSOLE && (i + 1) % n == 0) {
            (void)pdt_tracer_flush(t, 30000, NULL);
            printf("rss_flushed_kib %ld\n", status_kib("VmRSS:"));
        }
    }
    printf("rss_after_kib %ld\n", status_kib("VmRSS:"));
    printf("rss_peak_kib %ld\n", status_kib("VmHWM:"));
    pdt_tracer_stats(t, &st);
    printf("spans_ended %llu dropped_queue_full %llu values_truncated %llu "
           "queue_depth %llu\n", (unsigned long long)st.spans_ended,
           (unsigned long long)st.dropped_queue_full,
           (unsigned long long)st.values_truncated,
           (unsigned long long)st.queue_depth);
    pdt_tracer_close(t, 0, NULL);
    free(value);
    return 0;
}
