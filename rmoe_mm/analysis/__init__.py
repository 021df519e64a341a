"""Analysis of (R)MoE models: which FFNs to turn into experts (the splitting
score) and what trained experts do (routing maps, load, specialisation,
weight geometry). The tools in ``tools/analysis/`` are thin command lines
over these modules; the pictures live in :mod:`.plots` (matplotlib is only
imported there)."""
from .expert_stats import (contingency, ground_truth_map, mutual_information,
                           patch_labels, pca, specialisation, weight_geometry)
from .layer_selection import FFNScore, mean_loss, measure_splitting
from .moe_access import (expert_weights, residual_bias, residual_weight,
                         watch_expert_linears)
from .probes import (FFNSite, RoutingRecorder, SplittingProbe, backbone_ffns,
                     seeded_router)
from .splitting import (ESTIMATORS, NORMALISATIONS, GroupedGradientSums,
                        SplitGain, kmeans, layer_score, moe_blocks_of,
                        split_half_gain, splitting_gain, top_blocks)

__all__ = [
    'ESTIMATORS', 'FFNScore', 'FFNSite', 'GroupedGradientSums',
    'NORMALISATIONS', 'RoutingRecorder', 'SplitGain', 'SplittingProbe',
    'backbone_ffns', 'contingency', 'expert_weights', 'ground_truth_map',
    'kmeans', 'layer_score', 'mean_loss', 'measure_splitting', 'moe_blocks_of',
    'mutual_information', 'patch_labels', 'pca', 'residual_bias',
    'residual_weight', 'seeded_router', 'specialisation', 'split_half_gain',
    'splitting_gain', 'top_blocks', 'watch_expert_linears', 'weight_geometry'
]
