#!/usr/bin/env bash
# Install the MoE layers that tools/analysis/benchmark_moe_layer.py compares
# against (DeepSpeed's MoE layer, PyPI `mixture-of-experts`) into a separate
# folder, never into the project's environment or requirements.
#
#   bash tools/analysis/install_peers.sh
#
# The benchmark adds the folder to sys.path when it exists and skips a peer
# that is missing. DeepSpeed is a source distribution whose setup imports
# torch, so it is built against the venv's torch (no build isolation) with its
# ops left to JIT (none is needed on CPU); dependencies are listed by hand
# (--no-deps) so that pip does not pull another torch into the folder.
#
# Environment:
#   RMOE_MM_VENV   virtual environment whose python runs pip
#                  (default: ~/.cache/rmoe_mm/venv)
#   RMOE_MM_PEERS  target folder (default: ~/.cache/rmoe_mm/peers)
set -euo pipefail
CACHE="${RMOE_MM_CACHE:-$HOME/.cache/rmoe_mm}"
VENV="${RMOE_MM_VENV:-$CACHE/venv}"
PEERS="${RMOE_MM_PEERS:-$CACHE/peers}"
PY="$VENV/bin/python"

PACKAGES=(
  deepspeed==0.19.8
  mixture-of-experts==0.2.3
  # DeepSpeed's runtime dependencies that the venv does not already have.
  hjson py-cpuinfo msgpack psutil "pydantic>=2" pydantic-core annotated-types
  typing-inspection
)
mkdir -p "$PEERS"
DS_BUILD_OPS=0 "$PY" -m pip --disable-pip-version-check -q install \
  --no-deps --no-build-isolation --upgrade --target "$PEERS" "${PACKAGES[@]}"
echo "$PEERS"
