"""The one place that knows how an RMoE FFN stores and applies its experts.

Analysis code reads expert weights and watches expert compute through these
functions only, so that a change of the residual layout touches one file.
Two layouts exist:

- ``ffn.residual.weight('fc1')`` / ``ffn.residual.bias('fc1')`` and
  ``ffn.residual.apply_fc('fc1', rows, counts, core)`` (parameters
  ``residual.fc1_weight``, ...);
- ``ffn.residual.fc1`` as a module: ``.full_weight()``, ``.bias`` and
  ``ffn.residual.fc1(rows, counts, core)`` (parameters
  ``residual.fc1.weight``, ...).

Both keep the shared (core) linear layers where mmcv's ``FFN`` has them:
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


def _residual_child(ffn: nn.Module, fc: str):
    """``ffn.residual.<fc>`` when residuals are child modules, else None."""
    child = getattr(ffn.residual, fc, None)
    return child if isinstance(child, nn.Module) else None


def residual_weight(ffn: nn.Module, fc: str) -> Tensor:
    """Residual weights ``[E, out, in]`` of ``fc`` (``A_e B_e`` if low rank).
    """
    child = _residual_child(ffn, fc)
    if child is not None:
        return child.full_weight()
    return ffn.residual.weight(fc)


def residual_bias(ffn: nn.Module, fc: str) -> Tensor:
    """Residual biases ``[E, out]`` of ``fc``."""
    child = _residual_child(ffn, fc)
    if child is not None:
        return child.bias
    return ffn.residual.bias(fc)


def expert_weights(ffn: nn.Module, fc: str) -> Tuple[Tensor, Tensor]:
    """Expert weights ``[E, out, in]`` and biases ``[E, out]`` of ``fc``:
    core plus each expert's residual."""
    core = core_linear(ffn, fc)
    return (core.weight + residual_weight(ffn, fc),
            core.bias + residual_bias(ffn, fc))


class _Handle:
    """Undoes :func:`watch_expert_linears` (``.remove()``)."""

    def __init__(self, undo: Callable[[], None]):
        self._undo = undo

    def remove(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None


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
    if all(_residual_child(ffn, fc) is not None for fc in FCS):
        handles = []
        for fc in FCS:

            def hook(module, args, output, fc=fc):
                callback(fc, args[0], args[1], output)

            handles.append(
                _residual_child(ffn, fc).register_forward_hook(hook))
        return _Handle(lambda: [h.remove() for h in handles])

    residual = ffn.residual
    apply_fc = residual.apply_fc  # the bound method of the class

    def watched(fc, rows, counts, core):
        output = apply_fc(fc, rows, counts, core)
        callback(fc, rows, counts, output)
        return output

    residual.apply_fc = watched
    return _Handle(lambda: delattr(residual, 'apply_fc'))
