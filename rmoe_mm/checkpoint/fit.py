"""Does a state dict fit the model it is loaded into? Checked before any copy.

mmengine loads ``load_from``, ``--resume`` and ``tools/test.py`` checkpoints
non-strictly: keys that are missing, unexpected or of another shape are
skipped with one WARNING, and the run goes on with a half-random model. Two
guards stop that before a single tensor is copied:

* :func:`guard_backbone_loads`, registered by every RMoE backbone (and the
  dense CvT) in its ``__init__``: a ``load_state_dict`` pre-hook that checks
  the part of any incoming state dict under the backbone's prefix: the
  backbone family (a CvT checkpoint in a Swin model), the MoE layout (other
  ``moe_blocks``, another expert count or residual rank), shapes, missing and
  unexpected keys. A dense checkpoint into an RMoE backbone is allowed: the
  routers and residuals keep their init, reported at WARNING. It works on
  every path, mmseg's and mmdet's own tools included.
* :func:`guard_model_loads`, installed by ``tools/train.py`` and
  ``tools/test.py`` on the whole model: ``'test'`` and ``'resume'`` demand
  every tensor (a missing decode head means random predictions),
  ``'load_from'`` allows only the dense -> RMoE case.

Buffers recomputed from the config (:data:`DERIVED_BUFFERS`) are never
required. An explicit ``--allow-partial-load`` (:func:`allow_partial_loads`)
or ``RMOE_MM_ALLOW_PARTIAL_LOAD=1`` turns every refusal into a WARNING.
"""
import logging
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from mmengine.logging import print_log
from torch import nn

ENV_ALLOW_PARTIAL = 'RMOE_MM_ALLOW_PARTIAL_LOAD'
#: Buffers computed from the configuration, never required in a checkpoint.
DERIVED_BUFFERS = ('relative_position_index', 'attn_mask',
                   'num_batches_tracked')
#: Load modes of :func:`guard_model_loads`.
MODES = ('test', 'resume', 'load_from')
CONVERTER = 'tools/model_converters/dense_to_rmoe.py'
PARTIAL_HINT = ('To load it anyway, pass --allow-partial-load to '
                'tools/train.py / tools/test.py or set '
                f'{ENV_ALLOW_PARTIAL}=1.')

#: Backbone family -> key patterns that only its checkpoints have (every
#: layout the converters read).
FAMILY_SIGNATURES: Dict[str, re.Pattern] = {
    'Swin':
    re.compile(r'(^|\.)attn\.w_msa\.|^layers[._]\d+\.blocks\.\d+\.'
               r'attn\.relative_position_bias_table'),
    'CvT':
    re.compile(r'(^|\.)attn\.conv_proj_q\.|'
               r'convolution_projection_query'),
}

_allow_partial = False
_checked: ContextVar[bool] = ContextVar('rmoe_mm_fit_checked', default=False)
_GUARD = '_rmoe_mm_load_guard'
#: Set on a backbone by :func:`guard_model_loads`: its prefix in the guarded
#: model, whose hook checks it already.
_COVERED = '_rmoe_mm_checked_under'


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model it is loaded into."""


def allow_partial_loads(enabled: bool = True) -> None:
    """Let loads that do not fit go on, with a WARNING.

    What ``--allow-partial-load`` of the tools calls.
    """
    global _allow_partial
    _allow_partial = enabled


def partial_loads_allowed() -> bool:
    """:func:`allow_partial_loads` or ``RMOE_MM_ALLOW_PARTIAL_LOAD=1``."""
    env = os.environ.get(ENV_ALLOW_PARTIAL, '').strip().lower()
    return _allow_partial or env in ('1', 'true', 'yes', 'on')


def backbone_family(keys: Iterable[str]) -> Optional[str]:
    """``'Swin'``, ``'CvT'`` or None, from a backbone's state-dict keys."""
    keys = list(keys)
    for family, signature in FAMILY_SIGNATURES.items():
        if any(signature.search(k) for k in keys):
            return family
    return None


def is_derived(key: str) -> bool:
    """Whether ``key`` names a buffer recomputed from the configuration."""
    return key.rsplit('.', 1)[-1] in DERIVED_BUFFERS


def _first(keys: Iterable[str], limit: int = 5) -> str:
    keys = list(keys)
    text = ', '.join(keys[:limit])
    return text + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


