"""Whole checkpoints from state that lives on several ranks.

mmengine's ``Runner.save_checkpoint`` runs on rank 0 only (``@master_only``),
but two kinds of training state are not on rank 0 alone:

- expert-parallel residuals (``moe_cfg=dict(expert_parallel=True)``) and
  their optimizer state: each rank holds ``E / G`` experts;
- a ``ZeroRedundancyOptimizer``'s state: each rank holds its partition, and
  mmengine's wrapper consolidates it inside ``state_dict()``, a collective
  that rank 0 would enter alone (the save never returns).

:class:`GatherOnSaveHook` makes every rank take part: ``CheckpointHook``
calls ``runner.save_checkpoint`` on every rank, and the hook wraps it so that
all ranks first gather that state onto rank 0
(:func:`rmoe_mm.moe.parallel.gathered_for_save`), then rank 0 writes. The
file holds full-size ``[E, ...]`` residuals and optimizer states, so it
loads in one process, on another number of ranks, and in ``tools/test.py``;
loading keeps each rank's experts (:mod:`rmoe_mm.moe.parallel`).
``tools/train.py`` adds the hook to every distributed run.
"""
import functools
import inspect

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

from rmoe_mm.moe.parallel import (expert_shards, gathered_for_save,
                                  shard_optimizer_state)
from rmoe_mm.registry import HOOKS


def _optimizers(optim_wrapper) -> list:
    if isinstance(optim_wrapper, OptimWrapperDict):
        return [w.optimizer for w in optim_wrapper.values()]
    if isinstance(optim_wrapper, OptimWrapper):
        return [optim_wrapper.optimizer]
    return []  # not built (testing) or not a wrapper


def _clips(optim_wrapper) -> bool:
    wrappers = optim_wrapper.values() if isinstance(
        optim_wrapper, OptimWrapperDict) else [optim_wrapper]
    return any(getattr(w, 'clip_grad_kwargs', None) for w in wrappers)


@HOOKS.register_module()
class GatherOnSaveHook(Hook):
    """Every rank joins the save, so sharded state reaches the checkpoint.

    See the module docstring. It also refuses what expert parallelism cannot
    do yet: ``ZeroRedundancyOptimizer`` (it broadcasts each parameter from
    one rank, which would overwrite the other ranks' experts) and gradient
    clipping (each rank would compute another norm and clip its replicated
    parameters differently).
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        optimizers = _optimizers(runner.optim_wrapper)
        if expert_shards(model) and optimizers:  # training
            self._check_expert_parallel(runner, optimizers)
            for optimizer in optimizers:
                shard_optimizer_state(optimizer, model)
        save = runner.save_checkpoint
        if getattr(save, '_gathers', False):
            return
        signature = inspect.signature(save)

        @functools.wraps(save)
        def save_checkpoint(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            saved = optimizers if bound.arguments['save_optimizer'] else []
            with gathered_for_save(model, saved):
                return save(*args, **kwargs)

        save_checkpoint._gathers = True
        runner.save_checkpoint = save_checkpoint

    @staticmethod
    def _check_expert_parallel(runner, optimizers) -> None:
        zero = [
            type(o).__name__ for o in optimizers
            if 'ZeroRedundancy' in type(o).__name__
        ]
        if zero:
            raise RuntimeError(
                'expert parallelism (moe_cfg.expert_parallel=True) does not '
                f'work with {zero[0]}: ZeRO broadcasts each parameter from '
                "the rank that updates it and would overwrite the other "
                "ranks' experts. Use a plain optimizer (the expert shards "
                'already divide their optimizer state by the group size), or '
                'ZeRO without expert parallelism (docs/scaling.md).')
        if _clips(runner.optim_wrapper):
            raise RuntimeError(
                'gradient clipping (optim_wrapper.clip_grad) is not supported '
                'with expert parallelism: each rank would compute the norm '
                'of different experts and clip its replicated parameters '
                'differently. Remove clip_grad, or train without '
                'expert_parallel (docs/scaling.md).')
