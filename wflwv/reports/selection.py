"""What a report shows by default: the clip where the compared models differ most, its most flickering landmark, the
mean face."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wflwv.benchmark import metrics as M
from wflwv.benchmark.results import UNFILTERED
from wflwv.reports.load import ReportRun

__all__ = ["common_clips", "compared_runs", "pick_clip", "pick_landmark", "clip_landmark_nmf", "mean_face_shape"]


def common_clips(runs: Sequence[ReportRun]) -> list[str]:
    """Clips scored successfully (unfiltered) and with predictions on disk in every run, in the first run's order."""
    if not runs:
        return []
    ok = [set(r.ok_clips()) for r in runs]
    first = runs[0].ok_clips()
    return [v for v in first if all(v in s for s in ok) and all(r.has_predictions(v) for r in runs)]


def compared_runs(runs: Sequence[ReportRun]) -> list[ReportRun]:
    """The runs a default clip is chosen for: all but the reference models (``oracle``, ``mean-shape``: one flickers
    not at all, the other as much as the face box moves, so either would decide every choice), unless only
    reference models are given."""
    models = [r for r in runs if not r.is_reference]
    return models or list(runs)


def pick_clip(runs: Sequence[ReportRun]) -> str | None:
    """The clip with the largest NMF gap between the :func:`compared_runs` (the largest NMF when there is one).

    Only clips every run scored and kept predictions for are candidates (the trajectories show every run); None
    when there is none.
    """
    candidates = common_clips(runs)
    if not candidates:
        return None
    compared = compared_runs(runs)
    table = {}
    for r in compared:
        df = r.per_video[(r.per_video["filter"] == UNFILTERED) & (r.per_video["status"] == "ok")]
        table[r.label] = dict(zip(df["video_id"].astype(str), df["nmf"].astype(float)))
    best, best_score = None, -np.inf
    for vid in candidates:
        vals = np.array([table[r.label].get(vid, np.nan) for r in compared], float)
        vals = vals[np.isfinite(vals)]
        if not len(vals):
            continue
        score = float(vals.max() - vals.min()) if len(compared) > 1 else float(vals.max())
        if score > best_score:
            best, best_score = vid, score
    return best


def clip_landmark_nmf(gt: np.ndarray, preds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-landmark NMF of one clip for each run: ``{label: (K,)}`` (gt and preds: (T, K, 2))."""
    out = {}
    for label, p in preds.items():
        n = min(len(p), len(gt))
        out[label] = np.asarray(M.nmf_per_landmark(p[:n], gt[:n]), float)
    return out


def pick_landmark(per_landmark: Mapping[str, np.ndarray]) -> int:
    """The landmark with the largest flicker in any run (``per_landmark``: ``{label: (K,)}`` NMF)."""
    stack = np.stack([np.asarray(v, float) for v in per_landmark.values()])
    worst = np.nanmax(stack, axis=0)
    return int(np.nanargmax(worst))


def mean_face_shape(gts: Sequence[np.ndarray], frames_per_clip: int = 30) -> np.ndarray:
    """Mean normalised ground-truth shape: each frame centred on its landmarks' box and divided by the box's
    larger side, then averaged.

    Args:
        gts: (T, K, 2) ground truth of some clips (frame pixels).
        frames_per_clip: evenly spaced frames used from each clip.
    Returns:
        (K, 2) shape, x right and y down, roughly in [-0.5, 0.5].
    """
    shapes = []
    for gt in gts:
        gt = np.asarray(gt, float)
        idx = np.unique(np.linspace(0, len(gt) - 1, min(frames_per_clip, len(gt))).round().astype(int))
        g = gt[idx]
        lo, hi = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
        side = np.maximum((hi - lo).max(axis=2, keepdims=True), 1e-9)
        shapes.append((g - (lo + hi) / 2) / side)
    if not shapes:
        raise ValueError("no ground truth to average")
    return np.concatenate(shapes).mean(axis=0)
