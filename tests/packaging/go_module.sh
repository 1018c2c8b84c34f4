#!/usr/bin/env bash
# The Go binding the way users get it: a new module in a temporary
# directory outside the repository requires
# github.com/pdtrace/libpdtrace/bindings/go (a replace directive points it
# at this checkout, as a user's go.mod would before the module is
# published), `go build` builds it with no libpdtrace and no pkg-config
# (PKG_CONFIG=false makes any use of pkg-config fail), and the program
# (tests/packaging/go_consumer/main.go) exports a traced request to a
# loopback receiver. Then the same with `go mod vendor` and -mod=vendor.
# When pkg-config finds an installed libpdtrace, also -tags pdtrace_system.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
version="$(sed -n 's/^#define PDT_VERSION_STRING "\(.*\)"/\1/p' \
    "$root/include/pdtrace/version.h")"
mod=github.com/pdtrace/libpdtrace/bindings/go
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS="" GOWORK=off
unset LD_LIBRARY_PATH

go mod init example.com/pdtrace-consumer >/dev/null 2>&1
go mod edit -require="$mod@v0.0.0" -replace="$mod=$root/bindings/go"
cp "$root/tests/packaging/go_consumer/main.go" .

run() { # label binary
    if ldd "$2" | grep libpdtrace >/dev/null; then
        echo "FAIL: $1: the binary links a shared libpdtrace"; return 1
    fi
    PDTRACE_WANT_VERSION="$version" timeout 60 "$2"
}

echo "== go build (module cache copy of the binding, no pkg-config)"
PKG_CONFIG=false timeout 600 go build -o consumer .
run "go build" ./consumer

echo "== go mod vendor, go build -mod=vendor"
go mod vendor
[[ -f vendor/$mod/pdtrace/csrc/lib/otlp_trace.pb.c ]] ||
    { echo "FAIL: go mod vendor left out the C sources"; exit 1; }
PKG_CONFIG=false timeout 600 go build -mod=vendor -o consumer-vendored .
run "vendored" ./consumer-vendored
rm -rf vendor

if pkg-config --exists libpdtrace 2>/dev/null; then
    echo "== go build -tags pdtrace_system (libpdtrace $(pkg-config --modversion libpdtrace))"
    timeout 600 go build -tags pdtrace_system -o consumer-system .
    ldd consumer-system | grep libpdtrace >/dev/null ||
        { echo "FAIL: -tags pdtrace_system did not link libpdtrace.so"; exit 1; }
    libdir="$(pkg-config --variable=libdir libpdtrace)"
    LD_LIBRARY_PATH="$libdir" PDTRACE_WANT_SHARED=1 PDTRACE_WANT_VERSION="$version" timeout 60 ./consumer-system ||
        { echo "FAIL: the pdtrace_system build"; exit 1; }
else
    echo "note: no libpdtrace found by pkg-config; -tags pdtrace_system not built"
fi
echo "go module: ok"
