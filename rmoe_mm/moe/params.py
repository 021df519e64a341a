"""Name the three parameter groups of the RMoE FFNs in any model.

``core``: the dense fc1/fc2 (and LayerScale) of every RMoE FFN, i.e. what a
dense checkpoint provides; ``residual``: the per-expert residuals;
``router``: the gates. Every other parameter of the model is in none of them.

For mmengine optimizer settings the names are enough: residual parameters
contain ``.residual.`` and router parameters ``.router.``, e.g.
``paramwise_cfg=dict(custom_keys={'.residual.': dict(lr_mult=1.),
'.router.': dict(lr_mult=1., decay_mult=0.)})``.
"""
from typing import Dict, List, Tuple

from torch import nn

from .residual_ffn import RMoEFFN

#: Substrings that identify residual and router parameters in a model.
RESIDUAL_KEY = '.residual.'
ROUTER_KEY = '.router.'
GROUPS = ('core', 'residual', 'router')


def moe_param_groups(model: nn.Module) -> Dict[str, List[Tuple[str, nn.Parameter]]]:
    """``{'core': [(name, param), ...], 'residual': [...], 'router': [...]}``.

    Names are ``model.named_parameters()`` names. Shared parameters appear
    once, in the first group that reaches them.
    """
    groups: Dict[str, List[Tuple[str, nn.Parameter]]] = {g: [] for g in GROUPS}
    seen = set()
    for module_name, module in model.named_modules():
        if not isinstance(module, RMoEFFN):
            continue
        prefix = f'{module_name}.' if module_name else ''
        for name, param in module.named_parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            group = name.split('.', 1)[0]
            if group not in ('residual', 'router'):
                group = 'core'
            groups[group].append((prefix + name, param))
    return groups


def set_core_requires_grad(model: nn.Module,
                           requires_grad: bool,
                           include_non_moe: bool = False) -> int:
    """Freeze (``False``) or unfreeze the core; returns how many params changed.

    Args:
        model (nn.Module): Any model holding RMoE FFNs.
        requires_grad (bool): The new flag.
        include_non_moe (bool): Also set it on every parameter outside the
            RMoE groups (attention, norms, heads...), i.e. the whole dense
            model that the paper calls the core. Default: False (only the
            RMoE FFNs' fc1/fc2).
    """
    groups = moe_param_groups(model)
    moe_ids = {id(p) for g in groups.values() for _, p in g}
    targets = [p for _, p in groups['core']]
    if include_non_moe:
        targets += [p for p in model.parameters() if id(p) not in moe_ids]
    changed = 0
    for param in targets:
        if param.requires_grad != requires_grad:
            param.requires_grad_(requires_grad)
            changed += 1
    return changed


def collect_moe_stats(model: nn.Module) -> Dict[str, Dict[str, object]]:
    """Statistics of the last forward of every RMoE FFN, keyed by module name.

    See :meth:`RMoEFFN.moe_stats` for the keys. Layers that have not run yet
    are left out.
    """
    stats = {}
    for name, module in model.named_modules():
        if isinstance(module, RMoEFFN):
            layer_stats = module.moe_stats()
            if layer_stats:
                stats[name] = layer_stats
    return stats
