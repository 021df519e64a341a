#!/usr/bin/env bash
# The RMoE FFN on one GPU, in one go (under 10 minutes on one recent GPU):
#   1. the CUDA tests (the expert paths against the per-token reference),
#   2. the layer benchmark (RMoE FFN vs the dense FFN and the MoE peers, the
#      three Swin shapes, peak CUDA memory per candidate),
#   3. the whole-step benchmark (Swin-T UperNet and Mask R-CNN, 512x512,
#      batch 2: dense vs RMoE vs RMoE core frozen, peak CUDA memory).
#
#   bash tools/analysis/gpu_check.sh [OUT_DIR]     (default work_dirs/gpu_check)
#
# Every part writes its output (and JSON) to OUT_DIR; a failing part does not
# stop the next one, and the script exits non-zero if any failed. Install the
# peers first (bash tools/analysis/install_peers.sh) to include them.
# Environment: PYTHON (default ~/.cache/rmoe_mm/venv/bin/python).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$HOME/.cache/rmoe_mm/venv/bin/python}"
OUT="${1:-$ROOT/work_dirs/gpu_check}"
mkdir -p "$OUT"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no GPU" >&2
  exit 1
fi
{ nvidia-smi || true; lscpu; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$OUT/machine.txt" 2>&1
failed=0
run() {  # run NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [ "$rc" = 0 ] || failed=1
}

run cuda_tests 120 "$PY" -m pytest tests/moe -q -k cuda -rs -p no:cacheprovider
run layer 180 "$PY" tools/analysis/benchmark_moe_layer.py --device cuda \
  --repeats 20 --warmup 3 --memory --json "$OUT/layer.json"
run train_step 240 "$PY" tools/analysis/benchmark_train_step.py --device cuda \
  --size 512 512 --batch 2 --repeats 10 --warmup 2 --memory \
  --json "$OUT/train_step.json"
echo "results in $OUT"
exit $failed
