"""RMoE CvT: the CvT backbone with RMoE FFNs in chosen blocks.

The dense :class:`~.cvt.CvT` is built first, then the FFNs of ``moe_blocks``
become RMoE FFNs through the shared :class:`~.base.RMoEBackboneMixin`, as in
:class:`~.rmoe_swin.RMoESwinTransformer`: each RMoE FFN's shared weights keep
the dense parameter names, so a dense CvT checkpoint (any layout) fills
them, and residuals and routers keep their own initialisation.
"""
from rmoe_mm.moe.config import MoEConfig
from rmoe_mm.moe.placement import resolve_moe_blocks
from rmoe_mm.registry import MODELS
from .cvt import CvT


@MODELS.register_module()
class RMoECvT(CvT):
    """CvT whose chosen blocks have a Residual-MoE FFN.

    Args:
        moe_blocks (str | Sequence[Sequence[int]], optional): Which blocks
            get an RMoE FFN: one list of block indices per stage (negative
            indices count from the stage end), ``'all'`` or ``'none'``.
            Default: None, the odd blocks of the last two stages.
        moe_cfg (dict, optional): Settings of the RMoE FFNs, the fields of
            :class:`~rmoe_mm.moe.MoEConfig`. Default: None, the defaults
            (8 experts, top-1).
        **kwargs: Arguments of :class:`~.cvt.CvT`.
    """

    def __init__(self, *args, moe_blocks=None, moe_cfg=None, **kwargs):
        # Fail on bad settings before building the weights; the placement
        # needs the depths, so it is checked once the dense CvT exists.
        cfg = MoEConfig.build(moe_cfg)
        super().__init__(*args, **kwargs)
        self.convert_moe_blocks(
            resolve_moe_blocks(moe_blocks, self.depths), cfg)
        # The new RMoE FFNs of a frozen stage are frozen too.
        self._freeze_stages()
