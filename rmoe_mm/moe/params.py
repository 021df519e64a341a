"""Every parameter of a model by its RMoE role, as the paper names them.

``core``: every backbone parameter that is not an expert residual or a
router (patch embedding, attention, norms, and the dense FFN weights the
experts share): the paper's ``theta_0``, what a dense checkpoint provides.
``residual`` and ``router``: the MoE-specific parameters of the RMoE FFNs
(:mod:`.naming`). ``heads``: everything outside the backbone (necks, decode
and auxiliary heads, RPN/RoI heads). ``RMoEStageHook(frozen=[...])`` freezes
these roles.
"""
from typing import Dict, List, Optional, Tuple

from torch import nn

from .naming import moe_role
from .residual_ffn import rmoe_layers

#: Parameter roles, in the order they are reported.
ROLES = ('core', 'residual', 'router', 'heads')

NamedParams = List[Tuple[str, nn.Parameter]]


def split_parameters(
        model: nn.Module,
        backbone: Optional[str] = 'backbone') -> Dict[str, NamedParams]:
    """Every parameter of ``model`` by its role (see the module doc).

    Names are ``model.named_parameters()`` names; a shared parameter appears
    once. Only parameters of RMoE FFNs can be residuals or routers.

    Args:
        model (nn.Module): The model (not a DDP wrapper).
        backbone (str, optional): Dotted path of the backbone inside
            ``model``. None: the whole model is the backbone (e.g. a lone
            RMoE FFN, whose core is then its shared fc1/fc2). Default:
            ``'backbone'`` (mmseg segmentors, mmdet detectors).
    """
    if backbone is None:
        backbone_module = model
    else:
        try:
            backbone_module = model.get_submodule(backbone)
        except AttributeError:
            raise ValueError(
                f'{type(model).__name__} has no submodule {backbone!r}; set '
                "RMoEStageHook(backbone=...) to the backbone's dotted path, "
                'or None if the whole model is the backbone') from None
    role_of = {}
    for _, layer in rmoe_layers(model):
        for name, param in layer.named_parameters():
            role = moe_role(name)
            if role is not None:
                role_of.setdefault(id(param), role)
    in_backbone = {id(p) for p in backbone_module.parameters()}
    groups: Dict[str, NamedParams] = {role: [] for role in ROLES}
    for name, param in model.named_parameters():
        role = role_of.get(
            id(param), 'core' if id(param) in in_backbone else 'heads')
        groups[role].append((name, param))
    return groups
