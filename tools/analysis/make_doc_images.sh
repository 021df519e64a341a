#!/usr/bin/env bash
# Regenerate the pictures in docs/images/ from the toy main job's models:
#   the dense toy Swin UperNet (work_dirs/main_job/dense_upstream, 600 iterations)
#   -> splitting scores of its FFNs (select_moe_layers.py),
#   the RMoE-I model trained from it (work_dirs/main_job/rmoe_i, 100 + 300 iterations)
#   -> expert maps, load, specialisation, weight geometry (expert_analysis.py).
#
#   bash tools/analysis/make_doc_images.sh [MAIN_JOB_WORK_DIR]   (default: work_dirs/main_job)
#
# Reuses the checkpoints of tools/run_main_job.sh when they are there and trains the missing
# ones with the same commands. Writes the tools' full outputs (JSON too) to
# MAIN_JOB_WORK_DIR/doc_images/ and copies the PNGs to docs/images/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$(bash "$ROOT/tools/setup_env.sh" | tail -n 1)/bin/python}"
cd "$ROOT"
WORK="${1:-work_dirs/main_job}"
UPSTREAM_CFG=configs/toy/swin_upernet_toy_ade20k.py
RMOE_CFG=configs/pipelines/toy/swin_upernet_toy_ade20k_rmoe_i.py
OUT="$WORK/doc_images"

"$PY" tools/misc/make_toy_data.py ade20k --out data

if [ ! -f "$WORK/dense_upstream/last_checkpoint" ]; then
  echo "[doc images] training the dense upstream model ($UPSTREAM_CFG)"
  "$PY" tools/train.py "$UPSTREAM_CFG" --work-dir "$WORK/dense_upstream"
fi
UPSTREAM_CKPT="$(cat "$WORK/dense_upstream/last_checkpoint")"
if [ ! -f "$WORK/rmoe_i/last_checkpoint" ]; then
  echo "[doc images] training RMoE-I from $UPSTREAM_CKPT ($RMOE_CFG)"
  "$PY" tools/train.py "$RMOE_CFG" --work-dir "$WORK/rmoe_i" \
    --cfg-options load_from="$UPSTREAM_CKPT"
fi
RMOE_CKPT="$(cat "$WORK/rmoe_i/last_checkpoint")"

"$PY" tools/analysis/select_moe_layers.py "$UPSTREAM_CFG" "$UPSTREAM_CKPT" \
  --batches 16 --out "$OUT/select_moe_layers/scores.json"
"$PY" tools/analysis/expert_analysis.py "$RMOE_CFG" "$RMOE_CKPT" \
  --images 0 1 2 --out "$OUT/expert_analysis"

mkdir -p docs/images
cp "$OUT/select_moe_layers/scores.png" docs/images/splitting_scores.png
for name in expert_maps expert_load specialisation weight_geometry; do
  cp "$OUT/expert_analysis/$name.png" "docs/images/$name.png"
done
ls -l docs/images/*.png
