#!/usr/bin/env bash
# The main job, on toy ADE20K, on the CPU in minutes:
#   1. a dense small Swin UperNet trained from scratch (the "pretrained" dense model),
#   2. from it, the dense finetune (lower bound) and the RMoE-I pipeline
#      (intermediate stage with the core frozen, then everything trains),
#   3. tools/test.py on each, and a table of mIoU side by side.
#   bash tools/run_main_job.sh [WORK_DIR]          (default: work_dirs/main_job)
# Sets the environment up and generates the toy data when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$ROOT/tools/setup_env.sh" | tail -n 1)"
PY="$VENV/bin/python"
cd "$ROOT"
WORK="${1:-work_dirs/main_job}"
UPSTREAM_CFG=configs/toy/swin_upernet_toy_ade20k.py
DENSE_CFG=configs/pipelines/toy/swin_upernet_toy_ade20k_dense.py
RMOE_CFG=configs/pipelines/toy/swin_upernet_toy_ade20k_rmoe_i.py

"$PY" tools/misc/make_toy_data.py ade20k --out data

train_and_test() {  # NAME CONFIG [train.py args...]
  local name=$1 config=$2; shift 2
  local start=$(date +%s)
  echo "[main job] training $name ($config)"
  "$PY" tools/train.py "$config" --work-dir "$WORK/$name" "$@"
  echo "[main job] testing $name"
  "$PY" tools/test.py "$config" "$(cat "$WORK/$name/last_checkpoint")" \
    --work-dir "$WORK/$name/test"
  echo $(( $(date +%s) - start )) > "$WORK/$name/seconds"
}

train_and_test dense_upstream "$UPSTREAM_CFG"
UPSTREAM_CKPT="$(cat "$WORK/dense_upstream/last_checkpoint")"
train_and_test dense_finetune "$DENSE_CFG" --cfg-options load_from="$UPSTREAM_CKPT"
train_and_test rmoe_i "$RMOE_CFG" --cfg-options load_from="$UPSTREAM_CKPT"

"$PY" tools/analysis/summarize_run.py "$WORK/dense_upstream" "$WORK/dense_finetune" \
  "$WORK/rmoe_i" --json "$WORK/summary.json"
