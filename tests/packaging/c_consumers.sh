#!/usr/bin/env bash
# C users, the way they get libpdtrace:
#   1. CMake: libpdtrace is built and installed into a prefix inside a
#      temporary directory; a tiny project (tests/packaging/c_consumer) finds
#      it with find_package(pdtrace) through CMAKE_PREFIX_PATH, links
#      pdtrace::pdtrace (and pdtrace::pdtrace_static), and runs with no
#      LD_LIBRARY_PATH, tracing a request with the console exporter;
#   2. meson: the same project uses this repository as its subproject
#      subprojects/libpdtrace, with the fallback forced.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="$root/tests/packaging/c_consumer"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset LD_LIBRARY_PATH
jobs="${PDTRACE_JOBS:-2}"

check_spans() { # label spans-file
    local name
    for name in llm_d.pd_proxy.request llm_d.pd_proxy.prefill \
                llm_d.pd_proxy.decode; do
        grep -q "\"$name\"" "$2" ||
            { echo "FAIL: $1: span $name not exported"; return 1; }
    done
    echo "ok: $1: the three spans of the request were exported"
}

echo "== install libpdtrace into $work/prefix"
meson setup "$work/lib-build" "$root" --prefix="$work/prefix" \
    -Dtests=false -Dwerror_strict=false >"$work/setup.log" 2>&1 ||
    { tail -n 30 "$work/setup.log"; exit 1; }
timeout 600 ninja -j"$jobs" -C "$work/lib-build" >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log"; exit 1; }
meson install -C "$work/lib-build" --quiet

echo "== CMake consumer: find_package(pdtrace)"
cmake -S "$src" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$work/prefix" \
    >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; exit 1; }
timeout 300 cmake --build "$work/cmake-build" -j "$jobs" >>"$work/cmake.log" 2>&1 ||
    { tail -n 30 "$work/cmake.log"; exit 1; }
ldd "$work/cmake-build/consumer" | grep "libpdtrace.so.0 => $work/prefix" >/dev/null ||
    { echo "FAIL: consumer does not load the prefix's libpdtrace"; ldd "$work/cmake-build/consumer"; exit 1; }
timeout 60 "$work/cmake-build/consumer" "$work/cmake.jsonl"
check_spans "cmake pdtrace::pdtrace" "$work/cmake.jsonl"
[[ -x "$work/cmake-build/consumer_static" ]] ||
    { echo "FAIL: pdtrace::pdtrace_static was not defined"; exit 1; }
if ldd "$work/cmake-build/consumer_static" | grep libpdtrace >/dev/null; then
    echo "FAIL: consumer_static links a shared libpdtrace"; exit 1
fi
timeout 60 "$work/cmake-build/consumer_static" "$work/static.jsonl"
check_spans "cmake pdtrace::pdtrace_static" "$work/static.jsonl"

echo "== meson consumer: subprojects/libpdtrace"
mkdir -p "$work/meson-src/subprojects"
cp "$src/meson.build" "$src/consumer.c" "$work/meson-src/"
ln -s "$root" "$work/meson-src/subprojects/libpdtrace"
meson setup "$work/meson-build" "$work/meson-src" \
    --force-fallback-for=libpdtrace >"$work/meson.log" 2>&1 ||
    { tail -n 30 "$work/meson.log"; exit 1; }
grep -q "Subproject libpdtrace finished" "$work/meson.log" ||
    { echo "FAIL: libpdtrace was not used as a subproject"; exit 1; }
timeout 600 ninja -j"$jobs" -C "$work/meson-build" >>"$work/meson.log" 2>&1 ||
    { tail -n 30 "$work/meson.log"; exit 1; }
timeout 60 "$work/meson-build/consumer" "$work/meson.jsonl"
check_spans "meson subproject" "$work/meson.jsonl"
echo "c consumers: ok"
