"""What every RMoE FFN of a model did in its last forward.

Each layer keeps a snapshot of its last forward (overwritten, never
accumulated): the routing (:attr:`RMoEFFN.last_routing`) and statistics
(:meth:`RMoEFFN.moe_stats`). These functions collect them by module name,
for the trainer's hooks and for analysis tools.
"""
from typing import Dict

from torch import nn

from .residual_ffn import rmoe_layers
from .router import Routing


def collect_moe_stats(model: nn.Module) -> Dict[str, Dict[str, object]]:
    """Statistics of the last forward of every RMoE FFN, keyed by module name.

    See :meth:`RMoEFFN.moe_stats` for the keys. Layers that have not run yet
    are left out.
    """
    stats = {}
    for name, layer in rmoe_layers(model):
        layer_stats = layer.moe_stats()
        if layer_stats:
            stats[name] = layer_stats
    return stats


def collect_routing(model: nn.Module) -> Dict[str, Routing]:
    """The last routing of every RMoE FFN, keyed by module name.

    Each :class:`~rmoe_mm.moe.router.Routing` is detached: ``expert_index
    [N, k]`` (``[:, 0]`` is each token's top-1 expert, tokens in the order
    the layer saw them), ``gates [N, k]`` and ``probs [N, E]``. Layers that
    have not run yet are left out.
    """
    return {
        name: layer.last_routing
        for name, layer in rmoe_layers(model) if layer.last_routing is not None
    }
