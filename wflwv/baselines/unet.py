"""UNet heatmap network: a stride-4 convolutional stem followed by a UNet working at 1/4 resolution.

Layout for a 256 x 256 crop (``w`` = :attr:`UNetConfig.width`, ``d`` = :attr:`UNetConfig.depth`)::

    stem     3x3 conv stride 2 (-> w/2, 128 x 128), 3x3 conv stride 2 (-> w, 64 x 64)
    encoder  level 0 at 64 x 64 with w channels; level l at 64 / 2^l with min(w * 2^l, max_width) channels,
             each level = two (3x3 conv, BatchNorm, ReLU), max-pool 2 between levels
    decoder  for l = d-1 .. 0: bilinear x2 up-sampling, concat with the encoder's level-l output, two convs
    head     1x1 conv -> K heatmaps at 64 x 64 (raw regression output)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from wflwv.baselines.model import apply_size_preset, baseline_factory, heatmap_head_outputs

__all__ = ["UNetConfig", "UNetNet", "unet_model"]


@dataclass
class UNetConfig:
    """Configuration of :class:`UNetNet`. Fields left at ``None`` are filled from the ``size`` preset.

    Parameter counts with 98 landmarks: tiny 0.08M, small 7.9M, base 31M, large 71M.
    """

    num_landmarks: int = 98  # K, number of heatmaps
    size: str = "base"  # preset for the None fields: "tiny", "small", "base" or "large"
    width: int | None = None  # channels at 1/4 resolution (tiny 8, small 32, base 64, large 96)
    depth: int | None = None  # down-sampling steps below 1/4 resolution (tiny 3, others 4: 64 -> 4 px)
    max_width: int | None = None  # channel cap of the deepest levels (tiny 32, small 512, base 1024, large 1536)
    stem_width: int | None = None  # channels after the first stride-2 conv (tiny 8, small 16, base 32, large 48)
    input_size: int | None = None  # resize crops to this side first (e.g. 128 for a fast CPU model); None: as given

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(width=8, depth=3, max_width=32, stem_width=8),
        "small": dict(width=32, depth=4, max_width=512, stem_width=16),
        "base": dict(width=64, depth=4, max_width=1024, stem_width=32),
        "large": dict(width=96, depth=4, max_width=1536, stem_width=48),
    }

    def __post_init__(self) -> None:
        apply_size_preset(self, self.PRESETS)
        if self.depth < 1 or self.width < 1 or self.max_width < self.width or self.stem_width < 1:
            raise ValueError(f"invalid UNetConfig: need depth >= 1, width >= 1, max_width >= width; got {self}")


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(_conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout))


class UNetNet(nn.Module):
    """UNet heatmap network: (N, 3, H, W) normalised RGB -> heatmaps (N, K, H/4, W/4) and keypoints (N, K, 2).

    H and W must be multiples of ``4 * 2^depth`` (256 always works).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        w, d = config.width, config.depth
        widths = [min(w * 2**level, config.max_width) for level in range(d + 1)]
        self.stem = nn.Sequential(_conv_bn_relu(3, config.stem_width, 2), _conv_bn_relu(config.stem_width, w, 2))
        self.down = nn.ModuleList(
            [_DoubleConv(w, widths[0])] + [_DoubleConv(widths[i - 1], widths[i]) for i in range(1, d + 1)]
        )
        self.up = nn.ModuleList([_DoubleConv(widths[i] + widths[i + 1], widths[i]) for i in range(d)])
        self.head = nn.Conv2d(widths[0], config.num_landmarks, 1)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (N, 3, H, W) ImageNet-normalised -> {"heatmaps": (N, K, H/4, W/4), "keypoints": (N, K, 2)}.

        With ``config.input_size`` set, images are first resized to that side (heatmaps then have side
        input_size / 4; keypoints are unit crop coordinates either way).
        """
        size = self.config.input_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = self.stem(images)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        return heatmap_head_outputs(self.head(x))


unet_model = baseline_factory(
    "unet", "UNet heatmap baseline", "", "``width``, ``depth``, ``max_width``, ``stem_width``"
)
