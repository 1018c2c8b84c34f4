#!/bin/sh
# Builds examples/c/vendored against the installed static libpdtrace, runs
# it with the console exporter writing to a temporary file, and checks that
# the three spans of a P/D request were exported and that the binary does
# not depend on libpdtrace.so.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

make -s -C "$here" clean >/dev/null
# The full static link line needs the development files of libcurl's own
# dependencies; without them, link libcurl, zstd and zlib as shared.
if ! make -s -C "$here" vendored 2>"$work/make.err"; then
    echo "note: pkg-config --static link failed (missing -dev files of" \
         "libcurl's dependencies?); retrying with DEPS=shared" >&2
    sed 's/^/  /' "$work/make.err" | tail -n 5 >&2
    make -s -C "$here" DEPS=shared vendored
fi
if command -v ldd >/dev/null 2>&1 && ldd "$here/vendored" | grep libpdtrace >/dev/null; then
    echo "FAIL: vendored is linked against the shared libpdtrace" >&2
    exit 1
fi

OTEL_TRACES_EXPORTER=console PDTRACE_CONSOLE_PATH="$work/spans.json" \
    "$here/vendored" >"$work/stdout"
cat "$work/stdout"

status=0
for name in llm_d.pd_proxy.request llm_d.pd_proxy.prefill llm_d.pd_proxy.decode; do
    if grep -q "\"$name\"" "$work/spans.json"; then
        echo "ok: span $name exported"
    else
        echo "FAIL: span $name not found in the console output" >&2
        status=1
    fi
done
grep -q 'llm_d.pd_proxy.true_ttft_ms' "$work/spans.json" || {
    echo "FAIL: true_ttft_ms attribute missing" >&2
    status=1
}
make -s -C "$here" clean >/dev/null
exit $status
