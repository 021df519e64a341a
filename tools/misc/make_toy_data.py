"""Write small synthetic ADE20K-layout and COCO-layout datasets.

The datasets stand in for ADE20K and COCO in smoke tests and in the toy
baselines: a few hundred small images that a tiny Swin learns on a CPU in
minutes. Each object class has its own shape, colour and texture, so the class
is learnable from appearance alone; colours are jittered and pixels noised so
the task is not a lookup table.

Usage::

    python tools/misc/make_toy_data.py {ade20k,coco,all} --out data \
        --num-train 200 --num-val 50 --size 128 --seed 0

writes ``data/toy_ade20k/ADEChallengeData2016/{images,annotations}/
{training,validation}`` and ``data/toy_coco/{annotations,train2017,val2017}``.
A finished dataset with the same settings is skipped; ``--force`` rewrites it.

The functions :func:`make_toy_ade20k` and :func:`make_toy_coco` are importable
(by path, e.g. ``importlib``) and return the directory a config's ``data_root``
should point to.
"""
import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Bump when the images a given seed produces change, so stale data is rebuilt.
FORMAT_VERSION = 1
META_FILE = 'toy_meta.json'
JPEG_QUALITY = 90
MIN_SIZE = 32  # mmdet's coco base config drops images smaller than 32 px.

# ---------------------------------------------------------------------------
# Appearance: one (shape, colour, texture) triple per class.
# ---------------------------------------------------------------------------


def _regular_polygon(cx, cy, rx, ry, n, phase=0.):
    return [(cx + rx * math.cos(phase + 2 * math.pi * k / n),
             cy + ry * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _shape_polygon(shape, cx, cy, r):
    """Vertices of ``shape`` centred on (cx, cy), inside a box of half-size r.

    Every shape is a polygon so that COCO annotations describe exactly what
    was drawn.
    """
    if shape == 'circle':
        return _regular_polygon(cx, cy, r, r, 32)
    if shape == 'ellipse':  # tall
        return _regular_polygon(cx, cy, 0.55 * r, r, 32)
    if shape == 'octagon':
        return _regular_polygon(cx, cy, r, r, 8, math.pi / 8)
    if shape == 'diamond':
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r),
                (cx - 0.7 * r, cy)]
    if shape == 'triangle':
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == 'square':
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r),
                (cx - r, cy + r)]
    if shape == 'wide_rect':
        return [(cx - r, cy - 0.5 * r), (cx + r, cy - 0.5 * r),
                (cx + r, cy + 0.5 * r), (cx - r, cy + 0.5 * r)]
    if shape == 'tall_rect':
        return [(cx - 0.5 * r, cy - r), (cx + 0.5 * r, cy - r),
                (cx + 0.5 * r, cy + r), (cx - 0.5 * r, cy + r)]
    if shape == 'half_disc':  # flat side down, centred in its box
        arc = [(cx + r * math.cos(math.pi + math.pi * k / 16),
                cy + 0.5 * r + r * math.sin(math.pi + math.pi * k / 16))
               for k in range(17)]
        return arc
    raise ValueError(f'unknown shape {shape!r}')


