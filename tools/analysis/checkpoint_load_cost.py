"""What the safe loader's pre-scan costs when loading a checkpoint.

Writes an mmengine-style checkpoint of an RMoE Swin (random weights, a
message hub of HistoryBuffers, numpy meta) and times, interleaved, medians:

- ``torch.load``: ``torch.load(weights_only=True)`` with the same allow-list
  (what loading cost before the pre-scan existed);
- ``load_checkpoint_file``: rmoe_mm's safe loader (pre-scan + that load);
- ``prescan``: the pre-scan alone.

Example::

    python tools/analysis/checkpoint_load_cost.py --arch tiny --repeats 9
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

import rmoe_mm  # noqa: F401
from rmoe_mm.checkpoint import load_checkpoint_file, prescan
from rmoe_mm.checkpoint.allowlist import safe_globals
from rmoe_mm.registry import MODELS


def write_checkpoint(path: str, arch: str) -> int:
    """An RMoE Swin checkpoint as mmengine saves one; returns its size."""
    model = MODELS.build(dict(type='RMoESwinTransformer', arch=arch))
    hub = {}
    for i in range(20):
        hub[f'train/loss_{i}'] = buffer = HistoryBuffer()
        for value in range(50):
            buffer.update(float(value))
    torch.save(
        {
            'state_dict': model.state_dict(),
            'meta': {
                'seed': np.int64(0),
                'iter': 400
            },
            'message_hub': {
                'log_scalars': hub
            }
        }, path)
    return sum(v.numel() for v in model.state_dict().values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='tiny')
    parser.add_argument('--repeats', type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'checkpoint.pth')
        size = write_checkpoint(path, args.arch)

        def plain():
            with torch.serialization.safe_globals(safe_globals()):
                torch.load(path, map_location='cpu', weights_only=True)

        def scan():
            with open(path, 'rb') as f:
                prescan(f)

        variants = {
            'torch.load':
            plain,
            'load_checkpoint_file':
            lambda: load_checkpoint_file(path, map_location='cpu'),
            'prescan':
            scan
        }
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        mb = osp.getsize(path) / 2**20
    print(f'RMoE Swin ({args.arch}): {size / 1e6:.1f} M values, {mb:.0f} MB, '
          f'20 HistoryBuffers; medians of {args.repeats}')
    base = statistics.median(times['torch.load'])
    print(f'| {"variant":22s} | median ms | / torch.load |')
    print(f'|{"-" * 24}|-----------|-------------|')
    for name, values in times.items():
        median = statistics.median(values)
        print(f'| {name:22s} | {median * 1e3:9.1f} | {median / base:11.3f} |')


if __name__ == '__main__':
    main()
