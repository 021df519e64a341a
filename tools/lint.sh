#!/usr/bin/env bash
# Lint as CI does: flake8, isort and yapf (settings in setup.cfg), no changes.
#   bash tools/lint.sh [paths]     (default: rmoe_mm tools tests configs)
# Uses $PYTHON (default: python) with requirements/tests.txt installed; fix
# what it reports with `isort PATHS` and `yapf -i -r PATHS`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python}"
if [ "$#" -eq 0 ]; then
  set -- rmoe_mm tools tests configs
fi
status=0
run() {
  echo "[lint] $*" >&2
  "$PY" -m "$@" || status=1
}
run flake8 "$@"
run isort --check-only --diff "$@"
run yapf --diff --recursive "$@"
[ "$status" -eq 0 ] && echo "[lint] clean" >&2
exit "$status"
