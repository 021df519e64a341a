"""Run the checkout's tools from tests, and the toy-data sizes they use."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

#: The checkout this package lives in.
REPO_ROOT = Path(__file__).resolve().parents[2]

# Small enough to write in well under a second, large enough for mmdet's
# min_size=32 filter and for Swin's 4 px patches.
TOY_NUM_TRAIN = 8
TOY_NUM_VAL = 4
TOY_SIZE = 64
TOY_SEED = 0


def load_toy_data_tool():
    """Import tools/misc/make_toy_data.py by path (tools/ is no package)."""
    path = REPO_ROOT / 'tools' / 'misc' / 'make_toy_data.py'
    spec = importlib.util.spec_from_file_location('make_toy_data', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*args, timeout=600, env=None):
    """Run ``python tools/...`` (or a shell script) from the repo root; fail
    with its output if it exits non-zero."""
    cmd = [sys.executable, *map(str, args)] if str(args[0]).endswith('.py') \
        else ['bash', *map(str, args)]
    full_env = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env)
    if proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(cmd)} exited {proc.returncode}\n--- stdout ---\n'
            f'{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}')
    return proc
