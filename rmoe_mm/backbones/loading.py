"""Load a dense or RMoE state dict into an RMoE backbone, checked and reported.

Shared by every RMoE backbone (Swin, CvT): the backbone converts its checkpoint
to its own key layout, then :func:`load_rmoe_state_dict` loads it.

* A *dense* checkpoint fills everything but the MoE-specific parameters:
  the dense FFN of each MoE block lands in the RMoE FFN's shared weights
  (same key names), residuals and routers keep the values they were
  constructed with.
* An *RMoE* checkpoint (one with router / residual keys) must match the model
  exactly in where the MoE FFNs are and in their shapes (expert count,
  residual rank); anything else raises :class:`CheckpointMismatchError`
  instead of loading part of it.
* Any tensor whose shape differs from the model's raises, naming the key.
* A checkpoint of another backbone family (a CvT checkpoint into a Swin
  model) raises before anything else, naming both families.

``--allow-partial-load`` / ``RMOE_MM_ALLOW_PARTIAL_LOAD=1``
(:mod:`rmoe_mm.checkpoint.fit`) turns these refusals into a WARNING and
loads what fits.
"""
import logging
from dataclasses import dataclass, field
from typing import Iterable, List, Sequence, Set

from mmengine.logging import print_log
from torch import nn

from rmoe_mm.checkpoint.fit import (PARTIAL_HINT, CheckpointMismatchError,
                                    checked_load, family_problem,
                                    partial_loads_allowed)
from rmoe_mm.converters.common import StateDict, summarise_keys
from rmoe_mm.moe.naming import is_moe_key, moe_layer_name
from rmoe_mm.moe.residual_ffn import rmoe_layers


def rmoe_ffn_names(model: nn.Module) -> List[str]:
    """Module names of the RMoE FFNs in ``model``."""
    return [name for name, _ in rmoe_layers(model)]


def _model_moe_keys(model: nn.Module, model_state: StateDict) -> Set[str]:
    """The residual and router keys of ``model``'s RMoE FFNs."""
    layers = set(rmoe_ffn_names(model))
    return {
        k
        for k in model_state if is_moe_key(k) and moe_layer_name(k) in layers
    }


