"""Time one training step of the RMoE FFN against the dense FFN and MoE peers.

Every candidate runs in one process, their repetitions interleaved (dense,
RMoE, RMoE with frozen core, DeepSpeed, ..., dense, ...), so that load from
other processes hits all of them alike; the script prints median step times
and the ratios to the dense mmcv ``FFN`` of the same round. A step is forward
+ backward of ``x + FFN(x)`` with gradients for the input and every trainable
parameter (and the candidate's balance loss, weight 0.01), as inside a Swin
block.

Candidates (E experts, top-1, GELU, the FFN's C and H):

- ``dense``: mmcv ``FFN``, the layer the RMoE FFN replaces.
- ``rmoe``, ``rmoe_frozen``: :class:`RMoEFFN` (dropless, full residuals),
  trained fully / with its core frozen (RMoE-I's intermediate stage).
- ``rmoe_r{R}``, ``rmoe_r{R}_frozen``: low-rank residuals (``--ranks``).
- ``dispatch_only``: RMoEFFN's routing, dispatch and combine around the dense
  core with no residual at all: the floor of any RMoE layer built on them.
- ``deepspeed``: DeepSpeed's ``MoE`` layer (k 1, capacity factor 1.25,
  GShard-style one-hot dispatch), E copies of the FFN.
- ``pypi_moe``: PyPI ``mixture-of-experts`` (GShard-style one-hot einsums,
  batched ``[E, C, H]`` experts; second-expert policy 'none' = top-1).
- ``sparse_dispatcher``: davidmrau's SparseDispatcher MoE (noisy top-k
  gating, ``nonzero``-sorted dispatch, ``index_add`` combine; not on PyPI,
  written here after its repository), E FFN modules.
- ``naive_loop``: what users typically write: a softmax router and a loop
  over E FFN modules with boolean masks.

The peers are optional: install them with ``tools/analysis/install_peers.sh``
(a separate folder, added to ``sys.path`` here when it exists); a missing one
is skipped with a note.

Shapes (512x512 input, batch 2): Swin-T stage 3 (2048 tokens, C 384, H
1536), Swin-T stage 4 (512 tokens, C 768, H 3072), Swin-L stage 3 (2048
tokens, C 768, H 3072).

``--memory`` also runs each candidate in a fresh process and reports its
peak resident memory above the process's size before the layer was built
(parameters, gradients and the step's buffers).

Example::

    python tools/analysis/benchmark_moe_layer.py --threads 1 2 --memory

NOTE: wall-clock medians are printed for every thread count; with one
thread the process CPU time is printed too, which does not count the time
the process waits for a core that other processes hold (this machine is
shared), so it is the steadier figure there.
"""
import argparse
import ctypes
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

from rmoe_mm.moe import RMoEFFN, split_parameters

PEERS_DIR = osp.expanduser(
    os.environ.get('RMOE_MM_PEERS', '~/.cache/rmoe_mm/peers'))

SHAPES = {
    # name: (tokens, embed_dims, feedforward_channels)
    'swin_t_stage3': (2 * 32 * 32, 384, 1536),
    'swin_t_stage4': (2 * 16 * 16, 768, 3072),
    'swin_l_stage3': (2 * 32 * 32, 768, 3072),
}
BASE_CANDIDATES = ('dense', 'rmoe', 'rmoe_frozen', 'dispatch_only',
                   'deepspeed', 'pypi_moe', 'sparse_dispatcher', 'naive_loop')
AUX_WEIGHT = 0.01


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--shapes', nargs='+', default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument(
        '--candidates',
        nargs='+',
        default=None,
        help='subset of candidates (default: all)')
    parser.add_argument(
        '--ranks',
        nargs='*',
        type=int,
        default=[64],
        help='low-rank RMoE candidates to add (default: 64)')
    parser.add_argument(
        '--repeats',
        type=int,
        default=10,
        help='timed steps per candidate (interleaved)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--num-experts', type=int, default=8)
    parser.add_argument(
        '--threads',
        nargs='+',
        type=int,
        default=[1],
        help='torch thread counts to measure, e.g. 1 2')
    parser.add_argument(
        '--memory',
        action='store_true',
        help='also measure peak memory, fresh process each')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--device',
        default='cpu',
        help="'cpu' or 'cuda' (on CUDA the step is timed "
        'between synchronisations and the memory is the '
        'peak of torch.cuda.max_memory_allocated)')
    parser.add_argument('--json', help='write all results to this file')
    parser.add_argument(
        '--keep-freed-memory',
        action='store_true',
        help="raise glibc's mmap threshold to 1 GiB (freed "
        'large buffers are reused instead of unmapped)')
    # Internal: one candidate's memory, in a child process.
    parser.add_argument(
        '--child-memory',
        nargs=2,
        metavar=('CANDIDATE', 'SHAPE'),
        help=argparse.SUPPRESS)
    return parser.parse_args()


