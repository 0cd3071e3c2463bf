"""HRNet heatmap network: a timm HRNet backbone with the usual landmark head (HRNetV2-style).

The backbone keeps four parallel branches at strides 4, 8, 16 and 32 (64, 32, 16 and 8 pixels for a 256 crop).
The head up-samples every branch to the stride-4 grid (bilinear), concatenates them, mixes them with a 1x1 conv
+ BatchNorm + ReLU and predicts the K heatmaps with a final 1x1 conv.

Backbones come from :mod:`timm` (``timm.create_model(name, features_only=True, pretrained=False,
feature_location="")``, i.e. the branch outputs themselves, without timm's classification "incre" blocks) and are
never downloaded: ImageNet weights are used only when a local timm checkpoint file is passed
(``pretrained_backbone=PATH`` to the ``hrnet`` model factory, or :func:`load_backbone_weights`). The ``tiny``
preset builds timm's HRNet class from a reduced stage configuration (``backbone="custom"``), for CPU tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from wflwv.baselines.model import apply_size_preset, create_baseline_model, heatmap_head_outputs
from wflwv.models.checkpoints import CheckpointError, inspect_file, torch_load

__all__ = ["HRNetConfig", "HRNetNet", "hrnet_model", "load_backbone_weights", "TIMM_BACKBONES"]

#: timm HRNet variants usable as ``HRNetConfig.backbone``.
TIMM_BACKBONES = (
    "hrnet_w18_small",
    "hrnet_w18_small_v2",
    "hrnet_w18",
    "hrnet_w30",
    "hrnet_w32",
    "hrnet_w40",
    "hrnet_w44",
    "hrnet_w48",
    "hrnet_w64",
)


@dataclass
class HRNetConfig:
    """Configuration of :class:`HRNetNet`. Fields left at ``None`` are filled from the ``size`` preset.

    Parameter counts with 98 landmarks: tiny 0.26M, small 1.6M, base 9.7M, large 66M.
    """

    num_landmarks: int = 98  # K, number of heatmaps
    size: str = "base"  # preset for the None fields: "tiny", "small", "base" or "large"
    # timm variant (tiny "custom", small "hrnet_w18_small", base "hrnet_w18", large "hrnet_w48")
    backbone: str | None = None
    head_width: int | None = None  # channels of the head's 1x1 mixing conv (= sum of branch widths in presets)
    width: int | None = None  # "custom" only: branch widths are (w, 2w, 4w, 8w) (tiny 8)
    blocks: int | None = None  # "custom" only: residual blocks per branch (tiny 1)
    stem_width: int | None = None  # "custom" only: channels of the first stride-2 conv (tiny 16)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(backbone="custom", head_width=120, width=8, blocks=1, stem_width=16),
        "small": dict(backbone="hrnet_w18_small", head_width=240),
        "base": dict(backbone="hrnet_w18", head_width=270),
        "large": dict(backbone="hrnet_w48", head_width=720),
    }

    def __post_init__(self) -> None:
        apply_size_preset(self, self.PRESETS)
        if self.backbone == "custom":
            if not all(isinstance(v, int) and v > 0 for v in (self.width, self.blocks, self.stem_width)):
                raise ValueError(
                    "HRNetConfig(backbone='custom') needs positive integers width, blocks and stem_width, "
                    f"got width={self.width}, blocks={self.blocks}, stem_width={self.stem_width}"
                )
        elif self.backbone not in TIMM_BACKBONES:
            raise ValueError(
                f"unknown HRNet backbone {self.backbone!r}; use 'custom' or one of {', '.join(TIMM_BACKBONES)}"
            )
        if not isinstance(self.head_width, int) or self.head_width < 1:
            raise ValueError(f"head_width must be a positive integer, got {self.head_width!r}")


def _custom_stage_cfg(width: int, blocks: int, stem_width: int) -> dict[str, Any]:
    """A timm HRNet stage configuration with branch widths (w, 2w, 4w, 8w) and one module per stage."""

    def stage(n: int, block: str, channels: tuple[int, ...]) -> dict[str, Any]:
        return dict(
            num_modules=1,
            num_branches=n,
            block_type=block,
            num_blocks=(blocks,) * n,
            num_channels=channels,
            fuse_method="SUM",
        )

    w = width
    return dict(
        stem_width=stem_width,
        stage1=stage(1, "BOTTLENECK", (w,)),
        stage2=stage(2, "BASIC", (w, 2 * w)),
        stage3=stage(3, "BASIC", (w, 2 * w, 4 * w)),
        stage4=stage(4, "BASIC", (w, 2 * w, 4 * w, 8 * w)),
    )


def _make_backbone(config: HRNetConfig) -> nn.Module:
    """The timm HRNet feature extractor returning the four branch outputs (strides 4, 8, 16, 32)."""
    import timm

    if config.backbone == "custom":
        from timm.models.hrnet import HighResolutionNetFeatures

        cfg = _custom_stage_cfg(config.width, config.blocks, config.stem_width)
        return HighResolutionNetFeatures(cfg, feature_location="", out_indices=(1, 2, 3, 4))
    return timm.create_model(
        config.backbone, features_only=True, pretrained=False, feature_location="", out_indices=(1, 2, 3, 4)
    )


class HRNetNet(nn.Module):
    """HRNet heatmap network: (N, 3, H, W) normalised RGB -> heatmaps (N, K, H/4, W/4) and keypoints (N, K, 2).

    H and W must be multiples of 32 (256 always works).
    """

    def __init__(self, config: HRNetConfig):
        super().__init__()
        self.config = config
        self.backbone = _make_backbone(config)
        channels = list(self.backbone.feature_info.channels())
        self.branch_channels = channels
        self.head = nn.Sequential(
            nn.Conv2d(sum(channels), config.head_width, 1, bias=False),
            nn.BatchNorm2d(config.head_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(config.head_width, config.num_landmarks, 1),
        )
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (N, 3, H, W) ImageNet-normalised -> {"heatmaps": (N, K, H/4, W/4), "keypoints": (N, K, 2)}."""
        feats = self.backbone(images)
        size = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return heatmap_head_outputs(self.head(torch.cat(up, dim=1)))


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    what = "timm HRNet ImageNet checkpoint"
    kind, desc = inspect_file(path)
    if kind == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors ships with timm
            raise ImportError(f"reading {path} needs the 'safetensors' package (pip install safetensors)") from exc
        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors' messages do not name the file
            raise CheckpointError(
                f"{path} is {desc} but it cannot be read ({type(exc).__name__}: truncated or damaged); expected a "
                f"{what} (.pth, .bin or .safetensors)"
            ) from None
    else:
        state = torch_load(path, what=what)
    # unwrap the usual containers and DataParallel prefixes
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors; expected a {what}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def load_backbone_weights(net: HRNetNet, path: str | Path) -> list[str]:
    """Load ImageNet weights of a timm HRNet into ``net.backbone`` from a local checkpoint file.

    The file is a timm / PyTorch state dict (``.pth``, ``.bin`` or ``.safetensors``) of the classification
    model named by ``net.config.backbone``; its classification-head entries (``incre_modules``,
    ``downsamp_modules``, ``final_layer``, ``classifier``) are ignored.

    Returns:
        The ignored key names.
    Raises:
        FileNotFoundError: no such file. CheckpointError (a ValueError): not a readable checkpoint (the message says
        what the file is instead). ValueError: keys / shapes that do not match the backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone file {str(path)!r} does not exist")
    if net.config.backbone == "custom":
        raise ValueError("the 'custom' (tiny) HRNet backbone has no ImageNet weights; use a timm backbone size")
    state = _read_weight_file(path)
    own = net.backbone.state_dict()
    missing = [k for k in own if k not in state]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs backbone {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or shapes:
        detail = "; ".join(
            part
            for part in (
                f"missing keys: {', '.join(missing[:10])}"
                + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
                if missing
                else "",
                f"shape mismatches: {', '.join(shapes[:10])}" if shapes else "",
            )
            if part
        )
        raise ValueError(
            f"{path} does not match the {net.config.backbone} backbone (is it a checkpoint of that timm model?): {detail}"
        )
    net.backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    return sorted(k for k in state if k not in own)


def hrnet_model(
    weights: str | None = None,
    size: str | None = None,
    num_landmarks: int | None = None,
    scheme: str | None = None,
    pretrained_backbone: str | None = None,
    seed: int = 0,
    **overrides: Any,
):
    """HRNet heatmap baseline via timm (sizes tiny/small/base/large; weights=PATH loads a toolkit checkpoint).

    Args:
        weights: toolkit checkpoint (``{"arch": "hrnet", "config", "scheme", "state_dict"}``); its config wins.
        size: preset (default ``base`` = HRNet-W18) when building from scratch.
        num_landmarks: K (default 98).
        scheme: landmark scheme (default: from K).
        pretrained_backbone: local timm ImageNet checkpoint of the backbone to start from (never downloaded).
        seed: random initialisation of whatever no file provides (recorded with the model's configuration).
        **overrides: any :class:`HRNetConfig` field (``backbone``, ``head_width``, ``width``, ...).
    """
    if pretrained_backbone is not None and weights is not None:
        raise ValueError("pass either weights (a trained checkpoint) or pretrained_backbone, not both")
    after = (lambda net: load_backbone_weights(net, pretrained_backbone)) if pretrained_backbone else None
    model = create_baseline_model(
        "hrnet", weights, size, num_landmarks, scheme, overrides, after_build=after, seed=seed
    )
    if pretrained_backbone is not None:
        model.extra_config["pretrained_backbone"] = str(pretrained_backbone)
    return model
