"""The one place that knows how an RMoE FFN stores and applies its experts.

Analysis code reads expert weights and watches expert compute through these
functions only, so that a change of the residual layout touches one file.
The residuals of ``fc1`` and ``fc2`` are the child modules
``ffn.residual.fc1`` / ``ffn.residual.fc2`` (``ResidualLinear``: parameters
``weight [E, out, in]``, or ``weight_a``/``weight_b`` when low rank, and
``bias [E, out]``; ``full_weight()``; called as ``fc1(rows, counts, core)``).
Checkpoints of the older layout (``residual.fc1_weight``) are renamed when
they load (``rmoe_mm.moe.experts.remap_legacy_residual_keys``), so the
analysis sees this layout only.

The shared (core) linear layers stay where mmcv's ``FFN`` has them:
``ffn.layers[0][0]`` (fc1) and ``ffn.layers[1]`` (fc2).
"""
from typing import Callable, Sequence, Tuple

from torch import Tensor, nn

#: The two linear layers of an FFN, in order.
FCS = ('fc1', 'fc2')

#: ``callback(fc, rows, counts, output)`` of :func:`watch_expert_linears`.
ExpertLinearCallback = Callable[[str, Tensor, Sequence[int], Tensor], None]


def core_linear(ffn: nn.Module, fc: str) -> nn.Linear:
    """The shared ``nn.Linear`` of ``fc`` in an mmcv ``FFN`` or RMoE FFN."""
    if fc == 'fc1':
        return ffn.layers[0][0]
    if fc == 'fc2':
        return ffn.layers[1]
    raise ValueError(f'fc must be one of {FCS}, got {fc!r}')


def residual_linear(ffn: nn.Module, fc: str) -> nn.Module:
    """The ``ResidualLinear`` child of ``fc`` (``ffn.residual.<fc>``)."""
    if fc not in FCS:
        raise ValueError(f'fc must be one of {FCS}, got {fc!r}')
    return getattr(ffn.residual, fc)


def residual_weight(ffn: nn.Module, fc: str) -> Tensor:
    """Residual weights ``[E, out, in]`` of ``fc`` (``A_e B_e`` if low rank).
    """
    return residual_linear(ffn, fc).full_weight()


def residual_bias(ffn: nn.Module, fc: str) -> Tensor:
    """Residual biases ``[E, out]`` of ``fc``."""
    return residual_linear(ffn, fc).bias


def expert_weights(ffn: nn.Module, fc: str) -> Tuple[Tensor, Tensor]:
    """Expert weights ``[E, out, in]`` and biases ``[E, out]`` of ``fc``:
    core plus each expert's residual."""
    core = core_linear(ffn, fc)
    return (core.weight + residual_weight(ffn, fc),
            core.bias + residual_bias(ffn, fc))


class _Handle:
    """Undoes :func:`watch_expert_linears` (``.remove()``)."""

    def __init__(self, handles):
        self._handles = list(handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def watch_expert_linears(ffn: nn.Module,
                         callback: ExpertLinearCallback) -> _Handle:
    """Call ``callback(fc, rows, counts, output)`` after every expert linear
    layer of ``ffn`` runs.

    ``rows [A, in]`` are the inputs sorted by expert, ``counts`` the rows of
    each expert and ``output [A, out]`` the result (in the autograd graph, so
    ``output.register_hook`` sees its gradient).

    Returns:
        A handle whose ``remove()`` stops watching.
    """
    handles = []
    for fc in FCS:

        def hook(module, args, output, fc=fc):
            callback(fc, args[0], args[1], output)

        handles.append(residual_linear(ffn, fc).register_forward_hook(hook))
    return _Handle(handles)
