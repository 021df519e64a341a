"""Specification of tools/misc/make_toy_data.py and the toy dataset configs."""
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from rmoe_mm.testing import REPO_ROOT, TOY_NUM_TRAIN, TOY_NUM_VAL, TOY_SIZE

ADE_CFG = REPO_ROOT / 'configs' / '_base_' / 'datasets' / 'toy_ade20k.py'
COCO_CFG = REPO_ROOT / 'configs' / '_base_' / 'datasets' / 'toy_coco.py'
IMAGENET_CFG = REPO_ROOT / 'configs' / '_base_' / 'datasets' / \
    'toy_imagenet.py'
SPLITS = (('training', TOY_NUM_TRAIN), ('validation', TOY_NUM_VAL))


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(Path(root).rglob('*')) if p.is_file()
    }


def _box_mean(img, k=7):
    """Mean over a k x k window (edge-padded), an independent texture blur."""
    pad = k // 2
    padded = np.pad(
        img.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode='edge')
    c = padded.cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    h, w = img.shape[:2]
    return (c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] +
            c[:h, :w]) / (
                k * k)


def _nearest_colour_accuracy(image, label, colours):
    """Pixel accuracy of "class = nearest class colour of the blurred pixel".

    ``colours`` maps label value to RGB; pixels of other values are skipped.
    """
    values = np.array(sorted(colours))
    table = np.array([colours[v] for v in values], np.float64)
    blurred = _box_mean(image)
    dist = ((blurred[..., None, :] - table)**2).sum(-1)
    pred = values[dist.argmin(-1)]
    keep = np.isin(label, values)
    return (pred[keep] == label[keep]).mean()


# ---------------------------------------------------------------------------
# Generator behaviour (numpy + PIL only).
# ---------------------------------------------------------------------------

KINDS = [('ade20k', {}), ('coco', {}), ('imagenet', {}),
         ('ade20k', dict(preset='hard')), ('imagenet', dict(preset='hard'))]


@pytest.mark.parametrize('kind,kwargs', KINDS)
def test_same_seed_gives_identical_files(tmp_path, toy_data_tool, kind,
                                         kwargs):
    make = getattr(toy_data_tool, f'make_toy_{kind}')
    a = make(tmp_path / 'a', num_train=3, num_val=2, size=48, seed=7, **kwargs)
    b = make(tmp_path / 'b', num_train=3, num_val=2, size=48, seed=7, **kwargs)
    assert _files(a) == _files(b)


@pytest.mark.parametrize('kind', ['ade20k', 'coco'])
def test_different_seed_gives_different_images(tmp_path, toy_data_tool, kind):
    make = getattr(toy_data_tool, f'make_toy_{kind}')
    a = _files(make(tmp_path / 'a', num_train=2, num_val=1, size=48, seed=0))
    b = _files(make(tmp_path / 'b', num_train=2, num_val=1, size=48, seed=1))
    images = [k for k in a if k.endswith('.jpg')]
    assert images and all(a[k] != b[k] for k in images)


def test_val_images_do_not_depend_on_num_train(tmp_path, toy_data_tool):
    a = toy_data_tool.make_toy_ade20k(tmp_path / 'a', 2, 2, 48, seed=3)
    b = toy_data_tool.make_toy_ade20k(tmp_path / 'b', 5, 2, 48, seed=3)
    val_a = {k: v for k, v in _files(a).items() if 'validation' in k}
    val_b = {k: v for k, v in _files(b).items() if 'validation' in k}
    assert len(val_a) == 4 and val_a == val_b


def test_ade20k_layout_pairs_jpg_images_with_png_labels(toy_ade20k_root):
    assert toy_ade20k_root.name == 'ADEChallengeData2016'
    for folder, num in SPLITS:
        images = sorted((toy_ade20k_root / 'images' / folder).iterdir())
        labels = sorted((toy_ade20k_root / 'annotations' / folder).iterdir())
        assert len(images) == num
        assert [p.suffix for p in images] == ['.jpg'] * num
        assert [p.suffix for p in labels] == ['.png'] * num
        assert [p.stem for p in images] == [p.stem for p in labels]
        for img, lab in zip(images, labels):
            assert Image.open(img).mode == 'RGB'
            assert Image.open(img).size == (TOY_SIZE, TOY_SIZE)
            assert Image.open(lab).mode == 'L'
            assert Image.open(lab).size == (TOY_SIZE, TOY_SIZE)


