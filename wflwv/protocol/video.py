"""Video decoding (OpenCV) and encoding (H.264 through the ffmpeg binary of imageio-ffmpeg), with errors that
name the file.

Decoding: :func:`probe_video` reads the container's frame rate, size and claimed frame count; :func:`iter_frames`
yields BGR frames in order. Encoding: :class:`VideoWriter` (and :func:`write_video` for a whole sequence) writes an
H.264 mp4 at a chosen CRF, atomically; when no ffmpeg binary is available it falls back to OpenCV's MPEG-4 writer
(a playable file, lower quality). :func:`ffmpeg_exe` is the one place that locates ffmpeg.

FFmpeg's own decoder messages (``[h264 @ 0x...] Invalid NAL unit size``, ``moov atom not found``) are silenced:
the errors raised here say the same with the file's name. Set ``OPENCV_FFMPEG_LOGLEVEL`` (e.g. ``24`` for warnings)
in the environment to see them again.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wflwv.io import atomic_path

# read by OpenCV when it opens its first capture; -8 is FFmpeg's AV_LOG_QUIET
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__all__ = ["VideoError", "VideoInfo", "probe_video", "iter_frames", "ffmpeg_exe", "VideoWriter", "write_video"]


class VideoError(RuntimeError):
    """A video file is missing, unreadable or corrupt, or cannot be encoded."""


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


def ffmpeg_exe(required: bool = False, purpose: str = "H.264 encoding") -> str | None:
    """The ffmpeg binary shipped with imageio-ffmpeg, or None when there is none (``required``: raise instead)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # not installed, or no binary for this platform
        if required:
            raise VideoError(
                f"{purpose} needs ffmpeg from imageio-ffmpeg (pip install imageio-ffmpeg): {exc}"
            ) from None
        return None


class VideoWriter:
    """Encode BGR uint8 frames to an H.264 mp4 at quality ``crf`` (0 = lossless, 17 = visually lossless, 23 =
    ffmpeg's default), atomically: the file appears on a clean exit of the ``with`` block and never half-written.

    Odd frame sizes are padded by one pixel at the right / bottom (pixel coordinates are unchanged). Without an
    ffmpeg binary, OpenCV's MPEG-4 writer is used instead (``crf`` is then ignored).
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 17, preset: str = "fast"):
        if not fps or fps <= 0:
            raise VideoError(f"{path}: fps must be positive, got {fps}")
        if not 0 <= int(crf) <= 51:
            raise VideoError(f"{path}: crf must be in 0..51, got {crf}")
        self.path, self.fps, self.crf, self.preset = Path(path), float(fps), int(crf), preset
        self.count = 0
        self._proc: subprocess.Popen | None = None
        self._cv: cv2.VideoWriter | None = None
        self._atomic = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path, suffix=".mp4")
        self._tmp = self._atomic.__enter__()
        return self

    def _start(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        self._size = (w, h)
        exe = ffmpeg_exe()
        if exe is None:
            self._cv = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._cv.isOpened():
                raise VideoError(f"{self.path}: no ffmpeg, and OpenCV cannot encode MPEG-4 video here")
            return
        cmd = [
            exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
            "-r", f"{self.fps:.6f}", "-i", "-", "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(self._tmp),
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) BGR uint8 frame (all frames must share a size)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(f"{self.path}: frames must be (H, W, 3) uint8 BGR, got {frame.dtype} {frame.shape}")
        if self._size is None:
            self._start(frame)
        elif frame.shape[1::-1] != self._size:
            raise VideoError(f"{self.path}: frame {self.count} is {frame.shape[1::-1]}, earlier frames {self._size}")
        frame = np.ascontiguousarray(frame)
        if self._cv is not None:
            self._cv.write(frame)
        else:
            try:
                self._proc.stdin.write(frame.tobytes())
            except BrokenPipeError:
                err = self._proc.stderr.read().decode(errors="replace")
                raise VideoError(f"{self.path}: ffmpeg stopped while encoding: {err.strip()[-500:]}") from None
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        err: BaseException | None = None
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = self._proc.wait()
            log = self._proc.stderr.read().decode(errors="replace")
            self._proc.stderr.close()
            if rc != 0 and exc_type is None:
                err = VideoError(f"{self.path}: ffmpeg failed (exit {rc}): {log.strip()[-500:]}")
        if self._cv is not None:
            self._cv.release()
        if exc_type is None and err is None and self.count == 0:
            err = VideoError(f"{self.path}: no frames to write")
        if err is not None:
            self._atomic.__exit__(type(err), err, None)
            raise err
        self._atomic.__exit__(exc_type, exc, tb)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 17, preset: str = "fast") -> int:
    """Encode BGR uint8 frames to ``path`` with :class:`VideoWriter`; returns the number of frames written."""
    with VideoWriter(path, fps, crf, preset) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.count
