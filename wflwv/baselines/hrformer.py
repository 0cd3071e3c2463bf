"""HRFormer-style heatmap network: HRNet's parallel resolutions with local-window self-attention blocks.

timm does not ship HRFormer, so this is a compact implementation of the idea (Yuan et al., NeurIPS 2021):

* **stem**: two 3x3 stride-2 convs (to 1/4 resolution) and ``stem_blocks`` residual conv blocks.
* **stages 2-4** keep 2, 3 and 4 parallel branches at strides 4, 8, 16, 32 (a new, coarser branch is made from
  the coarsest one by a 3x3 stride-2 conv when a stage starts). A stage has ``modules[s]`` modules; a module runs
  ``blocks`` transformer blocks on every branch and then *fuses* the branches: each branch receives the sum of
  all branches resampled to its resolution (finer -> coarser: depthwise-separable 3x3 stride-2 convs; coarser ->
  finer: 1x1 conv + bilinear up-sampling).
* **transformer block** (pre-norm): ``x + WindowAttention(LN(x))`` then ``x + FFN(LN(x))``. Attention is multi-head
  self-attention inside non-overlapping ``window x window`` windows with a learned relative-position bias; the
  FFN is 1x1 conv -> GELU -> depthwise 3x3 conv -> GELU -> 1x1 conv, the depthwise conv letting information cross
  window borders.
* **head**: as :mod:`wflwv.baselines.hrnet` (up-sample all branches to 1/4, concat, 1x1 conv + BN + ReLU, 1x1 conv).

Inputs whose branch sizes are not multiples of the window are padded, and padded positions are masked out of
the attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from wflwv.baselines.model import apply_size_preset, baseline_factory, heatmap_head_outputs

__all__ = ["HRFormerConfig", "HRFormerNet", "hrformer_model", "WindowAttention", "HRFormerBlock"]


@dataclass
class HRFormerConfig:
    """Configuration of :class:`HRFormerNet`. Fields left at ``None`` are filled from the ``size`` preset.

    Presets ``small`` / ``base`` / ``large`` follow the widths of HRFormer-T / -S / -B. Parameter counts with
    98 landmarks: tiny 0.14M, small 2.5M, base 7.9M, large 45M.
    """

    num_landmarks: int = 98  # K, number of heatmaps
    size: str = "base"  # preset for the None fields: "tiny", "small", "base" or "large"
    # channels of the branches at strides 4, 8, 16, 32 (tiny 8-64, small 18-144, base 32-256, large 78-624)
    widths: tuple[int, int, int, int] | None = None
    heads: tuple[int, int, int, int] | None = None  # attention heads per branch (tiny 1,1,2,4; large 2,4,8,16)
    modules: tuple[int, int, int] | None = None  # modules in stages 2, 3, 4 (tiny 1,1,1; small 1,3,2; others 1,4,2)
    blocks: int | None = None  # transformer blocks per branch and module (tiny 1, others 2)
    window: int | None = None  # side of the attention windows, in cells of each branch (8 everywhere)
    mlp_ratio: float | None = None  # FFN hidden width / branch width (tiny 2, others 4)
    stem_width: int | None = None  # channels of the stem and stage 1 (tiny 16, others 64)
    stem_blocks: int | None = None  # residual conv blocks in stage 1 (tiny 1, others 2)
    head_width: int | None = None  # channels of the head's 1x1 mixing conv (= sum of the widths in presets)

    # fmt: off
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(widths=(8, 16, 32, 64), heads=(1, 1, 2, 4), modules=(1, 1, 1), blocks=1, window=8, mlp_ratio=2.0, stem_width=16, stem_blocks=1, head_width=120),
        "small": dict(widths=(18, 36, 72, 144), heads=(1, 2, 4, 8), modules=(1, 3, 2), blocks=2, window=8, mlp_ratio=4.0, stem_width=64, stem_blocks=2, head_width=270),
        "base": dict(widths=(32, 64, 128, 256), heads=(1, 2, 4, 8), modules=(1, 4, 2), blocks=2, window=8, mlp_ratio=4.0, stem_width=64, stem_blocks=2, head_width=480),
        "large": dict(widths=(78, 156, 312, 624), heads=(2, 4, 8, 16), modules=(1, 4, 2), blocks=2, window=8, mlp_ratio=4.0, stem_width=64, stem_blocks=2, head_width=1170),
    }
    # fmt: on

    def __post_init__(self) -> None:
        apply_size_preset(self, self.PRESETS)
        if len(self.widths) != 4 or len(self.heads) != 4 or len(self.modules) != 3:
            raise ValueError("HRFormerConfig needs 4 widths, 4 heads and 3 module counts (stages 2-4)")
        for w, h in zip(self.widths, self.heads):
            if w % h:
                raise ValueError(f"branch width {w} is not divisible by its {h} attention heads")
        if min(self.modules) < 1 or self.blocks < 1 or self.window < 1 or self.mlp_ratio <= 0:
            raise ValueError(f"invalid HRFormerConfig: {self}")


# ------------------------------------------------------------------------------------------- attention
class WindowAttention(nn.Module):
    """Multi-head self-attention within non-overlapping square windows, with relative-position bias.

    Input and output: (B, H, W, C) channels-last maps.
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # one learned bias per head and relative offset (dy, dx) in [-(w-1), w-1]^2
        self.rel_bias = nn.Parameter(torch.zeros(heads, (2 * window - 1) ** 2))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        yy, xx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        pos = torch.stack([yy.flatten(), xx.flatten()], dim=1)  # (T, 2)
        rel = pos[:, None, :] - pos[None, :, :] + (window - 1)  # (T, T, 2) in [0, 2w-2]
        self.register_buffer("rel_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        ph, pw = (-h) % ws, (-w) % ws
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        nh, nw = hp // ws, wp // ws
        # (B, nh, ws, nw, ws, C) -> (B * nh * nw, ws * ws, C)
        tokens = x.view(b, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        q, k, v = self.qkv(tokens).view(tokens.shape[0], ws * ws, 3, self.heads, c // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B', heads, T, d)
        bias = self.rel_bias[:, self.rel_index].unsqueeze(0)  # (1, heads, T, T)
        if ph or pw:
            valid = torch.zeros(hp, wp, dtype=torch.bool, device=x.device)
            valid[:h, :w] = True
            valid = valid.view(nh, ws, nw, ws).permute(0, 2, 1, 3).reshape(nh * nw, 1, 1, ws * ws)
            mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device).masked_fill(~valid, float("-inf"))
            bias = (bias + mask).repeat(b, 1, 1, 1)  # (B * nh * nw, heads, T, T), padded keys excluded
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out = self.proj(out.transpose(1, 2).reshape(-1, ws * ws, c))
        out = out.view(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        return out[:, :h, :w]


class HRFormerBlock(nn.Module):
    """Pre-norm transformer block on a (B, C, H, W) map: window attention, then a depthwise-conv FFN."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        y = y + self.attn(self.norm1(y))
        z = self.ffn(self.norm2(y).permute(0, 3, 1, 2))
        return y.permute(0, 3, 1, 2) + z


# ---------------------------------------------------------------------------------------- conv pieces
def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _ResBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity shortcut."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(dim, dim), _conv_bn(dim, dim, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def _downsample(cin: int, cout: int, steps: int) -> nn.Sequential:
    """``steps`` depthwise-separable stride-2 convs (cin -> ... -> cout), ReLU between steps."""
    layers: list[nn.Module] = []
    for s in range(steps):
        last = s == steps - 1
        layers += [
            _conv_bn(cin, cin, 3, stride=2, groups=cin, relu=False),
            _conv_bn(cin, cout if last else cin, 1, relu=not last),
        ]
    return nn.Sequential(*layers)


class _Fuse(nn.Module):
    """Exchange information between n branches: out_i = sum_j resample_{j->i}(x_j)."""

    def __init__(self, widths: list[int]):
        super().__init__()
        n = len(widths)
        self.paths = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(_conv_bn(widths[j], widths[i], 1, relu=False))  # then up-sample
                else:
                    row.append(_downsample(widths[j], widths[i], i - j))
            self.paths.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, row in enumerate(self.paths):
            total = xs[i]
            for j, path in enumerate(row):
                if j == i:
                    continue
                y = path(xs[j])
                if y.shape[-2:] != xs[i].shape[-2:]:
                    y = F.interpolate(y, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
                total = total + y
            out.append(total)
        return out


class _Module(nn.Module):
    """One multi-resolution module: transformer blocks on every branch, then fusion."""

    def __init__(self, config: HRFormerConfig, n: int):
        super().__init__()
        c = config
        self.branches = nn.ModuleList(
            nn.Sequential(*[HRFormerBlock(c.widths[i], c.heads[i], c.window, c.mlp_ratio) for _ in range(c.blocks)])
            for i in range(n)
        )
        self.fuse = _Fuse(list(c.widths[:n]))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.fuse([branch(x) for branch, x in zip(self.branches, xs)])


# ------------------------------------------------------------------------------------------------ net
class HRFormerNet(nn.Module):
    """HRFormer heatmap network: (N, 3, H, W) normalised RGB -> heatmaps (N, K, H/4, W/4), keypoints (N, K, 2).

    H and W must be multiples of 32 (256 always works).
    """

    def __init__(self, config: HRFormerConfig):
        super().__init__()
        self.config = config
        c = config
        self.stem = nn.Sequential(
            _conv_bn(3, c.stem_width, 3, stride=2),
            _conv_bn(c.stem_width, c.stem_width, 3, stride=2),
            *[_ResBlock(c.stem_width) for _ in range(c.stem_blocks)],
        )
        # stage-1 output -> the two branches of stage 2
        self.to_branch0 = _conv_bn(c.stem_width, c.widths[0], 1)
        # new coarser branch at the start of stages 2, 3, 4 (from the coarsest existing branch)
        self.new_branch = nn.ModuleList(
            [_conv_bn(c.stem_width, c.widths[1], 3, stride=2)]
            + [_conv_bn(c.widths[s - 1], c.widths[s], 3, stride=2) for s in (2, 3)]
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(_Module(c, n_branches) for _ in range(c.modules[n_branches - 2])) for n_branches in (2, 3, 4)
        )
        self.head = nn.Sequential(
            nn.Conv2d(sum(c.widths), c.head_width, 1, bias=False),
            nn.BatchNorm2d(c.head_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(c.head_width, c.num_landmarks, 1),
        )
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (N, 3, H, W) ImageNet-normalised -> {"heatmaps": (N, K, H/4, W/4), "keypoints": (N, K, 2)}."""
        x = self.stem(images)
        xs = [self.to_branch0(x), self.new_branch[0](x)]
        for s, stage in enumerate(self.stages):
            if s > 0:
                xs.append(self.new_branch[s](xs[-1]))
            for module in stage:
                xs = module(xs)
        size = xs[0].shape[-2:]
        up = [xs[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in xs[1:]]
        return heatmap_head_outputs(self.head(torch.cat(up, dim=1)))


hrformer_model = baseline_factory(
    "hrformer", "HRFormer-style heatmap baseline", ", HRFormer-S widths", "``widths``, ``heads``, ``window``, ..."
)
