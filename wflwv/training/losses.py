"""Training losses. Each loss is a callable ``loss(output, batch) -> scalar tensor``.

``output`` is the network's dict (``"keypoints"`` (N, K, 2) in [0, 1] crop units, ``"heatmaps"``
(N, K, H, W) for heatmap models); ``batch`` is the data loader's dict with ``"keypoints"`` (N, K, 2) targets in
the same units. Heatmap targets are peak-1 Gaussians rendered on the fly at the output's resolution with
:func:`wflwv.baselines.heatmaps.gaussian_heatmaps` (keypoint ``x`` sits at heatmap column ``x * W``).

* ``keypoint_mse``: mean squared error of the keypoints (unit crop coordinates), LDEQ's loss.
* ``heatmap_mse``: squared error between predicted and Gaussian target heatmaps, each pixel weighted by
  ``1 + foreground_weight * target`` (see :class:`HeatmapMSE`; ``foreground_weight=0`` is the plain MSE).
* ``awing``: the adaptive wing loss on heatmaps (Wang et al., ICCV 2019), with its weighted loss map
  (pixels near a target peak, found by a 3 x 3 dilation of ``target >= 0.2``, weigh ``1 + W``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wflwv.baselines.heatmaps import gaussian_heatmaps

__all__ = ["LOSSES", "KeypointMSE", "HeatmapMSE", "AdaptiveWingLoss", "adaptive_wing", "make_loss", "target_heatmaps"]

LossFn = Callable[[dict, dict], torch.Tensor]


def _get(output: dict, key: str, loss: str) -> torch.Tensor:
    if not isinstance(output, dict) or key not in output:
        have = ", ".join(sorted(output)) if isinstance(output, dict) else type(output).__name__
        raise KeyError(f"loss {loss!r} needs the network output {key!r}, but the network returned: {have}")
    return output[key]


def target_heatmaps(keypoints: torch.Tensor, like: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian targets (N, K, H, W) for unit keypoints (N, K, 2), shaped and typed like ``like``."""
    if like.ndim != 4 or like.shape[:2] != keypoints.shape[:2]:
        raise ValueError(
            f"heatmaps of shape {tuple(like.shape)} do not match keypoints {tuple(keypoints.shape)} (want (N, K, H, W))"
        )
    return gaussian_heatmaps(keypoints.detach(), tuple(like.shape[-2:]), sigma).to(like.dtype)


@dataclass
class KeypointMSE:
    """Mean squared error of keypoints in unit crop coordinates."""

    name: str = "keypoint_mse"

    def __call__(self, output: dict, batch: dict) -> torch.Tensor:
        pred = _get(output, "keypoints", self.name)
        target = batch["keypoints"].to(pred.dtype)
        if pred.shape != target.shape:
            raise ValueError(
                f"predicted keypoints {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape"
            )
        return F.mse_loss(pred, target)


@dataclass
class HeatmapMSE:
    """Squared error between heatmaps and peak-1 Gaussian targets, weighted towards the landmarks.

    ``loss = mean over (N, K, H, W) of (1 + foreground_weight * target) * (pred - target)^2``.

    Why the weight: a Gaussian of width ``sigma`` covers about ``2 pi sigma^2`` cells (14 of the 4096 cells of
    a 64 x 64 map at ``sigma = 1.5``). With the plain mean (``foreground_weight = 0``) more than 99% of the
    pixels are background, and the all-zero output already has the small loss ``pi sigma^2 / (H W)``
    (0.0017); small networks fall to that flat output within a few dozen steps and stay there for hundreds
    (the arg-max readout of a flat map is noise, so the NME does not move). Scaling the loss (summing over
    the pixels instead of averaging) does not help, as Adam's steps do not depend on the loss scale; nor
    does a wider ``sigma`` alone. Weighting the pixels by the target does: with the default 100 the total
    weight of a 64 x 64 map is about ``4096 + 100 * 14``, so a quarter of the loss sits on the peaks while
    every background pixel still counts (spurious peaks stay penalised). The same idea as the weighted loss
    map of the adaptive wing loss, with a smooth weight instead of a thresholded mask.
    """

    sigma: float = 1.5
    foreground_weight: float = 100.0
    name: str = "heatmap_mse"

    def __post_init__(self):
        if not self.foreground_weight >= 0:
            raise ValueError(
                f"heatmap_mse: foreground_weight must be >= 0 (0 = plain MSE), got {self.foreground_weight}"
            )

    def __call__(self, output: dict, batch: dict) -> torch.Tensor:
        pred = _get(output, "heatmaps", self.name)
        target = target_heatmaps(batch["keypoints"], pred, self.sigma)
        if not self.foreground_weight:
            return F.mse_loss(pred, target)
        return ((1.0 + self.foreground_weight * target) * (pred - target) ** 2).mean()


def adaptive_wing(
    pred: torch.Tensor,
    target: torch.Tensor,
    omega: float = 14.0,
    theta: float = 0.5,
    epsilon: float = 1.0,
    alpha: float = 2.1,
) -> torch.Tensor:
    """Element-wise adaptive wing loss (same shape as the inputs).

    With ``d = |target - pred|`` and exponent ``p = alpha - target``: ``omega * log(1 + (d / epsilon)^p)``
    where ``d < theta``, otherwise the linear continuation ``A d - C`` that matches value and slope at
    ``theta``. Targets must lie in [0, 1] (so that ``p > 1`` for ``alpha > 2``).
    """
    d = (target - pred).abs()
    p = alpha - target
    r = theta / epsilon
    rp = torch.pow(torch.as_tensor(r, dtype=pred.dtype, device=pred.device), p)
    slope = omega * p * rp / (r * epsilon * (1.0 + rp))  # d/dd of omega*log(1+(d/eps)^p) at d = theta
    offset = theta * slope - omega * torch.log1p(rp)
    small = omega * torch.log1p(torch.pow(d / epsilon, p))
    return torch.where(d < theta, small, slope * d - offset)


@dataclass
class AdaptiveWingLoss:
    """Adaptive wing loss on heatmaps with the weighted loss map (``weight`` = W; 0 disables the map)."""

    sigma: float = 1.5
    omega: float = 14.0
    theta: float = 0.5
    epsilon: float = 1.0
    alpha: float = 2.1
    weight: float = 10.0
    mask_threshold: float = 0.2
    name: str = "awing"

    def __call__(self, output: dict, batch: dict) -> torch.Tensor:
        pred = _get(output, "heatmaps", self.name)
        target = target_heatmaps(batch["keypoints"], pred, self.sigma)
        loss = adaptive_wing(pred, target, self.omega, self.theta, self.epsilon, self.alpha)
        if self.weight:
            n, k, h, w = target.shape
            near = F.max_pool2d((target >= self.mask_threshold).to(pred.dtype).reshape(n * k, 1, h, w), 3, 1, 1)
            loss = loss * (1.0 + self.weight * near.reshape(n, k, h, w))
        return loss.mean()


#: loss name -> factory (keyword arguments are the dataclass fields)
LOSSES: dict[str, type] = {"keypoint_mse": KeypointMSE, "heatmap_mse": HeatmapMSE, "awing": AdaptiveWingLoss}


def make_loss(name: str, **kwargs) -> LossFn:
    """Build a loss by name (one of :data:`LOSSES`), e.g. ``make_loss("heatmap_mse", sigma=2.0)``."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}") from None
    return cls(**kwargs)
