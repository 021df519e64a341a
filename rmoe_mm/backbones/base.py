"""What every backbone of this project shares: presets, MoE blocks, weights.

A backbone mixes :class:`RMoEBackboneMixin` in before its dense base class
(``class RMoESwinTransformer(RMoEBackboneMixin, SwinTransformer)``); the
dense base builds the network, then the mixin turns the FFNs of the chosen
blocks into RMoE FFNs and gives every family the same ``init_cfg`` rules
and the same checked, reported checkpoint loading. A family provides a few
hooks, each in its own file beside the backbone:

- ``family`` and ``checkpoint_doc``: names for messages;
- ``arch_zoo``: named size presets (mmpretrain's convention);
- :meth:`~RMoEBackboneMixin.convert_state_dict`: a checkpoint's backbone
  state dict, in any layout the family reads, to this backbone's layout
  (the pure functions of :mod:`rmoe_mm.converters`);
- :meth:`~RMoEBackboneMixin.fit_state_dict`: tensors adapted to this
  instance (position tables resized, derived buffers dropped);
- :meth:`~RMoEBackboneMixin.init_from_scratch`: the dense family's own init.

Blocks live at ``self.stages[i].blocks[j]`` and each has an mmcv ``FFN`` at
``.ffn``, as in mmseg's Swin.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from mmengine.runner.checkpoint import CheckpointLoader

from rmoe_mm.classification import move_final_norm
from rmoe_mm.converters.common import StateDict, extract_backbone_state_dict
from rmoe_mm.moe.config import MoEConfig
from rmoe_mm.moe.placement import convert_ffn_to_moe
from .loading import LoadReport, load_rmoe_state_dict

Arch = Union[str, Mapping]


class RMoEBackboneMixin:
    """Shared base of the RMoE backbones (and of the dense CvT).

    See the module docstring for the hooks a family provides. A dense
    backbone is the case without MoE blocks: it shares presets, ``init_cfg``
    rules and loading, and never calls :meth:`convert_moe_blocks`.
    """

    #: Family name for messages (``'Swin'``, ``'CvT'``).
    family: str = ''
    #: Where users find the family's checkpoints (a docs page).
    checkpoint_doc: str = ''
    #: Named size presets: preset name -> constructor arguments.
    arch_zoo: Dict[str, dict] = {}

    # ------------------------------------------------------------- presets
    @classmethod
    def arch_preset(cls, arch: Arch) -> dict:
        """The sizes ``arch`` names (case-insensitive, an optional
        ``'<family>-'`` prefix), or ``arch`` itself when it is a dict with
        every size a preset has."""
        keys = sorted({k for preset in cls.arch_zoo.values() for k in preset})
        if isinstance(arch, Mapping):
            missing = sorted(set(keys) - set(arch))
            if missing:
                raise ValueError(f'a custom {cls.family} arch needs the keys '
                                 f'{missing}')
            return dict(arch)
        name = str(arch).lower()
        prefix = f'{cls.family.lower()}-'
        if name.startswith(prefix):
            name = name[len(prefix):]
        if name not in cls.arch_zoo:
            raise ValueError(
                f'unknown {cls.family} arch {arch!r}; choose one of '
                f'{", ".join(repr(k) for k in cls.arch_zoo)}, or give a dict '
                f'with {", ".join(keys)}')
        return dict(cls.arch_zoo[name])

    @classmethod
    def resolve_arch(cls, arch: Optional[Arch], default: str, **given) -> dict:
        """The sizes ``given`` (``None`` = unset) filled from ``arch``.

        Without ``arch``, unset sizes come from the ``default`` preset. With
        it, an explicit size must agree with the preset: silently preferring
        one of two contradicting sizes would build a model the checkpoint
        does not fit.
        """
        preset = cls.arch_preset(default if arch is None else arch)
        resolved = {}
        for name, value in given.items():
            if value is None:
                resolved[name] = preset[name]
                continue
            if arch is not None and not _same_size(value, preset[name]):
                raise ValueError(
                    f'arch={arch!r} sets {name}={preset[name]!r}, but {name}='
                    f'{value!r} was given too; drop one of them')
            resolved[name] = value
        return resolved

    # ----------------------------------------------------------- MoE blocks
    def convert_moe_blocks(self, blocks: Sequence[Set[int]],
                           moe_cfg: MoEConfig) -> None:
        """Replace the FFN of each block in ``blocks`` (one set of block
        indices per stage, from :func:`rmoe_mm.moe.resolve_moe_blocks`) by
        an RMoE FFN with that FFN's weights and ``moe_cfg``'s settings.

        Backbones check both before building their weights, to fail early.
        """
        #: The settings of every RMoE FFN of this backbone.
        self.moe_cfg = moe_cfg
        #: Sorted block indices with an RMoE FFN, one list per stage.
        self.moe_blocks = [sorted(stage) for stage in blocks]
        for stage, indices in zip(self.stages, self.moe_blocks):
            for index in indices:
                block = stage.blocks[index]
                block.ffn = convert_ffn_to_moe(block.ffn, moe_cfg)

    # ------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """From scratch as the dense family does, or from a checkpoint:
        ``init_cfg=dict(type='Pretrained', checkpoint=PATH[,
        prefix='backbone.'][, final_norm=True][, strict=True,
        allowed_missing=(...), allowed_unused=(...)])``, see
        :meth:`load_pretrained`."""
        init_cfg = self.init_cfg
        if init_cfg is None:
            self.init_from_scratch()
            return
        if not isinstance(init_cfg, Mapping) or \
                init_cfg.get('type') != 'Pretrained' or \
                'checkpoint' not in init_cfg:
            raise ValueError(
                f'{type(self).__name__} supports init_cfg=None or '
                "dict(type='Pretrained', checkpoint=...), got "
                f'{init_cfg}')
        strict = init_cfg.get('strict', False)
        if not strict and ('allowed_missing' in init_cfg
                           or 'allowed_unused' in init_cfg):
            raise ValueError('init_cfg allowed_missing / allowed_unused '
                             f'need strict=True, got {init_cfg}')
        report = self.load_pretrained(
            init_cfg['checkpoint'],
            prefix=init_cfg.get('prefix'),
            final_norm=init_cfg.get('final_norm', False))
        if strict:
            report.enforce_complete(
                init_cfg.get('allowed_missing', ()),
                init_cfg.get('allowed_unused', ()))

    def load_pretrained(self,
                        checkpoint: str,
                        prefix: Optional[str] = None,
                        final_norm: bool = False) -> LoadReport:
        """Load a dense or RMoE checkpoint file of any layout the family
        reads.

        Dense checkpoints fill everything but the residuals and routers,
        which keep their init; an RMoE checkpoint must match the MoE blocks
        and settings. Keys the backbone has no place for (classifier, final
        norm) are reported as ignored. ``init_cfg`` ``strict=True`` then
        refuses anything left out beyond its ``allowed_missing`` /
        ``allowed_unused`` key prefixes
        (:meth:`~.loading.LoadReport.enforce_complete`).

        Args:
            checkpoint: path or URL of the checkpoint.
            prefix: the backbone's prefix in a whole-model checkpoint; by
                default ``backbone.`` is used when present.
            final_norm: load the checkpoint's final norm (official ``norm``,
                after the last stage) into the last stage's output norm, as
                a classifier needs (mmseg and mmdet leave it out;
                :func:`rmoe_mm.classification.move_final_norm`).

        Returns:
            LoadReport: what was loaded, initialised and ignored (also
            logged).
        """
        try:
            ckpt = CheckpointLoader.load_checkpoint(
                checkpoint, map_location='cpu', logger='current')
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f'{self.family} checkpoint {checkpoint!r} not found (see '
                f'{self.checkpoint_doc} for where to put the released '
                'files, or set init_cfg=None to train from scratch)') from err
        state_dict, ignored = extract_backbone_state_dict(ckpt, prefix)
        state_dict, layout = self.convert_state_dict(
            state_dict, source=str(checkpoint))
        if final_norm:
            state_dict = move_final_norm(state_dict, self.final_norm_name())
        state_dict, recomputed = self.fit_state_dict(state_dict)
        return load_rmoe_state_dict(
            self,
            state_dict,
            source=str(checkpoint),
            layout=layout,
            ignored=ignored,
            recomputed=recomputed)

    def final_norm_name(self) -> str:
        """The last stage's output norm: a classifier's final norm."""
        name = f'norm{len(self.stages) - 1}'
        if not hasattr(self, name):
            raise ValueError(
                f'init_cfg final_norm=True loads the final norm into {name}, '
                'but this backbone has none: put the last stage in '
                'out_indices')
        return name

    # ------------------------------------------------------ family hooks
    def convert_state_dict(self,
                           state_dict: StateDict,
                           source: str = '') -> Tuple[StateDict, str]:
        """``state_dict`` in this backbone's layout, and the layout's name.
        """
        raise NotImplementedError

    def fit_state_dict(self,
                       state_dict: StateDict) -> Tuple[StateDict, List[str]]:
        """``state_dict`` fitted to this instance, and the keys of derived
        buffers that are recomputed instead of loaded. Default: unchanged.
        """
        return state_dict, []

    def init_from_scratch(self) -> None:
        """Initialise as the dense family does without a checkpoint."""
        raise NotImplementedError


def _same_size(a, b) -> bool:
    """Sizes equal independent of list/tuple and of ``224`` vs ``(224, 224)``.
    """
    return _normalise(a) == _normalise(b)


def _normalise(value):
    if isinstance(value, (list, tuple)):
        value = tuple(value)
        return value * 2 if len(value) == 1 else value
    return (value, value) if isinstance(value, int) else value
