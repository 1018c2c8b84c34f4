/*
 * spool_driver: a small program for the process-level spool tests
 * (test_faults.py). Opens a tracer that exports to --endpoint, optionally
 * with a spool, ends --spans spans at --rate spans per second, records
 * every span id it ended in --ids (one hex id a line, written at once so a
 * killed process still leaves its list), optionally waits until the spool
 * directory is empty, then closes the tracer and prints one JSON line:
 * the counters taken just before close, and close's status, dropped count
 * and duration.
 *
 *   spool_driver --endpoint URL [--spool DIR] [--spool-max BYTES]
 *       [--spans N] [--rate R] [--batch B] [--queue Q] [--delay MS]
 *       [--export-timeout MS] [--timeout MS] [--close-timeout MS]
 *       [--ids FILE] [--drain-ms MS] [--fork]
 *
 * --fork forks once after the tracer is open: parent and child each end
 * --spans spans through the same tracer object and print their own line.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pdtrace.h"

static const char *endpoint, *spool, *ids_path;
static long long spans = 100, batch = 64, queue = 2048, delay = 200;
static long long export_timeout = 2000, req_timeout = 1000;
static long long close_timeout = 5000, drain_ms = 0, spool_max = 0;
static double rate = 0;
static int do_fork;

static void sleep_ns(uint64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Frames or claims still in the spool directory. */
static int spool_entries(void)
{
    DIR *d;
    struct dirent *e;
    int n = 0;

    if (spool == NULL || (d = opendir(spool)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".pdspool") != NULL ||
            strstr(e->d_name, ".claimed-") != NULL)
            n++;
    closedir(d);
    return n;
}

