"""Torch randomness as a function of the iteration, so resumed runs repeat it.

mmengine seeds the RNGs once, when the runner starts, and does not save their
state in checkpoints. A resumed run therefore draws different gate noise,
dropout and drop-path masks than the uninterrupted run did, and its losses
differ. Re-seeding torch before every training iteration from
``(seed, rank, iteration)`` (fairseq does the same with ``seed + num_updates``)
makes the draws of iteration ``i`` the same whether or not the run was
interrupted before it. The data pipeline's numpy/python randomness needs no
help: mmengine's iteration-based loop replays the skipped batches on resume.
"""
import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from rmoe_mm.registry import HOOKS


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, rank, iteration)``."""
    words = np.random.SeedSequence([seed, rank, iteration]).generate_state(
        2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


@HOOKS.register_module()
class IterationSeedHook(Hook):
    """Seeds torch's CPU and CUDA RNGs before every training iteration.

    The seed mixes the runner's seed, the iteration and, when the runner was
    set up with ``randomness=dict(diff_rank_seed=True)``, the rank.
    """

    priority = 'VERY_HIGH'

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        randomness = getattr(runner, '_randomness_cfg', None) or {}
        rank = get_rank() if randomness.get('diff_rank_seed', False) else 0
        torch.manual_seed(iteration_seed(runner.seed, rank, runner.iter))
