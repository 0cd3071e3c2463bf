"""Video decoding and encoding (OpenCV), with errors that name the file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from wflwv.io import atomic_path

__all__ = ["VideoError", "VideoInfo", "probe_video", "iter_frames", "write_video"]


class VideoError(RuntimeError):
    """A video file is missing, unreadable or corrupt."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (``frame_count`` is the container's claim, not a decoded count)."""

    path: Path
    fps: float
    frame_count: int
    width: int
    height: int


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: cannot open video (corrupt file or unsupported codec)")
    return cap


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame rate, size and claimed frame count without decoding it."""
    path = Path(path)
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        info = VideoInfo(
            path=path,
            fps=fps if np.isfinite(fps) and fps > 0 else 0.0,
            frame_count=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
    finally:
        cap.release()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: video reports no frame size (corrupt file?)")
    return info


def iter_frames(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames ``start <= i < stop`` in order, as BGR uint8 arrays (H, W, 3).

    Raises:
        VideoError: when the file cannot be opened or yields no frame at all.
    """
    path = Path(path)
    cap = _open(path)
    try:
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        i = start
        got = 0
        while stop is None or i < stop:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            got += 1
            i += 1
            yield frame
        if got == 0:
            raise VideoError(f"{path}: no frame could be decoded (corrupt or empty video)")
    finally:
        cap.release()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, codec: str = "mp4v") -> int:
    """Encode BGR uint8 frames to ``path`` atomically; returns the number of frames written."""
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for frame in frames:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), float(fps), (w, h))
                    if not writer.isOpened():
                        raise VideoError(f"{path}: OpenCV cannot encode {codec!r} video here")
                writer.write(np.ascontiguousarray(frame))
                n += 1
        finally:
            if writer is not None:
                writer.release()
        if n == 0:
            raise VideoError(f"{path}: no frames to write")
    return n