def test_ade20k_label_values_are_other_or_class_plus_one(
        toy_ade20k_root, toy_data_tool):
    allowed = {0} | {i + 1 for i in toy_data_tool.TOY_ADE20K_CLASS_INDICES}
    seen = set()
    for folder, _ in SPLITS:
        for p in (toy_ade20k_root / 'annotations' / folder).iterdir():
            seen |= set(np.unique(np.asarray(Image.open(p))).tolist())
    assert seen <= allowed
    assert max(seen) <= 150
    # Background and several objects actually occur.
    assert {1, 4} <= seen and len(seen - {0, 1, 4}) >= 3


def test_ade20k_classes_are_named_as_in_mmseg(toy_data_tool):
    from mmseg.datasets import ADE20KDataset
    mmseg_names = ADE20KDataset.METAINFO['classes']
    specs = {**toy_data_tool.ADE_BACKGROUND, **toy_data_tool.ADE_OBJECTS}
    assert len(specs) == 8
    for index, spec in specs.items():
        assert mmseg_names[index].strip() == spec['name']


def test_ade20k_class_is_predictable_from_colour(tmp_path, toy_data_tool):
    # A nearest-colour rule on 7x7-blurred pixels gets most pixels right, so
    # appearance determines the class (measured: 0.976-0.978 for seeds
    # 0-2); tolerance: >= 93% pixel accuracy.
    root = toy_data_tool.make_toy_ade20k(tmp_path, 1, 6, 128, seed=0)
    specs = {**toy_data_tool.ADE_BACKGROUND, **toy_data_tool.ADE_OBJECTS}
    colours = {i + 1: s['colour'] for i, s in specs.items()}
    correct = []
    for p in sorted((root / 'images' / 'validation').iterdir()):
        image = np.asarray(Image.open(p))
        label = np.asarray(
            Image.open(root / 'annotations' / 'validation' / f'{p.stem}.png'))
        correct.append(_nearest_colour_accuracy(image, label, colours))
    assert np.mean(correct) >= 0.93


def _hard_colours(tool):
    colours = {}
    for scene in tool.HARD_SCENES:
        for region in scene:
            colours.update({i + 1: s['colour'] for i, s in region.items()})
    colours.update({i + 1: s['colour'] for i, s in tool.HARD_OBJECTS.items()})
    for context in tool.HARD_CONTEXT:
        for side in ('top', 'bottom'):
            colours[context[side][0] + 1] = context['colour']
    return colours


def _object_pixel_accuracy(root, colours, objects):
    """Nearest-colour accuracy on the pixels of ``objects`` only."""
    values = np.array(sorted(colours))
    table = np.array([colours[v] for v in values], np.float64)
    scores = []
    for p in sorted((root / 'images' / 'validation').iterdir()):
        image = np.asarray(Image.open(p))
        label = np.asarray(
            Image.open(root / 'annotations' / 'validation' / f'{p.stem}.png'))
        dist = ((_box_mean(image)[..., None, :] - table)**2).sum(-1)
        keep = np.isin(label, objects)
        scores.append((values[dist.argmin(-1)][keep] == label[keep]).mean())
    return np.mean(scores)


def test_hard_ade20k_objects_are_not_told_apart_by_colour(
        tmp_path, toy_data_tool):
    """Object pixels by nearest class colour: the standard preset's objects
    have one colour each (measured 0.93-0.94 for seeds 0-1), the hard
    preset's share colours between classes (0.38-0.45 for seeds 0-2): shape,
    texture and context are needed. Tolerance: standard >= 0.85, hard
    <= 0.6."""
    tool = toy_data_tool
    std = tool.make_toy_ade20k(tmp_path / 's', 1, 6, 128, seed=0)
    specs = {**tool.ADE_BACKGROUND, **tool.ADE_OBJECTS}
    assert _object_pixel_accuracy(std, {
        i + 1: s['colour']
        for i, s in specs.items()
    }, [i + 1 for i in tool.ADE_OBJECTS]) >= 0.85
    hard = tool.make_toy_ade20k(
        tmp_path / 'h', 1, 6, 128, seed=0, preset='hard')
    objects = [i + 1 for i in tool.HARD_OBJECTS] + [
        c[s][0] + 1 for c in tool.HARD_CONTEXT for s in ('top', 'bottom')
    ]
    assert _object_pixel_accuracy(hard, _hard_colours(tool), objects) <= 0.6


