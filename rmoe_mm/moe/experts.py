"""Expert residuals and the grouped matmuls that apply them.

Expert ``e`` of a linear layer uses ``W_e = W_core + R_e`` and
``b_e = b_core + r_e``. :class:`ResidualLinear` holds the residuals of one
linear layer for all experts, batched (``weight [E, out, in]``, or
``weight_a [E, out, r]`` and ``weight_b [E, r, in]`` for a low-rank residual
``A_e B_e``), and applies expert ``e`` to its contiguous slice of the
expert-sorted token rows. :class:`ExpertResiduals` holds one per FFN linear
(``fc1``, ``fc2``).

How each case is computed, and why (see docs/benchmarks.md for figures):

- Full residual, CPU, fp32/fp64 (``'blocked'``): ``W_core + R_e`` is built
  one cache-sized block of output rows at a time, and that block is used at
  once by the expert's GEMM while it is still in cache. Each pass reads
  ``W_core`` once and every ``R_e`` once, writes no ``[E, out, in]`` merged
  copy, and the backward pass computes each expert's weight gradient once,
  adding it to the core's gradient while the block is cache-resident.
  A GEMM that packs a cache-resident block is as fast as one that packs E
  independent weights; what remains is the add and the core-gradient sum.
  The loop runs as a C++/OpenMP extension (:mod:`.ext`) when it is built,
  else in Python; both compute the same.
- Full residual, few rows per expert, or another device (``'batched'``): the
  rows are padded to ``[E, rows_max, in]`` and every expert runs in one
  ``bmm`` with the merged weights, a handful of kernels instead of several
  per expert (launch-bound on a GPU, call-bound on a CPU with few rows).
- Low-rank residual: ``x W_core^T`` is one GEMM over all rows (the dense
  layer's cost) and each expert adds ``(x_e B_e^T) A_e^T``; the backward
  pass reuses ``x_e B_e^T`` and ``dy_e A_e``, and ``A_e B_e`` is never
  formed.

Every case is exact (the per-token reference of the tests, to rounding).
The residual weight gradient ``[E, out, in]`` is written into a buffer that
the layer keeps and reuses once nothing else holds it (CPU only): a fresh
buffer of that size would be page-faulted in again at every step.
"""
import math
import re
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from . import ext

#: Bytes of ``W_core + R_e`` built per block by the ``'blocked'`` path.
CPU_BLOCK_BYTES = 4 << 20
#: On a CPU, experts with at most this many rows each take the ``'batched'``
#: path (one bmm over padded rows) instead of the ``'blocked'`` one.
CPU_BATCHED_MAX_ROWS = 8

#: Residual keys written before the residuals were child modules
#: (``residual.fc1_weight``, ...), and their names now.
_LEGACY_KEY = re.compile(
    r'(^|\.)residual\.(fc[12])_(weight_a|weight_b|weight|bias)$')


def remap_legacy_residual_keys(state_dict: Dict[str, Tensor]) -> Dict:
    """Rename old residual keys (``residual.fc1_weight``) to the current ones.

    Up to rmoe_mm 0.1 the residuals were attributes named
    ``residual.{fc1,fc2}_{weight,weight_a,weight_b,bias}``; they are now the
    parameters ``residual.{fc1,fc2}.{weight,weight_a,weight_b,bias}``. Other
    keys are kept; the order of the keys is kept. Returns a new dict (with
    the metadata of ``state_dict``, if any).
    """
    renamed = type(state_dict)()
    for key, value in state_dict.items():
        renamed[_LEGACY_KEY.sub(r'\1residual.\2.\3', key)] = value
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        renamed._metadata = metadata
    return renamed


