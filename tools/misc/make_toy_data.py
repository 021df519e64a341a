"""Write small synthetic ImageNet-, ADE20K- and COCO-layout datasets.

The datasets stand in for ImageNet, ADE20K and COCO in smoke tests and in the
toy baselines: a few hundred small images that a tiny Swin learns on a CPU in
minutes. Each object class has its own shape, colour and texture; colours are
jittered and pixels noised so the task is not a lookup table. The toy ImageNet
is the upstream (classification) data of the toy pipelines: its classes are
drawn from the same shapes, colours and textures as the segmentation classes,
so what a model learns on it transfers, as ImageNet features do.

Two presets: ``standard`` (every class given by its colour, texture and shape
alike, large objects: a small model nearly saturates it) and ``hard`` (many
classes that share attributes pairwise, small overlapping objects, three
scene types, and classes whose identity depends on where in the scene the
object lies), on which a dense toy model stays well below saturation.

Usage::

    python tools/misc/make_toy_data.py {imagenet,ade20k,coco,all} --out data \
        [--preset {standard,hard}] [--num-train N] [--num-val N] \
        [--size 128] [--seed 0]

writes ``data/toy_imagenet{,_hard}/{train,val,meta}``,
``data/toy_ade20k{,_hard}/ADEChallengeData2016/{images,annotations}/
{training,validation}`` and ``data/toy_coco/{annotations,train2017,val2017}``.
A finished dataset with the same settings is skipped; ``--force`` rewrites it.

The functions :func:`make_toy_imagenet`, :func:`make_toy_ade20k` and
:func:`make_toy_coco` are importable (by path, e.g. ``importlib``) and return
the directory a config's ``data_root`` should point to.
"""
import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Bump when the images a given seed produces change, so stale data is rebuilt.
FORMAT_VERSION = 2
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
    if shape == 'hexagon':
        return _regular_polygon(cx, cy, r, r, 6)
    if shape == 'star':  # five points, inner radius 0.45 r
        return [(cx + (r if k % 2 == 0 else 0.45 * r) *
                 math.cos(-math.pi / 2 + math.pi * k / 5),
                 cy + (r if k % 2 == 0 else 0.45 * r) *
                 math.sin(-math.pi / 2 + math.pi * k / 5)) for k in range(10)]
    if shape == 'cross':  # a plus sign, arms 0.7 r wide
        a = 0.35 * r
        return [(cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a),
                (cx + r, cy - a), (cx + r, cy + a), (cx + a, cy + a),
                (cx + a, cy + r), (cx - a, cy + r), (cx - a, cy + a),
                (cx - r, cy + a), (cx - r, cy - a), (cx - a, cy - a)]
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
    if name == 'antidiagonal':
        return np.sign(np.sin(2 * np.pi * (xx - yy + phase) / period))
    if name == 'rings':  # concentric, around a random point
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = np.sqrt((xx - cx)**2 + (yy - cy)**2)
        return np.sign(np.sin(2 * np.pi * (radius + phase) / period))
    if name == 'speckle':  # random +-1 in 2 x 2 pixel cells
        cells = rng.choice([-1., 1.], size=(height // 2 + 1, width // 2 + 1))
        return cells.repeat(2, 0).repeat(2, 1)[:height, :width]
    raise ValueError(f'unknown texture {name!r}')


# ADE20K: wall above a random horizon and floor below it, then objects.
# Keys are indices into mmseg's 150 ADE20K classes (label = pixel value - 1).
ADE_BACKGROUND = {
    0: dict(name='wall', colour=(200, 190, 170), texture='vstripes'),
    3: dict(name='floor', colour=(120, 80, 50), texture='checker'),
}
ADE_OBJECTS = {
    7:
    dict(
        name='bed',
        shape='wide_rect',
        colour=(150, 60, 200),
        texture='hstripes'),
    8:
    dict(
        name='windowpane',
        shape='square',
        colour=(110, 200, 245),
        texture='grid'),
    10:
    dict(
        name='cabinet',
        shape='tall_rect',
        colour=(30, 120, 60),
        texture='vstripes'),
    12:
    dict(
        name='person', shape='ellipse', colour=(230, 80, 40), texture='plain'),
    36:
    dict(name='lamp', shape='triangle', colour=(245, 215, 40), texture='dots'),
    119:
    dict(
        name='ball', shape='circle', colour=(230, 40, 160), texture='checker'),
}
# Classes that occur in the toy ADE20K data (indices into the 150 classes).
TOY_ADE20K_CLASS_INDICES = tuple(sorted({**ADE_BACKGROUND, **ADE_OBJECTS}))

# COCO: object classes (in category-id order, which is also mmdet's label
# order) on a smooth grey background; objects never overlap.
COCO_OBJECTS = (
    dict(
        id=13,
        name='stop sign',
        supercategory='outdoor',
        shape='octagon',
        colour=(220, 30, 30),
        texture='plain'),
    dict(
        id=28,
        name='umbrella',
        supercategory='accessory',
        shape='half_disc',
        colour=(150, 50, 190),
        texture='vstripes'),
    dict(
        id=37,
        name='sports ball',
        supercategory='sports',
        shape='circle',
        colour=(245, 140, 20),
        texture='dots'),
    dict(
        id=38,
        name='kite',
        supercategory='sports',
        shape='diamond',
        colour=(40, 180, 60),
        texture='diagonal'),
    dict(
        id=59,
        name='pizza',
        supercategory='food',
        shape='triangle',
        colour=(235, 210, 60),
        texture='checker'),
    dict(
        id=84,
        name='book',
        supercategory='indoor',
        shape='tall_rect',
        colour=(40, 70, 200),
        texture='hstripes'),
)
# ``metainfo=dict(classes=TOY_COCO_CLASSES)`` for mmdet's CocoDataset.
TOY_COCO_CLASSES = tuple(c['name'] for c in COCO_OBJECTS)

PRESETS = ('standard', 'hard')
PALETTE = dict(
    red=(220, 40, 40),
    orange=(240, 140, 30),
    yellow=(235, 210, 50),
    green=(40, 170, 70),
    teal=(30, 160, 160),
    blue=(40, 80, 210),
    purple=(150, 60, 200),
    pink=(230, 90, 170),
    brown=(130, 80, 40),
    grey=(130, 130, 130))

# Hard ADE20K: three scene types, each a top and a bottom region.
HARD_SCENES = (
    ({
        0: dict(name='wall', colour=(200, 190, 170), texture='vstripes')
    }, {
        3: dict(name='floor', colour=(120, 80, 50), texture='checker')
    }),
    ({
        2: dict(name='sky', colour=(120, 170, 230), texture='plain')
    }, {
        9: dict(name='grass', colour=(70, 150, 60), texture='speckle')
    }),
    ({
        1: dict(name='building', colour=(150, 150, 160), texture='grid')
    }, {
        6: dict(name='road', colour=(90, 90, 95), texture='hstripes')
    }),
)


def _hard_objects():
    """24 object classes in 8 families of 3: a family shares its shape; its
    second class changes the colour and its third the texture, so that each
    class differs from another by a single attribute."""
    families = (('circle', 'red', 'checker'), ('square', 'blue', 'grid'),
                ('triangle', 'yellow', 'dots'), ('diamond', 'green',
                                                 'diagonal'),
                ('ellipse', 'orange', 'plain'), ('wide_rect', 'purple',
                                                 'hstripes'),
                ('octagon', 'pink', 'rings'), ('star', 'grey', 'antidiagonal'))
    colours = list(PALETTE)
    textures = [f[2] for f in families]
    # ADE20K indices never used by the regions or the context classes.
    indices = (7, 8, 10, 12, 14, 15, 18, 19, 23, 24, 27, 30, 31, 33, 35, 36,
               37, 39, 41, 44, 47, 50, 53, 56)
    objects = {}
    for f, (shape, colour, texture) in enumerate(families):
        variants = (
            (colour, texture),
            (colours[(colours.index(colour) + 3) % len(colours)], texture),
            (colour, textures[(f + 4) % len(textures)]),
        )
        for v, (col, tex) in enumerate(variants):
            objects[indices[3 * f + v]] = dict(
                name=f'{col} {shape} {tex}',
                shape=shape,
                colour=PALETTE[col],
                texture=tex)
    return objects


HARD_OBJECTS = _hard_objects()
# Context classes: one appearance, two classes, told apart only by where the
# object's centre lies (top region: first class, bottom region: second).
HARD_CONTEXT = (
    dict(
        name='white cross checker',
        shape='cross',
        colour=(235, 235, 235),
        texture='checker',
        top=(22, 'painting'),
        bottom=(28, 'rug')),
    dict(
        name='black half_disc grid',
        shape='half_disc',
        colour=(25, 25, 25),
        texture='grid',
        top=(43, 'signboard'),
        bottom=(20, 'car')),
)
# Classes that occur in the hard toy ADE20K (indices into the 150 classes).
TOY_ADE20K_HARD_CLASS_INDICES = tuple(
    sorted({k
            for scene in HARD_SCENES
            for region in scene
            for k in region} | set(HARD_OBJECTS)
           | {c[side][0]
              for c in HARD_CONTEXT
              for side in ('top', 'bottom')}))

# Toy ImageNet classes (appearances). Standard: the toy ADE20K and toy COCO
# objects and four more; hard: every appearance of the hard toy ADE20K.
_EXTRA_STANDARD = (
    dict(shape='hexagon', colour=PALETTE['teal'], texture='rings'),
    dict(shape='star', colour=PALETTE['orange'], texture='speckle'),
    dict(shape='cross', colour=PALETTE['blue'], texture='antidiagonal'),
    dict(shape='square', colour=PALETTE['brown'], texture='diagonal'),
)


def _appearance(spec, name=None):
    return dict(
        name=name or spec['name'],
        shape=spec['shape'],
        colour=spec['colour'],
        texture=spec['texture'])


IMAGENET_CLASSES = dict(
    standard=tuple([_appearance(v) for v in ADE_OBJECTS.values()] +
                   [_appearance(c) for c in COCO_OBJECTS] + [
                       _appearance(c, f"{c['shape']} {c['texture']}")
                       for c in _EXTRA_STANDARD
                   ]),
    hard=tuple([_appearance(v) for v in HARD_OBJECTS.values()] +
               [_appearance(c) for c in HARD_CONTEXT]),
)
# Images per split when not given: (train, val).
DEFAULT_SIZES = {
    ('imagenet', 'standard'): (400, 80),
    ('imagenet', 'hard'): (520, 130),
    ('ade20k', 'standard'): (200, 50),
    ('ade20k', 'hard'): (400, 100),
    ('coco', 'standard'): (200, 50),
}

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
    base = np.clip(
        np.asarray(colour, np.float32) + rng.uniform(-jitter, jitter, 3), 0,
        255)
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


def _scene(img, label, scene, horizon, rng, jitter):
    """Paint a scene's top and bottom regions; label them when ``label`` is
    given."""
    size = img.shape[0]
    top = np.zeros((size, size), bool)
    top[:horizon] = True
    for regions, mask in zip(scene, (top, ~top)):
        (idx, spec), = regions.items()
        _paint(img, mask, spec['colour'], spec['texture'], rng, jitter=jitter)
        if label is not None:
            label[mask] = idx + 1


def _hard_ade_sample(rng, size):
    """A hard-preset image and its label map: one of three scenes, 3 to 8
    small objects that may overlap, and context classes."""
    img = np.zeros((size, size, 3), np.float32)
    label = np.zeros((size, size), np.uint8)
    horizon = int(rng.uniform(0.3, 0.7) * size)
    _scene(
        img,
        label,
        HARD_SCENES[rng.integers(len(HARD_SCENES))],
        horizon,
        rng,
        jitter=20)
    if rng.random() < 0.3:
        r = rng.uniform(0.06, 0.12) * size
        cx, cy = rng.uniform(r, size - r, 2)
        blob = _polygon_mask(_regular_polygon(cx, cy, r, 0.7 * r, 12), size)
        _paint(img, blob, rng.uniform(60, 200, 3), 'plain', rng, jitter=0)
        label[blob] = 0
    appearances = list(HARD_OBJECTS.items()) + [(None, c)
                                                for c in HARD_CONTEXT]
    for _ in range(rng.integers(3, 9)):
        idx, spec = appearances[rng.integers(len(appearances))]
        r = rng.uniform(0.07, 0.16) * size
        cx, cy = rng.uniform(r, size - r, 2)
        if idx is None:  # a context class: its region decides
            idx = spec['top' if cy < horizon else 'bottom'][0]
        mask = _polygon_mask(_shape_polygon(spec['shape'], cx, cy, r), size)
        _paint(
            img,
            mask,
            spec['colour'],
            spec['texture'],
            rng,
            jitter=20,
            amplitude=rng.uniform(20, 34))
        label[mask] = idx + 1
    return _finish(img, rng, noise_std=8.), Image.fromarray(label)


def _imagenet_sample(rng, size, label, preset):
    """An image of class ``label``: one large object of that appearance on a
    background, with smaller distractors of other classes behind it."""
    classes = IMAGENET_CLASSES[preset]
    img = np.zeros((size, size, 3), np.float32)
    horizon = int(rng.uniform(0.3, 0.7) * size)
    if preset == 'hard':
        scene = HARD_SCENES[rng.integers(len(HARD_SCENES))]
        jitter, noise, distractors = 20, 8., rng.integers(0, 3)
        radius = (0.2, 0.35)
    else:
        scene = ({0: ADE_BACKGROUND[0]}, {3: ADE_BACKGROUND[3]})
        jitter, noise, distractors = 15, 6., rng.integers(0, 2)
        radius = (0.2, 0.35)
    if preset == 'standard' and rng.random() < 0.5:  # toy COCO's background
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        a, b = rng.uniform(-40, 40, 2)
        img[:] = (128 + a * (xx - 0.5) + b * (yy - 0.5))[..., None]
    else:
        _scene(img, None, scene, horizon, rng, jitter)
    for _ in range(distractors):
        other = classes[(label + 1 + rng.integers(len(classes) - 1)) %
                        len(classes)]
        r = rng.uniform(0.06, 0.12) * size
        cx, cy = rng.uniform(r, size - r, 2)
        _paint(
            img,
            _polygon_mask(_shape_polygon(other['shape'], cx, cy, r), size),
            other['colour'],
            other['texture'],
            rng,
            jitter=jitter)
    spec = classes[label]
    r = rng.uniform(*radius) * size
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    _paint(
        img,
        _polygon_mask(_shape_polygon(spec['shape'], cx, cy, r), size),
        spec['colour'],
        spec['texture'],
        rng,
        jitter=jitter)
    return _finish(img, rng, noise_std=noise)


def _coco_annotation(polygon, ann_id, image_id, category_id):
    # bbox and area from the rounded vertices that the JSON stores.
    polygon = [(round(x, 2), round(y, 2)) for x, y in polygon]
    xs = [x for x, _ in polygon]
    ys = [y for _, y in polygon]
    # Shoelace area of the polygon, as COCO gives for polygon annotations.
    area = 0.5 * abs(
        sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
    x0, y0 = min(xs), min(ys)
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        segmentation=[[v for xy in polygon for v in xy]],
        area=round(area, 2),
        bbox=[
            round(x0, 2),
            round(y0, 2),
            round(max(xs) - x0, 2),
            round(max(ys) - y0, 2)
        ],
        iscrowd=0)


# ---------------------------------------------------------------------------
# Dataset writers.
# ---------------------------------------------------------------------------

_SPLIT_CODE = {'train': 0, 'val': 1}


def _rng(seed, split, index):
    # Seeded per image, so val images do not change with --num-train.
    return np.random.default_rng([seed, _SPLIT_CODE[split], index])


def _resolve(kind, preset, num_train, num_val):
    """The preset's default split sizes where none are given."""
    if (kind, preset) not in DEFAULT_SIZES:
        presets = [p for k, p in DEFAULT_SIZES if k == kind]
        raise ValueError(f'toy {kind} has no preset {preset!r}; presets: '
                         f'{", ".join(presets)}')
    train, val = DEFAULT_SIZES[kind, preset]
    return (train if num_train is None else num_train,
            val if num_val is None else num_val)


def _dir_name(kind, preset):
    return f'toy_{kind}' if preset == 'standard' else f'toy_{kind}_{preset}'


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


def make_toy_imagenet(out_root,
                      num_train=None,
                      num_val=None,
                      size=128,
                      seed=0,
                      preset='standard',
                      force=False,
                      verbose=False):
    """Write a toy ImageNet under ``out_root/toy_imagenet`` (``_hard``).

    Layout as mmpretrain's ``ImageNet`` / ``CustomDataset`` read it: one
    folder per class, ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``,
    and the annotation files ``meta/train.txt`` and ``meta/val.txt``
    (``<class>/<file> <label>`` per line) plus ``meta/classes.txt``. Image i
    of a split is of class ``i % num_classes``, so the classes are balanced.
    Classes (``IMAGENET_CLASSES[preset]``, 16 standard, 26 hard) are
    appearances of the toy segmentation and detection data.

    Args:
        out_root (str | Path): Parent directory, e.g. ``data``.
        num_train (int, optional): Training images. Defaults to the
            preset's (400 standard, 520 hard).
        num_val (int, optional): Validation images. Defaults to the preset's
            (80 standard, 130 hard).
        size (int): Side of the square images in pixels. Defaults to 128.
        seed (int): Seed; the same arguments give identical files.
            Defaults to 0.
        preset (str): ``'standard'`` or ``'hard'``. Defaults to standard.
        force (bool): Rewrite even a complete dataset. Defaults to False.
        verbose (bool): Print what is done. Defaults to False.

    Returns:
        Path: ``out_root/toy_imagenet[_hard]`` (the data_root).
    """
    num_train, num_val = _resolve('imagenet', preset, num_train, num_val)
    _check_args(num_train, num_val, size, seed)
    root = Path(out_root) / _dir_name('imagenet', preset)
    meta = dict(
        kind='imagenet',
        preset=preset,
        version=FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        size=size,
        seed=seed)
    if _prepare(root, meta, force):
        if verbose:
            print(f'{root} is complete ({meta}); skipped (--force rewrites '
                  'it)')
        return root
    classes = IMAGENET_CLASSES[preset]
    folders = [
        f"{i:02d}_{c['name'].replace(' ', '_')}" for i, c in enumerate(classes)
    ]
    (root / 'meta').mkdir()
    (root / 'meta' / 'classes.txt').write_text('\n'.join(folders) + '\n')
    for split, num in (('train', num_train), ('val', num_val)):
        lines = []
        for folder in folders:
            (root / split / folder).mkdir(parents=True)
        for i in range(num):
            label = i % len(classes)
            img = _imagenet_sample(_rng(seed, split, i), size, label, preset)
            name = f'{folders[label]}/{split}_{i + 1:06d}.JPEG'
            img.save(root / split / name, format='JPEG', quality=JPEG_QUALITY)
            lines.append(f'{name} {label}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    _mark_complete(root, meta)
    if verbose:
        print(f'wrote {num_train} train / {num_val} val images of {size} px '
              f'in {len(classes)} classes to {root}')
    return root


def make_toy_ade20k(out_root,
                    num_train=None,
                    num_val=None,
                    size=128,
                    seed=0,
                    force=False,
                    verbose=False,
                    preset='standard'):
    """Write a toy ADE20K under ``out_root/toy_ade20k`` (``_hard``).

    Layout as mmseg's ``ADE20KDataset`` reads it: ``images/{training,
    validation}/*.jpg`` and ``annotations/{training,validation}/*.png`` whose
    pixel value 0 is "other" and k + 1 is class k (``reduce_zero_label``).
    Standard preset: the wall and floor background plus six object classes
    occur (``TOY_ADE20K_CLASS_INDICES``); the other 142 classes never do.
    Hard preset: 34 classes (``TOY_ADE20K_HARD_CLASS_INDICES``), see the
    module docstring.

    Args:
        out_root (str | Path): Parent directory, e.g. ``data``.
        num_train (int, optional): Training images. Defaults to the
            preset's (200 standard, 400 hard).
        num_val (int, optional): Validation images. Defaults to the preset's
            (50 standard, 100 hard).
        size (int): Side of the square images in pixels. Defaults to 128.
        seed (int): Seed; the same arguments give identical files.
            Defaults to 0.
        force (bool): Rewrite even a complete dataset. Defaults to False.
        verbose (bool): Print what is done. Defaults to False.
        preset (str): ``'standard'`` or ``'hard'``. Defaults to standard.

    Returns:
        Path: ``out_root/toy_ade20k[_hard]/ADEChallengeData2016`` (the
        data_root).
    """
    num_train, num_val = _resolve('ade20k', preset, num_train, num_val)
    _check_args(num_train, num_val, size, seed)
    root = Path(out_root) / _dir_name('ade20k', preset)
    data_root = root / 'ADEChallengeData2016'
    meta = dict(
        kind='ade20k',
        version=FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        size=size,
        seed=seed)
    if preset != 'standard':
        meta['preset'] = preset
    sample = _hard_ade_sample if preset == 'hard' else _ade_sample
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
            img, label = sample(_rng(seed, split, i), size)
            stem = f'ADE_{split}_{i + 1:08d}'
            img.save(img_dir / f'{stem}.jpg', quality=JPEG_QUALITY)
            label.save(ann_dir / f'{stem}.png')
    _mark_complete(root, meta)
    if verbose:
        print(f'wrote {num_train} train / {num_val} val images of {size} px '
              f'to {data_root}')
    return data_root


def make_toy_coco(out_root,
                  num_train=None,
                  num_val=None,
                  size=128,
                  seed=0,
                  force=False,
                  verbose=False):
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
        num_train (int, optional): Training images. Defaults to 200.
        num_val (int, optional): Validation images. Defaults to 50.
        size (int): Side of the square images in pixels. Defaults to 128.
        seed (int): Seed; the same arguments give identical files.
            Defaults to 0.
        force (bool): Rewrite even a complete dataset. Defaults to False.
        verbose (bool): Print what is done. Defaults to False.

    Returns:
        Path: ``out_root/toy_coco`` (the data_root).
    """
    num_train, num_val = _resolve('coco', 'standard', num_train, num_val)
    _check_args(num_train, num_val, size, seed)
    root = Path(out_root) / 'toy_coco'
    meta = dict(
        kind='coco',
        version=FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        size=size,
        seed=seed)
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
            images.append(
                dict(
                    id=image_id, file_name=file_name, width=size, height=size))
            for pos, polygon in objects:
                annotations.append(
                    _coco_annotation(polygon,
                                     len(annotations) + 1, image_id,
                                     COCO_OBJECTS[pos]['id']))
        ann = dict(
            info=dict(
                description='rmoe_mm toy COCO', version='1.0', year=2017),
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
        description='Write synthetic ImageNet/ADE20K/COCO-layout toy '
        'datasets.')
    parser.add_argument(
        'dataset', choices=['imagenet', 'ade20k', 'coco', 'all'])
    parser.add_argument(
        '--out', default='data', help='parent directory (default: data)')
    parser.add_argument(
        '--preset',
        choices=PRESETS,
        default='standard',
        help='standard or hard (imagenet and ade20k; coco '
        'has the standard preset only)')
    parser.add_argument(
        '--num-train',
        type=int,
        default=None,
        help='training images (default: the preset\'s, '
        'e.g. 200 for the standard ADE20K and COCO)')
    parser.add_argument(
        '--num-val',
        type=int,
        default=None,
        help='validation images (default: the preset\'s)')
    parser.add_argument(
        '--size',
        type=int,
        default=128,
        help='side of the square images in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--force',
        action='store_true',
        help='rewrite a dataset that is already complete')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kwargs = dict(
        num_train=args.num_train,
        num_val=args.num_val,
        size=args.size,
        seed=args.seed,
        force=args.force,
        verbose=True)
    kinds = ('imagenet', 'ade20k',
             'coco') if args.dataset == 'all' else (args.dataset, )
    try:
        for kind in kinds:
            if (kind, args.preset) not in DEFAULT_SIZES and \
                    args.dataset == 'all':
                print(f'toy {kind} has no {args.preset} preset; skipped')
                continue
            if kind == 'imagenet':
                make_toy_imagenet(args.out, preset=args.preset, **kwargs)
            elif kind == 'ade20k':
                make_toy_ade20k(args.out, preset=args.preset, **kwargs)
            else:
                _resolve('coco', args.preset, None, None)
                make_toy_coco(args.out, **kwargs)
    except (ValueError, FileExistsError) as err:
        raise SystemExit(f'make_toy_data.py: error: {err}')


if __name__ == '__main__':
    main()
