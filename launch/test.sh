#!/usr/bin/env bash
# Creates the environment if missing, then runs the whole test suite (what CI runs).
# Extra arguments go to pytest, e.g. `bash launch/test.sh -k launcher`.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
exec python -m pytest -q -n 2 --dist loadfile tests "$@"