def _texture(name, height, width, rng):
    """A pattern in [-1, 1] of shape (H, W), with random period and phase."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(5., 8.)
    phase = rng.uniform(0., period)
    if name == 'plain':
        return np.zeros((height, width), np.float32)
    if name == 'hstripes':
        return np.sign(np.sin(2 * np.pi * (yy + phase) / period))
    if name == 'vstripes':
        return np.sign(np.sin(2 * np.pi * (xx + phase) / period))
    if name == 'diagonal':
        return np.sign(np.sin(2 * np.pi * (xx + yy + phase) / period))
    if name == 'checker':
        p = int(round(period))
        return ((((xx + phase) // p + yy // p) % 2) * 2 - 1).astype(np.float32)
    if name == 'dots':
        p = int(round(period))
        dy = (yy + phase) % p - p / 2
        dx = (xx + phase) % p - p / 2
        return np.where(dx * dx + dy * dy < (p / 3.5)**2, -1., 0.4)
    if name == 'grid':
        p = int(round(period))
        lines = ((xx + phase) % p < 1.5) | ((yy + phase) % p < 1.5)
        return np.where(lines, -1., 0.3)
    raise ValueError(f'unknown texture {name!r}')


# ADE20K: wall above a random horizon and floor below it, then objects.
# Keys are indices into mmseg's 150 ADE20K classes (label = pixel value - 1).
ADE_BACKGROUND = {
    0: dict(name='wall', colour=(200, 190, 170), texture='vstripes'),
    3: dict(name='floor', colour=(120, 80, 50), texture='checker'),
}
ADE_OBJECTS = {
    7: dict(name='bed', shape='wide_rect', colour=(150, 60, 200),
            texture='hstripes'),
    8: dict(name='windowpane', shape='square', colour=(110, 200, 245),
            texture='grid'),
    10: dict(name='cabinet', shape='tall_rect', colour=(30, 120, 60),
             texture='vstripes'),
    12: dict(name='person', shape='ellipse', colour=(230, 80, 40),
             texture='plain'),
    36: dict(name='lamp', shape='triangle', colour=(245, 215, 40),
             texture='dots'),
    119: dict(name='ball', shape='circle', colour=(230, 40, 160),
              texture='checker'),
}
# Classes that occur in the toy ADE20K data (indices into the 150 classes).
TOY_ADE20K_CLASS_INDICES = tuple(sorted({**ADE_BACKGROUND, **ADE_OBJECTS}))

# COCO: object classes (in category-id order, which is also mmdet's label
# order) on a smooth grey background; objects never overlap.
COCO_OBJECTS = (
    dict(id=13, name='stop sign', supercategory='outdoor', shape='octagon',
         colour=(220, 30, 30), texture='plain'),
    dict(id=28, name='umbrella', supercategory='accessory', shape='half_disc',
         colour=(150, 50, 190), texture='vstripes'),
    dict(id=37, name='sports ball', supercategory='sports', shape='circle',
         colour=(245, 140, 20), texture='dots'),
    dict(id=38, name='kite', supercategory='sports', shape='diamond',
         colour=(40, 180, 60), texture='diagonal'),
    dict(id=59, name='pizza', supercategory='food', shape='triangle',
         colour=(235, 210, 60), texture='checker'),
    dict(id=84, name='book', supercategory='indoor', shape='tall_rect',
         colour=(40, 70, 200), texture='hstripes'),
)
# ``metainfo=dict(classes=TOY_COCO_CLASSES)`` for mmdet's CocoDataset.
TOY_COCO_CLASSES = tuple(c['name'] for c in COCO_OBJECTS)

# ---------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------


def _polygon_mask(vertices, size):
    canvas = Image.new('L', (size, size), 0)
    ImageDraw.Draw(canvas).polygon(vertices, fill=1)
    return np.asarray(canvas, dtype=bool)


def _paint(img, mask, colour, texture, rng, jitter=15, amplitude=28):
    """Fill ``mask`` of the float image with a jittered, textured colour."""
    h, w = mask.shape
    base = np.clip(np.asarray(colour, np.float32) +
                   rng.uniform(-jitter, jitter, 3), 0, 255)
    pattern = _texture(texture, h, w, rng)[..., None] * amplitude
    img[mask] = (base + pattern)[mask]


def _finish(img, rng, noise_std=6.):
    img = img + rng.normal(0., noise_std, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))


def _ade_sample(rng, size):
    """One image and its ADE20K label map (0 = other, k + 1 = class k)."""
    img = np.zeros((size, size, 3), np.float32)
    label = np.zeros((size, size), np.uint8)
    horizon = int(rng.uniform(0.35, 0.65) * size)
    wall = np.zeros((size, size), bool)
    wall[:horizon] = True
    for idx, region in ((0, wall), (3, ~wall)):
        _paint(img, region, ADE_BACKGROUND[idx]['colour'],
               ADE_BACKGROUND[idx]['texture'], rng)
        label[region] = idx + 1
    # Now and then an unlabelled blob: pixel value 0, ignored after
    # reduce_zero_label, as ADE20K's "other" pixels are.
    if rng.random() < 0.3:
        r = rng.uniform(0.06, 0.12) * size
        cx, cy = rng.uniform(r, size - r, 2)
        blob = _polygon_mask(_regular_polygon(cx, cy, r, 0.7 * r, 12), size)
        _paint(img, blob, rng.uniform(60, 200, 3), 'plain', rng, jitter=0)
        label[blob] = 0
    classes = list(ADE_OBJECTS)
    for _ in range(rng.integers(2, 6)):
        idx = classes[rng.integers(len(classes))]
        spec = ADE_OBJECTS[idx]
        r = rng.uniform(0.12, 0.25) * size
        cx, cy = rng.uniform(r, size - r, 2)
        mask = _polygon_mask(_shape_polygon(spec['shape'], cx, cy, r), size)
        _paint(img, mask, spec['colour'], spec['texture'], rng)
        label[mask] = idx + 1
    return _finish(img, rng), Image.fromarray(label)


def _coco_sample(rng, size, first_class):
    """One image and its objects as (class position, polygon) pairs."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b, c = rng.uniform(-40, 40, 3)
    grey = 128 + a * (xx - 0.5) + b * (yy - 0.5) + c * (xx - 0.5) * (yy - 0.5)
    img = np.repeat(grey[..., None], 3, axis=2) + rng.uniform(-10, 10, 3)
    objects, boxes = [], []
    num = int(rng.integers(1, 5))
    for attempt in range(50 * num):
        if len(objects) == num:
            break
        pos = first_class if not objects else int(
            rng.integers(len(COCO_OBJECTS)))
        r = rng.uniform(0.12, 0.24) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        box = (cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2)
        if any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3]
               and o[1] < box[3] for o in boxes):
            continue  # keep objects apart: polygons stay exact, unoccluded
        spec = COCO_OBJECTS[pos]
        polygon = _shape_polygon(spec['shape'], cx, cy, r)
        _paint(img, _polygon_mask(polygon, size), spec['colour'],
               spec['texture'], rng)
        boxes.append(box)
        objects.append((pos, polygon))
    return _finish(img, rng), objects


