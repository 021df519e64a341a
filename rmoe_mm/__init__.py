"""rmoe_mm: Residual Mixture of Experts backbones for mmsegmentation and
mmdetection.

Importing the package registers every module (for both the mmseg and the mmdet
default scope, see :mod:`rmoe_mm.registry`) and installs the checkpoint
allow-list that makes mmengine checkpoints loadable on torch >= 2.6
(:mod:`rmoe_mm.checkpoint`). Configs bring it in with
``custom_imports = dict(imports=['rmoe_mm'])``.
"""
from . import backbones, checkpoint, engine, hooks, moe  # noqa: F401
from .version import __version__

checkpoint.install()

__all__ = ['__version__']
