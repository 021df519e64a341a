"""The naming contract of the RMoE parameters, written once.

An RMoE FFN (:class:`~rmoe_mm.moe.RMoEFFN`) keeps its MoE-specific tensors
in two children: ``residual`` (the per-expert residuals) and ``router`` (the
gate). Everything else it holds (``layers.0.0`` = fc1, ``layers.1`` = fc2,
LayerScale) is the dense FFN that every expert shares, under mmcv ``FFN``'s
names, so that a dense checkpoint fills it unchanged.

A parameter or state-dict key is a residual or a router when one of its
dot-separated path segments is exactly ``residual`` or ``router``; a module
merely *called* ``residual_block`` or ``routers`` is neither. Every place
that tells MoE tensors apart (parameter roles, the stage hook, the
checkpoint loader, optimizer settings) uses these functions.

For mmengine optimizer settings the segments with their dots are enough
(mmengine's ``custom_keys`` match substrings of the parameter name), e.g.
``paramwise_cfg=dict(custom_keys={'.residual.': dict(lr_mult=1.),
'.router.': dict(decay_mult=0.)})``.
"""
from typing import Optional

#: Child of an RMoE FFN that holds the expert residuals.
RESIDUAL = 'residual'
#: Child of an RMoE FFN that holds the router.
ROUTER = 'router'
#: The MoE-specific roles, in the order the roles are reported.
MOE_ROLES = (RESIDUAL, ROUTER)


def moe_role(name: str) -> Optional[str]:
    """``'residual'``, ``'router'`` or None for a parameter / key ``name``.

    The first path segment that is exactly a role name decides.
    """
    for segment in name.split('.'):
        if segment in MOE_ROLES:
            return segment
    return None


def is_moe_key(name: str) -> bool:
    """Whether ``name`` is a residual or router parameter / state-dict key."""
    return moe_role(name) is not None


def moe_layer_name(name: str) -> str:
    """The RMoE FFN that a residual or router ``name`` belongs to.

    ``'stages.2.blocks.1.ffn.router.gate.weight'`` ->
    ``'stages.2.blocks.1.ffn'`` (``''`` for a lone FFN's own keys).

    Raises:
        ValueError: ``name`` is no residual or router name.
    """
    segments = name.split('.')
    for index, segment in enumerate(segments):
        if segment in MOE_ROLES:
            return '.'.join(segments[:index])
    raise ValueError(f'{name!r} is not a residual or router name: no path '
                     f'segment is one of {MOE_ROLES}')
