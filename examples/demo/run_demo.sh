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
# 1. builds and installs libpdtrace (meson, build dir build-demo) unless
#    pkg-config already finds it, installing the build dependencies with
#    apt-get when they are missing (needs root);
# 2. creates the virtual environment .venv-py (or $PDTRACE_VENV) and installs
#    the binding (bindings/python) and examples/requirements.txt;
# 3. runs examples/demo/run_demo.py with the given arguments: N prefill and
#    M decode simulators, pd_proxy, the gateway and the load generator on
#    loopback, then the dashboard computed from the exported spans
#    (python3 examples/demo/run_demo.py --help lists every option).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PDTRACE_VENV:-$root/.venv-py}"

log() { echo "run_demo.sh: $*" >&2; }

need_pkgs=()
for tool in meson ninja pkg-config cc; do
    command -v "$tool" >/dev/null 2>&1 || need_pkgs+=("$tool")
done

# Build dependencies: installed with apt-get when something is missing.
if (( ${#need_pkgs[@]} )) || ! pkg-config --exists libcurl libzstd zlib \
    || [[ ! -f /usr/include/pb_encode.h ]] \
    || ! command -v nanopb_generator.py >/dev/null 2>&1; then
    log "installing build dependencies with apt-get"
    timeout 900 apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q \
        meson ninja-build pkg-config gcc libcurl4-openssl-dev \
        libzstd-dev zlib1g-dev libnanopb-dev nanopb python3-venv >&2
fi
# Always build and install this checkout's library (incremental), so the
# binding never compiles against an older installed copy.
log "building libpdtrace (build-demo)"
cd "$root"
[[ -f build-demo/build.ninja ]] || meson setup build-demo -Dtests=false >&2
ninja -C build-demo >&2
meson install -C build-demo --quiet >&2
ldconfig || true
cd - >/dev/null

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    python3 -m venv "$venv" >&2
fi
stamp="$venv/.pdtrace-demo.sha256"
want="$(cat "$root/examples/requirements.txt" \
    "$root/bindings/python/pyproject.toml" "$root/bindings/python/build_ffi.py" \
    "$root"/bindings/python/src/pdtrace/*.py "$root"/include/pdtrace/*.h \
    | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] \
    || ! "$venv/bin/python" -c "import pdtrace" 2>/dev/null; then
    log "installing the pdtrace binding and the example requirements"
    rm -rf "$root/bindings/python/build" # stale objects ignore the headers
    timeout 900 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$root/examples/requirements.txt" "$root/bindings/python" >&2
    echo "$want" > "$stamp"
fi

exec "$venv/bin/python" "$here/run_demo.py" "$@"