def test_hard_ade20k_labels_and_layout(tmp_path, toy_data_tool):
    tool = toy_data_tool
    root = tool.make_toy_ade20k(tmp_path, 6, 2, 64, seed=1, preset='hard')
    assert root == tmp_path / 'toy_ade20k_hard' / 'ADEChallengeData2016'
    seen = set()
    for p in (root / 'annotations' / 'training').iterdir():
        seen |= set(np.unique(np.asarray(Image.open(p))).tolist())
    allowed = {0} | {i + 1 for i in tool.TOY_ADE20K_HARD_CLASS_INDICES}
    assert seen <= allowed and len(seen) >= 12
    assert len(tool.TOY_ADE20K_HARD_CLASS_INDICES) == 34


def test_hard_classes_differ_pairwise_by_one_attribute(toy_data_tool):
    """Each family of three hard classes shares a shape; the second differs
    from the first by colour only, the third by texture only."""
    specs = list(toy_data_tool.HARD_OBJECTS.values())
    assert len(specs) == 24
    keys = ('shape', 'colour', 'texture')
    assert len({tuple(map(str, (s[k] for k in keys))) for s in specs}) == 24
    for first, second, third in zip(specs[0::3], specs[1::3], specs[2::3]):
        assert [k for k in keys if first[k] != second[k]] == ['colour']
        assert [k for k in keys if first[k] != third[k]] == ['texture']


def test_imagenet_layout_is_mmpretrain_s(tmp_path, toy_data_tool):
    root = toy_data_tool.make_toy_imagenet(tmp_path, 20, 16, 48, seed=0)
    assert root == tmp_path / 'toy_imagenet'
    classes = (root / 'meta' / 'classes.txt').read_text().split()
    assert len(classes) == len(toy_data_tool.IMAGENET_CLASSES['standard'])
    for split, num in (('train', 20), ('val', 16)):
        lines = (root / 'meta' / f'{split}.txt').read_text().splitlines()
        assert len(lines) == num
        for i, line in enumerate(lines):
            path, label = line.split()
            assert int(label) == i % len(classes)
            assert path.split('/')[0] == classes[int(label)]
            assert (root / split / path).is_file()


def test_mmpretrain_reads_the_toy_imagenet(tmp_path, toy_data_tool):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    from mmpretrain.utils import register_all_modules
    root = toy_data_tool.make_toy_imagenet(
        tmp_path, 20, 16, 48, seed=0, preset='hard')
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(str(IMAGENET_CFG))
    assert cfg.data_root == 'data/toy_imagenet'
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = str(root)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 20
    sample = dataset[3]
    assert tuple(sample['inputs'].shape) == (3, 128, 128)  # crop size
    assert sample['data_samples'].gt_label.item() == 3


def _load_coco(root, split):
    return json.loads(
        (root / 'annotations' / f'instances_{split}2017.json').read_text())


@pytest.mark.parametrize('split,num', [('train', TOY_NUM_TRAIN),
                                       ('val', TOY_NUM_VAL)])
def test_coco_images_are_listed_and_present(toy_coco_root, split, num):
    coco = _load_coco(toy_coco_root, split)
    assert len(coco['images']) == num
    assert len({im['id'] for im in coco['images']}) == num
    for im in coco['images']:
        path = toy_coco_root / f'{split}2017' / im['file_name']
        assert Image.open(path).size == (im['width'], im['height'])


