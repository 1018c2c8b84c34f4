#!/usr/bin/env bash
# Creates (or reuses) the virtual environment for the integration tests and
# installs tests/integration/requirements.txt into it.
#
#   PDTRACE_VENV  venv directory (default .venv; a relative path is taken
#                 relative to the repository root)
#
# Idempotent: the installed requirements are recorded in the venv and pip runs
# again only when requirements.txt changes. Prints the venv's python path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PDTRACE_VENV:-.venv}"
[[ "$venv" = /* ]] || venv="$root/$venv"
req="$here/requirements.txt"
stamp="$venv/.pdtrace-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup.sh: creating $venv" >&2
    python3 -m venv "$venv" >&2
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

echo "setup.sh: installing $(basename "$req") into $venv" >&2
timeout 600 "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
