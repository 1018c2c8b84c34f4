#!/usr/bin/env bash
# Builds the test collector (main.go) and prints the path of the binary.
#
# The binary is cached as <cache>/otelcol-<hash>, where <hash> covers go.mod,
# go.sum and main.go, so a change to any of them triggers a rebuild and an
# unchanged tree reuses the cached binary without invoking Go at all.
#
# Environment:
#   PDTRACE_OTELCOL_CACHE   cache directory
#                           (default ${XDG_CACHE_HOME:-$HOME/.cache}/pdtrace)
#   PDTRACE_OTELCOL_BUILD_TIMEOUT  seconds allowed for the build (default 900)
#   GO                      go command (default: go on PATH, else /usr/local/go/bin/go)
#
# Only the binary path goes to stdout; progress and errors go to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PDTRACE_OTELCOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pdtrace}"
timeout_s="${PDTRACE_OTELCOL_BUILD_TIMEOUT:-900}"

hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
out="$cache/otelcol-$hash"

if [[ -x "$out" ]]; then
    echo "$out"
    exit 0
fi

gocmd="${GO:-}"
if [[ -z "$gocmd" ]]; then
    if command -v go >/dev/null 2>&1; then
        gocmd="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        gocmd=/usr/local/go/bin/go
    else
        echo "build.sh: no Go toolchain found (set GO=/path/to/go)" >&2
        exit 1
    fi
fi

mkdir -p "$cache"
tmp="$(mktemp "$cache/.otelcol-$hash.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

echo "build.sh: building $out (timeout ${timeout_s}s)" >&2
start=$(date +%s)
(
    cd "$here"
    # Modules go to the default GOMODCACHE so they are reused across builds.
    export GOFLAGS="${GOFLAGS:--mod=mod}"
    export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
    export CGO_ENABLED=0
    timeout --kill-after=10 "$timeout_s" \
        "$gocmd" build -trimpath -ldflags "-s -w" -o "$tmp" .
) >&2
chmod 0755 "$tmp"
# Atomic: a concurrent build of the same inputs produces the same file.
mv -f "$tmp" "$out"
trap - EXIT
echo "build.sh: built in $(( $(date +%s) - start ))s, $(stat -c %s "$out") bytes" >&2
echo "$out"