class _GradBuffers:
    """Reusable ``[E, out, in]`` gradient buffers of one layer (CPU only).

    A buffer is handed out as a fresh alias, which autograd may then make
    the parameter's ``.grad`` (it steals a tensor that nothing else
    references). A buffer is reused only when no tensor other than this
    pool's own one refers to its storage, i.e. once the optimizer's
    ``zero_grad`` has dropped the gradient and no graph still holds it;
    otherwise a new one is allocated. At most ``limit`` buffers are kept.
    """

    def __init__(self, limit: int = 2):
        self.limit = limit
        self.buffers: List[Tensor] = []

    @staticmethod
    def _unused(buffer: Tensor) -> bool:
        # 2 = the pool's tensor + the temporary storage object of the call.
        storage = buffer.untyped_storage()
        return torch._C._storage_Use_Count(storage._cdata) <= 2

    def take(self, shape, dtype, device) -> Tensor:
        if device.type != 'cpu' or not hasattr(torch._C, '_storage_Use_Count'):
            return torch.empty(shape, dtype=dtype, device=device)
        shape = torch.Size(shape)
        self.buffers = [
            b for b in self.buffers
            if b.shape == shape and b.dtype == dtype and b.device == device
        ]
        for buffer in self.buffers:
            if self._unused(buffer):
                return buffer.view(shape)
        buffer = torch.empty(shape, dtype=dtype, device=device)
        if len(self.buffers) < self.limit:
            self.buffers.append(buffer)
        return buffer.view(shape)

    def clear(self) -> None:
        self.buffers = []


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a linear layer would run in here (autocast's, if it is on)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def choose_path(counts: Sequence[int], device: torch.device,
                dtype: torch.dtype) -> str:
    """``'blocked'`` or ``'batched'``: how a full residual is applied."""
    if device.type != 'cpu':
        return 'batched'
    if dtype not in (torch.float32, torch.float64):
        return 'batched'  # no blocked K-split accumulation in low precision
    if max(counts, default=0) <= CPU_BATCHED_MAX_ROWS:
        return 'batched'
    return 'blocked'