def test_coco_annotations_are_consistent(toy_coco_root, toy_data_tool):
    coco = _load_coco(toy_coco_root, 'train')
    image_ids = {im['id'] for im in coco['images']}
    cat_ids = [c['id'] for c in coco['categories']]
    assert [c['name'] for c in coco['categories']
            ] == list(toy_data_tool.TOY_COCO_CLASSES)
    assert cat_ids == sorted(cat_ids)
    anns = coco['annotations']
    assert len({a['id'] for a in anns}) == len(anns)
    # Every image has an object, so filter_empty_gt keeps all of them.
    assert {a['image_id'] for a in anns} == image_ids
    for a in anns:
        assert a['category_id'] in cat_ids and a['iscrowd'] == 0
        (poly, ) = a['segmentation']
        xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
        assert len(poly) % 2 == 0 and len(xs) >= 3
        x, y, w, h = a['bbox']
        np.testing.assert_allclose(
            [x, y, x + w, y + h],
            [xs.min(), ys.min(), xs.max(),
             ys.max()],
            atol=0.02)
        assert 0 <= x and x + w <= TOY_SIZE and 0 <= y and y + h <= TOY_SIZE
        assert 0 < a['area'] <= w * h + 0.01  # both rounded to 0.01


def test_coco_objects_do_not_overlap(toy_coco_root):
    coco = _load_coco(toy_coco_root, 'train')
    by_image = {}
    for a in coco['annotations']:
        by_image.setdefault(a['image_id'], []).append(a['bbox'])
    for boxes in by_image.values():
        for i, (x0, y0, w0, h0) in enumerate(boxes):
            for x1, y1, w1, h1 in boxes[i + 1:]:
                assert (x0 + w0 <= x1 or x1 + w1 <= x0 or y0 + h0 <= y1
                        or y1 + h1 <= y0)


def test_coco_pixels_inside_polygons_have_the_class_colour(
        tmp_path, toy_data_tool):
    # Mean colour inside each polygon (rasterised here) is within the colour
    # jitter (15), texture mean (< 12) and noise of the class colour: 35.
    root = toy_data_tool.make_toy_coco(tmp_path, 1, 6, 96, seed=0)
    coco = _load_coco(root, 'val')
    names = {c['id']: c['name'] for c in coco['categories']}
    colours = {s['name']: s['colour'] for s in toy_data_tool.COCO_OBJECTS}
    files = {im['id']: im['file_name'] for im in coco['images']}
    assert {
        names[a['category_id']]
        for a in coco['annotations']
    } == set(toy_data_tool.TOY_COCO_CLASSES)  # i % 6 first objects cover all
    for a in coco['annotations']:
        image = np.asarray(Image.open(root / 'val2017' / files[a['image_id']]))
        canvas = Image.new('L', (96, 96), 0)
        poly = a['segmentation'][0]
        ImageDraw.Draw(canvas).polygon(
            list(zip(poly[0::2], poly[1::2])), fill=1)
        mask = np.asarray(canvas, bool)
        mean = image[mask].mean(0)
        target = np.array(colours[names[a['category_id']]])
        assert np.abs(mean - target).max() <= 35, (a, mean, target)


def test_complete_dataset_is_skipped(tmp_path, toy_data_tool):
    root = toy_data_tool.make_toy_ade20k(tmp_path, 2, 1, 48, seed=0)
    label = root / 'annotations' / 'training' / 'ADE_train_00000001.png'
    label.write_bytes(b'sentinel')
    toy_data_tool.make_toy_ade20k(tmp_path, 2, 1, 48, seed=0)
    assert label.read_bytes() == b'sentinel'
    toy_data_tool.make_toy_ade20k(tmp_path, 2, 1, 48, seed=0, force=True)
    assert label.read_bytes() != b'sentinel'


def test_other_settings_rewrite_the_dataset(tmp_path, toy_data_tool):
    toy_data_tool.make_toy_coco(tmp_path, 5, 2, 48, seed=0)
    root = toy_data_tool.make_toy_coco(tmp_path, 2, 2, 48, seed=0)
    assert len(list((root / 'train2017').iterdir())) == 2
    assert len(_load_coco(root, 'train')['images']) == 2


