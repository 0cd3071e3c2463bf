"""Heatmap conventions shared by the baseline networks and the oracle ensemble.

Coordinates
-----------
Three coordinate systems appear, all with x first (column) and y second (row):

* **unit** coordinates ``u`` in ``[0, 1]`` over the crop: what the networks return as ``"keypoints"``.
* **crop pixels**: ``p = u * 256`` (:data:`wflwv.models.api.CROP_SIZE`), the harness's unit.
* **heatmap cells** of an ``(H, W)`` map: ``j = u * W`` (column), ``i = v * H`` (row). Cell ``(i, j)`` therefore
  stands for the crop pixel ``(j * 256 / W, i * 256 / H)``; on the usual 64 x 64 map cell ``(i, j)`` is crop pixel
  ``(4 j, 4 i)``. This is the convention of the released LDEQ code (keypoint ``x = j / W``), so heatmaps of all
  the toolkit's models can be averaged cell by cell.

Targets and readout
-------------------
A target heatmap is an unnormalised isotropic Gaussian with peak 1, ``exp(-((j - x)^2 + (i - y)^2) / (2 sigma^2))``
with ``(x, y)`` the landmark in heatmap cells and ``sigma`` in heatmap cells (default 1.5 cells = 6 crop pixels
on a 64 x 64 map). It is not truncated.

The readout (:func:`heatmap_readout`) takes the arg-max cell and refines each axis by fitting a parabola to the
*logarithm* of the three values around it (the stencil is moved inwards at the border). The log of a sampled
Gaussian is exactly quadratic along a row or column, so the readout recovers the centre of a target heatmap
exactly (up to float rounding), wherever it lies on the map. On real network output it behaves like the
classic "quarter-pixel towards the higher neighbour" rule, but with a continuous offset: the refined position
always stays within half a cell of the arg-max (values are floored at ``1e-6`` times the peak before the log;
a map whose maximum is <= 0 reads out at its arg-max cell).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "HEATMAP_SIZE",
    "DEFAULT_SIGMA",
    "gaussian_heatmaps",
    "points_to_heatmaps",
    "heatmap_readout",
    "normalise_heatmaps",
    "average_heatmaps",
    "combine_heatmaps",
]

#: Side of the heatmaps the baseline networks output for a 256 x 256 crop (stride 4).
HEATMAP_SIZE = 64
#: Default Gaussian width of target heatmaps, in heatmap cells.
DEFAULT_SIGMA = 1.5

# relative floor applied before the log in the readout (guards zeros / negatives in network output)
_LOG_FLOOR = 1e-6


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def gaussian_heatmaps(
    points: torch.Tensor | np.ndarray,
    size: int | Sequence[int] = HEATMAP_SIZE,
    sigma: float = DEFAULT_SIGMA,
) -> torch.Tensor:
    """Render target heatmaps: one peak-1 Gaussian per landmark.

    Args:
        points: (..., K, 2) landmarks in **unit** crop coordinates (x, y in [0, 1]; values outside render the
            Gaussian's tail only).
        size: heatmap side ``S`` or ``(H, W)``.
        sigma: Gaussian standard deviation in heatmap cells (> 0).
    Returns:
        (..., K, H, W) float tensor (float32 unless ``points`` is a float64 tensor), on ``points``'s device.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 (heatmap cells), got {sigma}")
    h, w = _size_hw(size)
    pts = torch.as_tensor(points)
    if not pts.is_floating_point():
        pts = pts.float()
    if pts.dtype not in (torch.float32, torch.float64):
        pts = pts.float()
    if pts.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., K, 2), got {tuple(pts.shape)}")
    x = pts[..., 0] * w  # (..., K) in cells
    y = pts[..., 1] * h
    cols = torch.arange(w, dtype=pts.dtype, device=pts.device)
    rows = torch.arange(h, dtype=pts.dtype, device=pts.device)
    gx = torch.exp(-((cols - x[..., None]) ** 2) / (2 * sigma**2))  # (..., K, W)
    gy = torch.exp(-((rows - y[..., None]) ** 2) / (2 * sigma**2))  # (..., K, H)
    return gy[..., :, None] * gx[..., None, :]


def points_to_heatmaps(
    points_px: torch.Tensor | np.ndarray,
    size: int | Sequence[int] = HEATMAP_SIZE,
    sigma: float = DEFAULT_SIGMA,
    crop_size: int = 256,
) -> torch.Tensor:
    """Gaussian heatmaps around point predictions given in crop pixels (for ensembling point-only models).

    Args:
        points_px: (..., K, 2) crop-pixel landmarks.
        size, sigma: as in :func:`gaussian_heatmaps` (sigma in heatmap cells).
        crop_size: side of the crop in pixels.
    Returns:
        (..., K, H, W) heatmaps.
    """
    pts = torch.as_tensor(points_px)
    if not pts.is_floating_point():
        pts = pts.float()
    return gaussian_heatmaps(pts / crop_size, size, sigma)


