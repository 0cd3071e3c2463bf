"""Baseline and oracle heatmap networks (UNet, HRNet via timm, HRFormer) and the oracle ensemble.

Importing this package registers the harness models ``unet``, ``hrnet``, ``hrformer`` and ``oracle-ensemble``.

Training code builds networks with :func:`build_net` (``build_net("unet", UNetConfig(size="tiny"))``); every
network maps (N, 3, H, W) ImageNet-normalised RGB to ``{"heatmaps": (N, K, H/4, W/4), "keypoints": (N, K, 2)}``
(unit crop coordinates, see :mod:`wflwv.baselines.heatmaps`), and :func:`save_baseline_checkpoint` writes the
toolkit checkpoint that ``create_model(arch, weights=path)`` loads.
"""
from wflwv.baselines.common import (
    SIZES,
    HeatmapLandmarkModel,
    build_net,
    config_from_dict,
    count_parameters,
    get_arch,
    list_archs,
    load_baseline_checkpoint,
    make_baseline_checkpoint,
    make_config,
    save_baseline_checkpoint,
)
from wflwv.baselines.ensemble import OracleEnsemble, TTAVariant, make_oracle, parse_tta
from wflwv.baselines.heatmaps import (
    DEFAULT_SIGMA,
    HEATMAP_SIZE,
    average_heatmaps,
    combine_heatmaps,
    gaussian_heatmaps,
    heatmap_readout,
    normalise_heatmaps,
    points_to_heatmaps,
)
from wflwv.baselines.hrformer import HRFormerConfig, HRFormerNet
from wflwv.baselines.hrnet import HRNetConfig, HRNetNet, load_backbone_weights
from wflwv.baselines.unet import UNetConfig, UNetNet

__all__ = [
    "SIZES",
    "HeatmapLandmarkModel",
    "build_net",
    "config_from_dict",
    "count_parameters",
    "get_arch",
    "list_archs",
    "load_baseline_checkpoint",
    "make_baseline_checkpoint",
    "make_config",
    "save_baseline_checkpoint",
    "OracleEnsemble",
    "TTAVariant",
    "make_oracle",
    "parse_tta",
    "DEFAULT_SIGMA",
    "HEATMAP_SIZE",
    "average_heatmaps",
    "combine_heatmaps",
    "gaussian_heatmaps",
    "heatmap_readout",
    "normalise_heatmaps",
    "points_to_heatmaps",
    "HRFormerConfig",
    "HRFormerNet",
    "HRNetConfig",
    "HRNetNet",
    "load_backbone_weights",
    "UNetConfig",
    "UNetNet",
]
