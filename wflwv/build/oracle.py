"""The labelling oracle of `wflwv build`: an ensemble of landmark models run on protocol crops.

The ensemble itself is :class:`wflwv.baselines.ensemble.OracleEnsemble` (heatmap averaging over members and
test-time augmentations, per-landmark variance of all votes); its default member is dlib's 68-point predictor
(:mod:`wflwv.baselines.dlib68`). This module adds

* :func:`build_oracle` from member specs (``NAME`` or ``NAME:WEIGHTS``) and TTA names;
* :func:`run_oracle` / :func:`label_clip`: the oracle over every frame of a clip, in batches, with the boxes
  re-derived from the oracle's own landmarks (``passes``) and smoothed over time, so the stored boxes are the
  crops the final landmarks were computed on.
* :func:`build_oracle_pair` / :func:`label_as_build`: the two oracles `wflwv build` uses (box-deriving passes
  without test-time augmentation, the final pass with it) and its labelling recipe, shared by the build, the
  label-flicker floor (:mod:`wflwv.build.floor`) and exact-motion datasets from unlabelled stills.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wflwv.baselines.ensemble import build_member, make_oracle
from wflwv.build.config import DEFAULT_COMBINE, DEFAULT_MEMBERS, DEFAULT_TTA
from wflwv.build.detect import landmarks_box, square_box
from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel
from wflwv.protocol.crop import apply_affine, crop_matrix, invert_affine, warp_crop
from wflwv.protocol.video import iter_frames

__all__ = [
    "DEFAULT_MEMBERS",
    "DEFAULT_TTA",
    "DEFAULT_COMBINE",
    "parse_member",
    "build_oracle",
    "build_members",
    "check_oracle",
    "smooth_boxes",
    "OracleResult",
    "run_oracle",
    "label_clip",
    "build_oracle_pair",
    "label_as_build",
]


def parse_member(spec: str) -> tuple[str, str | None]:
    """``"NAME"`` or ``"NAME:WEIGHTS"`` -> ``(name, weights or None)``."""
    name, _, weights = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"bad oracle member {spec!r}: use NAME or NAME:WEIGHTS (e.g. dlib68, hrnet:hrnet.pt)")
    return name, (weights.strip() or None)


def build_oracle(
    members: Sequence[str | tuple | LandmarkModel],
    tta: Sequence[str] | str | None,
    device: str = "cpu",
    combine: str = "heatmap",
):
    """The oracle ensemble (:func:`wflwv.baselines.ensemble.make_oracle`) from member specs.

    Args:
        members: ``"NAME"``, ``"NAME:WEIGHTS"``, ``(name, weights[, kwargs])`` or ready LandmarkModels (which
            may be shared between several ensembles, e.g. one with and one without test-time augmentation).
        tta: test-time augmentation names (``flip``, ``shift[:D]``, ``scale[:A/B]``, ``rotate[:DEG]``,
            ``jitter:N[/...]``; :func:`wflwv.baselines.ensemble.parse_tta`), list or comma string.
        combine: ``heatmap``, ``robust`` or ``mean`` (:class:`wflwv.baselines.ensemble.OracleEnsemble`).
    """
    specs = [parse_member(m) if isinstance(m, str) else m for m in members]
    if not specs:
        raise ValueError("the oracle needs at least one member (e.g. dlib68)")
    return make_oracle(specs, tta, device, combine=combine)


def build_members(members: Sequence[str | tuple | LandmarkModel]) -> list[LandmarkModel]:
    """Create the member models once (``"NAME"``, ``"NAME:WEIGHTS"``, ``(name, weights[, kwargs])`` or models)."""
    return [build_member(parse_member(m) if isinstance(m, str) else m) for m in members]


def check_oracle(members: Sequence[str], tta: Sequence[str] | str | None, device: str = "cpu") -> None:
    """Build every member and the ensemble once, so that a bad member fails before a build scans anything.

    Raises:
        ValueError: naming the member (or the test-time augmentations) and what is wrong with it: unknown model
            (with close names), missing or unreadable weights file, bad arguments, missing dependency.
    """
    built = []
    for spec in members:
        try:
            name, weights = parse_member(spec) if isinstance(spec, str) else (spec, None)
            built.append(build_member(name if weights is None else (name, weights)))
        except KeyError as exc:  # unknown model: its message lists the models and close names
            raise ValueError(f"oracle member {spec!r}: {exc.args[0] if exc.args else exc}") from None
        except (TypeError, ValueError, OSError, RuntimeError, ImportError) as exc:
            raise ValueError(f"oracle member {spec!r} cannot be created: {exc}") from None
    try:
        build_oracle(built, tta, device)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"the oracle ensemble of {', '.join(map(str, members))} (--tta {tta or 'none'}): {exc}"
        ) from None


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of box centres and sides over ``window`` frames (shrinking at the ends).

    Args:
        boxes: (T, >=4) ``x1, y1, x2, y2``. window: odd number of frames (1 = unchanged).
    Returns:
        (T, 4) boxes.
    """
    b = np.asarray(boxes, dtype=np.float64)[:, :4]
    if window <= 1 or len(b) < 2:
        return b.copy()
    c = (b[:, :2] + b[:, 2:]) / 2
    wh = b[:, 2:] - b[:, :2]
    r = window // 2
    t = len(b)
    cs, whs = np.empty_like(c), np.empty_like(wh)
    for i in range(t):
        k = min(r, i, t - 1 - i)  # symmetric window, so a steady motion is not delayed
        cs[i] = c[i - k : i + k + 1].mean(axis=0)
        whs[i] = wh[i - k : i + k + 1].mean(axis=0)
    return np.concatenate([cs - whs / 2, cs + whs / 2], axis=1)