@dataclass
class Fit:
    """How a state dict fits a model (or its backbone), and what is wrong.

    ``problems`` are refusals; ``new_moe`` are router / residual tensors
    that a dense checkpoint does not have (allowed where dense -> RMoE is).
    """

    where: str
    problems: List[str] = field(default_factory=list)
    new_moe: List[str] = field(default_factory=list)
    new_moe_ffns: int = 0

    def enforce(self, logger='current') -> None:
        """Raise :class:`CheckpointMismatchError`, or WARN when allowed."""
        if self.problems:
            message = (f'The checkpoint does not fit {self.where}:\n  - ' +
                       '\n  - '.join(self.problems))
            if not partial_loads_allowed():
                raise CheckpointMismatchError(f'{message}\n{PARTIAL_HINT}')
            print_log(
                f'{message}\nLoading it partially because partial loads '
                f'are allowed (--allow-partial-load / {ENV_ALLOW_PARTIAL}): '
                'what does not fit keeps its initial value.',
                logger=logger,
                level=logging.WARNING)
        if self.new_moe:
            print_log(
                f'A dense checkpoint loads into {self.where}: '
                f'{len(self.new_moe)} router / residual tensors of '
                f'{self.new_moe_ffns} MoE FFNs keep their init '
                f'(e.g. {_first(self.new_moe, 3)}).',
                logger=logger,
                level=logging.WARNING)


def family_problem(backbone: nn.Module,
                   state_dict: Mapping,
                   prefix: str = '') -> Optional[str]:
    """Why ``state_dict`` (keys without ``prefix``) is the wrong backbone
    family for ``backbone``, or None when the families agree or are unknown.
    """
    model_family = backbone_family(backbone.state_dict())
    ckpt_family = backbone_family(state_dict)
    if model_family is None or ckpt_family == model_family:
        return None
    signature = FAMILY_SIGNATURES.get(ckpt_family)
    example = next(
        (k for k in state_dict if signature is None or signature.search(k)),
        None)
    what = f'a {ckpt_family}' if ckpt_family else 'neither Swin nor CvT'
    return (f"the checkpoint's backbone is {what} (e.g. {prefix}{example}) "
            f"but the model's is {type(backbone).__name__} ({model_family}). "
            f'Use a {model_family} checkpoint, or a config whose backbone is '
            f"{ckpt_family or 'that family'}.")


def _moe_ffns(module: nn.Module) -> Dict[str, nn.Module]:
    from rmoe_mm.moe.residual_ffn import rmoe_layers
    return dict(rmoe_layers(module))


def _expert_count(key: str, got, want, ffn: nn.Module) -> Optional[int]:
    """The checkpoint's expert count, read off a mismatched MoE tensor."""
    experts = getattr(ffn, 'num_experts', None)
    if experts is None or len(got) != len(want):
        return None
    for g, w in zip(got, want):
        if w == experts and g != w:
            return int(g)
    return None


