"""Time one training step of an RMoE FFN against the dense mmcv FFN it replaces.

Both layers run side by side in one process, their repetitions interleaved
(dense, RMoE, RMoE with frozen core, dense, ...), so that load from other
processes hits all of them alike; the script prints median times and the
ratios to the dense FFN. A step is forward + backward of
``identity + FFN(x)`` with gradients for the input and every trainable
parameter, as inside a Swin block; the dense FFN always trains all its
parameters.

Default shapes: Swin-T stages 3 and 4 for a 512x512 image, batch 2
(tokens = 2 x 32 x 32, C = 384, H = 1536; tokens = 2 x 16 x 16, C = 768,
H = 3072), GELU, E = 8 experts, top-1, dropless.

Example::

    python tools/analysis/benchmark_moe_layer.py --repeats 20

NOTE: on glibc, buffers above the malloc mmap threshold (at most 32 MB by
default) are returned to the OS when freed and page-faulted in again at the
next allocation. Stage 4's residual gradient (E x 3072 x 768 fp32 = 75 MB per
linear layer) is such a buffer, allocated in every backward, so the default
allocator charges the RMoE layer ~15 ms of page faults per linear and step.
``--keep-freed-memory`` raises the threshold (``mallopt``), which is what
jemalloc / tcmalloc, recommended by PyTorch's CPU performance guide, do
anyway; the same effect for training is ``MALLOC_MMAP_THRESHOLD_=1073741824``
in the environment.
"""
import argparse
import ctypes
import os
import statistics
import time

import torch
from mmcv.cnn.bricks.transformer import FFN

from rmoe_mm.moe import RMoEFFN, split_parameters

SHAPES = {
    # name: (tokens, embed_dims, feedforward_channels)
    'swin_t_stage3': (2 * 32 * 32, 384, 1536),
    'swin_t_stage4': (2 * 16 * 16, 768, 3072),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shapes', nargs='+', default=list(SHAPES),
                        choices=list(SHAPES))
    parser.add_argument('--repeats', type=int, default=20,
                        help='timed steps per variant (interleaved)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--num-experts', type=int, default=8)
    parser.add_argument('--top-k', type=int, default=1)
    parser.add_argument('--capacity-factor', type=float, default=None)
    parser.add_argument('--residual-rank', type=int, default=None)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help="raise glibc's mmap threshold to 1 GiB so that "
                        'large freed buffers are reused (see the NOTE above)')
    return parser.parse_args()


def keep_freed_memory():
    """Let glibc reuse freed buffers up to 1 GiB instead of unmapping them."""
    libc = ctypes.CDLL('libc.so.6')
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(
        m_trim_threshold, (1 << 31) - 1)
    if not ok:
        raise RuntimeError('mallopt failed: not glibc?')


def train_step(layer, x, grad):
    """Forward + backward of one layer; gradients are set to None first."""
    for param in layer.parameters():
        param.grad = None
    x.grad = None
    out = layer(x)
    out.backward(grad)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def benchmark_shape(name, args):
    num_tokens, embed_dims, hidden = SHAPES[name]
    dense = FFN(embed_dims, hidden, act_cfg=dict(type='GELU'))
    moe = RMoEFFN.from_dense(
        dense,
        num_experts=args.num_experts,
        top_k=args.top_k,
        capacity_factor=args.capacity_factor,
        residual_rank=args.residual_rank)
    frozen = RMoEFFN.from_dense(
        dense,
        num_experts=args.num_experts,
        top_k=args.top_k,
        capacity_factor=args.capacity_factor,
        residual_rank=args.residual_rank)
    for _, param in split_parameters(frozen, backbone=None)['core']:
        param.requires_grad_(False)
    for layer in (dense, moe, frozen):
        layer.train()

    x = torch.randn(num_tokens // 2, 2, embed_dims).transpose(0, 1)
    x = x.contiguous().requires_grad_()
    grad = torch.randn_like(x)
    variants = {
        'dense FFN': lambda: train_step(dense, x, grad),
        'RMoE FFN': lambda: train_step(moe, x, grad),
        'RMoE FFN, core frozen': lambda: train_step(frozen, x, grad),
    }
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    times = {key: [] for key in variants}
    for _ in range(args.repeats):
        for key, fn in variants.items():
            times[key].append(timed(fn))
    medians = {key: statistics.median(value) for key, value in times.items()}
    counts = moe.moe_stats()['tokens_per_expert']
    print(f'\n{name}: {num_tokens} tokens, C={embed_dims}, H={hidden}, '
          f'E={args.num_experts}, top-{args.top_k}, capacity_factor='
          f'{args.capacity_factor}, tokens per expert {min(counts)}..'
          f'{max(counts)}')
    base = medians['dense FFN']
    for key, value in medians.items():
        print(f'  {key:<24s} {value * 1e3:8.2f} ms   {value / base:5.2f}x dense')
    return {key: value / base for key, value in medians.items()}


def main():
    args = parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{args.repeats} interleaved repeats, median step time, glibc '
          f'keeps freed memory: {args.keep_freed_memory}')
    print('load average before: {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))
    for name in args.shapes:
        benchmark_shape(name, args)
    print('\nload average after: {:.2f} {:.2f} {:.2f} (other processes on '
          'these cores slow the RMoE layer, which makes more, smaller '
          'parallel calls, more than the dense one)'.format(*os.getloadavg()))


if __name__ == '__main__':
    main()