@dataclass
class OracleResult:
    """Oracle labels of one clip.

    Attributes:
        landmarks: (T, K, 2) frame pixels.
        boxes: (T, 4) the boxes whose protocol crops the landmarks were computed on.
        variance: (T, K) per-landmark ensemble variance (crop pixels squared).
        passes: number of oracle passes run.
        box_shift: (passes,) median movement of the box centre between consecutive passes, in units of the box
            side (how much the re-derivation changed the crops; the last value near 0 means converged).
    """

    landmarks: np.ndarray
    boxes: np.ndarray
    variance: np.ndarray
    passes: int
    box_shift: list[float]


def _crops(frames: Iterable[np.ndarray], boxes: np.ndarray, video):
    for t, frame in enumerate(frames):
        if t >= len(boxes):
            raise ValueError(f"{video}: the video has more frames than the {len(boxes)} boxes given")
        m = crop_matrix(boxes[t], CROP_SIZE)
        yield t, m, warp_crop(frame, m, CROP_SIZE)[..., ::-1]


def run_oracle(
    oracle: LandmarkModel,
    video: str | Path,
    boxes: np.ndarray,
    video_id: str = "clip",
    fps: float = 25.0,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the oracle on the protocol crops of every frame of ``video``.

    Frames are independent (the states handed to the oracle are always None), so any batching gives the same
    numbers.

    Args:
        boxes: (T, >=4) one box per frame.
    Returns:
        ``(landmarks, variance)``: (T, K, 2) frame pixels and (T, K) per-landmark variance (zeros for a model
        that reports none).
    Raises:
        ValueError: when the video has a different number of frames than ``boxes``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    t_total = len(boxes)
    lms: list[np.ndarray] = []
    var: list[np.ndarray] = []
    batch: list[tuple[int, np.ndarray, np.ndarray]] = []

    def flush():
        imgs = torch.from_numpy(np.stack([b[2] for b in batch])).permute(0, 3, 1, 2).float().div_(255.0)
        infos = [FrameInfo(video_id, t, t_total, fps, invert_affine(m)) for t, m, _ in batch]
        with torch.no_grad():
            out = oracle.predict(imgs, [None] * len(batch), infos)
        pts = out.landmarks_numpy()
        for (_, m, _), p in zip(batch, pts):
            lms.append(apply_affine(p, invert_affine(m)))
        lv = getattr(oracle, "last_landmark_var", None)
        if lv is not None and np.shape(lv) == pts.shape[:2]:
            var.extend(np.asarray(lv, dtype=np.float64))
        else:
            var.extend(np.zeros(pts.shape[:2]))
        batch.clear()

    n = 0
    for item in _crops(iter_frames(video), boxes, video):
        batch.append(item)
        n += 1
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if n != t_total:
        raise ValueError(f"{video}: decoded {n} frames but {t_total} boxes were given")
    return np.stack(lms), np.stack(var)


def label_clip(
    oracle: LandmarkModel,
    video: str | Path,
    boxes: np.ndarray,
    video_id: str = "clip",
    fps: float = 25.0,
    passes: int = 2,
    smooth: int = 5,
    batch_size: int = 16,
) -> OracleResult:
    """Oracle labels with boxes stabilised by the oracle itself.

    Pass 1 crops with ``boxes`` (e.g. detector squares). Every further pass crops with the squares of the previous
    pass's landmarks (bounding box made square, smoothed over ``smooth`` frames) and predicts again. The result
    keeps the last pass's landmarks, variance and the boxes it cropped with.

    Args:
        boxes: (T, >=4) initial boxes in the landmark-square convention (see :mod:`wflwv.build.detect`).
        passes: total number of oracle passes (>= 1; 2 is enough when the detector boxes are calibrated).
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    cur = np.asarray(boxes, dtype=np.float64)[:, :4]
    shifts: list[float] = []
    lm = var = None
    for p in range(passes):
        if p > 0:
            new = smooth_boxes(square_box(landmarks_box(lm)), smooth)
            side = np.maximum(cur[:, 2] - cur[:, 0], 1e-6)
            moved = np.linalg.norm((new[:, :2] + new[:, 2:]) / 2 - (cur[:, :2] + cur[:, 2:]) / 2, axis=1) / side
            shifts.append(float(np.median(moved)))
            cur = new
        lm, var = run_oracle(oracle, video, cur, video_id, fps, batch_size)
    return OracleResult(lm, cur, var, passes, shifts)


def build_oracle_pair(
    members: Sequence[str | tuple | LandmarkModel],
    tta: Sequence[str] | str | None,
    passes: int,
    device: str = "cpu",
    combine: str = "heatmap",
) -> tuple[LandmarkModel, LandmarkModel | None]:
    """The oracles of `wflwv build`: ``(oracle, box_oracle)``, the second without test-time augmentation for the
    box-deriving passes (None when ``passes == 1``); both share the member models and the combination rule."""
    built = build_members(members)
    box = build_oracle(built, None, device, combine) if passes > 1 else None
    return build_oracle(built, tta, device, combine), box


def label_as_build(
    oracle: LandmarkModel,
    box_oracle: LandmarkModel | None,
    video: str | Path,
    boxes: np.ndarray,
    video_id: str = "clip",
    fps: float = 25.0,
    passes: int = 2,
    smooth: int = 5,
    batch_size: int = 16,
) -> OracleResult:
    """Label a clip exactly as `wflwv build` does.

    With ``passes == 1`` the full ``oracle`` runs on ``boxes``. Otherwise ``passes - 1`` box-deriving passes of
    :func:`label_clip` run with ``box_oracle`` (the same members without test-time augmentation; None = use
    ``oracle``), then the full oracle runs once on the squares of their landmarks, smoothed over ``smooth`` frames.
    Only the last pass's numbers are kept, so the cheaper box passes change nothing but the crops.

    Args:
        boxes: (T, >=4) initial boxes in the landmark-square convention (detections, or exact boxes).
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if passes == 1:
        return label_clip(oracle, video, boxes, video_id, fps, passes=1, smooth=smooth, batch_size=batch_size)
    pre = label_clip(
        box_oracle if box_oracle is not None else oracle,
        video,
        boxes,
        video_id,
        fps,
        passes=passes - 1,
        smooth=smooth,
        batch_size=batch_size,
    )
    final = smooth_boxes(square_box(landmarks_box(pre.landmarks)), smooth)
    lm, var = run_oracle(oracle, video, final, video_id, fps, batch_size)
    side = np.maximum(pre.boxes[:, 2] - pre.boxes[:, 0], 1e-6)
    moved = np.linalg.norm((final[:, :2] + final[:, 2:]) / 2 - (pre.boxes[:, :2] + pre.boxes[:, 2:]) / 2, axis=1) / side
    return OracleResult(lm, final, var, passes, pre.box_shift + [float(np.median(moved))])
