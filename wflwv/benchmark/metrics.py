"""Landmark accuracy and temporal-coherence metrics: NME, NMF, CED / failure rate / AUC.

All functions are pure numpy and work on whole clips at once. Conventions:

* ``pred`` and ``gt`` are ``(N, K, 2)`` arrays of (x, y) pixel coordinates: N frames, K landmarks.
* The residual is ``r = gt - pred`` (the sign never matters for the metrics).
* NME values come back as *fractions* per frame (:func:`nme_per_frame`) and in *percent* per video
  (:func:`nme_video`), as the paper's tables report them.
* NMF values are on the scale of the released evaluation code (see :func:`nmf_video` for how that
  relates to Eq. 11 of the paper).

Bad input raises :class:`ValueError` with the offending frame indices in the message. Non-finite
predictions raise the subclass :class:`NonFinitePredictionError`, so a benchmark harness can record a
broken clip and carry on with the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from wflwv.schemes import LandmarkScheme, get_scheme

__all__ = [
    "NonFinitePredictionError",
    "NORMALISERS",
    "inter_ocular",
    "inter_pupil",
    "box_diagonal",
    "normaliser",
    "nme_per_frame",
    "nme_video",
    "nmf_per_frame",
    "nmf_per_landmark",
    "nmf_video",
    "nmf_groups",
    "ced_curve",
    "ced_fr_auc",
    "split_aggregate",
]

#: Side of the evaluation crop in pixels; the released NMF expresses the face size in units of it.
CROP_SIZE = 256


class NonFinitePredictionError(ValueError):
    """Predictions contain NaN or inf. ``frames`` lists the offending frame indices."""

    def __init__(self, frames: Sequence[int]):
        self.frames = [int(f) for f in frames]
        super().__init__(f"predictions contain NaN/inf at frames {_frame_list(self.frames)}")


# --------------------------------------------------------------------------------------------------
# validation helpers


def _frame_list(frames: Sequence[int], limit: int = 20) -> str:
    """Render frame indices as ``[1, 4, 9]``, shortened when there are many."""
    frames = [int(f) for f in frames]
    if len(frames) <= limit:
        return "[" + ", ".join(map(str, frames)) + "]"
    head = ", ".join(map(str, frames[:limit]))
    return f"[{head}, ...] ({len(frames)} frames in total)"


def _bad_frames(x: np.ndarray) -> np.ndarray:
    """Indices of frames of ``x: (N, K, 2)`` holding any NaN/inf."""
    return np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))


def _as_landmarks(x, what: str) -> np.ndarray:
    """Convert to a float64 ``(N, K, 2)`` array or raise a ValueError explaining the expected shape."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise ValueError(
            f"{what} must have shape (N, K, 2) (frames, landmarks, xy), got {arr.shape}; "
            "add a leading axis for a single frame"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape}); need at least one frame and one landmark")
    return arr


def _check_gt(gt, scheme: LandmarkScheme | None = None) -> np.ndarray:
    """Validate ground truth ``(N, K, 2)``: shape, scheme size, finite values."""
    gt = _as_landmarks(gt, "ground truth")
    if scheme is not None and gt.shape[1] != scheme.num_points:
        raise ValueError(
            f"ground truth has {gt.shape[1]} landmarks but scheme {scheme.name!r} has {scheme.num_points}; "
            "pass the matching scheme or convert the landmarks first (wflwv.schemes.convert_landmarks)"
        )
    bad = _bad_frames(gt)
    if bad.size:
        raise ValueError(f"ground truth contains NaN/inf at frames {_frame_list(bad)}")
    return gt