def _gather_hw(hm: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Values of (B, H, W) maps at integer (B,) rows and cols."""
    b = torch.arange(hm.shape[0], device=hm.device)
    return hm[b, rows, cols]


def _log_parabola(left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Vertex offset (relative to the middle sample) of the parabola through three log-values."""
    denom = left - 2 * mid + right
    ok = denom < -1e-12
    safe = torch.where(ok, denom, torch.full_like(denom, -1.0))
    return torch.where(ok, 0.5 * (left - right) / safe, torch.zeros_like(denom))


def heatmap_readout(heatmaps: torch.Tensor) -> torch.Tensor:
    """Sub-pixel landmark positions of heatmaps (arg-max refined by a log-parabola fit, see module docstring).

    Args:
        heatmaps: (..., K, H, W) tensor (any real values; H, W >= 1).
    Returns:
        (..., K, 2) positions in **unit** crop coordinates (``x = column / W``, ``y = row / H``), same dtype
        as ``heatmaps`` (float32 for integer input). Gradients flow through the values around each peak.
    """
    hm = torch.as_tensor(heatmaps)
    if not hm.is_floating_point():
        hm = hm.float()
    if hm.ndim < 3:
        raise ValueError(f"heatmaps must have shape (..., K, H, W), got {tuple(hm.shape)}")
    lead = hm.shape[:-2]
    h, w = hm.shape[-2:]
    flat = hm.reshape(-1, h, w)
    idx = flat.reshape(flat.shape[0], -1).argmax(dim=1)
    iy, ix = idx // w, idx % w
    peak = _gather_hw(flat, iy, ix)
    floor = torch.clamp(peak.detach() * _LOG_FLOOR, min=1e-30)

    def logv(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.maximum(_gather_hw(flat, rows, cols), floor))

    coords = []
    for is_x, axis_len, centre in ((True, w, ix), (False, h, iy)):
        if axis_len < 3:
            coords.append(centre.to(hm.dtype))
            continue
        c = centre.clamp(1, axis_len - 2)  # stencil centre, moved inwards at the border
        if is_x:
            vals = [logv(iy, c + d) for d in (-1, 0, 1)]
        else:
            vals = [logv(c + d, ix) for d in (-1, 0, 1)]
        pos = c.to(hm.dtype) + _log_parabola(*vals)
        pos = torch.minimum(torch.maximum(pos, centre - 0.5), centre + 0.5)
        coords.append(pos)
    x, y = coords
    valid = peak > 0
    x = torch.where(valid, x, ix.to(hm.dtype))
    y = torch.where(valid, y, iy.to(hm.dtype))
    out = torch.stack([x / w, y / h], dim=-1)
    return out.reshape(*lead, 2)


def normalise_heatmaps(heatmaps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Clamp heatmaps at 0 and scale each map to sum 1 (maps with no positive mass become all zeros).

    Args:
        heatmaps: (..., H, W).
    Returns:
        (..., H, W) non-negative maps summing to 1 (or 0).
    """
    hm = torch.clamp(torch.as_tensor(heatmaps), min=0)
    total = hm.sum(dim=(-2, -1), keepdim=True)
    return torch.where(total > eps, hm / torch.clamp(total, min=eps), torch.zeros_like(hm))


def average_heatmaps(member_heatmaps: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of the members' non-negative, sum-normalised heatmaps.

    Normalising to unit mass makes an uncertain member (a spread-out map) weigh less at the peak than a confident
    one, as in the paper's oracle.

    Args:
        member_heatmaps: (M, N, K, H, W) tensor or a list of M (N, K, H, W) tensors of equal shape.
    Returns:
        (N, K, H, W) averaged heatmaps (each map sums to 1 unless all members were empty there).
    """
    if isinstance(member_heatmaps, (list, tuple)):
        if not member_heatmaps:
            raise ValueError("average_heatmaps needs at least one member")
        shapes = {tuple(m.shape) for m in member_heatmaps}
        if len(shapes) != 1:
            raise ValueError(f"member heatmaps must share a shape (N, K, H, W), got {sorted(shapes)}")
        member_heatmaps = torch.stack([torch.as_tensor(m) for m in member_heatmaps])
    hm = torch.as_tensor(member_heatmaps)
    if hm.ndim != 5:
        raise ValueError(f"member heatmaps must be (M, N, K, H, W), got {tuple(hm.shape)}")
    return normalise_heatmaps(hm).mean(dim=0)


def combine_heatmaps(
    member_heatmaps: torch.Tensor | Sequence[torch.Tensor],
    member_points: torch.Tensor | np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ensemble helper: average heatmaps, read the landmarks out, measure the members' disagreement.

    Args:
        member_heatmaps: (M, N, K, H, W) (or a list of M (N, K, H, W)) heatmaps, all in the same frame.
        member_points: optional (M, N, K, 2) member landmarks in unit crop coordinates; when omitted each
            member's own heatmap readout is used.
    Returns:
        ``(mean_heatmaps, keypoints, variance)``: (N, K, H, W) averaged heatmaps, (N, K, 2) unit-coordinate
        readout of the average, and (N, K) per-landmark variance of the member points (variance of x plus
        variance of y over the M members, population variance, unit coordinates squared).
    """
    mean = average_heatmaps(member_heatmaps)
    if member_points is None:
        hm = member_heatmaps if isinstance(member_heatmaps, torch.Tensor) else torch.stack(list(member_heatmaps))
        member_points = heatmap_readout(hm)
    pts = torch.as_tensor(member_points, dtype=mean.dtype)
    if pts.ndim != 4 or pts.shape[1:3] != mean.shape[:2] or pts.shape[-1] != 2:
        raise ValueError(
            f"member points must be (M, N, K, 2) matching the heatmaps' N, K = {tuple(mean.shape[:2])}, "
            f"got {tuple(pts.shape)}"
        )
    variance = pts.var(dim=0, unbiased=False).sum(dim=-1)
    return mean, heatmap_readout(mean), variance
