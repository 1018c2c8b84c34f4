#!/usr/bin/env bash
# Runs every libpdtrace test from a fresh machine: installs what is missing
# (Debian packages, Python packages in venvs, Go modules), builds, and runs
# the unit, header, ABI and integration suites, the real-Collector tests,
# AddressSanitizer + UndefinedBehaviorSanitizer, ThreadSanitizer, valgrind,
# bounded fuzzing, and the Python and Go bindings' tests.
#
#   PDTRACE_FUZZ_SECONDS   seconds per fuzz target (default 20)
#   PDTRACE_SKIP           space-separated stage names to skip
#
# Ends with one line "summary: N passed, N failed" (tests counted across
# all runners) and exits non-zero if anything failed.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
logs="$root/build-logs"
mkdir -p "$logs"
passed=0
failed=0
failed_stages=""
fuzz_seconds="${PDTRACE_FUZZ_SECONDS:-20}"
skip=" ${PDTRACE_SKIP:-} "

say() { printf '\n=== %s\n' "$*"; }

# Adds the counts a runner printed to the totals.
count_meson() { # log file
    local ok fail
    ok=$(grep -E '^Ok:' "$1" | tail -1 | awk '{print $2}')
    fail=$(grep -E '^(Fail|Timeout|Unexpected Pass):' "$1" | awk '{s+=$NF} END {print s+0}')
    passed=$((passed + ${ok:-0}))
    failed=$((failed + ${fail:-0}))
}
count_pytest() {
    local ok fail err
    ok=$(grep -oE '[0-9]+ passed' "$1" | tail -1 | awk '{print $1}')
    fail=$(grep -oE '[0-9]+ failed' "$1" | tail -1 | awk '{print $1}')
    err=$(grep -oE '[0-9]+ errors?' "$1" | tail -1 | awk '{print $1}')
    passed=$((passed + ${ok:-0}))
    failed=$((failed + ${fail:-0} + ${err:-0}))
}
count_go() {
    local ok fail
    ok=$(grep -cE '^\s*--- PASS' "$1")
    fail=$(grep -cE '^\s*--- FAIL|^FAIL\s' "$1")
    passed=$((passed + ok))
    failed=$((failed + fail))
}

# stage NAME COUNTER COMMAND...: runs one stage, logs it, counts it.
stage() {
    local name="$1" counter="$2" log="$logs/$1.log" rc start
    shift 2
    case "$skip" in *" $name "*) say "$name (skipped)"; return 0 ;; esac
    say "$name"
    start=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    if [ "$counter" != none ]; then
        "$counter" "$log"
    fi
    if [ $rc -ne 0 ]; then
        tail -n 60 "$log"
        failed_stages="$failed_stages $name"
        # A stage that failed without a countable test still counts once.
        if [ "$counter" = none ] || ! grep -qE 'FAIL|failed|Fail:' "$log"; then
            failed=$((failed + 1))
        fi
        echo "--- $name FAILED (rc=$rc, $(( $(date +%s) - start )) s, log: $log)"
    else
        [ "$counter" = none ] && passed=$((passed + 1))
        grep -E '^(Ok|Fail|Skipped):|passed|^ok ' "$log" | tail -n 6
        echo "--- $name ok ($(( $(date +%s) - start )) s)"
    fi
    return $rc
}

deps() {
    local pkgs="meson ninja-build pkg-config nanopb libnanopb-dev \
        libcurl4-openssl-dev libzstd-dev zlib1g-dev libisal-dev libcmocka-dev \
        clang libclang-rt-14-dev llvm valgrind python3-venv python3-protobuf \
        build-essential cmake"
    local missing=""
    for p in $pkgs; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
    fi
    command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
    go version && meson --version && clang --version | head -1 &&
        # The integration venv (pytest, opentelemetry-proto, zstandard,
        # prometheus_client) exists before meson runs, which registers the
        # Python-driven tests only when it finds it.
        tests/integration/setup.sh
}

build_main() {
    rm -rf build
    meson setup build --buildtype=debugoptimized -Dwerror=true &&
        ninja -C build &&
        meson test -C build --print-errorlogs --num-processes 2 \
            --suite unit --suite headers --suite abi --suite fuzz \
            --suite integration
}

build_clang() {
    rm -rf build-clang
    # The main build picks ISA-L up where it is installed (isal=auto); the
    # clang build covers the zlib-only gzip path.
    CC=clang meson setup build-clang -Disal=disabled -Dwerror=true &&
        ninja -C build-clang &&
        meson test -C build-clang --print-errorlogs --num-processes 2 \
            --suite unit
}

# What a user builds: -O3 (release), with gcc and with clang, warnings as
# errors here (they are off by default in meson.build).
build_release() { # compiler build-dir
    rm -rf "$2"
    CC="$1" meson setup "$2" -Dbuildtype=release -Dwerror=true &&
        ninja -C "$2" &&
        meson test -C "$2" --print-errorlogs --num-processes 2 --suite unit
}

install_lib() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo meson install -C build --quiet && $sudo ldconfig &&
        pkg-config --modversion libpdtrace
}

collector() {
    local py
    py="$(tests/integration/setup.sh)" &&
        PDTRACE_PD_DEMO="$root/build/examples/c/pd_demo" \
        timeout 1800 "$py" -m pytest -q tests/integration
}