def _check_pair(pred, gt, scheme: LandmarkScheme | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction / ground-truth pair; returns both as float64 ``(N, K, 2)`` arrays."""
    pred = _as_landmarks(pred, "predictions")
    gt = _as_landmarks(gt, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(
            f"predictions and ground truth must have the same shape (N, K, 2), got {pred.shape} and {gt.shape}"
        )
    gt = _check_gt(gt, scheme)
    bad = _bad_frames(pred)
    if bad.size:
        raise NonFinitePredictionError(bad)
    return pred, gt


def _check_normaliser(d: np.ndarray, kind: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(d) | (d <= 0))
    if bad.size:
        raise ValueError(
            f"{kind} normaliser is zero or not finite at frames {_frame_list(bad)}; "
            "the ground truth of those frames is degenerate (coincident points)"
        )
    return d


def _landmark_index(landmarks, k: int) -> np.ndarray:
    """Turn an index subset (ints or a boolean mask of length K) into a checked int array."""
    idx = np.asarray(landmarks)
    if idx.dtype == bool:
        if idx.shape != (k,):
            raise ValueError(f"a boolean landmark mask must have shape ({k},), got {idx.shape}")
        idx = np.flatnonzero(idx)
    idx = idx.reshape(-1)
    if idx.size == 0:
        raise ValueError("landmark subset is empty; pass at least one landmark index")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"landmark indices must be integers, got dtype {idx.dtype}")
    out_of_range = idx[(idx < -k) | (idx >= k)]
    if out_of_range.size:
        raise ValueError(f"landmark indices {out_of_range.tolist()} are out of range for {k} landmarks")
    return idx.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# normalisers


def inter_ocular(gt, scheme: str | LandmarkScheme = "wflw98") -> np.ndarray:
    """Distance between the scheme's outer eye corners, per frame.

    Args:
        gt: (N, K, 2) ground-truth landmarks.
        scheme: landmark scheme (its ``eye_corners``, e.g. 60 and 72 for wflw98).
    Returns:
        (N,) distances in the units of ``gt``.
    """
    scheme = get_scheme(scheme)
    gt = _check_gt(gt, scheme)
    a, b = scheme.eye_corners
    return _check_normaliser(np.linalg.norm(gt[:, a] - gt[:, b], axis=-1), "inter-ocular")


def inter_pupil(gt, scheme: str | LandmarkScheme = "wflw98") -> np.ndarray:
    """Distance between the two pupils, per frame; a pupil is the mean of one of ``scheme.pupils``.

    Args:
        gt: (N, K, 2) ground-truth landmarks.
        scheme: landmark scheme (wflw98 has annotated pupils 96 / 97, ibug68 uses the eye-ring centres).
    Returns:
        (N,) distances.
    """
    scheme = get_scheme(scheme)
    gt = _check_gt(gt, scheme)
    left, right = scheme.pupils
    centre_l = gt[:, list(left)].mean(axis=1)
    centre_r = gt[:, list(right)].mean(axis=1)
    return _check_normaliser(np.linalg.norm(centre_l - centre_r, axis=-1), "inter-pupil")


def box_diagonal(gt, scheme: str | LandmarkScheme | None = None) -> np.ndarray:
    """Diagonal of the axis-aligned bounding box of all ground-truth landmarks, per frame.

    Args:
        gt: (N, K, 2) ground-truth landmarks.
        scheme: optional; only used to check K.
    Returns:
        (N,) diagonal lengths ``sqrt(w^2 + h^2)``.
    """
    gt = _check_gt(gt, None if scheme is None else get_scheme(scheme))
    extent = gt.max(axis=1) - gt.min(axis=1)  # (N, 2): w, h
    return _check_normaliser(np.hypot(extent[:, 0], extent[:, 1]), "box-diagonal")


#: Normaliser name -> function ``f(gt, scheme) -> (N,)``.
NORMALISERS: dict[str, Callable[..., np.ndarray]] = {
    "inter-ocular": inter_ocular,
    "inter-pupil": inter_pupil,
    "box-diagonal": box_diagonal,
}


def normaliser(gt, scheme: str | LandmarkScheme = "wflw98", kind: str = "inter-ocular") -> np.ndarray:
    """Per-frame NME normaliser ``d_0`` of the given kind.

    Args:
        gt: (N, K, 2) ground-truth landmarks.
        scheme: landmark scheme of ``gt``.
        kind: ``"inter-ocular"`` (default, the WFLW / WFLW-V convention), ``"inter-pupil"`` or
            ``"box-diagonal"``.
    Returns:
        (N,) positive distances.
    Raises:
        ValueError: unknown kind, bad shape, non-finite ground truth, or a zero / non-finite normaliser
            (the message names the frames).
    """
    try:
        fn = NORMALISERS[kind]
    except KeyError:
        raise ValueError(f"unknown normaliser {kind!r}; choose one of: {', '.join(NORMALISERS)}") from None
    return fn(gt, get_scheme(scheme))


# --------------------------------------------------------------------------------------------------
# NME


def nme_per_frame(pred, gt, scheme: str | LandmarkScheme = "wflw98", norm: str = "inter-ocular") -> np.ndarray:
    """Normalised mean error of every frame (Eq. 10a of the paper), as a fraction.

    ``NME_n = mean_l ||gt[n, l] - pred[n, l]|| / d0_n`` with ``d0_n`` from :func:`normaliser`.

    Args:
        pred: (N, K, 2) predicted landmarks.
        gt: (N, K, 2) ground-truth landmarks, same scheme and units.
        scheme: landmark scheme of both arrays.
        norm: normaliser kind, see :func:`normaliser`.
    Returns:
        (N,) NMEs as fractions (0.05 = 5 %).
    Raises:
        NonFinitePredictionError: predictions contain NaN/inf (the message names the frames).
        ValueError: shapes differ or do not match the scheme, bad ground truth or normaliser.
    """
    scheme = get_scheme(scheme)
    pred, gt = _check_pair(pred, gt, scheme)
    d0 = normaliser(gt, scheme, norm)
    return np.linalg.norm(gt - pred, axis=-1).mean(axis=1) / d0


def nme_video(pred, gt, scheme: str | LandmarkScheme = "wflw98", norm: str = "inter-ocular") -> float:
    """Normalised mean error of a clip in PERCENT (Eq. 10b x 100): mean over landmarks, then frames.

    Args:
        pred, gt: (N, K, 2) predicted and ground-truth landmarks.
        scheme, norm: see :func:`nme_per_frame`.
    Returns:
        The clip's NME in percent.
    """
    return float(nme_per_frame(pred, gt, scheme, norm).mean() * 100.0)


# --------------------------------------------------------------------------------------------------
# NMF


def _flicker_errors(pred, gt) -> np.ndarray:
    """Per-frame, per-landmark flicker ``e: (N-1, K)`` of the released evaluation code.

    ``e[n-1, l] = 100 * ||r[n, l] - r[n-1, l]|| / s_n`` for n = 1..N-1 (0-based), with ``r = gt - pred`` and
    ``s_n = sqrt(w_n * h_n) / 256`` from the bounding box of ALL ground-truth landmarks of frame n.
    """
    pred, gt = _check_pair(pred, gt)
    n = gt.shape[0]
    if n < 2:
        raise ValueError(f"NMF needs a clip of at least 2 frames, got {n}")
    extent = gt.max(axis=1) - gt.min(axis=1)  # (N, 2)
    scale = np.sqrt(extent[:, 0] * extent[:, 1]) / CROP_SIZE  # (N,)
    bad = np.flatnonzero(~(scale[1:] > 0)) + 1
    if bad.size:
        raise ValueError(
            f"ground-truth bounding box has zero area at frames {_frame_list(bad)}; "
            "NMF cannot be normalised by the face size there"
        )
    residual = gt - pred  # (N, K, 2)
    step = np.linalg.norm(np.diff(residual, axis=0), axis=-1)  # (N-1, K)
    return 100.0 * step / scale[1:, None]


def nmf_per_frame(pred, gt, landmarks=None) -> np.ndarray:
    """Flicker of every frame transition: RMS over landmarks of the released per-landmark flicker.

    Args:
        pred, gt: (N, K, 2) predicted and ground-truth landmarks, N >= 2.
        landmarks: optional subset of landmark indices (ints, or a boolean mask of length K). The face
            size still comes from the bounding box of all ground-truth landmarks.
    Returns:
        (N-1,) values; entry i belongs to the transition from frame i to frame i+1.
    """
    e = _flicker_errors(pred, gt)
    if landmarks is not None:
        e = e[:, _landmark_index(landmarks, e.shape[1])]
    return np.sqrt(np.mean(e**2, axis=1))


def nmf_per_landmark(pred, gt) -> np.ndarray:
    """Flicker of every landmark: RMS over the N-1 frame transitions of the released per-landmark flicker.

    Args:
        pred, gt: (N, K, 2) predicted and ground-truth landmarks, N >= 2.
    Returns:
        (K,) values. ``sqrt(mean(nmf_per_landmark**2)) == nmf_video``.
    """
    e = _flicker_errors(pred, gt)
    return np.sqrt(np.mean(e**2, axis=0))


def nmf_video(pred, gt, landmarks=None) -> float:
    """Normalised mean flicker of a clip, exactly as the paper's released evaluation code computes it.

    With ``r = gt - pred`` and, for every frame n, ``s_n = sqrt(w_n * h_n / 256^2)`` where ``w_n, h_n`` are the
    width and height of the bounding box of the frame's ground-truth landmarks::

        e[n, l] = 100 * ||r[n, l] - r[n-1, l]|| / s_n        for n = 2..N
        NMF     = sqrt( mean_n  mean_l  e[n, l]^2 )           (RMS over frames of the RMS over landmarks)

    Relation to Eq. 11 of the paper: Eq. 11 divides by ``d_1`` with ``d_1^2`` the face area, i.e.
    ``d_1 = sqrt(w_n * h_n)``. Since ``s_n = d_1 / 256``, each released term is ``100 * 256 = 25600`` times the
    Eq. 11a term (the face size is measured in 256-pixel crop units and the result is scaled by 100). Eq. 11b
    divides the sum over the N-1 transitions by N, while the release averages over the N-1 transitions that
    exist. Hence ``nmf_video = 25600 * sqrt(N / (N - 1)) * NMF_Eq11``. Paper figures are on the released scale.

    Args:
        pred, gt: (N, K, 2) predicted and ground-truth landmarks (pixels), N >= 2.
        landmarks: optional subset of landmark indices (ints, or a boolean mask of length K) for a per-group
            NMF; ``s_n`` still uses the bounding box of ALL ground-truth landmarks.
    Returns:
        The clip's NMF (released scale).
    Raises:
        NonFinitePredictionError: predictions contain NaN/inf.
        ValueError: fewer than 2 frames, shapes differ, non-finite ground truth, zero-area ground-truth box.
    """
    e = _flicker_errors(pred, gt)
    if landmarks is not None:
        e = e[:, _landmark_index(landmarks, e.shape[1])]
    return float(np.sqrt(np.mean(e**2)))


def nmf_groups(pred, gt, scheme: str | LandmarkScheme = "wflw98") -> dict[str, float]:
    """NMF restricted to each coarse region of the scheme (jaw, brows, nose, eyes, mouth, pupils, ...).

    Args:
        pred, gt: (N, K, 2) predicted and ground-truth landmarks, N >= 2, K = ``scheme.num_points``.
        scheme: landmark scheme whose ``regions`` define the groups.
    Returns:
        ``{region name: NMF}`` in the order of ``scheme.regions``.
    """
    scheme = get_scheme(scheme)
    pred, gt = _check_pair(pred, gt, scheme)
    e = _flicker_errors(pred, gt)
    return {name: float(np.sqrt(np.mean(e[:, list(idx)] ** 2))) for name, idx in scheme.regions.items()}


# --------------------------------------------------------------------------------------------------
# CED / FR / AUC


def _as_nmes(nmes) -> np.ndarray:
    arr = np.asarray(nmes, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"nmes must be a non-empty 1-D array of per-image NMEs, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"nmes contain NaN/inf at positions {_frame_list(bad)}; drop failed items first")
    return arr


def ced_curve(nmes, threshold: float = 0.10, step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: fraction of NMEs <= t for t = 0, step, 2 step, ..., threshold.

    The thresholds are built as ``integer * step`` (no float accumulation) and the last one is exactly
    ``threshold``.

    Args:
        nmes: (M,) per-image NMEs as fractions.
        threshold: largest cut-off X (a fraction, 0.10 for "AUC_10").
        step: spacing of the cut-offs; ``threshold / step`` must be a whole number.
    Returns:
        ``(thresholds, ced)``, both (T,) with T = threshold / step + 1.
    """
    nmes = _as_nmes(nmes)
    if not (np.isfinite(threshold) and threshold > 0 and np.isfinite(step) and step > 0):
        raise ValueError(f"threshold and step must be positive numbers, got threshold={threshold}, step={step}")
    count = threshold / step
    n_steps = int(round(count))
    if n_steps < 1 or abs(count - n_steps) > 1e-6 * max(1.0, count):
        raise ValueError(f"threshold {threshold} is not a whole multiple of step {step}")
    thresholds = np.arange(n_steps + 1, dtype=np.float64) * step
    thresholds[-1] = threshold
    ordered = np.sort(nmes)
    ced = np.searchsorted(ordered, thresholds, side="right") / ordered.size
    return thresholds, ced


def ced_fr_auc(nmes, threshold: float = 0.10, step: float = 1e-4) -> tuple[float, float]:
    """Failure rate and area under the CED curve up to ``threshold`` (FR_X, AUC_X).

    FR = 1 - CED(X) = fraction of NMEs strictly above X. AUC = Simpson's-rule integral of the CED over
    [0, X] (``scipy.integrate.simpson`` on the sampled thresholds), divided by X, so 1 is perfect.

    Args:
        nmes: (M,) per-image NMEs as fractions.
        threshold: cut-off X as a fraction (0.10 -> FR_10 / AUC_10).
        step: sampling step of the CED, see :func:`ced_curve`.
    Returns:
        ``(fr, auc)`` as fractions in [0, 1].
    """
    from scipy.integrate import simpson  # here: scipy.integrate takes half a second to import, every command

    thresholds, ced = ced_curve(nmes, threshold, step)
    fr = float(1.0 - ced[-1])
    auc = float(simpson(ced, x=thresholds) / threshold)
    return fr, auc


# --------------------------------------------------------------------------------------------------
# aggregation


def split_aggregate(values: Iterable[float] | Mapping[object, float]) -> float:
    """Aggregate per-video scores of a split: plain mean over videos, skipping NaN (failed clips).

    Every video weighs the same, whatever its length. A mapping is aggregated over its values.

    Args:
        values: (V,) per-video scores (NaN marks a video without a score).
    Returns:
        The mean of the finite scores, or NaN when there is none.
    Raises:
        ValueError: a score is +/-inf (that is a bug upstream, not a failed clip), or values are not 1-D.
    """
    if isinstance(values, Mapping):
        values = list(values.values())
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"split_aggregate expects a 1-D sequence of per-video scores, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"per-video scores contain inf at positions {_frame_list(np.flatnonzero(np.isinf(arr)))}")
    kept = arr[~np.isnan(arr)]
    return float(kept.mean()) if kept.size else float("nan")
