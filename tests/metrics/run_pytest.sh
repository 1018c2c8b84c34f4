#!/usr/bin/env bash
# Runs the metrics pytest files with the integration venv's python
# (tests/integration/setup.sh creates it and installs prometheus_client).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$("$here/../integration/setup.sh")"
exec "$py" -m pytest -q -p no:cacheprovider "$@"
