"""What the experts of a trained RMoE model do, over the validation set:
expert maps, expert load, specialisation and weight geometry (PNGs + JSON).

    python tools/analysis/expert_analysis.py CONFIG CHECKPOINT
        [--images I [I ...]] [--max-images N] [--out DIR] [--split val]
        [--device DEV] [--cfg-options k=v ...]

CHECKPOINT is an RMoE whole-model checkpoint of CONFIG (mmseg or mmdet).
``--images`` picks the images drawn in the expert maps, by index in the
split's dataset or by file name (default: the first 4); the statistics run
over the whole split (or its first ``--max-images``). Writes to DIR
(default: work_dirs/expert_analysis/<config>/):

- expert_maps.png: image, ground truth and every MoE layer's top-1 expert
  per patch;
- expert_load.png: tokens per expert per layer, uniform share, drops;
- specialisation.png: mutual information between expert and the patch's
  class per layer, and p(expert, class) of the most specialised layer;
- weight_geometry.png: PCA of each layer's expert weights (core marked) and
  ||residual_i|| / ||core||;
- summary.json: the numbers behind all four.

See docs/analysis.md for how patches get their classes.
"""
import argparse
import json
import os
import os.path as osp
import time

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.logging import print_log

import rmoe_mm  # noqa: F401  registers modules, checkpoint allow-list
from rmoe_mm.analysis.expert_stats import (contingency, ground_truth_map,
                                           patch_labels, specialisation,
                                           weight_geometry)
from rmoe_mm.analysis.plots import (plot_expert_load, plot_expert_maps,
                                    plot_specialisation, plot_weight_geometry)
from rmoe_mm.analysis.probes import RoutingRecorder, backbone_ffns
from rmoe_mm.analysis.runtime import (build_dataloader, default_device,
                                      load_analysis_config, load_model)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--images',
        nargs='+',
        default=['0', '1', '2', '3'],
        help='images of the expert maps: dataset indices or file names')
    parser.add_argument(
        '--max-images',
        type=int,
        help='statistics over the first N images only')
    parser.add_argument('--out', help='output directory')
    parser.add_argument('--split', choices=['val', 'test'], default='val')
    parser.add_argument('--device', default=default_device())
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs (mmengine DictAction)')
    return parser.parse_args(argv)


def class_names(cfg, dataset):
    """Class names of the patches (mmdet: + 'background')."""
    names = list(dataset.metainfo.get('classes', ()))
    if not names:
        raise ValueError('the dataset has no metainfo classes')
    if cfg.default_scope == 'mmdet':
        names.append('background')
    return names


def class_colours(cfg, dataset, num_names):
    palette = dataset.metainfo.get('palette')
    colours = np.zeros((num_names, 3))
    if palette is not None and len(palette) >= num_names - (cfg.default_scope
                                                            == 'mmdet'):
        colours[:len(palette[:num_names])] = np.asarray(
            palette[:num_names], dtype=float) / 255.
    else:
        from rmoe_mm.analysis.plots import expert_colours
        colours = expert_colours(num_names)
    if cfg.default_scope == 'mmdet':
        colours[-1] = 0.15  # background: dark grey
    return colours


def display_image(raw: torch.Tensor, input_hw) -> np.ndarray:
    """The pipeline's image ``[3, h, w]`` (BGR, as mmcv loads it) as RGB
    ``[H, W, 3]`` uint8, padded to the backbone input like the labels."""
    image = raw.permute(1, 2, 0).flip(-1).cpu().numpy().astype(np.uint8)
    out = np.zeros(tuple(input_hw) + (3, ), dtype=np.uint8)
    height, width = min(image.shape[0],
                        out.shape[0]), min(image.shape[1], out.shape[1])
    out[:height, :width] = image[:height, :width]
    return out


def wanted_images(args, dataset):
    """Dataset indices of ``--images`` (indices or file names)."""
    indices = []
    for item in args.images:
        if item.isdigit():
            index = int(item)
        else:
            names = [
                osp.basename(dataset.get_data_info(i).get('img_path', ''))
                for i in range(len(dataset))
            ]
            if osp.basename(item) not in names:
                raise ValueError(f'no image named {item!r} in the {args.split}'
                                 ' set')
            index = names.index(osp.basename(item))
        if not 0 <= index < len(dataset):
            raise ValueError(f'image index {index} is outside the '
                             f'{args.split} set of {len(dataset)} images')
        indices.append(index)
    return indices