def _block_rows(out_features: int, in_features: int, itemsize: int) -> int:
    """Rows of ``W_core + R_e`` per block: blocks of equal size, each at
    most ``CPU_BLOCK_BYTES`` (a small last block would make a slow GEMM)."""
    most = max(1, CPU_BLOCK_BYTES // (in_features * itemsize))
    num_blocks = -(-out_features // most)
    return -(-out_features // num_blocks)


class _PaddedRows:
    """Where the rows of each expert go in a padded ``[E, rows_max, *]``."""

    def __init__(self, counts: Sequence[int], device: torch.device):
        self.num_experts = len(counts)
        self.rows_max = max(counts, default=0)
        self.num_rows = sum(counts)
        counts_t = torch.tensor(counts, device=device)
        starts = torch.arange(self.num_experts, device=device) * self.rows_max
        offsets = torch.repeat_interleave(
            starts - (counts_t.cumsum(0) - counts_t),
            counts_t,
            output_size=self.num_rows)
        #: Padded position of each row.
        self.position = torch.arange(self.num_rows, device=device) + offsets

    def pad(self, rows: Tensor) -> Tensor:
        padded = rows.new_zeros(self.num_experts * self.rows_max,
                                rows.shape[1])
        padded.index_copy_(0, self.position, rows)
        return padded.view(self.num_experts, self.rows_max, rows.shape[1])

    def unpad(self, padded: Tensor) -> Tensor:
        return padded.reshape(-1,
                              padded.shape[-1]).index_select(0, self.position)


class _ExpertLinear(torch.autograd.Function):
    """Expert ``e`` applies ``W_core + R_e`` (bias ``b_core + r_e``) to its
    slice of the expert-sorted rows; see the module docstring for the paths.

    Under autocast the sums are taken in the weights' dtype and rounded once
    to the autocast dtype, as a ``Linear`` would; gradients come back in
    the parameters' dtype.
    """

    @staticmethod
    def forward(ctx, rows, counts, core_weight, core_bias, residual_weight,
                residual_bias, grad_buffers):
        dtype = _compute_dtype(rows)
        path = choose_path(counts, rows.device, dtype)
        with torch.autocast(rows.device.type, enabled=False):
            rows = rows.to(dtype).contiguous()
            biases = (core_bias + residual_bias).to(dtype)
            if path == 'batched':
                padded = _PaddedRows(counts, rows.device)
                merged = (core_weight + residual_weight).to(dtype)
                out = torch.baddbmm(biases[:, None], padded.pad(rows),
                                    merged.transpose(1, 2))
                out = padded.unpad(out)
            else:
                out = _blocked_forward(rows, counts, core_weight,
                                       residual_weight, biases)
        ctx.counts, ctx.path, ctx.grad_buffers = counts, path, grad_buffers
        ctx.save_for_backward(rows, core_weight, residual_weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        rows, core_weight, residual_weight = ctx.saved_tensors
        (need_rows, _, need_core_weight, need_core_bias, need_residual_weight,
         need_residual_bias, _) = ctx.needs_input_grad
        counts = ctx.counts
        with torch.autocast(rows.device.type, enabled=False):
            grad_out = grad_out.to(rows.dtype).contiguous()
            grad_rows = grad_core_weight = grad_residual_weight = None
            grad_core_bias = grad_residual_bias = None
            if need_residual_bias or need_core_bias:
                grad_bias = torch.stack([
                    chunk.sum(0) for chunk in grad_out.split(counts)
                ]) if counts else grad_out.new_zeros(0, grad_out.shape[1])
                grad_bias = grad_bias.to(residual_weight.dtype)
                if need_core_bias:
                    grad_core_bias = grad_bias.sum(0)
                if need_residual_bias:
                    grad_residual_bias = grad_bias
            if need_residual_weight:
                grad_residual_weight = ctx.grad_buffers.take(
                    residual_weight.shape, residual_weight.dtype,
                    residual_weight.device)
            if ctx.path == 'batched':
                grad_rows, grad_core_weight = _batched_backward(
                    rows, grad_out, counts, core_weight, residual_weight,
                    grad_residual_weight, need_rows, need_core_weight)
            else:
                grad_rows, grad_core_weight = _blocked_backward(
                    rows, grad_out, counts, core_weight, residual_weight,
                    grad_residual_weight, need_rows, need_core_weight)
        return (grad_rows, None, grad_core_weight, grad_core_bias,
                grad_residual_weight, grad_residual_bias, None)


def _extension(*tensors):
    """The C++ blocked loop if it is built and fits these tensors."""
    if any(t.device.type != 'cpu' or t.dtype != tensors[0].dtype
           for t in tensors):
        return None
    return ext.get()


def _blocked_forward(rows, counts, core_weight, residual_weight, biases):
    out_features, in_features = core_weight.shape
    block = _block_rows(out_features, in_features, rows.element_size())
    compiled = _extension(rows, core_weight, residual_weight, biases)
    if compiled is not None:
        return compiled.blocked_forward(rows, list(counts), core_weight,
                                        residual_weight, biases, block)
    out = rows.new_empty(rows.shape[0], out_features)
    scratch = rows.new_empty(block * in_features)
    experts = [
        (e, x, y)
        for e, (x, y) in enumerate(zip(rows.split(counts), out.split(counts)))
        if x.shape[0]
    ]
    for start in range(0, out_features, block):
        stop = min(start + block, out_features)
        core = core_weight[start:stop]
        residual = residual_weight[:, start:stop]
        bias = biases[:, start:stop]
        merged = scratch[:core.numel()].view(core.shape)
        for expert, x, y in experts:
            torch.add(core, residual[expert], out=merged)
            torch.addmm(bias[expert], x, merged.t(), out=y[:, start:stop])
    return out


def _blocked_backward(rows, grad_out, counts, core_weight, residual_weight,
                      grad_residual_weight, need_rows, need_core_weight):
    out_features, in_features = core_weight.shape
    compiled = _extension(rows, grad_out, core_weight, residual_weight)
    if compiled is not None and (grad_residual_weight is None
                                 or grad_residual_weight.dtype == rows.dtype):
        grad_rows, grad_core_weight = compiled.blocked_backward(
            rows, grad_out, list(counts), core_weight, residual_weight,
            grad_residual_weight, need_rows, need_core_weight,
            _block_rows(out_features, in_features, rows.element_size()))
        return grad_rows, grad_core_weight
    grad_rows = torch.empty_like(rows) if need_rows else None
    grad_core_weight = None
    if need_core_weight and grad_residual_weight is None:
        # Residuals frozen: the core's gradient is one GEMM over all rows.
        grad_core_weight = torch.mm(grad_out.t(), rows).to(core_weight.dtype)
    elif need_core_weight:
        grad_core_weight = torch.empty_like(core_weight)
    need_expert_weight = grad_residual_weight is not None
    if not (need_rows or need_expert_weight):
        return grad_rows, grad_core_weight
    cast = need_expert_weight and grad_residual_weight.dtype != rows.dtype
    block = _block_rows(out_features, in_features, rows.element_size())
    scratch = rows.new_empty(block * in_features)
    grad_scratch = rows.new_empty(block * in_features) if cast else None
    grad_rows_e = grad_rows.split(counts) if need_rows else [None
                                                             ] * len(counts)
    experts = [(e, x, dy, dx) for e, (x, dy, dx) in enumerate(
        zip(rows.split(counts), grad_out.split(counts), grad_rows_e))]
    for start in range(0, out_features, block):
        stop = min(start + block, out_features)
        core = core_weight[start:stop]
        residual = residual_weight[:, start:stop]
        merged = scratch[:core.numel()].view(core.shape)
        first = True
        for expert, x, dy, dx in experts:
            if not x.shape[0]:
                if need_expert_weight:
                    grad_residual_weight[expert, start:stop].zero_()
                continue
            dy = dy[:, start:stop]
            if need_rows:
                torch.add(core, residual[expert], out=merged)
                if start == 0:
                    torch.mm(dy, merged, out=dx)
                else:
                    dx.addmm_(dy, merged)
            if need_expert_weight:
                target = grad_residual_weight[expert, start:stop]
                if cast:
                    grad = grad_scratch[:core.numel()].view(core.shape)
                    torch.mm(dy.t(), x, out=grad)
                    target.copy_(grad)
                else:
                    torch.mm(dy.t(), x, out=target)
                if grad_core_weight is not None:
                    # Summed while the expert's block is still in cache.
                    if first:
                        grad_core_weight[start:stop].copy_(target)
                    else:
                        grad_core_weight[start:stop].add_(target)
            first = False
        if first and grad_core_weight is not None and need_expert_weight:
            grad_core_weight[start:stop].zero_()
    return grad_rows, grad_core_weight


def _batched_backward(rows, grad_out, counts, core_weight, residual_weight,
                      grad_residual_weight, need_rows, need_core_weight):
    padded = _PaddedRows(counts, rows.device)
    grad_padded = padded.pad(grad_out)
    grad_rows = grad_core_weight = None
    if need_rows:
        merged = (core_weight + residual_weight).to(rows.dtype)
        grad_rows = padded.unpad(torch.bmm(grad_padded, merged))
    if grad_residual_weight is not None:
        lhs, rhs = grad_padded.transpose(1, 2), padded.pad(rows)
        if grad_residual_weight.dtype == rows.dtype:
            torch.bmm(lhs, rhs, out=grad_residual_weight)
        else:
            grad_residual_weight.copy_(torch.bmm(lhs, rhs))
        if need_core_weight:
            grad_core_weight = grad_residual_weight.sum(0)
    elif need_core_weight:
        grad_core_weight = torch.mm(grad_out.t(), rows).to(core_weight.dtype)
    return grad_rows, grad_core_weight


class _LowRankExpertLinear(torch.autograd.Function):
    """Expert ``e`` applies ``W_core + A_e B_e`` (bias ``b_core + r_e``).

    ``x W_core^T`` is one GEMM over all rows; expert ``e`` adds
    ``t_e A_e^T`` with ``t_e = x_e B_e^T`` (kept for backward). Backward:
    ``u_e = dy_e A_e``, ``dx = dy W_core + u_e B_e``, ``dA_e = dy_e^T t_e``,
    ``dB_e = u_e^T x_e``, ``dW_core = dy^T x``.
    """

    @staticmethod
    def forward(ctx, rows, counts, core_weight, core_bias, weight_a, weight_b,
                residual_bias):
        dtype = _compute_dtype(rows)
        with torch.autocast(rows.device.type, enabled=False):
            rows = rows.to(dtype).contiguous()
            a, b = weight_a.to(dtype), weight_b.to(dtype)
            biases = (core_bias + residual_bias).to(dtype)
            out = torch.mm(rows, core_weight.to(dtype).t())
            low = rows.new_empty(rows.shape[0], weight_b.shape[1])
            for expert, (x, t, y) in enumerate(
                    zip(
                        rows.split(counts), low.split(counts),
                        out.split(counts))):
                if x.shape[0]:
                    torch.mm(x, b[expert].t(), out=t)
                    y.addmm_(t, a[expert].t()).add_(biases[expert])
        ctx.counts = counts
        ctx.save_for_backward(rows, low, core_weight, weight_a, weight_b)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        rows, low, core_weight, weight_a, weight_b = ctx.saved_tensors
        (need_rows, _, need_core_weight, need_core_bias, need_a, need_b,
         need_residual_bias) = ctx.needs_input_grad
        counts = ctx.counts
        with torch.autocast(rows.device.type, enabled=False):
            dtype = rows.dtype
            grad_out = grad_out.to(dtype).contiguous()
            a, b = weight_a.to(dtype), weight_b.to(dtype)
            grad_rows = grad_core_weight = grad_core_bias = None
            grad_a = torch.zeros_like(weight_a) if need_a else None
            grad_b = torch.zeros_like(weight_b) if need_b else None
            grad_bias = None
            if need_rows:
                grad_rows = torch.mm(grad_out, core_weight.to(dtype))
            if need_core_weight:
                grad_core_weight = torch.mm(grad_out.t(),
                                            rows).to(core_weight.dtype)
            if need_core_bias or need_residual_bias:
                grad_bias = torch.zeros_like(weight_a[:, :, 0])
            chunks = zip(
                rows.split(counts), low.split(counts), grad_out.split(counts),
                grad_rows.split(counts) if need_rows else [None] * len(counts))
            for expert, (x, t, dy, dx) in enumerate(chunks):
                if not x.shape[0]:
                    continue
                if need_rows or need_b:
                    u = torch.mm(dy, a[expert])
                    if need_rows:
                        dx.addmm_(u, b[expert])
                    if need_b:
                        grad_b[expert] = torch.mm(u.t(), x)
                if need_a:
                    grad_a[expert] = torch.mm(dy.t(), t)
                if grad_bias is not None:
                    grad_bias[expert] = dy.sum(0)
            if need_core_bias:
                grad_core_bias = grad_bias.sum(0)
        return (grad_rows, None, grad_core_weight, grad_core_bias, grad_a,
                grad_b, grad_bias if need_residual_bias else None)


class ResidualLinear(nn.Module):
    """The per-expert residuals of one linear layer, and their application.

    Weights start as Gaussian noise of std ``std`` (0 allowed: every expert
    then equals the core), biases at 0. A low-rank residual ``A_e B_e``
    starts with ``B ~ N(0, 1/r)`` and ``A ~ N(0, std^2)``, so the product
    has std ``std`` per entry, and ``A`` still gets a gradient when ``std``
    is 0.

    Args:
        num_experts (int): Number of experts E.
        in_features (int): Input channels of the linear layer.
        out_features (int): Output channels of the linear layer.
        rank (int, optional): Rank r of the weight residual; None = full.
        std (float): Init std of the residual weights.
    """

    def __init__(self,
                 num_experts: int,
                 in_features: int,
                 out_features: int,
                 rank: Optional[int] = None,
                 std: float = 0.):
        super().__init__()
        self.num_experts = num_experts
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.std = std
        if rank is None:
            self.weight = nn.Parameter(
                torch.zeros(num_experts, out_features, in_features))
        else:
            self.weight_a = nn.Parameter(
                torch.zeros(num_experts, out_features, rank))
            self.weight_b = nn.Parameter(
                torch.zeros(num_experts, rank, in_features))
        self.bias = nn.Parameter(torch.zeros(num_experts, out_features))
        self._grad_buffers = _GradBuffers()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the residuals (noise of std ``self.std``, zero biases)."""
        with torch.no_grad():
            self.bias.zero_()
            if self.rank is None:
                self.weight.normal_(0, self.std)
            else:
                self.weight_a.normal_(0, self.std)
                self.weight_b.normal_(0, 1 / math.sqrt(self.rank))

    def extra_repr(self) -> str:
        rank = 'full' if self.rank is None else self.rank
        return (f'num_experts={self.num_experts}, in_features='
                f'{self.in_features}, out_features={self.out_features}, '
                f'rank={rank}, std={self.std:g}')

    def full_weight(self) -> Tensor:
        """Residual weights ``[E, out, in]`` (``A_e B_e`` for a low rank)."""
        if self.rank is None:
            return self.weight
        return torch.bmm(self.weight_a, self.weight_b)

    def forward(self, rows: Tensor, counts: Sequence[int],
                core: nn.Linear) -> Tensor:
        """Expert ``e`` (``core`` + residual ``e``) on its slice of ``rows``.

        Args:
            rows (Tensor): ``[A, in]`` token rows sorted by expert.
            counts (Sequence[int]): Rows of each expert, in expert order.
            core (nn.Linear): The core linear layer (``W_core``,
                ``b_core``).

        Returns:
            Tensor: ``[A, out]``, in the autocast dtype when autocast is on,
            else in the dtype of ``rows``.
        """
        counts = tuple(int(c) for c in counts)
        if len(counts) != self.num_experts or sum(counts) != rows.shape[0]:
            raise ValueError(f'counts {list(counts)} do not split '
                             f'{rows.shape[0]} rows among {self.num_experts} '
                             'experts')
        if self.rank is None:
            return _ExpertLinear.apply(rows, counts, core.weight, core.bias,
                                       self.weight, self.bias,
                                       self._grad_buffers)
        return _LowRankExpertLinear.apply(rows, counts, core.weight, core.bias,
                                          self.weight_a, self.weight_b,
                                          self.bias)

    def _apply(self, fn, *args, **kwargs):
        # Moving or casting the module invalidates the kept buffers.
        self._grad_buffers.clear()
        return super()._apply(fn, *args, **kwargs)


class ExpertResiduals(nn.Module):
    """Per-expert residuals of an FFN: ``fc1`` and ``fc2``, weights and biases.

    Parameters: ``fc1.weight [E, H, C]``, ``fc1.bias [E, H]``, ``fc2.weight
    [E, C, H]``, ``fc2.bias [E, C]``; a low-rank residual has ``weight_a``
    and ``weight_b`` in place of ``weight``. State dicts of the older layout
    (``fc1_weight``, ...) load too (:func:`remap_legacy_residual_keys`).

    Args:
        num_experts (int): Number of experts E.
        embed_dims (int): FFN input/output channels C.
        feedforward_channels (int): FFN hidden channels H.
        rank (int, optional): Rank r of the weight residuals; None = full.
        std (float): Init std of the residual weights.
    """

    def __init__(self,
                 num_experts: int,
                 embed_dims: int,
                 feedforward_channels: int,
                 rank: Optional[int] = None,
                 std: float = 0.):
        super().__init__()
        self.num_experts = num_experts
        self.rank = rank
        self.std = std
        self.fc1 = ResidualLinear(num_experts, embed_dims,
                                  feedforward_channels, rank, std)
        self.fc2 = ResidualLinear(num_experts, feedforward_channels,
                                  embed_dims, rank, std)
        self.register_load_state_dict_pre_hook(_remap_legacy_keys_hook)

    def reset_parameters(self) -> None:
        """Re-draw the residuals (noise of std ``self.std``, zero biases)."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def extra_repr(self) -> str:
        rank = 'full' if self.rank is None else self.rank
        return f'num_experts={self.num_experts}, rank={rank}, std={self.std:g}'


def _remap_legacy_keys_hook(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: rename this module's old-layout keys."""
    for fc in ('fc1', 'fc2'):
        for name in ('weight', 'weight_a', 'weight_b', 'bias'):
            old = f'{prefix}{fc}_{name}'
            if old in state_dict:
                state_dict[f'{prefix}{fc}.{name}'] = state_dict.pop(old)