def test_foreign_directory_is_not_overwritten(tmp_path, toy_data_tool):
    foreign = tmp_path / 'toy_coco' / 'mine.txt'
    foreign.parent.mkdir()
    foreign.write_text('keep me')
    with pytest.raises(FileExistsError, match='--force'):
        toy_data_tool.make_toy_coco(tmp_path, 2, 1, 48, seed=0)
    assert foreign.read_text() == 'keep me'


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_train=0), 'num_train'),
    (dict(num_val=-1), 'num_val'),
    (dict(size=16), 'size'),
    (dict(seed=-2), 'seed'),
])
def test_bad_arguments_are_refused(tmp_path, toy_data_tool, kwargs, match):
    args = dict(num_train=2, num_val=1, size=48, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        toy_data_tool.make_toy_ade20k(tmp_path, **args)


def test_cli_writes_every_dataset(tmp_path, toy_data_tool, capsys):
    toy_data_tool.main([
        'all', '--out',
        str(tmp_path), '--num-train', '2', '--num-val', '1', '--size', '40',
        '--seed', '5'
    ])
    ade = tmp_path / 'toy_ade20k' / 'ADEChallengeData2016'
    assert len(list((ade / 'images' / 'training').iterdir())) == 2
    assert len(_load_coco(tmp_path / 'toy_coco', 'val')['images']) == 1
    assert len((tmp_path / 'toy_imagenet' / 'meta' /
                'train.txt').read_text().splitlines()) == 2
    assert str(toy_data_tool.TOY_COCO_CLASSES) in capsys.readouterr().out


def test_cli_hard_preset_skips_coco(tmp_path, toy_data_tool, capsys):
    toy_data_tool.main([
        'all', '--preset', 'hard', '--out',
        str(tmp_path), '--num-train', '2', '--num-val', '1', '--size', '40'
    ])
    assert (tmp_path / 'toy_ade20k_hard').is_dir()
    assert (tmp_path / 'toy_imagenet_hard').is_dir()
    assert not (tmp_path / 'toy_coco').exists()
    assert 'no hard preset' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='no preset'):
        toy_data_tool.main(
            ['coco', '--preset', 'hard', '--out',
             str(tmp_path)])


def test_coco_config_classes_match_generator(toy_data_tool):
    cfg = runpy.run_path(str(COCO_CFG))
    assert cfg['classes'] == toy_data_tool.TOY_COCO_CLASSES
    for loader in ('train_dataloader', 'val_dataloader'):
        meta = cfg[loader]['dataset']['metainfo']
        assert meta['classes'] == toy_data_tool.TOY_COCO_CLASSES


def test_configs_point_at_the_generated_layout():
    ade = runpy.run_path(str(ADE_CFG))
    coco = runpy.run_path(str(COCO_CFG))
    assert ade['data_root'] == 'data/toy_ade20k/ADEChallengeData2016'
    assert coco['data_root'] == 'data/toy_coco/'
    assert coco['val_evaluator']['ann_file'] == (
        'data/toy_coco/annotations/instances_val2017.json')


# ---------------------------------------------------------------------------
# As mmseg and mmdet read the data (through the base dataset configs).
# ---------------------------------------------------------------------------


def _dataset_cfg(cfg_path, loader, data_root):
    from mmengine.config import Config
    cfg = Config.fromfile(str(cfg_path))[loader]['dataset']
    cfg.data_root = str(data_root)
    return cfg


def _build(scope, cfg):
    from mmengine.registry import DefaultScope
    if scope == 'mmseg':
        from mmseg.registry import DATASETS
        from mmseg.utils import register_all_modules
    else:
        from mmdet.registry import DATASETS
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        return DATASETS.build(cfg)


def test_mmseg_val_sample_gt_is_png_minus_one(toy_ade20k_root):
    dataset = _build('mmseg',
                     _dataset_cfg(ADE_CFG, 'val_dataloader', toy_ade20k_root))
    assert len(dataset) == TOY_NUM_VAL
    assert len(dataset.metainfo['classes']) == 150
    sample = dataset[0]
    png = np.asarray(Image.open(sample['data_samples'].seg_map_path))
    expected = np.where(png == 0, 255, png.astype(np.int64) - 1)
    gt = sample['data_samples'].gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(gt, expected)