def check_backbone_state_dict(backbone: nn.Module,
                              state_dict: Mapping,
                              prefix: str = '',
                              *,
                              allow_dense: bool = True) -> Fit:
    """Compare the keys of ``state_dict`` under ``prefix`` with ``backbone``.

    Args:
        backbone: an RMoE (or dense CvT) backbone.
        state_dict: the whole incoming state dict.
        prefix: the backbone's prefix in it (``'backbone.'``).
        allow_dense: a dense checkpoint into an RMoE backbone is fine
            (routers and residuals keep their init).

    Returns:
        The :class:`Fit`; nothing is loaded.
    """
    from rmoe_mm.moe.naming import is_moe_key
    from rmoe_mm.moe.naming import moe_layer_name as moe_prefix
    name = type(backbone).__name__
    where = f'the backbone {name}' + (f' (keys {prefix}*)' if prefix else '')
    fit = Fit(where)
    own = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    from rmoe_mm.moe.experts import remap_legacy_residual_keys

    # Residual keys of rmoe_mm <= 0.1 are renamed by the layer's own load
    # hook; compare in today's names.
    incoming = remap_legacy_residual_keys({
        k[len(prefix):]: v
        for k, v in state_dict.items()
        if isinstance(k, str) and k.startswith(prefix)
    })
    if not incoming:
        family = backbone_family(state_dict)
        what = f'a {family} backbone checkpoint' if family else \
            'a backbone-only checkpoint'
        holds = f'; the checkpoint holds {_first(state_dict)}' \
            if state_dict else ''
        fit.problems.append(
            f'no key of the checkpoint starts with {prefix!r}{holds}. If it '
            f'is {what} (e.g. ImageNet weights), give it to '
            "model.backbone.init_cfg=dict(type='Pretrained', "
            f'checkpoint=...) instead, or save it whole-model with {CONVERTER}'
            f' --out-prefix {prefix}.')
        return fit
    problem = family_problem(backbone, incoming, prefix)
    if problem:
        fit.problems.append(problem)
        return fit

    ffns = _moe_ffns(backbone)
    model_moe_keys = {k for k in own if is_moe_key(k)}
    ckpt_moe = sorted({moe_prefix(k) for k in incoming if is_moe_key(k)})
    dense_in = not ckpt_moe
    if ckpt_moe and not ffns:
        fit.problems.append(
            f'the checkpoint is an RMoE checkpoint (router / residual '
            f'tensors in {len(ckpt_moe)} FFNs: {_first(ckpt_moe, 3)}) but '
            f'the model\'s backbone {name} is dense. Use the RMoE config '
            'that made it.')
        return fit
    if ckpt_moe and set(ckpt_moe) != set(ffns):
        only_ckpt = sorted(set(ckpt_moe) - set(ffns))
        only_model = sorted(set(ffns) - set(ckpt_moe))
        fit.problems.append(
            f'the checkpoint has RMoE FFNs in {len(ckpt_moe)} blocks, the '
            f"model in {len(ffns)} (other moe_blocks): only in the "
            f'checkpoint: {_first(only_ckpt) or "-"}; only in the model: '
            f'{_first(only_model) or "-"}. Build the model with the '
            "checkpoint's moe_blocks, or start again from the dense "
            f'checkpoint ({CONVERTER} DENSE.pth OUT.pth --config CONFIG).')
        return fit

    shapes, experts = [], {}
    for key, value in incoming.items():
        if key not in own or not hasattr(value, 'shape') or \
                tuple(value.shape) == own[key]:
            continue
        got = tuple(value.shape)
        shapes.append(f'{prefix}{key}: checkpoint {got}, model {own[key]}')
        if is_moe_key(key) and moe_prefix(key) in ffns:
            ffn = ffns[moe_prefix(key)]
            count = _expert_count(key, got, own[key], ffn)
            if count is not None:
                experts[count] = ffn.num_experts
    if experts:
        (ckpt_n, model_n), = list(experts.items())[:1]
        fit.problems.append(
            f'the checkpoint has {ckpt_n} experts per MoE FFN, the model '
            f'{model_n} (moe_cfg.num_experts). Build the model with '
            f'num_experts={ckpt_n}, or start again from the dense '
            f'checkpoint ({CONVERTER} DENSE.pth OUT.pth --config CONFIG).')
    if shapes:
        fit.problems.append(
            f'{len(shapes)} tensors have another shape (other size, window, '
            f'expert count or residual rank): {_first(shapes, 3)}')
    if dense_in and model_moe_keys and not allow_dense:
        fit.problems.append(
            f'the checkpoint is dense but {name} is an RMoE backbone: its '
            f'{len(ffns)} MoE FFNs would keep random routers and residuals. '
            'Use the config that made the checkpoint, or start RMoE training '
            'from it with load_from.')
    missing = [
        k for k in own if k not in incoming and not is_derived(k)
        and not (dense_in and k in model_moe_keys)
    ]
    unexpected = [k for k in incoming if k not in own and not is_derived(k)]
    if missing:
        fit.problems.append(
            f'{len(missing)} tensors of the model are not in the checkpoint: '
            f'{_first(prefix + k for k in missing)}')
    if unexpected:
        fit.problems.append(
            f'{len(unexpected)} tensors of the checkpoint are not in the '
            f'model: {_first(prefix + k for k in unexpected)}')
    if dense_in and allow_dense and model_moe_keys:
        fit.new_moe = sorted(prefix + k for k in model_moe_keys)
        fit.new_moe_ffns = len(ffns)
    return fit