@dataclass
class LoadReport:
    """What a load did with every key, for the log and for tests."""

    source: str = ''
    layout: str = ''
    loaded: List[str] = field(default_factory=list)
    initialised: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    recomputed: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines: counts and key patterns of each group."""
        head = f'Loaded {self.source or "state dict"}'
        if self.layout:
            head += f' ({self.layout} layout)'
        lines = [
            f'{head}: {len(self.loaded)} tensors loaded',
            f'  new MoE tensors (router / residual init): '
            f'{len(self.initialised)}: {summarise_keys(self.initialised)}',
            f'  not in checkpoint, left at their init: {len(self.missing)}: '
            f'{summarise_keys(self.missing)}',
            f'  in checkpoint, ignored: {len(self.ignored)}: '
            f'{summarise_keys(self.ignored)}',
        ]
        if self.recomputed:
            lines.append(f'  derived buffers, recomputed: '
                         f'{len(self.recomputed)}: '
                         f'{summarise_keys(self.recomputed)}')
        return '\n'.join(lines)

    def enforce_complete(self,
                         allowed_missing: Sequence[str] = (),
                         allowed_unused: Sequence[str] = (),
                         logger='current') -> None:
        """A strict load: every tensor of the model loaded and every tensor
        of the checkpoint used, but for the key prefixes allowed (e.g. the
        output norms a classifier has not, ``('norm0.', ...)``; its head,
        ``('head.',)``). What the allowances cover is logged.

        Raises:
            CheckpointMismatchError: anything else is left out (unless
                partial loads are allowed, then a WARNING).
        """

        def allowed(key, prefixes):
            return key.startswith(tuple(prefixes))

        problems = []
        if self.initialised:
            problems.append(
                f'{len(self.initialised)} router / residual tensors are not '
                'in the checkpoint (a dense checkpoint?): '
                f'{summarise_keys(self.initialised)}')
        missing = [k for k in self.missing if not allowed(k, allowed_missing)]
        if missing:
            problems.append(f'{len(missing)} tensors of the model are not in '
                            f'the checkpoint: {summarise_keys(missing)}')
        unused = [k for k in self.ignored if not allowed(k, allowed_unused)]
        if unused:
            problems.append(f'{len(unused)} tensors of the checkpoint are not '
                            f'used: {summarise_keys(unused)}')
        source = self.source or 'the checkpoint'
        if problems:
            message = (f'{source} does not fit the backbone (init_cfg '
                       f'strict=True, allowed_missing={list(allowed_missing)}'
                       f', allowed_unused={list(allowed_unused)}):\n  - ' +
                       '\n  - '.join(problems))
            if not partial_loads_allowed():
                raise CheckpointMismatchError(f'{message}\n{PARTIAL_HINT}')
            print_log(
                f'{message}\nLoading it partially because partial '
                'loads are allowed.',
                logger=logger,
                level=logging.WARNING)
            return
        print_log(
            f'Strict load of {source}: every backbone tensor loaded but '
            f'{len(self.missing)} allowed missing '
            f'({summarise_keys(self.missing)}); {len(self.ignored)} '
            f'checkpoint tensors allowed unused '
            f'({summarise_keys(self.ignored)})',
            logger=logger)


def _check_moe_match(model: nn.Module, state_dict: StateDict,
                     moe_keys: Set[str]) -> None:
    """Raise unless the checkpoint's MoE FFNs are exactly the model's."""
    model_moe = set(rmoe_ffn_names(model))
    ckpt_moe = {moe_layer_name(k) for k in state_dict if is_moe_key(k)}
    if ckpt_moe != model_moe:
        raise CheckpointMismatchError(
            'the checkpoint is an RMoE checkpoint whose MoE FFNs are not the '
            "model's (other moe_blocks?): only in the checkpoint: "
            f'{sorted(ckpt_moe - model_moe) or "-"}; only in the model: '
            f'{sorted(model_moe - ckpt_moe) or "-"}. Build the model with the '
            "checkpoint's moe_blocks, or start again from the dense "
            'checkpoint (tools/model_converters/dense_to_rmoe.py).')
    absent = sorted(moe_keys - set(state_dict))
    if absent:
        raise CheckpointMismatchError(
            'the RMoE checkpoint lacks MoE tensors the model has (other '
            f'router or residual settings?): {summarise_keys(absent)}')


def _shape_error(model: nn.Module, key: str, got,
                 want) -> CheckpointMismatchError:
    message = (f'checkpoint tensor {key!r} has shape {tuple(got)} but the '
               f"model's has shape {tuple(want)}")
    if is_moe_key(key):
        ffn = model.get_submodule(moe_layer_name(key))
        settings = ', '.join(f'{name}={getattr(ffn, name)}'
                             for name in ('num_experts', 'residual_rank')
                             if hasattr(ffn, name))
        message += (f"; the model's RMoE FFN {moe_layer_name(key)!r} has "
                    f'{settings}: the checkpoint was made with another '
                    'expert count or residual rank. Build the model with the '
                    "checkpoint's moe_cfg, or start again from the dense "
                    'checkpoint (tools/model_converters/dense_to_rmoe.py)')
    return CheckpointMismatchError(message)


def load_rmoe_state_dict(model: nn.Module,
                         state_dict: StateDict,
                         *,
                         source: str = '',
                         layout: str = '',
                         ignored: Iterable[str] = (),
                         recomputed: Iterable[str] = (),
                         logger='current') -> LoadReport:
    """Load ``state_dict`` (in ``model``'s key layout) into ``model``.

    Args:
        model: an RMoE backbone.
        state_dict: dense or RMoE weights, already in ``model``'s layout.
        source: where the weights came from, for the log.
        layout: the layout they came in, for the log.
        ignored: keys already left out by the caller (other model parts).
        recomputed: derived buffers the caller dropped on purpose; model keys
            in this list are not reported as missing.
        logger: mmengine logger (name or instance) for the report; ``None``
            logs nothing.

    Returns:
        The :class:`LoadReport`, also logged.

    Raises:
        CheckpointMismatchError: a shape differs, or the checkpoint is an RMoE
            checkpoint for other MoE blocks or settings.
    """
    from rmoe_mm.moe.experts import remap_legacy_residual_keys
    from rmoe_mm.moe.parallel import full_state_shapes
    state_dict = remap_legacy_residual_keys(state_dict)
    # Shapes only: an expert-parallel model would gather its residuals.
    model_state = full_state_shapes(model)
    moe_keys = _model_moe_keys(model, model_state)
    try:
        problem = family_problem(model, state_dict)
        if problem:
            raise CheckpointMismatchError(problem)
        if any(is_moe_key(k) for k in state_dict):
            _check_moe_match(model, state_dict, moe_keys)
        for key, value in state_dict.items():
            if key in model_state and value.shape != model_state[key]:
                raise _shape_error(model, key, value.shape, model_state[key])
    except CheckpointMismatchError as err:
        if not partial_loads_allowed():
            raise CheckpointMismatchError(
                f'{source or "the checkpoint"}: {err}\n{PARTIAL_HINT}'
            ) from None
        print_log(
            f'{source or "the checkpoint"}: {err}\nLoading what fits '
            'because partial loads are allowed.',
            logger=logger,
            level=logging.WARNING)
        state_dict = {
            k: v
            for k, v in state_dict.items()
            if k not in model_state or v.shape == model_state[k]
        }
    with checked_load():  # checked above; the backbone's hook skips it
        model.load_state_dict(state_dict, strict=False)

    recomputed = list(recomputed)
    skip = set(recomputed)
    report = LoadReport(
        source=source,
        layout=layout,
        loaded=[k for k in state_dict if k in model_state],
        initialised=sorted(k for k in moe_keys if k not in state_dict),
        missing=[
            k for k in model_state
            if k not in state_dict and k not in moe_keys and k not in skip
        ],
        ignored=list(ignored) +
        [k for k in state_dict if k not in model_state],
        recomputed=recomputed)
    if logger is not None:
        print_log(report.summary(), logger=logger)
    return report
