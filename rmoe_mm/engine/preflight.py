"""Check a config's data and checkpoint paths before the runner is built.

On a fresh machine
``python tools/train.py configs/rmoe_swin_t_upernet_ade20k.py`` would end
in a 40-line traceback from mmengine's file listing. The tools call
:func:`preflight` first; it stops with one short message per missing path:
what the path is, where the docs say to get or convert it, and the toy
config that runs without it.

Checked: the ``data_root``, ``ann_file`` and ``data_prefix`` paths of every
dataset the run reads (wrappers such as ``RepeatDataset`` and
``ConcatDataset`` are unwrapped), the evaluators' ``ann_file``, and the
checkpoints the run loads (``init_cfg`` ``Pretrained`` / ``pretrained`` in
the model when training, ``load_from`` / ``--resume`` / the test
checkpoint). Remote paths (``s3://``, ``https://``, ...) are not checked.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config

#: Directory of the repository's configs, to suggest toy configs that exist.
CONFIG_DIR = osp.abspath(
    osp.join(osp.dirname(__file__), '..', '..', 'configs'))
_SWIN_DOCS = 'docs/swin.md, "Pretrained checkpoints: where to put them"'
_CVT_DOCS = 'docs/cvt.md, "Checkpoints"'
#: Backbone type -> (name in the toy configs, where the docs say which
#: checkpoint it starts from and where to get it).
BACKBONES = {
    'RMoESwinTransformer': ('rmoe_swin', _SWIN_DOCS),
    'SwinTransformer': ('swin', _SWIN_DOCS),
    'RMoECvT': ('rmoe_cvt', _CVT_DOCS),
    'CvT': ('cvt', _CVT_DOCS),
}
#: Dataset class names as people write them.
DATASET_NAMES = {'CocoDataset': 'COCO', 'ADE20KDataset': 'ADE20K'}
#: default_scope -> the toy task of that library.
TOY_TASKS = {
    'mmseg': ('upernet_toy_ade20k', 'ade20k'),
    'mmdet': ('mask_rcnn_toy_coco', 'coco')
}
#: Parse JSON annotation files up to this size to see that they hold images.
MAX_JSON_CHECK = 64 * 2**20


class PreflightError(RuntimeError):
    """Paths the run needs are missing; one message per path."""


@dataclass
class Missing:
    """One missing (or empty) path and what to do about it."""

    what: str
    path: str
    problem: str
    get_it: str

    def message(self, number: int, toy_config: Optional[str]) -> str:
        lines = [
            f'{number}. {self.what}: {self.path} {self.problem}.',
            f'   get it: {self.get_it}'
        ]
        if toy_config:
            lines.append(f'   runs without it: {toy_config}')
        return '\n'.join(lines)


def _is_remote(path) -> bool:
    return isinstance(path, str) and '://' in path


def _join(root: Optional[str], path: str) -> str:
    if not root or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(root, path)


def _backbone_type(cfg: Config) -> str:
    model = cfg.get('model') or {}
    backbone = model.get('backbone') or {}
    return str(backbone.get('type', '')).split('.')[-1]


def toy_config(cfg: Config) -> Optional[Tuple[str, str]]:
    """``(config, toy dataset)`` that runs without real data and checkpoints:
    the toy config of the same backbone and library, if the repository has
    one."""
    name, _ = BACKBONES.get(_backbone_type(cfg), (None, None))
    task, data = TOY_TASKS.get(cfg.get('default_scope'), (None, None))
    if name is None or task is None:
        return None
    path = osp.join(CONFIG_DIR, 'toy', f'{name}_{task}.py')
    if not osp.isfile(path):
        return None
    return f'configs/toy/{name}_{task}.py', data


def _datasets(node, key: str) -> Iterator[Tuple[str, dict]]:
    """``(config key, dataset dict)`` of ``node`` and the datasets it wraps."""
    if not isinstance(node, dict):
        return
    yield key, node
    if isinstance(node.get('dataset'), dict):
        yield from _datasets(node['dataset'], f'{key}.dataset')
    for i, child in enumerate(node.get('datasets') or []):
        yield from _datasets(child, f'{key}.datasets[{i}]')


def _dataset_docs(dataset: dict) -> str:
    root = str(dataset.get('data_root') or '')
    if 'toy_' in root:
        kind = next((k for k in ('coco', 'imagenet') if k in root), 'ade20k')
        return (f'python tools/misc/make_toy_data.py {kind} --out data '
                '(docs/toy_data.md)')
    return ('docs/datasets.md (where the configs expect it, how to get it, '
            'how to point a config elsewhere)')


def _has_files(directory: str) -> bool:
    for _, _, files in os.walk(directory):
        if files:
            return True
    return False


def _json_without_images(path: str) -> bool:
    if not path.endswith('.json') or osp.getsize(path) > MAX_JSON_CHECK:
        return False
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get('images') == []


def check_dataset(key: str, dataset: dict) -> List[Missing]:
    """Missing or empty paths of one dataset config."""
    kind = str(dataset.get('type', 'dataset')).split('.')[-1]
    kind = DATASET_NAMES.get(kind, kind)
    root = dataset.get('data_root')
    docs = _dataset_docs(dataset)
    if dataset.get('backend_args') or _is_remote(root):
        return []
    if root and not osp.isdir(root):
        return [
            Missing(f'{kind} data root ({key}.data_root)', root,
                    'does not exist', docs)
        ]
    missing = []
    ann_file = dataset.get('ann_file')
    if ann_file:
        path = _join(root, ann_file)
        if not _is_remote(path):
            if not osp.exists(path):
                missing.append(
                    Missing(f'{kind} annotations ({key}.ann_file)', path,
                            'does not exist', docs))
            elif osp.isfile(path) and (osp.getsize(path) == 0
                                       or _json_without_images(path)):
                missing.append(
                    Missing(f'{kind} annotations ({key}.ann_file)', path,
                            'lists no images', docs))
    prefixes = dataset.get('data_prefix') or {}
    if isinstance(prefixes, str):  # mmpretrain: one image folder
        prefixes = {'': prefixes}
    for name, value in prefixes.items():
        if not value or not isinstance(value, str):
            continue
        path = _join(root, value)
        what = f'{kind} {name or "images"} ({key}.data_prefix' + \
            (f'.{name})' if name else ')')
        if _is_remote(path):
            continue
        if not osp.exists(path):
            missing.append(Missing(what, path, 'does not exist', docs))
        elif osp.isdir(path) and not ann_file and not _has_files(path):
            missing.append(Missing(what, path, 'is empty', docs))
    return missing


def _pretrained(node, key: str) -> Iterator[Tuple[str, str]]:
    """``(config key, checkpoint)`` of every ``Pretrained`` init in a model."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and node.get('checkpoint'):
            yield f'{key}.checkpoint', node['checkpoint']
        for name, value in node.items():
            if name == 'pretrained' and isinstance(value, str):
                yield f'{key}.pretrained', value
            else:
                yield from _pretrained(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained(value, f'{key}[{i}]')


def check_checkpoints(cfg: Config, mode: str) -> List[Missing]:
    """Missing checkpoint files the run would load."""
    missing = []
    _, docs = BACKBONES.get(_backbone_type(cfg), (None, None))
    if mode == 'train':
        for key, path in _pretrained(cfg.get('model'), 'model'):
            if _is_remote(path) or osp.isfile(osp.expanduser(path)):
                continue
            get_it = (f'{docs} (which file, where to put it, other '
                      'layouts)') if docs else \
                'the config says which file it expects'
            missing.append(
                Missing(f'pretrained checkpoint ({key})', path,
                        'does not exist',
                        get_it + f'; or --cfg-options {key}=PATH'))
    load_from = cfg.get('load_from')
    if load_from and not _is_remote(load_from) and \
            not osp.isfile(osp.expanduser(load_from)):
        if mode == 'test':
            what, get_it = 'checkpoint to test (CHECKPOINT)', \
                'train one with tools/train.py, or give the path of one'
        elif cfg.get('resume'):
            what, get_it = 'checkpoint to resume from (--resume)', \
                'give the path of an iter_*.pth / epoch_*.pth file'
        else:
            what, get_it = 'checkpoint to start from (load_from)', \
                'train it first (docs/pipelines.md), or --cfg-options ' \
                'load_from=PATH'
        missing.append(Missing(what, load_from, 'does not exist', get_it))
    return missing


def check_config_paths(cfg: Config, mode: str) -> List[Missing]:
    """Every missing path of a ``'train'`` or ``'test'`` run, deduplicated."""
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    splits = ['test'] if mode == 'test' else ['train']
    if mode == 'train' and cfg.get('val_cfg') and cfg.get('val_dataloader'):
        splits.append('val')
    missing: List[Missing] = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader') or {}
        for key, dataset in _datasets(
                loader.get('dataset'), f'{split}_dataloader.dataset'):
            missing += check_dataset(key, dataset)
        evaluators = cfg.get(f'{split}_evaluator') or []
        for i, evaluator in enumerate(
                evaluators if isinstance(evaluators, list) else [evaluators]):
            ann_file = evaluator.get('ann_file') if isinstance(
                evaluator, dict) else None
            if ann_file and not _is_remote(ann_file) and \
                    not osp.exists(ann_file):
                missing.append(
                    Missing(
                        f'evaluation annotations ({split}_evaluator.ann_file)',
                        ann_file, 'does not exist',
                        'docs/datasets.md; or --cfg-options '
                        f'{split}_evaluator.ann_file=PATH'))
    missing += check_checkpoints(cfg, mode)
    # One message per path; nothing under a directory already reported.
    unique: List[Missing] = []
    for item in missing:
        path = osp.normpath(item.path)
        if not any(path == osp.normpath(u.path)
                   or path.startswith(osp.normpath(u.path) + os.sep)
                   for u in unique):
            unique.append(item)
    return unique


def preflight(cfg: Config, mode: str, config_name: str = 'the config') -> None:
    """Raise :class:`PreflightError` listing every missing path, if any."""
    missing = check_config_paths(cfg, mode)
    if not missing:
        return
    toy = toy_config(cfg)
    # A toy config missing its toy data: the toy config is no way out.
    if toy and config_name.replace(os.sep, '/').endswith(toy[0]):
        toy = None
    body = '\n'.join(
        item.message(i, toy and toy[0]) for i, item in enumerate(missing, 1))
    tail = ''
    if toy:
        tail = ('\nThe toy config trains on generated data '
                '(docs/toy_data.md):\n'
                f'  python tools/misc/make_toy_data.py {toy[1]} --out data\n'
                f'  python tools/train.py {toy[0]}')
    count = '1 path that is' if len(missing) == 1 else \
        f'{len(missing)} paths that are'
    raise PreflightError(f'{config_name} needs {count} missing:\n{body}{tail}')