static int run(pdt_tracer *t)
{
    pdt_stats st = PDT_STATS_INIT;
    uint64_t start = pdt_now_ns(), dropped = 0, t0;
    int ids_fd = -1, rc;
    long long i;

    if (ids_path != NULL) {
        ids_fd = open(ids_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (ids_fd < 0) {
            perror(ids_path);
            return 2;
        }
    }
    for (i = 0; i < spans; i++) {
        pdt_span *s = NULL;
        char sid[17], line[32];

        if (rate > 0) {
            uint64_t due = start + (uint64_t)((double)i / rate * 1e9);
            uint64_t now = pdt_now_ns();
            if (due > now)
                sleep_ns(due - now);
        }
        if (pdt_span_start(&s, t, "spool.test", PDT_SPAN_KIND_INTERNAL, NULL,
                           NULL, NULL, 0) != PDT_OK) {
            fprintf(stderr, "span_start: %s\n", pdt_last_error());
            return 2;
        }
        pdt_span_set_int(s, "seq", i);
        pdt_span_set_int(s, "pid", (int64_t)getpid());
        pdt_span_ids(s, NULL, sid);
        pdt_span_end(s, 0);
        pdt_span_free(s);
        if (ids_fd >= 0) {
            int n = snprintf(line, sizeof(line), "%s\n", sid);
            if (write(ids_fd, line, (size_t)n) != n)
                return 2;
        }
    }
    if (ids_fd >= 0)
        close(ids_fd);
    if (drain_ms > 0) {
        uint64_t until = pdt_now_ns() + (uint64_t)drain_ms * 1000000u;
        pdt_tracer_flush(t, drain_ms, NULL);
        while (pdt_now_ns() < until && spool_entries() > 0)
            sleep_ns(50000000u);
    }
    pdt_tracer_stats(t, &st);
    t0 = pdt_now_ns();
    rc = pdt_tracer_close(t, close_timeout, &dropped);
    printf("{\"pid\": %ld, \"spans\": %lld, \"spans_ended\": %llu, "
           "\"spans_exported\": %llu, \"spans_rejected\": %llu, "
           "\"dropped_queue_full\": %llu, \"dropped_export_failed\": %llu, "
           "\"dropped_shutdown\": %llu, \"export_requests\": %llu, "
           "\"export_failures\": %llu, \"spans_spooled\": %llu, "
           "\"spans_replayed\": %llu, \"spool_dropped\": %llu, "
           "\"spool_corrupt\": %llu, \"queue_depth\": %llu, "
           "\"close_rc\": %d, \"close_dropped\": %llu, \"close_ms\": %.1f, "
           "\"spool_left\": %d}\n",
           (long)getpid(), spans, (unsigned long long)st.spans_ended,
           (unsigned long long)st.spans_exported,
           (unsigned long long)st.spans_rejected,
           (unsigned long long)st.dropped_queue_full,
           (unsigned long long)st.dropped_export_failed,
           (unsigned long long)st.dropped_shutdown,
           (unsigned long long)st.export_requests,
           (unsigned long long)st.export_failures,
           (unsigned long long)st.spans_spooled,
           (unsigned long long)st.spans_replayed,
           (unsigned long long)st.spool_dropped,
           (unsigned long long)st.spool_corrupt,
           (unsigned long long)st.queue_depth, rc,
           (unsigned long long)dropped, (double)(pdt_now_ns() - t0) / 1e6,
           spool_entries());
    fflush(stdout);
    return 0;
}

static void log_fn(void *ud, int level, const char *msg)
{
    (void)ud;
    fprintf(stderr, "[%ld] level %d: %s\n", (long)getpid(), level, msg);
}

int main(int argc, char **argv)
{
    pdt_tracer_options o = PDT_TRACER_OPTIONS_INIT;
    pdt_tracer *t = NULL;
    int i, rc;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--fork") == 0) {
            do_fork = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "missing value for %s\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--endpoint") == 0) endpoint = v;
        else if (strcmp(a, "--spool") == 0) spool = v;
        else if (strcmp(a, "--spool-max") == 0) spool_max = atoll(v);
        else if (strcmp(a, "--spans") == 0) spans = atoll(v);
        else if (strcmp(a, "--rate") == 0) rate = atof(v);
        else if (strcmp(a, "--batch") == 0) batch = atoll(v);
        else if (strcmp(a, "--queue") == 0) queue = atoll(v);
        else if (strcmp(a, "--delay") == 0) delay = atoll(v);
        else if (strcmp(a, "--export-timeout") == 0) export_timeout = atoll(v);
        else if (strcmp(a, "--timeout") == 0) req_timeout = atoll(v);
        else if (strcmp(a, "--close-timeout") == 0) close_timeout = atoll(v);
        else if (strcmp(a, "--ids") == 0) ids_path = v;
        else if (strcmp(a, "--drain-ms") == 0) drain_ms = atoll(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (endpoint == NULL) {
        fprintf(stderr, "--endpoint is required\n");
        return 2;
    }
    o.ignore_environment = 1;
    o.exporter = PDT_EXPORTER_OTLP;
    o.endpoint = endpoint;
    o.compression = PDT_COMPRESSION_NONE;
    o.sampler = PDT_SAMPLER_ALWAYS_ON;
    o.max_export_batch_size = batch;
    o.max_queue_size = queue;
    o.schedule_delay_ms = delay;
    o.export_timeout_ms = export_timeout;
    o.timeout_ms = req_timeout;
    o.spool_dir = spool;
    o.spool_max_bytes = spool_max;
    o.log_fn = log_fn;
    rc = pdt_tracer_open(&t, &o);
    if (rc != PDT_OK) {
        fprintf(stderr, "pdt_tracer_open: %s: %s\n", pdt_status_str(rc),
                pdt_last_error());
        return 3;
    }
    if (do_fork) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        rc = run(t);
        if (pid == 0)
            _exit(rc);
        waitpid(pid, &i, 0);
        return rc != 0 ? rc : (WIFEXITED(i) ? WEXITSTATUS(i) : 4);
    }
    return run(t);
}