def keep_freed_memory():
    """Let glibc reuse freed buffers up to 1 GiB instead of unmapping them."""
    libc = ctypes.CDLL('libc.so.6')
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(
        m_trim_threshold, (1 << 31) - 1)
    if not ok:
        raise RuntimeError('mallopt failed: not glibc?')


# ------------------------------------------------------------------ peers
def feedforward(embed_dims, hidden):
    return nn.Sequential(
        nn.Linear(embed_dims, hidden), nn.GELU(),
        nn.Linear(hidden, embed_dims))


class NaiveLoopMoE(nn.Module):
    """Top-1 softmax router and a loop over E FFN modules (boolean masks)."""

    def __init__(self, embed_dims, hidden, num_experts):
        super().__init__()
        self.router = nn.Linear(embed_dims, num_experts, bias=False)
        self.experts = nn.ModuleList(
            feedforward(embed_dims, hidden) for _ in range(num_experts))

    def forward(self, x):
        tokens = x.reshape(-1, x.shape[-1])
        probs = self.router(tokens).softmax(-1)
        gate, expert = probs.max(-1)
        out = torch.zeros_like(tokens)
        for index, ffn in enumerate(self.experts):
            mask = expert == index
            if mask.any():
                out[mask] = gate[mask, None] * ffn(tokens[mask])
        importance = probs.sum(0)
        aux = importance.var() / importance.mean()**2
        return out.view(x.shape), aux


class SparseDispatcher:
    """davidmrau/mixture-of-experts' dispatcher (without the log-space
    combine of its early versions): rows sorted by expert with ``nonzero``,
    combined with ``index_add``."""

    def __init__(self, num_experts, gates):
        self._gates = gates
        self._num_experts = num_experts
        sorted_experts, index_sorted_experts = torch.nonzero(gates).sort(0)
        _, self._expert_index = sorted_experts.split(1, dim=1)
        self._batch_index = torch.nonzero(gates)[index_sorted_experts[:, 1], 0]
        self._part_sizes = (gates > 0).sum(0).tolist()
        gates_exp = gates[self._batch_index.flatten()]
        self._nonzero_gates = torch.gather(gates_exp, 1, self._expert_index)

    def dispatch(self, inp):
        inp_exp = inp[self._batch_index].squeeze(1)
        return torch.split(inp_exp, self._part_sizes, dim=0)

    def combine(self, expert_out):
        stitched = torch.cat(expert_out, 0).mul(self._nonzero_gates)
        zeros = torch.zeros(
            self._gates.size(0),
            expert_out[-1].size(1),
            dtype=stitched.dtype,
            device=stitched.device)
        return zeros.index_add(0, self._batch_index, stitched)