def _coco_annotation(polygon, ann_id, image_id, category_id):
    # bbox and area from the rounded vertices that the JSON stores.
    polygon = [(round(x, 2), round(y, 2)) for x, y in polygon]
    xs = [x for x, _ in polygon]
    ys = [y for _, y in polygon]
    # Shoelace area of the polygon, as COCO gives for polygon annotations.
    area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i]
                         for i in range(len(xs))))
    x0, y0 = min(xs), min(ys)
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        segmentation=[[v for xy in polygon for v in xy]],
        area=round(area, 2),
        bbox=[round(x0, 2), round(y0, 2), round(max(xs) - x0, 2),
              round(max(ys) - y0, 2)],
        iscrowd=0)


# ---------------------------------------------------------------------------
# Dataset writers.
# ---------------------------------------------------------------------------

_SPLIT_CODE = {'train': 0, 'val': 1}


def _rng(seed, split, index):
    # Seeded per image, so val images do not change with --num-train.
    return np.random.default_rng([seed, _SPLIT_CODE[split], index])


def _check_args(num_train, num_val, size, seed):
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(
            f'size must be an int >= {MIN_SIZE} (mmdet drops smaller '
            f'images), got {size!r}')
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be a non-negative int, got {seed!r}')


def _prepare(root, meta, force):
    """Return True if ``root`` already holds this dataset; else clear it.

    A ``toy_meta.json`` marks a directory as ours; it says ``complete`` only
    after the last file is written, so an interrupted run is redone.
    """
    marker = root / META_FILE
    if marker.exists():
        old = json.loads(marker.read_text())
        if not force and old == dict(meta, complete=True):
            return True
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        if not force:
            raise FileExistsError(
                f'{root} exists, is not empty and has no {META_FILE}, so it '
                'was not written by this tool; pass --force (force=True) to '
                'replace it')
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(dict(meta, complete=False)))
    return False


def _mark_complete(root, meta):
    (root / META_FILE).write_text(json.dumps(dict(meta, complete=True)))


def make_toy_ade20k(out_root, num_train=200, num_val=50, size=128, seed=0,
                    force=False, verbose=False):
    """Write a toy ADE20K under ``out_root/toy_ade20k``.

    Layout as mmseg's ``ADE20KDataset`` reads it: ``images/{training,
    validation}/*.jpg`` and ``annotations/{training,validation}/*.png`` whose
    pixel value 0 is "other" and k + 1 is class k (``reduce_zero_label``).
    The wall and floor background plus six object classes occur
    (``TOY_ADE20K_CLASS_INDICES``); the other 142 classes never do.

    Args:
        out_root (str | Path): Parent directory, e.g. ``data``.
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        size (int): Side of the square images in pixels. Defaults to 128.
        seed (int): Seed; the same arguments give identical files.
            Defaults to 0.
        force (bool): Rewrite even a complete dataset. Defaults to False.
        verbose (bool): Print what is done. Defaults to False.

    Returns:
        Path: ``out_root/toy_ade20k/ADEChallengeData2016`` (the data_root).
    """
    _check_args(num_train, num_val, size, seed)
    root = Path(out_root) / 'toy_ade20k'
    data_root = root / 'ADEChallengeData2016'
    meta = dict(kind='ade20k', version=FORMAT_VERSION, num_train=num_train,
                num_val=num_val, size=size, seed=seed)
    if _prepare(root, meta, force):
        if verbose:
            print(f'{data_root} is complete ({meta}); skipped '
                  '(--force rewrites it)')
        return data_root
    for split, folder, num in (('train', 'training', num_train),
                               ('val', 'validation', num_val)):
        img_dir = data_root / 'images' / folder
        ann_dir = data_root / 'annotations' / folder
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for i in range(num):
            img, label = _ade_sample(_rng(seed, split, i), size)
            stem = f'ADE_{split}_{i + 1:08d}'
            img.save(img_dir / f'{stem}.jpg', quality=JPEG_QUALITY)
            label.save(ann_dir / f'{stem}.png')
    _mark_complete(root, meta)
    if verbose:
        print(f'wrote {num_train} train / {num_val} val images of {size} px '
              f'to {data_root}')
    return data_root


