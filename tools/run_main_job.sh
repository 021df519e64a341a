#!/usr/bin/env bash
# The main job, on the toy data, on the CPU in minutes: the paper's RMoE-I
# beside the dense pipeline and the downstream-intermediate variant.
#   1. a dense small Swin classifier trained on toy ImageNet: the toy
#      "official ImageNet checkpoint" (configs/upstream/toy/swin_toy_imagenet.py);
#   2. dense pipeline: it, finetuned as a Swin UperNet on toy ADE20K;
#   3. RMoE-I (the paper's): it converted to RMoE, an intermediate stage on
#      toy ImageNet with the core frozen (residuals, routers, head train),
#      then finetuned on toy ADE20K;
#   4. RMoE-I downstream (a variant): it converted to RMoE, an intermediate
#      stage on toy ADE20K with the core frozen, then the same finetune.
# The console shows one progress line per run and the final table; every
# run's full log is its work dir's console.log. Ends with
# WORK_DIR/comparison.png (mIoU per pipeline, training-loss curves) and
# WORK_DIR/comparison.json.
#   bash tools/run_main_job.sh [WORK_DIR]          (default: work_dirs/main_job)
# Sets the environment up and generates the toy data when missing; runs every
# stage again even when WORK_DIR holds an earlier run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$ROOT/tools/setup_env.sh" | tail -n 1)"
PY="$VENV/bin/python"
cd "$ROOT"
WORK="${1:-work_dirs/main_job}"
START=$(date +%s)
"$PY" tools/analysis/compare_pipelines.py \
  configs/pipelines/specs/swin_upernet_toy_ade20k.py \
  --pipelines dense rmoe_i rmoe_i_downstream --seeds 0 \
  --work-dir "$WORK" --rerun \
  --title "main job: toy ADE20K, dense vs RMoE-I (upstream) vs RMoE-I downstream"
echo "[main job] done in $(( $(date +%s) - START )) s"
