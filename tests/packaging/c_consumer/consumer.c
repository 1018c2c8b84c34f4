/*
 * A C program outside the libpdtrace build that uses the installed (CMake
 * find_package) or subproject (meson) library: traces one P/D request with
 * the console exporter into the file named by argv[1] and checks the
 * library's version against the header's.
 */
#include <stdio.h>
#include <string.h>

#include <pdtrace.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "consumer: %s: %s (%s)\n", what, pdt_status_str(rc),
            pdt_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    pdt_tracer_options opts = PDT_TRACER_OPTIONS_INIT;
    pdt_breakdown bd = PDT_BREAKDOWN_INIT;
    pdt_tracer *tracer = NULL;
    pdt_request *req = NULL;
    uint64_t dropped = 0;
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: consumer SPANS.jsonl\n");
        return 2;
    }
    if (strcmp(pdt_version(), PDT_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: library %s, header %s\n", pdt_version(),
                PDT_VERSION_STRING);
        return 1;
    }
    opts.service_name = "c-consumer";
    opts.exporter = PDT_EXPORTER_CONSOLE;
    opts.console_path = argv[1];
    opts.ignore_environment = 1;
    rc = pdt_tracer_open(&tracer, &opts);
    if (rc != PDT_OK)
        return fail("pdt_tracer_open", rc);
    rc = pdt_request_begin(&req, tracer, NULL, NULL, 0);
    if (rc != PDT_OK)
        return fail("pdt_request_begin", rc);
    pdt_request_set_connector(req, "nixlv2");
    pdt_request_mark(req, PDT_MARK_PREFILL_SENT, 0);
    pdt_request_mark(req, PDT_MARK_PREFILL_DONE, 0);
    pdt_request_mark(req, PDT_MARK_DECODE_SENT, 0);
    pdt_request_tokens(req, 0, 1);
    pdt_request_set_response(req, 200, NULL);
    rc = pdt_request_end(req, 0, &bd);
    pdt_request_free(req);
    if (rc != PDT_OK)
        return fail("pdt_request_end", rc);
    rc = pdt_tracer_close(tracer, 5000, &dropped);
    if (rc != PDT_OK || dropped != 0)
        return fail("pdt_tracer_close", rc);
    printf("consumer: libpdtrace %s, true TTFT %.3f ms\n", pdt_version(),
           bd.true_ttft_ms);
    return 0;
}
