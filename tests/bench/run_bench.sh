#!/usr/bin/env bash
# Benchmarks libpdtrace side by side with the OpenTelemetry SDKs and writes
# docs/benchmarks.md (and docs/benchmarks.json).
#
#   tests/bench/run_bench.sh            # a few minutes: 3 runs per cell
#   tests/bench/run_bench.sh --quick    # under 2 minutes: 1 run per cell
#   tests/bench/run_bench.sh --no-ramp  # skip the Collector throughput ramp
#
# Rows: the floor (tests/bench/bench_floor.c: clock reads, a one-pass
# encode of the same spans and the library's compressor), libpdtrace from C
# (1, 2, 4 and 8 calling threads), through the Python binding and through
# the Go binding; opentelemetry-sdk (Python), opentelemetry-go and
# opentelemetry-rust with their OTLP/HTTP exporters. All export to one
# loopback counting sink; the ramp goes through the real OpenTelemetry
# Collector of tests/collector. libpdtrace from C over OTLP/gRPC beside
# OTLP/HTTP goes to docs/benchmarks-grpc.md (tests/bench/bench_grpc.py).
#
# It builds libpdtrace and the C rows in build-bench/ (meson, default
# options: ISA-L gzip where libisal is installed), the Go programs of
# tests/bench/go, the Rust program of tests/bench/rust (cargo, release,
# --locked; cached in tests/bench/rust/target), installs
# tests/bench/requirements.txt and bindings/python into .venv-bench
# (idempotent), and links both bindings against build-bench's libpdtrace. A
# row that does not build is reported as "n/a".
#
# Environment: PDTRACE_BENCH_BUILD (build dir, default build-bench),
# GO (go command), PYTHON (interpreter for the venv, default python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
build="${PDTRACE_BENCH_BUILD:-build-bench}"
venv="$root/.venv-bench"
bindir="$root/$build/bench-go"
gocmd="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
py="${PYTHON:-python3}"

say() { echo "run_bench: $*" >&2; }

# 1. libpdtrace and the C rows.
if [[ ! -f "$build/build.ninja" ]]; then
    say "meson setup $build"
    meson setup "$build" --buildtype=debugoptimized >/dev/null
fi
timeout 900 ninja -C "$build" tests/bench/bench_c_rows tests/bench/bench_floor \
    tests/bench/malloc_count.so >/dev/null
# Which gzip the build uses (meson's isal feature, auto by default).
gzip_impl=zlib
if grep -q PDTI_HAVE_ISAL "$build/build.ninja"; then
    gzip_impl=isal
fi
export PKG_CONFIG_PATH="$root/$build/meson-uninstalled${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# meson's uninstalled .pc names the build's lib/ only, not include/: the
# bindings' C compilers (cgo, cffi) find the public headers through CPATH.
export CPATH="$root/include${CPATH:+:$CPATH}"
export LD_LIBRARY_PATH="$root/$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 2. Go programs: sink and opentelemetry-go row; the Go binding row may fail.
# A digest of the headers in CGO_CFLAGS: Go's cache does not track them.
hdr="$(cat include/pdtrace.h include/pdtrace/*.h | sha256sum | cut -c1-16)"
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -DPDTRACE_HEADERS_DIGEST=$hdr"
mkdir -p "$bindir"
(
    cd tests/bench/go
    export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:--mod=mod}"
    timeout 900 "$gocmd" build -o "$bindir/" ./sink ./otelgo
) >&2
pdgo="$bindir/pdgo"
rm -f "$pdgo"
if ! (cd tests/bench/go && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:--mod=mod}" \
        timeout 900 "$gocmd" build -o "$bindir/" ./pdgo) >"$bindir/pdgo-build.log" 2>&1; then
    say "Go binding row not built (see $bindir/pdgo-build.log)"
    pdgo=""
fi

# 2b. The opentelemetry-rust row (release build, cached by cargo).
otelrust=""
if command -v cargo >/dev/null 2>&1 &&
        (cd tests/bench/rust && timeout 900 cargo build --release --locked --quiet) \
        >"$bindir/otelrust-build.log" 2>&1; then
    otelrust="$root/tests/bench/rust/target/release/otelrust"
else
    say "opentelemetry-rust row not built (see $bindir/otelrust-build.log)"
fi

# 3. Python venv: requirements once (stamped by their hash), binding each run.
stamp="$venv/.requirements-$(sha256sum tests/bench/requirements.txt | cut -c1-16)"
if [[ ! -x "$venv/bin/python" ]]; then
    "$py" -m venv "$venv"
fi
if [[ ! -f "$stamp" ]]; then
    timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check \
        -r tests/bench/requirements.txt >&2
    touch "$stamp"
fi
if [[ -f bindings/python/pyproject.toml ]]; then
    rm -rf bindings/python/build # objects there ignore header changes
    if ! timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check \
            --force-reinstall --no-deps ./bindings/python >"$venv/binding-install.log" 2>&1; then
        say "Python binding not installed (see $venv/binding-install.log)"
        "$venv/bin/pip" uninstall -q -y pdtrace >/dev/null 2>&1 || true
    fi
fi

# 4. The Collector (cached build); the ramp is skipped without it.
collector=""
if collector="$(timeout 1000 bash tests/collector/build.sh 2>"$bindir/collector-build.log")"; then
    collector="$(echo "$collector" | tail -n 1)"
else
    say "no Collector (see $bindir/collector-build.log): ramp skipped"
    collector=""
fi

# 5. The OTLP/gRPC rows beside OTLP/HTTP (C row only, into the Collector):
# their own page, docs/benchmarks-grpc.md, so the other rows are untouched.
if [[ -n "$collector" ]]; then
    timeout 900 "$venv/bin/python" tests/bench/bench_grpc.py \
        --c-rows "$root/$build/tests/bench/bench_c_rows" \
        --collector "$collector" --out docs/benchmarks-grpc.md "$@" >/dev/null ||
        say "gRPC rows failed"
fi

exec timeout 900 "$venv/bin/python" tests/bench/run_bench.py \
    --sink "$bindir/sink" --otelgo "$bindir/otelgo" --pdgo "$pdgo" \
    --otelrust "$otelrust" --floor "$root/$build/tests/bench/bench_floor" \
    --gzip-impl "$gzip_impl" \
    --c-rows "$root/$build/tests/bench/bench_c_rows" \
    --malloc-shim "$root/$build/tests/bench/malloc_count.so" \
    --libdir "$root/$build/lib" --python "$venv/bin/python" \
    --collector "$collector" "$@"