asan() {
    rm -rf build-asan
    CC=clang meson setup build-asan -Db_sanitize=address,undefined -Dwerror=true \
        -Db_lundef=false -Dc_args=-fno-sanitize-recover=all &&
        ninja -C build-asan &&
        PDTRACE_UNDER_ASAN=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        meson test -C build-asan --print-errorlogs --num-processes 2 \
            --suite unit --suite fuzz --suite integration
}

tsan() {
    rm -rf build-tsan
    CC=clang meson setup build-tsan -Db_sanitize=thread -Db_lundef=false \
        -Dwerror=true &&
        ninja -C build-tsan &&
        TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:die_after_fork=0 \
        meson test -C build-tsan --print-errorlogs --num-processes 1 \
            --suite threads
}

valgrind_run() {
    PDTRACE_UNDER_VALGRIND=1 meson test -C build --print-errorlogs --num-processes 2 --suite unit \
        --wrap='valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect' \
        --timeout-multiplier 10
}

fuzz() {
    local rc=0 t bin
    rm -rf build-fuzz
    # The whole library is instrumented, not only the target files.
    CC=clang meson setup build-fuzz -Dfuzzing_engine=libfuzzer -Dwerror=true \
        -Dc_args=-fsanitize=fuzzer-no-link,address,undefined \
        -Dc_link_args=-fsanitize=address,undefined \
        -Db_lundef=false -Dtests=false || return 1
    ninja -C build-fuzz || return 1
    for bin in build-fuzz/fuzz/*_fuzzer; do
        [ -x "$bin" ] || continue
        t="$(basename "$bin" _fuzzer)"
        mkdir -p "build-fuzz/corpus-$t"
        echo "fuzz target $t: ${fuzz_seconds}s"
        "$bin" -max_total_time="$fuzz_seconds" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 \
            "build-fuzz/corpus-$t" "fuzz/corpus/$t" >"build-fuzz/$t.log" 2>&1
        if [ $? -ne 0 ]; then
            tail -n 40 "build-fuzz/$t.log"
            echo "--- FAIL: fuzz target $t found a problem"
            rc=1
        else
            grep -E 'stat::number_of_executed_units|^Done' "build-fuzz/$t.log"
            echo "--- PASS: fuzz target $t"
        fi
    done
    return $rc
}

python_binding() {
    [ -f bindings/python/pyproject.toml ] || { echo "no Python binding"; return 0; }
    local venv="$root/.venv-py"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || return 1
    # setuptools reuses objects in build/ without looking at the installed
    # headers: start clean so the extension matches the library.
    rm -rf bindings/python/build
    timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check \
        ./bindings/python pytest || return 1
    # The OpenTelemetry bridge's tests run with the real SDKs; users need
    # only opentelemetry-api, and only when they use pdtrace.otel.
    timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check \
        opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 \
        opentelemetry-exporter-otlp-proto-http==1.45.2 || return 1
    if [ -f examples/requirements.txt ]; then
        timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check \
            -r examples/requirements.txt || return 1
    fi
    local dirs="bindings/python/tests"
    [ -d examples/tests ] && dirs="$dirs examples/tests"
    timeout 1800 "$venv/bin/python" -m pytest -q $dirs
}

go_binding() {
    [ -f bindings/go/go.mod ] || { echo "no Go binding"; return 0; }
    local rc=0
    # Go's build cache does not see changes to the installed C headers; a
    # digest of them in CGO_CFLAGS makes it rebuild the cgo code when they
    # change.
    local hdr
    hdr="$(cat include/pdtrace.h include/pdtrace/*.h | sha256sum | cut -c1-16)"
    export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -DPDTRACE_HEADERS_DIGEST=$hdr"
    (cd bindings/go && timeout 1200 go test -race -count=1 -v ./...) || rc=1
    # Its own module (OpenTelemetry dependencies stay out of the core one).
    if [ -f bindings/go/otelbridge/go.mod ]; then
        (cd bindings/go/otelbridge &&
            timeout 1200 go test -race -count=1 -v ./...) || rc=1
    fi
    if [ -f examples/go/go.mod ]; then
        (cd examples/go && PDTRACE_SIM_PYTHON="$root/.venv-py/bin/python3" \
            timeout 1200 go test -race -count=1 -v ./...) || rc=1
    fi
    return $rc
}

stage deps none deps || { echo "summary: 0 passed, 1 failed"; exit 1; }
stage build count_meson build_main
stage clang count_meson build_clang
stage release count_meson build_release gcc build-release
stage release_clang count_meson build_release clang build-release-clang
stage install none install_lib
stage collector count_pytest collector
stage asan count_meson asan
stage tsan count_meson tsan
stage valgrind count_meson valgrind_run
stage fuzz count_go fuzz
stage python count_pytest python_binding
stage go count_go go_binding
stage vendored none examples/c/vendored/test.sh
# Packaging, the way users install: the manylinux wheel in a fresh venv,
# a fresh Go module outside the repo (vendored too, and -tags
# pdtrace_system against the library the install stage put in /usr/local),
# CMake find_package and a meson subproject. Each is bounded.
stage pkg-python none timeout 300 tests/packaging/python_wheel.sh
stage pkg-go none timeout 300 tests/packaging/go_module.sh
stage pkg-c none timeout 300 tests/packaging/c_consumers.sh

echo
if [ -n "$failed_stages" ]; then
    echo "failed stages:$failed_stages (logs in $logs)"
fi
echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ -z "$failed_stages" ]
