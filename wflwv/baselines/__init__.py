"""Baseline and oracle models: heatmap networks (UNet, HRNet via timm, HRFormer), dlib's 68-point predictor, and
the oracle ensemble.

Nothing is imported here: the model registry (:mod:`wflwv.models.registry`) and the architecture registry
(:mod:`wflwv.models.archs`) name these modules lazily. Every network maps (N, 3, H, W) ImageNet-normalised RGB to
``{"heatmaps": (N, K, H/4, W/4), "keypoints": (N, K, 2)}`` (unit crop coordinates, see
:mod:`wflwv.baselines.heatmaps`); :mod:`wflwv.baselines.model` turns one into a harness model.
"""
