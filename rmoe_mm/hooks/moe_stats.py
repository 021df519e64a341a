"""MoE statistics in the training log: balance loss and expert load per layer.

Every RMoE FFN keeps the statistics of its last forward
(:func:`rmoe_mm.moe.collect_moe_stats`). :class:`MoEStatsHook` reads them after
every training iteration and hands them to mmengine's message hub, from where
``LoggerHook`` prints them in the log line and sends them to every visualizer
backend (``LocalVisBackend``'s scalars.json, TensorBoard, ...):

- ``moe/balance_loss``: the balance-loss term the routers are trained with,
  ``sum over layers of weight * loss``; smoothed over the log window like
  every ``*loss*`` scalar.
- ``moe/<layer>/balance_loss``: each layer's unweighted balance loss (the
  importance CV^2 or the load loss; 0 = perfectly balanced), smoothed too.
- ``moe/<layer>/imbalance``: max / mean tokens per expert over the last log
  interval (1 = balanced, E = every token on one expert).
- ``moe/<layer>/dropped``: fraction of token-to-expert assignments dropped
  over capacity in the last log interval (0 when dropless).

At each log interval it also writes one line with the stage
(:class:`~rmoe_mm.hooks.RMoEStageHook`) and the tokens per expert of every
layer, whose counts go to the visualizer as ``moe/<layer>/expert_<i>``.
Statistics are those of this process (rank 0 in distributed runs, like
mmengine's own losses); ``<layer>`` is the module path without a leading
``backbone.`` and the trailing ``.ffn``.
"""
from collections import defaultdict
from typing import Dict, List, Optional

from mmengine.hooks import Hook, LoggerHook
from mmengine.model import is_model_wrapper

from rmoe_mm.moe import collect_moe_stats
from rmoe_mm.registry import HOOKS


def short_layer_name(name: str) -> str:
    """``'backbone.stages.2.blocks.1.ffn'`` -> ``'stages.2.blocks.1'``."""
    if name.startswith('backbone.'):
        name = name[len('backbone.'):]
    if name.endswith('.ffn'):
        name = name[:-len('.ffn')]
    return name


@HOOKS.register_module()
class MoEStatsHook(Hook):
    """Logs balance losses, expert load and the stage every log interval.

    Args:
        interval (int, optional): Log interval in iterations. None: that of
            the runner's ``LoggerHook`` (and its ``ignore_last``), so the
            statistics are reported on the same lines. Default: None.
    """

    # Before LoggerHook (BELOW_NORMAL), which prints what we put in the hub.
    priority = 'NORMAL'

    def __init__(self, interval: Optional[int] = None):
        if interval is not None and (not isinstance(interval, int)
                                     or interval < 1):
            raise ValueError(f'interval must be a positive int or None, got '
                             f'{interval!r}')
        self.interval = interval
        self.ignore_last = True
        self._reset()

    def _reset(self) -> None:
        self._tokens: Dict[str, List[int]] = {}
        self._dropped: Dict[str, int] = defaultdict(int)

    def before_train(self, runner) -> None:
        if self.interval is None:
            loggers = [h for h in runner.hooks if isinstance(h, LoggerHook)]
            self.interval = loggers[0].interval if loggers else 10
            self.ignore_last = loggers[0].ignore_last if loggers else True
        self._reset()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        stats = collect_moe_stats(model)
        if not stats:
            return
        hub = runner.message_hub
        total = 0.
        for name, layer in stats.items():
            short = short_layer_name(name)
            if 'balance_loss' in layer:
                weight = model.get_submodule(name).balance_loss_weight
                total += weight * layer['balance_loss']
                hub.update_scalar(f'train/moe/{short}/balance_loss',
                                  layer['balance_loss'])
            tokens = self._tokens.setdefault(short, [0] *
                                             len(layer['tokens_per_expert']))
            for i, count in enumerate(layer['tokens_per_expert']):
                tokens[i] += int(count)
            self._dropped[short] += int(layer['dropped'])
        hub.update_scalar('train/moe/balance_loss', total)
        if self._should_log(runner, batch_idx):
            self._log_load(runner)
            self._reset()

    def _should_log(self, runner, batch_idx: int) -> bool:
        # LoggerHook's own condition, so both report on the same iterations.
        if self.every_n_inner_iters(batch_idx, self.interval):
            return True
        return self.end_of_epoch(runner.train_dataloader,
                                 batch_idx) and (not self.ignore_last or len(
                                     runner.train_dataloader) <= self.interval)

    def _log_load(self, runner) -> None:
        hub = runner.message_hub
        per_expert = {}
        lines = []
        for short, tokens in self._tokens.items():
            assigned = sum(tokens)
            mean = assigned / len(tokens)
            imbalance = max(tokens) / mean if mean > 0 else 0.
            dropped = self._dropped[short] / assigned if assigned else 0.
            hub.update_scalar(f'train/moe/{short}/imbalance', imbalance)
            hub.update_scalar(f'train/moe/{short}/dropped', dropped)
            per_expert.update({
                f'moe/{short}/expert_{i}': count
                for i, count in enumerate(tokens)
            })
            lines.append(f'{short}: {tokens} imbalance {imbalance:.2f} '
                         f'dropped {self._dropped[short]}/{assigned}')
        stage = hub.get_info('rmoe_stage', '-')
        runner.logger.info(f'MoE [stage: {stage}] tokens per expert, iters '
                           f'up to {runner.iter + 1}: ' + '; '.join(lines))
        runner.visualizer.add_scalars(per_expert, step=runner.iter + 1)
