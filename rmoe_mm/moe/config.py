"""The settings of an RMoE FFN, validated once, as one typed object.

A backbone's ``moe_cfg`` dict becomes a :class:`MoEConfig` when the backbone
is built (before any weight is allocated), and that object travels to every
:class:`~rmoe_mm.moe.RMoEFFN` it creates. Its fields are the list of valid
settings, so an unknown key is reported with the closest valid name.
"""
import dataclasses
import difflib
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from .router import BALANCE_LOSSES, ROUTER_TYPES

#: How the expert outputs are combined; see :func:`.dispatch.combine`.
ALIGNMENTS = ('stopgrad', 'weighted')


class UnknownMoESettingError(ValueError, TypeError):
    """A setting name that :class:`MoEConfig` does not have.

    A ``ValueError`` for configs, and a ``TypeError`` for Python callers of
    ``RMoEFFN(...)``, where an unknown keyword argument is one.
    """


def check_number(name, value, low, integer=False, allow_none=False):
    """Raise unless ``value`` is a number (an int) ``>= low`` (or None)."""
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f'{name} must be {"an int" if integer else "a number"}'
                        f'{" or None" if allow_none else ""}, got {value!r}')
    if value < low:
        raise ValueError(f'{name} must be >= {low}, got {value!r}')


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')


@dataclass(frozen=True)
class MoEConfig:
    """Settings of an RMoE FFN, checked on construction.

    Args:
        num_experts (int): Experts E (>= 1). Default: 8.
        top_k (int): Experts per token, 1 <= k <= E. Default: 1.
        router (str): ``'linear'`` (softmax of a linear gate) or ``'cosine'``
            (Swin-MoE's cosine gate). Default: ``'linear'``.
        gate_noise (float, optional): Std of the logit noise in training.
            Default: None = ``1 / num_experts`` (Swin-MoE's 1.0 scaled by
            ``1 / E`` as Tutel does; V-MoE's ``1 / E``).
        capacity_factor (float, optional): None or 0: dropless. > 0: each
            expert takes at most ``ceil(capacity_factor * k * N / E)`` of the
            N tokens' assignments; overflowing ones add 0 to the FFN output
            (the token passes through the identity only) and are counted.
        balance_loss (str): ``'importance'`` (the paper's CV^2), ``'load'``
            (Switch/GShard) or ``'none'`` (None is read as ``'none'``).
            Default: ``'importance'``.
        balance_loss_weight (float): Its weight. Default: 0.01 (Swin-MoE).
        residual_std (float): Init std of the residual weights (0 allowed).
            Default: 1e-4, see :class:`~rmoe_mm.moe.RMoEFFN`.
        alignment (str): ``'stopgrad'`` (the paper's) or ``'weighted'``
            (``y = sum_i g_i E_i(x)``). Default: ``'stopgrad'``.
        residual_rank (int, optional): Low-rank residual ``A_i B_i`` of this
            rank; None = full-size residuals. Default: None.
    """

    num_experts: int = 8
    top_k: int = 1
    router: str = 'linear'
    gate_noise: Optional[float] = None
    capacity_factor: Optional[float] = None
    balance_loss: str = 'importance'
    balance_loss_weight: float = 0.01
    residual_std: float = 1e-4
    alignment: str = 'stopgrad'
    residual_rank: Optional[int] = None

    def __post_init__(self):
        check_number('num_experts', self.num_experts, 1, integer=True)
        check_number('top_k', self.top_k, 1, integer=True)
        if self.top_k > self.num_experts:
            raise ValueError(
                f'top_k={self.top_k} exceeds num_experts={self.num_experts}; '
                'a token cannot visit more experts than exist')
        _check_choice('router', self.router, ROUTER_TYPES)
        check_number('gate_noise', self.gate_noise, 0, allow_none=True)
        check_number(
            'capacity_factor', self.capacity_factor, 0, allow_none=True)
        if self.balance_loss is None:
            object.__setattr__(self, 'balance_loss', 'none')
        _check_choice('balance_loss', self.balance_loss, BALANCE_LOSSES)
        check_number('balance_loss_weight', self.balance_loss_weight, 0)
        object.__setattr__(self, 'balance_loss_weight',
                           float(self.balance_loss_weight))
        check_number('residual_std', self.residual_std, 0)
        _check_choice('alignment', self.alignment, ALIGNMENTS)
        check_number(
            'residual_rank',
            self.residual_rank,
            1,
            integer=True,
            allow_none=True)

    @classmethod
    def names(cls):
        """The valid setting names, in declaration order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def build(cls,
              cfg: Union['MoEConfig', Mapping, None] = None,
              **overrides) -> 'MoEConfig':
        """A config from another one, a ``moe_cfg`` dict or None (defaults),
        with ``overrides`` on top.

        Raises:
            UnknownMoESettingError: a key that is no setting, with the
                closest valid name.
        """
        if isinstance(cfg, MoEConfig):
            settings = cfg.to_dict()
        elif cfg is None:
            settings = {}
        elif isinstance(cfg, Mapping):
            settings = dict(cfg)
        else:
            raise TypeError(f'moe_cfg must be a dict, a MoEConfig or None, '
                            f'got {type(cfg).__name__}')
        settings.update(overrides)
        names = cls.names()
        unknown = sorted(set(settings) - set(names))
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, names, n=1)
                hints.append(f'{name!r}' + (
                    f' (did you mean {close[0]!r}?)' if close else ''))
            raise UnknownMoESettingError(
                f'unknown RMoE setting(s): {", ".join(hints)}; valid '
                f'settings are {", ".join(names)}')
        return cls(**settings)

    def to_dict(self) -> dict:
        """The settings as a plain dict (what a config would write)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> 'MoEConfig':
        """A copy with ``changes`` applied (and checked)."""
        return self.build(self, **changes)

    def check_shape(self, embed_dims: int, feedforward_channels: int) -> None:
        """Raise if the settings do not fit an FFN of these dims."""
        if self.residual_rank is not None and self.residual_rank >= min(
                embed_dims, feedforward_channels):
            raise ValueError(
                f'residual_rank={self.residual_rank} is not low-rank for '
                f'{feedforward_channels}x{embed_dims} weights; use '
                'residual_rank=None for full-size residuals')