def make_toy_coco(out_root, num_train=200, num_val=50, size=128, seed=0,
                  force=False, verbose=False):
    """Write a toy COCO instance dataset under ``out_root/toy_coco``.

    ``annotations/instances_{train,val}2017.json`` hold one polygon per
    object with its bbox ``[x, y, w, h]``, area, ``iscrowd=0`` and a COCO
    category id; images are ``train2017/*.jpg`` and ``val2017/*.jpg``.
    mmdet's ``CocoDataset`` loads it with
    ``metainfo=dict(classes=TOY_COCO_CLASSES)``. Every image has 1 to 4
    objects that do not touch; image i's first object is of class
    ``i % len(TOY_COCO_CLASSES)``, so any split of at least that many images
    holds every class.

    Args:
        out_root (str | Path): Parent directory, e.g. ``data``.
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        size (int): Side of the square images in pixels. Defaults to 128.
        seed (int): Seed; the same arguments give identical files.
            Defaults to 0.
        force (bool): Rewrite even a complete dataset. Defaults to False.
        verbose (bool): Print what is done. Defaults to False.

    Returns:
        Path: ``out_root/toy_coco`` (the data_root).
    """
    _check_args(num_train, num_val, size, seed)
    root = Path(out_root) / 'toy_coco'
    meta = dict(kind='coco', version=FORMAT_VERSION, num_train=num_train,
                num_val=num_val, size=size, seed=seed)
    if _prepare(root, meta, force):
        if verbose:
            print(f'{root} is complete ({meta}); skipped (--force rewrites '
                  'it)')
        return root
    (root / 'annotations').mkdir()
    categories = [
        dict(id=c['id'], name=c['name'], supercategory=c['supercategory'])
        for c in COCO_OBJECTS
    ]
    for split, num in (('train', num_train), ('val', num_val)):
        img_dir = root / f'{split}2017'
        img_dir.mkdir()
        images, annotations = [], []
        for i in range(num):
            img, objects = _coco_sample(
                _rng(seed, split, i), size, first_class=i % len(COCO_OBJECTS))
            image_id = i + 1
            file_name = f'{image_id:012d}.jpg'
            img.save(img_dir / file_name, quality=JPEG_QUALITY)
            images.append(dict(id=image_id, file_name=file_name, width=size,
                               height=size))
            for pos, polygon in objects:
                annotations.append(_coco_annotation(
                    polygon, len(annotations) + 1, image_id,
                    COCO_OBJECTS[pos]['id']))
        ann = dict(
            info=dict(description='rmoe_mm toy COCO', version='1.0',
                      year=2017),
            licenses=[],
            images=images,
            annotations=annotations,
            categories=categories)
        (root / 'annotations' / f'instances_{split}2017.json').write_text(
            json.dumps(ann))
    _mark_complete(root, meta)
    if verbose:
        print(f'wrote {num_train} train / {num_val} val images of {size} px '
              f'to {root}; classes: {TOY_COCO_CLASSES}')
    return root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write synthetic ADE20K/COCO-layout toy datasets.')
    parser.add_argument('dataset', choices=['ade20k', 'coco', 'all'])
    parser.add_argument('--out', default='data',
                        help='parent directory (default: data)')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--size', type=int, default=128,
                        help='side of the square images in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true',
                        help='rewrite a dataset that is already complete')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kwargs = dict(num_train=args.num_train, num_val=args.num_val,
                  size=args.size, seed=args.seed, force=args.force,
                  verbose=True)
    try:
        if args.dataset in ('ade20k', 'all'):
            make_toy_ade20k(args.out, **kwargs)
        if args.dataset in ('coco', 'all'):
            make_toy_coco(args.out, **kwargs)
    except (ValueError, FileExistsError) as err:
        raise SystemExit(f'make_toy_data.py: error: {err}')


if __name__ == '__main__':
    main()
