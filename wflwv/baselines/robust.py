"""Robust, spread-weighted combination of point votes (the oracle's alternative to heatmap averaging).

An oracle ensemble collects many votes for every landmark: each member on each test-time-augmented crop. Heatmap
averaging (:mod:`wflwv.baselines.ensemble`) turns point votes into Gaussians, averages and reads the peak out on a
grid; here the votes stay points and are combined in two steps:

1. **Per member** (:func:`robust_location` over its variants): a location and a *spread*, the (weighted) variance of
   the member's own votes around it. A member that answers the same face differently when the crop moves by a
   fraction of a pixel has a large spread: it is noisy there.
2. **Across members** (:func:`combine_members`): an iteratively reweighted mean of the member locations with a
   prior weight per member times a robustness factor that falls to zero for a member far from the consensus
   (Hampel's three-part redescending weight of the distance in units of the members' spread and the robust scale of
   their disagreement, never less than ``min_scale``). The prior weight is ``1 / (spread_m + floor)`` (inverse
   variance: steady members count more) or fixed numbers.

With no outlier (every standardised distance <= ``a``) the result is exactly the prior-weighted mean, hence the
plain mean when the spreads are equal; a member beyond ``c`` robust scales gets weight 0 and does not move the
result at all; in between its weight falls continuously.

**Weights that change from frame to frame make labels flicker.** Members disagree by a few pixels in a steady way
(dlib's and face-api's jaw lines differ by conventions, not by noise); any per-frame change of their weights moves
the label along that disagreement. Measured on exact-motion clips (docs/oracle.md), per-frame inverse-spread weights
and a small ``min_scale`` doubled the flicker of a dlib68 + face-api ensemble against equal weights. So the oracle
(:class:`wflwv.baselines.ensemble.OracleEnsemble`, ``combine="robust"``) uses fixed member weights and a
``min_scale`` of a few crop pixels by default: ordinary disagreement stays in Hampel's flat part (weight exactly 1)
and only a member that fails grossly on a frame (tens of pixels off) is down-weighted or dropped; per-frame spread
weights are an option (``member_weights="spread"``).

Everything works per landmark and per image on arrays ``(M, ..., 2)``; no I/O.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HAMPEL", "hampel_weights", "robust_location", "combine_members"]

#: Hampel's breakpoints (a, b, c) in robust scale units: weight 1 up to a, a / z up to b, falling linearly to 0 at c
HAMPEL = (2.0, 4.0, 8.0)
# 1 / Phi^-1(3/4): turns a median absolute deviation into a standard deviation for normal data
_MAD_TO_STD = 1.4826


def hampel_weights(z: np.ndarray, a: float = HAMPEL[0], b: float = HAMPEL[1], c: float = HAMPEL[2]) -> np.ndarray:
    """Hampel's redescending weights ``w(z)`` for standardised distances ``z >= 0``.

    ``w = 1`` for ``z <= a``; ``a / z`` for ``a < z <= b``; ``a / z * (c - z) / (c - b)`` for ``b < z <= c``; ``0``
    beyond ``c``. Continuous and non-increasing.
    """
    if not 0 < a <= b < c:
        raise ValueError(f"Hampel breakpoints must satisfy 0 < a <= b < c, got {(a, b, c)}")
    z = np.abs(np.asarray(z, dtype=np.float64))
    safe = np.maximum(z, 1e-300)
    w = np.where(z <= a, 1.0, a / safe)
    return np.where(z <= b, w, np.where(z < c, a / safe * (c - z) / (c - b), 0.0))


def _weighted_mean(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = weights[..., None]
    return (w * points).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-300)


def _irls(points: np.ndarray, prior: np.ndarray, spread: np.ndarray, min_scale: float, iters: int):
    """Shared IRLS loop. points (M, ..., 2); prior (M, ...) weights; spread (M, ...) squared distances added to
    every member's own scale. Returns (location, robustness weights)."""
    loc = np.median(points, axis=0)  # a start that a minority of outliers cannot drag away
    robust = np.ones(points.shape[:-1])
    for _ in range(iters):
        d = np.linalg.norm(points - loc, axis=-1)  # (M, ...)
        # robust scale of the disagreement: the median distance, as a standard deviation of one coordinate
        tau = np.maximum(_MAD_TO_STD * np.median(d, axis=0) / np.sqrt(2.0), min_scale)
        z = d / np.sqrt(spread + tau**2)
        robust = hampel_weights(z)
        w = prior * robust
        # if every member is rejected (cannot happen with >= 1 member at the median, but guard anyway) keep the start
        w = np.where(w.sum(axis=0, keepdims=True) > 0, w, prior)
        new = _weighted_mean(points, w)
        if np.allclose(new, loc, atol=1e-9, rtol=0):
            loc = new
            break
        loc = new
    return loc, robust


