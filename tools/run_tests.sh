#!/usr/bin/env bash
# The test command: sets the environment up if it is missing, then runs pytest.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$ROOT/tools/setup_env.sh" | tail -n 1)"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest tests "$@"
