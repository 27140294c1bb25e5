#!/usr/bin/env bash
# Creates the environment if missing, then runs the whole test suite.
source "$(dirname "$0")/env.sh"
exec python -m pytest -q -n 2 --dist loadfile tests "$@"
