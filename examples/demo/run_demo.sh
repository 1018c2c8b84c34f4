#!/usr/bin/env bash
# One command for the P/D tracing demo on a fresh machine:
#
#   examples/demo/run_demo.sh [--seconds 60] [--connector nixlv2|lmcache|sglang]
#                             [--prefill N] [--decode M]
#                             [--routing round-robin|prefix-aware]
#                             [--kv-link tcp|rdma] [--no-gateway]
#                             [--compare-routing | --compare-kv-links]
#                             [--price-per-1k P] [--collector]
#                             [--workdir DIR] [--time-scale X]
#
# 1. checks the build dependencies of the Python package (a C compiler,
#    the -dev packages of libcurl, zstd, zlib and nanopb, nanopb's
#    generator, python3-venv); only when some are missing it says which and
#    installs them with apt-get, the one step that needs root (sudo when
#    not root);
# 2. creates the virtual environment .venv-py (or $PDTRACE_VENV) and installs
#    the self-contained binding (bindings/python, which compiles libpdtrace
#    into its extension: nothing is installed outside the checkout) and
#    examples/requirements.txt;
# 3. runs examples/demo/run_demo.py with the given arguments: N prefill and
#    M decode simulators, pd_proxy, the gateway and the load generator on
#    loopback, then the dashboard computed from the exported spans
#    (python3 examples/demo/run_demo.py --help lists every option).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PDTRACE_VENV:-$root/.venv-py}"

log() { echo "run_demo.sh: $*" >&2; }

# Debian packages the build needs, each with a file or command showing it
# is there.
missing=()
need() { # package test...
    local pkg="$1"
    shift
    "$@" >/dev/null 2>&1 || missing+=("$pkg")
}
need gcc command -v cc
need libcurl4-openssl-dev test -f /usr/include/x86_64-linux-gnu/curl/curl.h -o -f /usr/include/curl/curl.h
need libzstd-dev test -f /usr/include/zstd.h
need zlib1g-dev test -f /usr/include/zlib.h
need libnanopb-dev test -f /usr/include/pb_encode.h
need nanopb command -v nanopb_generator.py
need python3-venv python3 -c "import ensurepip, venv"
if (( ${#missing[@]} )); then
    sudo=""
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || {
            log "missing Debian packages: ${missing[*]}"
            log "install them as root (apt-get install ${missing[*]}) and run again"
            exit 1
        }
        sudo="sudo"
    fi
    log "missing Debian packages: ${missing[*]}"
    log "installing them with ${sudo:+sudo }apt-get: the only step that needs root"
    timeout 900 $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive timeout 900 $sudo apt-get install -y -q \
        "${missing[@]}" >&2
fi

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    python3 -m venv "$venv" >&2
fi
stamp="$venv/.pdtrace-demo.sha256"
want="$(cat "$root/examples/requirements.txt" \
    "$root/bindings/python/pyproject.toml" "$root/bindings/python/build_ffi.py" \
    "$root"/bindings/python/src/pdtrace/*.py "$root"/include/pdtrace/*.h \
    "$root"/lib/*.c "$root"/lib/*.h \
    | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] \
    || ! "$venv/bin/python" -c "import pdtrace" 2>/dev/null; then
    log "installing the pdtrace binding and the example requirements"
    rm -rf "$root/bindings/python/build" # stale objects ignore the headers
    # The self-contained package: libpdtrace is compiled into it, never
    # installed system-wide.
    timeout 900 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$root/examples/requirements.txt" "$root/bindings/python" >&2
    echo "$want" > "$stamp"
fi

exec "$venv/bin/python" "$here/run_demo.py" "$@"