def test_mmseg_train_sample_is_a_crop_with_toy_labels(toy_ade20k_root,
                                                      toy_data_tool):
    dataset = _build(
        'mmseg', _dataset_cfg(ADE_CFG, 'train_dataloader', toy_ade20k_root))
    assert len(dataset) == TOY_NUM_TRAIN
    crop = runpy.run_path(str(ADE_CFG))['crop_size']
    sample = dataset[1]
    # RandomResize draws the scale from numpy's global state: a 64 px toy
    # image resized by less than 2 gives a crop smaller than crop_size
    channels, height, width = sample['inputs'].shape
    assert channels == 3 and height <= crop[0] and width <= crop[1]
    gt = sample['data_samples'].gt_sem_seg.data
    assert tuple(gt.shape[-2:]) == (height, width)
    allowed = {255, *toy_data_tool.TOY_ADE20K_CLASS_INDICES}
    assert set(gt.unique().tolist()) <= allowed


def test_mmdet_reads_boxes_and_labels_from_json(toy_coco_root, toy_data_tool):
    dataset = _build('mmdet',
                     _dataset_cfg(COCO_CFG, 'train_dataloader', toy_coco_root))
    assert len(dataset) == TOY_NUM_TRAIN  # nothing filtered
    assert dataset.metainfo['classes'] == toy_data_tool.TOY_COCO_CLASSES
    coco = _load_coco(toy_coco_root, 'train')
    names = {c['id']: c['name'] for c in coco['categories']}
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        anns = [
            a for a in coco['annotations'] if a['image_id'] == info['img_id']
        ]
        assert len(info['instances']) == len(anns)
        for inst, a in zip(info['instances'], anns):
            x, y, w, h = a['bbox']
            assert inst['bbox'] == pytest.approx([x, y, x + w, y + h])
            assert toy_data_tool.TOY_COCO_CLASSES[inst['bbox_label']] == names[
                a['category_id']]
            assert inst['mask'] == a['segmentation']


def test_mmdet_train_sample_has_one_mask_per_object(toy_coco_root):
    dataset = _build('mmdet',
                     _dataset_cfg(COCO_CFG, 'train_dataloader', toy_coco_root))
    sample = dataset[0]
    gt = sample['data_samples'].gt_instances
    num = len(dataset.get_data_info(0)['instances'])
    assert len(gt.labels) == len(gt.bboxes) == len(gt.masks) == num
    assert gt.masks.masks.sum(axis=(1, 2)).min() > 0


def test_coco_metric_scores_ground_truth_as_perfect(toy_coco_root,
                                                    toy_data_tool):
    # The JSON as predictions (labels by class name) must give AP 1.0 for
    # boxes and masks: ids, category order and polygons agree with
    # mmdet's CocoMetric. Tolerance 1e-3 (pycocotools rounds to 3 decimals).
    import torch
    from mmdet.evaluation import CocoMetric
    from pycocotools.coco import COCO
    ann_file = toy_coco_root / 'annotations' / 'instances_val2017.json'
    api = COCO(str(ann_file))
    metric = CocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=toy_data_tool.TOY_COCO_CLASSES)
    names = {c['id']: c['name'] for c in api.dataset['categories']}
    for img_id in api.getImgIds():
        anns = api.loadAnns(api.getAnnIds(imgIds=[img_id]))
        boxes = [[
            a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
            a['bbox'][1] + a['bbox'][3]
        ] for a in anns]
        labels = [
            toy_data_tool.TOY_COCO_CLASSES.index(names[a['category_id']])
            for a in anns
        ]
        masks = np.stack([api.annToMask(a) for a in anns]).astype(bool)
        metric.process({}, [
            dict(
                img_id=img_id,
                ori_shape=(TOY_SIZE, TOY_SIZE),
                pred_instances=dict(
                    bboxes=torch.tensor(boxes),
                    scores=torch.ones(len(anns)),
                    labels=torch.tensor(labels),
                    masks=torch.from_numpy(masks)))
        ])
    result = metric.evaluate(size=TOY_NUM_VAL)
    assert result['coco/bbox_mAP'] == pytest.approx(1.0, abs=1e-3)
    assert result['coco/segm_mAP'] == pytest.approx(1.0, abs=1e-3)