def guarded_backbones(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every module with :func:`guard_backbone_loads`."""
    return [(name, m) for name, m in model.named_modules()
            if getattr(m, _GUARD, False)]


def check_model_state_dict(model: nn.Module,
                           state_dict: Mapping,
                           mode: str = 'test',
                           prefix: str = '') -> List[Fit]:
    """Every :class:`Fit` of a whole-model load: guarded backbones first
    (their messages name family and MoE layout), then the rest.

    Args:
        model: the whole model (unwrapped).
        state_dict: the incoming state dict.
        mode: ``'test'`` and ``'resume'`` demand every tensor;
            ``'load_from'`` also allows a dense backbone into an RMoE one.
        prefix: the model's own prefix in ``state_dict``.
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    fits, covered = [], []
    for name, backbone in guarded_backbones(model):
        sub = f'{prefix}{name}.' if name else prefix
        covered.append(sub)
        fits.append(
            check_backbone_state_dict(
                backbone, state_dict, sub, allow_dense=mode == 'load_from'))
    rest = Fit(f'the model {type(model).__name__}')
    own = {prefix + k: tuple(v.shape) for k, v in model.state_dict().items()}

    def outside(key):
        return key.startswith(prefix) and not any(
            key.startswith(c) for c in covered)

    incoming = {
        k: v
        for k, v in state_dict.items() if isinstance(k, str) and outside(k)
    }
    missing = [
        k for k in own
        if outside(k) and k not in incoming and not is_derived(k)
    ]
    unexpected = [k for k in incoming if k not in own and not is_derived(k)]
    shapes = [
        f'{k}: checkpoint {tuple(v.shape)}, model {own[k]}'
        for k, v in incoming.items()
        if k in own and hasattr(v, 'shape') and tuple(v.shape) != own[k]
    ]
    if missing:
        rest.problems.append(f'{len(missing)} tensors of the model are not in '
                             f'the checkpoint: {_first(missing)}')
    if unexpected:
        rest.problems.append(f'{len(unexpected)} tensors of the checkpoint '
                             f'are not in the model: {_first(unexpected)}')
    if shapes:
        rest.problems.append(f'{len(shapes)} tensors have another shape: '
                             f'{_first(shapes, 3)}')
    return fits + [rest]


# ----------------------------------------------------------------- hooks
@contextmanager
def checked_load():
    """Loads inside this block were checked by the caller: hooks skip them."""
    token = _checked.set(True)
    try:
        yield
    finally:
        _checked.reset(token)


def _backbone_pre_hook(module, state_dict, prefix, *args, **kwargs):
    # mmengine and torch hand each module only the keys under its prefix.
    if _checked.get() or getattr(module, _COVERED, None) == prefix:
        return
    check_backbone_state_dict(module, state_dict, prefix).enforce()


def guard_backbone_loads(backbone: nn.Module) -> None:
    """Check every state dict loaded into ``backbone`` before it is copied.

    One line in a backbone's ``__init__``; see the module docstring.
    """
    setattr(backbone, _GUARD, True)
    backbone.register_load_state_dict_pre_hook(_backbone_pre_hook)


def enforce_fits(fits: List[Fit], logger='current') -> None:
    """One error (or WARNING) for all problems of ``fits``, then the
    dense -> RMoE reports."""
    bad = [fit for fit in fits if fit.problems]
    if bad:
        merged = Fit(bad[0].where if len(bad) == 1 else 'the model')
        merged.problems = [
            p if len(bad) == 1 else f'{fit.where}: {p}' for fit in bad
            for p in fit.problems
        ]
        merged.enforce(logger)
    for fit in fits:
        Fit(fit.where, new_moe=fit.new_moe,
            new_moe_ffns=fit.new_moe_ffns).enforce(logger)


def _model_pre_hook(module, state_dict, prefix, *args, mode: str, **kwargs):
    if _checked.get():
        return
    enforce_fits(check_model_state_dict(module, state_dict, mode, prefix))


def guard_model_loads(model: nn.Module, mode: str):
    """Check whole-model loads into ``model`` (``tools/``'s strict loads).

    Args:
        model: the runner's model; a DDP / mmengine wrapper is unwrapped.
        mode: ``'test'``, ``'resume'`` or ``'load_from'`` (see
            :func:`check_model_state_dict`).

    Returns:
        A handle whose ``.remove()`` undoes it.
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    from mmengine.model import is_model_wrapper
    while is_model_wrapper(model):
        model = model.module
    covered = [(name, backbone) for name, backbone in guarded_backbones(model)
               if name]
    for name, backbone in covered:  # the model's hook checks them
        setattr(backbone, _COVERED, f'{name}.')
    handle = model.register_load_state_dict_pre_hook(
        partial(_model_pre_hook, mode=mode))
    return _ModelGuard(handle, [backbone for _, backbone in covered])


class _ModelGuard:
    """Handle of :func:`guard_model_loads`."""

    def __init__(self, handle, backbones: List[nn.Module]):
        self.handle, self.backbones = handle, backbones

    def remove(self) -> None:
        self.handle.remove()
        for backbone in self.backbones:
            if hasattr(backbone, _COVERED):
                delattr(backbone, _COVERED)
