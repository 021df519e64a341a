#!/usr/bin/env bash
# The main job: toy ADE20K -> train -> evaluate, on the CPU in minutes.
#   bash tools/run_main_job.sh [WORK_DIR]
# Sets the environment up if it is missing, generates the toy data if it is
# missing, trains the config through tools/train.py, evaluates the last
# checkpoint through tools/test.py and prints where the checkpoint, the log and
# the mIoU are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$ROOT/tools/setup_env.sh" | tail -n 1)"
PY="$VENV/bin/python"
cd "$ROOT"
WORK="${1:-work_dirs/main_job}"
CONFIG="${CONFIG:-configs/toy/swin_upernet_toy_ade20k.py}"

"$PY" tools/misc/make_toy_data.py ade20k --out data
NAME="$(basename "$CONFIG" .py)"
start=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK/$NAME"
CKPT="$(cat "$WORK/$NAME/last_checkpoint")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/$NAME/test"
end=$(date +%s)
"$PY" tools/analysis/summarize_run.py "$WORK/$NAME" --seconds $((end - start))