class SparseDispatcherMoE(nn.Module):
    """davidmrau's noisy top-k gating MoE with a SparseDispatcher."""

    def __init__(self, embed_dims, hidden, num_experts, k=1):
        super().__init__()
        self.k = k
        self.num_experts = num_experts
        self.w_gate = nn.Parameter(torch.zeros(embed_dims, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(embed_dims, num_experts))
        self.experts = nn.ModuleList(
            feedforward(embed_dims, hidden) for _ in range(num_experts))

    def forward(self, x):
        tokens = x.reshape(-1, x.shape[-1])
        clean = tokens @ self.w_gate
        if self.training:
            noise_std = F.softplus(tokens @ self.w_noise) + 1e-2
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            logits = clean
        top_logits, top_indices = logits.topk(
            min(self.k + 1, self.num_experts), dim=1)
        top_k_gates = top_logits[:, :self.k].softmax(1)
        gates = torch.zeros_like(logits).scatter(1, top_indices[:, :self.k],
                                                 top_k_gates)
        importance = gates.sum(0)
        aux = importance.var() / (importance.mean()**2 + 1e-10)
        dispatcher = SparseDispatcher(self.num_experts, gates)
        expert_inputs = dispatcher.dispatch(tokens)
        outputs = [
            self.experts[i](expert_inputs[i]) for i in range(self.num_experts)
        ]
        return dispatcher.combine(outputs).view(x.shape), aux


class DispatchOnlyFFN(RMoEFFN):
    """RMoEFFN's routing and dispatch around the dense core (no residual)."""

    def run_experts(self, rows, counts):
        return self.layers(rows)


def add_peers_to_path():
    if osp.isdir(PEERS_DIR) and PEERS_DIR not in sys.path:
        sys.path.append(PEERS_DIR)


def init_single_process_group():
    import torch.distributed as dist
    if dist.is_available() and not dist.is_initialized():
        import socket
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        dist.init_process_group(
            'gloo',
            init_method=f'tcp://127.0.0.1:{port}',
            rank=0,
            world_size=1)


def build_candidate(name, dense, num_experts, device='cpu'):
    module, forward = _build_candidate(name, dense, num_experts, device)
    return module.to(device), forward


def _build_candidate(name, dense, num_experts, device):
    """``(module, forward)`` with ``forward(x) -> (out, aux or None)``;
    raises ImportError for a peer that is not installed."""
    embed_dims, hidden = dense.embed_dims, dense.feedforward_channels
    if name == 'dense':
        return dense, lambda x: (dense(x), None)
    match = re.fullmatch(r'rmoe(?:_r(\d+))?(_frozen)?', name)
    if match or name == 'dispatch_only':
        rank = int(match.group(1)) if match and match.group(1) else None
        cls = DispatchOnlyFFN if name == 'dispatch_only' else RMoEFFN
        moe = cls.from_dense(
            dense, num_experts=num_experts, residual_rank=rank)
        if match and match.group(2):
            for _, param in split_parameters(moe, backbone=None)['core']:
                param.requires_grad_(False)
        return moe, lambda x: (moe(x), None)
    if name == 'deepspeed':
        add_peers_to_path()
        os.environ.setdefault('DS_ACCELERATOR',
                              'cuda' if device != 'cpu' else 'cpu')
        from deepspeed.moe.layer import MoE  # noqa: F401 (import check)
        init_single_process_group()
        layer = MoE(
            hidden_size=embed_dims,
            expert=feedforward(embed_dims, hidden),
            num_experts=num_experts,
            ep_size=1,
            k=1,
            capacity_factor=1.25,
            min_capacity=4)

        def forward(x):
            out, aux, _ = layer(x)
            return x + out, aux

        return layer, forward
    if name == 'pypi_moe':
        add_peers_to_path()
        from mixture_of_experts import MoE
        layer = MoE(
            dim=embed_dims,
            num_experts=num_experts,
            hidden_dim=hidden,
            activation=nn.GELU,
            second_policy_train='none',
            second_policy_eval='none')

        def forward(x):
            out, aux = layer(x)
            return x + out, aux

        return layer, forward
    if name in ('sparse_dispatcher', 'naive_loop'):
        cls = SparseDispatcherMoE if name == 'sparse_dispatcher' else \
            NaiveLoopMoE
        layer = cls(embed_dims, hidden, num_experts)

        def forward(x):
            out, aux = layer(x)
            return x + out, aux

        return layer, forward
    raise ValueError(f'unknown candidate {name!r}')


def make_step(module, forward, x, grad):
    params = [p for p in module.parameters() if p.requires_grad]
    aux_grad = torch.tensor(AUX_WEIGHT, device=x.device)

    def step():
        for param in params:
            param.grad = None
        x.grad = None
        out, aux = forward(x)
        if aux is None:
            out.backward(grad)
        else:
            torch.autograd.backward([out, aux], [grad, aux_grad])

    return step


def make_inputs(shape, seed, device='cpu'):
    num_tokens, embed_dims, hidden = SHAPES[shape]
    torch.manual_seed(seed)
    dense = FFN(embed_dims, hidden, act_cfg=dict(type='GELU')).train()
    # [batch 2, tokens, C] as inside a Swin stage (its rows are not contiguous
    # in token order after the window shuffles; made contiguous here).
    x = torch.randn(num_tokens // 2, 2, embed_dims).transpose(0, 1)
    x = x.contiguous().to(device).requires_grad_()
    return dense.to(device), x, torch.randn_like(x)


def synchronize(device):
    if device != 'cpu':
        torch.cuda.synchronize(device)


def candidate_names(args):
    names = list(args.candidates or BASE_CANDIDATES)
    if args.candidates is None:
        for rank in args.ranks:
            names += [f'rmoe_r{rank}', f'rmoe_r{rank}_frozen']
    return names


# ------------------------------------------------------------------ timing
def benchmark_shape(shape, names, threads, args):
    torch.set_num_threads(threads)
    dense, x, grad = make_inputs(shape, args.seed, args.device)
    steps, skipped = {}, {}
    for name in names:
        try:
            module, forward = build_candidate(name, dense, args.num_experts,
                                              args.device)
        except ImportError as err:
            skipped[name] = f'not installed ({err.name or err})'
            continue
        module.train()
        steps[name] = make_step(module, forward, x, grad)
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            synchronize(args.device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            step()
            synchronize(args.device)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    result = {}
    base_wall = statistics.median(wall['dense'])
    base_cpu = statistics.median(cpu['dense'])
    for name in steps:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        result[name] = dict(
            wall_ms=w * 1e3,
            wall_ratio=w / base_wall,
            cpu_ms=c * 1e3,
            cpu_ratio=c / base_cpu)
    return result, skipped


def print_table(shape, threads, result, skipped, args):
    num_tokens, embed_dims, hidden = SHAPES[shape]
    where = f'{threads} thread(s)' if args.device == 'cpu' else args.device
    print(f'\n{shape}: {num_tokens} tokens, C={embed_dims}, H={hidden}, '
          f'E={args.num_experts}, top-1, {where}')
    header = f'  {"candidate":<20s} {"wall ms":>9s} {"x dense":>8s}'
    show_cpu = threads == 1 and args.device == 'cpu'
    if show_cpu:
        header += f' {"cpu ms":>9s} {"x dense":>8s}'
    print(header)
    for name, row in result.items():
        line = (f'  {name:<20s} {row["wall_ms"]:9.1f} '
                f'{row["wall_ratio"]:8.2f}')
        if show_cpu:
            line += f' {row["cpu_ms"]:9.1f} {row["cpu_ratio"]:8.2f}'
        print(line)
    for name, why in skipped.items():
        print(f'  {name:<20s} skipped: {why}')


# ------------------------------------------------------------------ memory
def _status_kb(field):
    with open('/proc/self/status') as status:
        return int(re.search(rf'{field}:\s+(\d+)', status.read()).group(1))


def child_memory(name, shape, args):
    """Peak RSS of ``name``'s steps above the process before the layer."""
    torch.set_num_threads(1)
    dense, x, grad = make_inputs(shape, args.seed, args.device)
    cuda = args.device != 'cpu'
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 1024
    else:
        with open('/proc/self/clear_refs', 'w') as refs:
            refs.write('5')  # reset VmHWM (the peak) to the current RSS
        before = _status_kb('VmRSS')
    try:
        module, forward = build_candidate(name, dense, args.num_experts,
                                          args.device)
    except ImportError as err:
        print(json.dumps(dict(skipped=f'not installed ({err.name})')))
        return
    module.train()
    step = make_step(module, forward, x, grad)
    for _ in range(3):
        step()
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 1024
    else:
        peak = _status_kb('VmHWM')
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    print(
        json.dumps(
            dict(peak_mb=(peak - before) / 1024, params_mb=params / 2**20)))


def measure_memory(shapes, names, args):
    results = {}
    for shape in shapes:
        results[shape] = {}
        for name in names:
            cmd = [
                sys.executable,
                osp.abspath(__file__), '--child-memory', name, shape,
                '--num-experts',
                str(args.num_experts), '--seed',
                str(args.seed), '--device', args.device
            ]
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=dict(os.environ, OMP_NUM_THREADS='1'))
            if proc.returncode != 0:
                results[shape][name] = dict(skipped='failed: ' +
                                            proc.stderr.strip()[-300:])
                continue
            results[shape][name] = json.loads(
                proc.stdout.strip().splitlines()[-1])
    what = ('CUDA memory allocated'
            if args.device != 'cpu' else 'resident memory')
    print(f'\nPeak {what} of 3 training steps above the process before '
          'the layer was built (MB; fresh process each, 1 thread); params = '
          "the layer's parameters")
    print(f'  {"candidate":<20s}' +
          ''.join(f' {s + " peak":>20s} {"params":>7s}' for s in shapes))
    for name in names:
        line = f'  {name:<20s}'
        for shape in shapes:
            row = results[shape][name]
            if 'skipped' in row:
                line += f' {"skipped":>20s} {"-":>7s}'
            else:
                line += f' {row["peak_mb"]:20.0f} {row["params_mb"]:7.0f}'
        print(line)
    for name in names:
        for shape in shapes:
            if 'skipped' in results[shape][name]:
                print(f'  {name} ({shape}) skipped: '
                      f'{results[shape][name]["skipped"]}')
    return results


def main():
    args = parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.child_memory:
        child_memory(*args.child_memory, args)
        return
    names = candidate_names(args)
    print(f'torch {torch.__version__}, {args.repeats} interleaved repeats, '
          'median step time; peers from '
          f'{PEERS_DIR if osp.isdir(PEERS_DIR) else "(not installed)"}')
    all_results = dict(times={}, memory=None)
    for threads in args.threads:
        for shape in args.shapes:
            load_before = os.getloadavg()
            result, skipped = benchmark_shape(shape, names, threads, args)
            print_table(shape, threads, result, skipped, args)
            load_after = os.getloadavg()
            print('  load average before {:.2f} {:.2f} {:.2f}, after '
                  '{:.2f} {:.2f} {:.2f}'.format(*load_before, *load_after))
            all_results['times'][f'{shape}/{threads}'] = dict(
                result=result,
                skipped=skipped,
                load_before=load_before,
                load_after=load_after)
    if args.memory:
        all_results['memory'] = measure_memory(args.shapes, names, args)
    if args.json:
        with open(args.json, 'w') as out:
            json.dump(all_results, out, indent=1)


if __name__ == '__main__':
    main()