def robust_location(points: np.ndarray, min_scale: float = 0.05, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Robust centre of equally trusted votes and their spread around it.

    Args:
        points: (V, ..., 2) votes (e.g. one member on V test-time augmentations), pixels.
        min_scale: smallest robust scale (pixels): votes closer than a few of these are never down-weighted.
        iters: IRLS iterations (stops earlier when converged).
    Returns:
        ``(location, spread)``: (..., 2) and (...) = the robustness-weighted mean of the squared distances of the
        votes to the location, halved (a per-coordinate variance, pixels squared). One vote gives spread 0.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim < 2 or pts.shape[-1] != 2 or pts.shape[0] < 1:
        raise ValueError(f"points must be (V, ..., 2) with V >= 1, got {pts.shape}")
    prior = np.ones(pts.shape[:-1])
    loc, robust = _irls(pts, prior, np.zeros(pts.shape[:-1]), min_scale, iters)
    d2 = ((pts - loc) ** 2).sum(axis=-1)
    spread = (robust * d2).sum(axis=0) / np.maximum(robust.sum(axis=0), 1e-300) / 2.0
    return loc, spread


def combine_members(
    locations: np.ndarray,
    spreads: np.ndarray,
    spread_floor: float = 0.01,
    min_scale: float = 0.05,
    iters: int = 20,
    prior: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Combine member estimates: inverse-spread (or fixed) weights, outlying members down-weighted (Hampel IRLS).

    Args:
        locations: (M, ..., 2) one location per member (pixels), e.g. from :func:`robust_location`.
        spreads: (M, ...) each member's spread (per-coordinate variance of its own votes, pixels squared).
        spread_floor: added to every spread (pixels squared), so a member with one vote (spread 0) or a
            quantised member that answered all variants alike does not take all the weight.
        min_scale: smallest robust scale of the members' disagreement (pixels).
        prior: (M,) fixed member weights used instead of the inverse spreads (the spreads then only widen each
            member's tolerance in the outlier test).
    Returns:
        ``(location, weights)``: (..., 2) the combined location and (M, ...) the final weights, normalised to sum
        1 over members (inverse spread times robustness).
    """
    loc_m = np.asarray(locations, dtype=np.float64)
    spr = np.asarray(spreads, dtype=np.float64)
    if loc_m.ndim < 2 or loc_m.shape[-1] != 2 or spr.shape != loc_m.shape[:-1]:
        raise ValueError(f"locations must be (M, ..., 2) and spreads (M, ...), got {loc_m.shape} and {spr.shape}")
    if spread_floor <= 0 or np.any(spr < 0) or not np.all(np.isfinite(spr)):
        raise ValueError("spreads must be finite and >= 0, spread_floor > 0")
    if prior is None:
        prior = 1.0 / (spr + spread_floor)
    else:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (loc_m.shape[0],) or np.any(prior < 0) or not prior.sum() > 0:
            raise ValueError(f"prior must be {loc_m.shape[0]} non-negative member weights, not all 0; got {prior}")
        prior = np.broadcast_to(prior.reshape((-1,) + (1,) * (spr.ndim - 1)), spr.shape)
    loc, robust = _irls(loc_m, prior, 2.0 * spr, min_scale, iters)
    w = prior * robust
    w = np.where(w.sum(axis=0, keepdims=True) > 0, w, prior)
    return loc, w / w.sum(axis=0, keepdims=True)
