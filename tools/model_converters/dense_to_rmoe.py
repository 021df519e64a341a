"""Dense checkpoint in, RMoE checkpoint out, for any RMoE backbone.

The RMoE backbone named by a config (``model.backbone`` of an mmseg / mmdet
config, or a ``--backbone-cfg`` dict) is built with
``init_cfg=dict(type='Pretrained', checkpoint=SRC)`` and initialised exactly
as training would initialise it: the backbone reads SRC in any layout it
supports, puts each dense FFN in its RMoE FFN's core and gives residuals and
routers their init (see the logged report). Its state dict is then saved, so
the residual noise and the routers are fixed once and shared by every run
that starts from DST.

Examples::

    python tools/model_converters/dense_to_rmoe.py \\
        checkpoints/swin_tiny_patch4_window7_224.pth \\
        checkpoints/rmoe_swin_tiny_e8.pth \\
        --config configs/rmoe_swin_t_upernet_ade20k.py

    python tools/model_converters/dense_to_rmoe.py SRC DST --backbone-cfg \\
        "dict(type='RMoESwinTransformer', arch='tiny',
              moe_cfg=dict(num_experts=4))"

DST holds ``{'state_dict': ..., 'meta': {'backbone_cfg': ..., 'source': SRC}}``
with backbone keys (``--out-prefix backbone.`` for a whole-model
``load_from``);
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` of the same backbone
loads it back, and a backbone with other MoE settings refuses it.

SRC may be a path or any URL scheme mmengine knows (``https://...`` is read
from torch hub's cache when it is there); it is loaded by rmoe_mm's safe
loader (``--trust-checkpoint SRC`` to unpickle a trusted file fully) and
must be a checkpoint of the backbone's family (docs/security.md).
"""
import argparse
import ast
import copy
import json
import os
import os.path as osp
import sys
from collections import OrderedDict

import torch

# Run from a checkout without installing it.
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))


def parse_backbone_cfg(text: str) -> dict:
    """A backbone dict from JSON, a dict literal or ``dict(k=v, ...)``."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = _literal(ast.parse(text, mode='eval').body)
        except (SyntaxError, ValueError) as err:
            raise ValueError(
                f'--backbone-cfg must be JSON, a dict literal or dict(...) of '
                f'literals; could not read {text!r}: {err}') from err
    if not isinstance(value, dict) or 'type' not in value:
        raise ValueError(f'--backbone-cfg must be a dict with a "type", got '
                         f'{value!r}')
    return value


def _literal(node):
    """``ast.literal_eval`` that also reads ``dict(key=value, ...)`` calls."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {
            _literal(k): _literal(v)
            for k, v in zip(node.keys, node.values)
        }
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    return ast.literal_eval(node)


def backbone_cfg_from_config(path: str, cfg_options=None) -> dict:
    """``model.backbone`` of an mmseg / mmdet config (custom imports done)."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    return cfg.model.backbone.to_dict()


def convert(src: str,
            dst: str,
            backbone_cfg: dict,
            prefix: str = None,
            out_prefix: str = '',
            seed: int = 0) -> dict:
    """Build the backbone from ``src`` and save its state dict to ``dst``.

    Returns:
        dict: the saved checkpoint.
    """
    import rmoe_mm  # noqa: F401  (registers the RMoE backbones)
    from rmoe_mm.registry import MODELS

    cfg = copy.deepcopy(backbone_cfg)
    cfg.pop('pretrained', None)
    cfg['init_cfg'] = dict(type='Pretrained', checkpoint=src)
    if prefix:
        cfg['init_cfg']['prefix'] = prefix
    if MODELS.get(cfg['type']) is None:
        raise KeyError(
            f'backbone type {cfg["type"]!r} is not in the root registry; '
            'dense_to_rmoe builds the RMoE backbones rmoe_mm registers '
            '(e.g. RMoESwinTransformer); is the config the RMoE one?')
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    state_dict = OrderedDict((out_prefix + k, v.detach().clone())
                             for k, v in model.state_dict().items())
    meta_cfg = copy.deepcopy(backbone_cfg)
    meta_cfg.pop('init_cfg', None)
    meta_cfg.pop('pretrained', None)
    checkpoint = dict(
        state_dict=state_dict,
        meta=dict(
            backbone_cfg=meta_cfg,
            source=str(src),
            seed=seed,
            tool='tools/model_converters/dense_to_rmoe.py'))
    if osp.dirname(dst):
        os.makedirs(osp.dirname(dst), exist_ok=True)
    torch.save(checkpoint, dst)
    return checkpoint


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Convert a dense backbone checkpoint into an RMoE one.')
    parser.add_argument(
        'src',
        help='dense (or RMoE) checkpoint, any layout '
        'the backbone reads')
    parser.add_argument('dst', help='output RMoE checkpoint')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        '--config',
        help='mmseg/mmdet config whose '
        'model.backbone is the RMoE backbone')
    source.add_argument(
        '--backbone-cfg',
        help='backbone dict: JSON, a dict '
        'literal or "dict(type=..., ...)"')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides of the --config, key=value')
    parser.add_argument(
        '--prefix',
        default=None,
        help="the backbone's "
        "prefix in SRC (default: 'backbone.' when present)")
    parser.add_argument(
        '--out-prefix',
        default='',
        help="prefix of the "
        "saved keys, e.g. 'backbone.' for load_from")
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the residual and router init')
    from rmoe_mm.engine.checkpoint_args import add_checkpoint_args
    add_checkpoint_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from rmoe_mm.engine.checkpoint_args import (apply_checkpoint_args,
                                                user_errors)
    with user_errors():
        apply_checkpoint_args(args)
        if args.config:
            backbone_cfg = backbone_cfg_from_config(args.config,
                                                    args.cfg_options)
        else:
            if args.cfg_options:
                raise SystemExit('--cfg-options applies to --config only')
            backbone_cfg = parse_backbone_cfg(args.backbone_cfg)
        checkpoint = convert(
            args.src,
            args.dst,
            backbone_cfg,
            prefix=args.prefix,
            out_prefix=args.out_prefix,
            seed=args.seed)
    print(f'saved {len(checkpoint["state_dict"])} tensors to {args.dst}')


if __name__ == '__main__':
    main()