def main(argv=None):
    args = parse_args(argv)
    cfg = load_analysis_config(args.config, args.cfg_options)
    library = cfg.default_scope
    model = load_model(
        cfg,
        args.checkpoint,
        args.device,
        dense_twin_for_dense_checkpoint=False)
    sites = backbone_ffns(model.backbone)
    moe_sites = [site for site in sites if site.is_moe]
    if not moe_sites:
        raise ValueError(f'{args.config} builds no RMoE FFN: expert analysis '
                         'needs an RMoE model')
    loader = build_dataloader(cfg, args.split)
    dataset = loader.dataset
    names = class_names(cfg, dataset)
    num_classes = len(names)
    ignore = cfg.model.get('decode_head', {}).get('ignore_index', 255)
    wanted = set(wanted_images(args, dataset))
    labels = [site.label for site in moe_sites]
    experts = {site.label: site.ffn.num_experts for site in moe_sites}
    joint = {
        site.label:
        torch.zeros(site.ffn.num_experts, num_classes, dtype=torch.long)
        for site in moe_sites
    }
    load = {site.label: np.zeros(site.ffn.num_experts) for site in moe_sites}
    dropped = {site.label: 0 for site in moe_sites}
    drawn = []
    total = len(dataset) if args.max_images is None else min(
        args.max_images, len(dataset))
    seen, start = 0, time.time()
    recorder = RoutingRecorder(sites)
    with torch.no_grad(), recorder:
        for batch in loader:
            if seen >= total:
                break
            data = model.data_preprocessor(batch, False)
            inputs = data['inputs']
            model.backbone(inputs)
            maps = recorder.expert_maps()
            for site in moe_sites:
                stats = site.ffn.moe_stats()
                load[site.label] += np.asarray(stats['tokens_per_expert'])
                dropped[site.label] += int(stats['dropped'])
            input_hw = tuple(inputs.shape[-2:])
            for i, sample in enumerate(data['data_samples']):
                index = seen + i
                if index >= total:
                    break
                truth = ground_truth_map(sample, library, input_hw,
                                         num_classes - (library == 'mmdet'),
                                         ignore)
                patches = {}
                for site in moe_sites:
                    grid = maps[site.name][i]
                    classes = patch_labels(truth, tuple(grid.shape),
                                           num_classes)
                    contingency(
                        grid,
                        classes,
                        site.ffn.num_experts,
                        num_classes,
                        out=joint[site.label])
                    patches[site.label] = grid.cpu().numpy()
                if index in wanted:
                    drawn.append(
                        dict(
                            index=index,
                            name=osp.basename(sample.metainfo['img_path']),
                            image=display_image(batch['inputs'][i], input_hw),
                            labels=truth.numpy(),
                            experts=patches))
            seen += len(data['data_samples'])
            elapsed = time.time() - start
            print_log(
                f'[expert_analysis] image {min(seen, total)}/{total}  '
                f'elapsed {elapsed:.0f} s  ETA '
                f'{elapsed / seen * max(total - seen, 0):.0f} s',
                logger='current')

    out = args.out or osp.join('work_dirs', 'expert_analysis',
                               osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out, exist_ok=True)
    files = {
        kind: osp.join(out, f'{kind}.png')
        for kind in ('expert_maps', 'expert_load', 'specialisation',
                     'weight_geometry')
    }
    title = osp.basename(args.config)
    drawn.sort(key=lambda item: item['index'])
    plot_expert_maps(drawn, labels, experts, names, files['expert_maps'],
                     class_colours(cfg, dataset, num_classes))
    plot_expert_load({
        k: v.tolist()
        for k, v in load.items()
    }, dropped, files['expert_load'], title)
    special = {label: specialisation(joint[label]) for label in labels}
    best = max(labels, key=lambda k: special[k]['mutual_information'])
    plot_specialisation(
        {
            k: v['mutual_information']
            for k, v in special.items()
        }, {
            k: v['normalised']
            for k, v in special.items()
        }, joint[best].numpy(), best, names, files['specialisation'], title)
    geometry = {site.label: weight_geometry(site.ffn) for site in moe_sites}
    plot_weight_geometry(geometry, files['weight_geometry'], title)

    summary = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        split=args.split,
        num_images=min(seen, total),
        classes=names,
        drawn_images=[dict(index=d['index'], name=d['name']) for d in drawn],
        most_specialised_layer=best,
        layers={
            site.label:
            dict(
                name=site.name,
                num_experts=site.ffn.num_experts,
                tokens_per_expert=load[site.label].astype(int).tolist(),
                dropped=dropped[site.label],
                load_cv=float(load[site.label].std() /
                              max(load[site.label].mean(), 1e-12)),
                specialisation=special[site.label],
                expert_class_counts=joint[site.label].tolist(),
                weight_geometry=geometry[site.label])
            for site in moe_sites
        },
        files=files)
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(f'{"layer":<8} {"experts":>7} {"load CV":>8} {"dropped":>8} '
          f'{"MI bits":>8} {"MI/H(cls)":>9} {"|res|/|core|":>13}')
    for label in labels:
        layer = summary['layers'][label]
        ratio = np.mean(layer['weight_geometry']['residual_ratio'])
        print(f'{label:<8} {layer["num_experts"]:>7} '
              f'{layer["load_cv"]:>8.3f} {layer["dropped"]:>8} '
              f'{layer["specialisation"]["mutual_information"]:>8.3f} '
              f'{layer["specialisation"]["normalised"]:>9.3f} '
              f'{ratio:>13.2e}')
    print(f'wrote {", ".join(sorted(files.values()))} and '
          f'{osp.join(out, "summary.json")}')
    return summary


if __name__ == '__main__':
    main()
