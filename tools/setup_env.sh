#!/usr/bin/env bash
# One-command, idempotent set-up of the rmoe_mm environment.
#
# Creates (or reuses) a virtual environment, installs torch, builds mmcv 2.1.0
# with its ops from source once and caches the wheel, installs mmengine, mmseg,
# mmdet, mmpretrain, timm and the test tools, then installs this checkout in
# editable mode.
# A second run only checks and skips. Prints the venv path on its last line.
#
# Environment:
#   RMOE_MM_VENV   virtual environment to use   (default: ~/.cache/rmoe_mm/venv)
#   RMOE_MM_CACHE  where built wheels are kept  (default: ~/.cache/rmoe_mm)
#   MMCV_WITH_CUDA 1 to force CUDA ops, 0 to force CPU ops (default: CUDA when
#                  nvcc is found and torch sees a GPU)
#   MAX_JOBS       parallel compile jobs for mmcv (default: nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RMOE_MM_CACHE:-$HOME/.cache/rmoe_mm}"
VENV="${RMOE_MM_VENV:-$CACHE/venv}"
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"
MMCV_VERSION=2.1.0
log() { echo "[setup] $*" >&2; }

mkdir -p "$CACHE/wheels"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

have() { "$PY" - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split('==')
    if version(name) != want:
        sys.exit(1)
PYEOF
}

if ! have torch==2.14.1 torchvision==0.29.1; then
  log "installing $TORCH_PINS"
  "${PIP[@]}" install $TORCH_PINS
fi

# After torch (which may pull a newer one): mmcv's setup.py imports pkg_resources (removed in setuptools 81).
if ! "$PY" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) >= 81)" 2>/dev/null \
   || ! "$PY" -c "import wheel" 2>/dev/null; then
  log "installing setuptools<81, wheel"
  "${PIP[@]}" install "setuptools<81" wheel
fi

# ---- mmcv with ops, built once per (torch, device) and cached as a wheel ----
if [ -z "${MMCV_WITH_CUDA:-}" ]; then
  MMCV_WITH_CUDA=0
  if command -v nvcc >/dev/null 2>&1 && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    MMCV_WITH_CUDA=1
  fi
fi
TORCH_TAG="$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")"
if [ "$MMCV_WITH_CUDA" = 1 ]; then
  VARIANT="torch${TORCH_TAG}-cuda$("$PY" -c "import torch; print(torch.version.cuda)")"
else
  VARIANT="torch${TORCH_TAG}-cpu"
fi
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$VARIANT"

mmcv_ok() { "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(0 if mmcv.__version__ == '$MMCV_VERSION' else 1)" 2>/dev/null; }
if ! mmcv_ok; then
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with ops ($VARIANT); this takes ~11 min on 2 cores"
    BUILD="$(mktemp -d)"
    "${PIP[@]}" download --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 asks for C++17.
    sed -i 's/c++17/c++20/g' "$SRC/setup.py"
    "${PIP[@]}" install ninja packaging addict yapf
    (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA="$MMCV_WITH_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PY" -m pip wheel --no-build-isolation --no-deps -w "$BUILD/dist" . >"$BUILD/build.log" 2>&1) \
      || { tail -n 40 "$BUILD/build.log" >&2; log "mmcv build failed; log: $BUILD/build.log"; exit 1; }
    mkdir -p "$WHEEL_DIR"
    mv "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR/"
    rm -rf "$BUILD"
  else
    log "reusing cached mmcv wheel in $WHEEL_DIR"
  fi
  "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
fi

# ---- OpenMMLab stack, timm, test and lint tools (mmcv is already satisfied) ----
# mmpretrain 1.2.0 (the upstream classification stage) asks for mmcv only in
# its [mim] extra, so it leaves the mmcv built above alone.
if ! have mmengine==0.10.7 mmsegmentation==1.2.2 mmdet==3.3.0 mmpretrain==1.2.0 flake8==5.0.4 isort==5.11.5 yapf==0.43.0 || ! "$PY" -c "import pytest, ftfy, regex, pycocotools, matplotlib; from timm.layers.activations import QuickGELU" 2>/dev/null; then
  log "installing mmengine, mmsegmentation, mmdet, mmpretrain, timm and test requirements"
  "${PIP[@]}" install -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
fi
mmcv_ok || { log "mmcv $MMCV_VERSION is installed but 'import mmcv.ops' fails:"; "$PY" -c "import mmcv.ops" || true; exit 1; }

# ---- this checkout, editable ----
# Checked from / so that a checkout in the working directory does not count.
if ! (cd / && "$PY" -c "import rmoe_mm, os, sys; sys.exit(0 if os.path.realpath(os.path.dirname(rmoe_mm.__file__)) == os.path.realpath('$ROOT/rmoe_mm') else 1)" 2>/dev/null); then
  log "installing rmoe_mm (editable) from $ROOT"
  (cd "$ROOT" && "${PIP[@]}" install --no-deps --no-build-isolation -e .)
fi
# ---- the C++ expert loop of rmoe_mm/moe/experts.py (optional: without it the
# same loop runs in Python; RMOE_MM_EXT=off skips the build) ----
if [ "${RMOE_MM_EXT:-auto}" != off ]; then
  "$PY" -c "import ninja" 2>/dev/null || "${PIP[@]}" install ninja
  if ! (cd "$ROOT" && "$PY" -c "from rmoe_mm.moe import ext; ext.build()" >/dev/null 2>&1); then
    log "could not build the C++ expert loop (rmoe_mm/moe/csrc); the Python loop will be used"
  fi
fi
echo "$VENV"
