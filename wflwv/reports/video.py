"""Overlay video of one clip: ground truth and each run's predictions drawn on the frames, with a legend.

The clip is cropped to a square around the face (the ground truth's extent over the whole clip plus a margin),
so landmarks stay visible on large frames. Writes an H.264 MP4 (imageio-ffmpeg; OpenCV's MPEG-4 as a fallback) and a
small animated GIF preview (Pillow).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wflwv.protocol.video import write_video
from wflwv.schemes import get_scheme

__all__ = ["GT_LABEL", "face_box", "OverlayStyle", "render_frame", "write_overlay", "legend_height", "gif_palette"]

GT_LABEL = "ground truth"
_GT_BGR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def hex_to_bgr(colour: str) -> tuple[int, int, int]:
    """``"#0072B2"`` -> ``(178, 114, 0)``."""
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {colour!r} is not #RRGGBB")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    return (b, g, r)


def face_box(gt: np.ndarray, margin: float = 0.2) -> tuple[float, float, float]:
    """A square around the face over the whole clip: ``(x0, y0, side)`` in frame pixels.

    Args:
        gt: (T, K, 2) ground-truth landmarks, frame pixels.
        margin: extra space on each side, as a fraction of the landmarks' extent.
    """
    pts = np.asarray(gt, float).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        raise ValueError("ground truth has no finite landmarks to place the crop")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    side = float(max(hi - lo)) * (1 + 2 * margin)
    side = max(side, 8.0)
    c = (lo + hi) / 2
    return float(c[0] - side / 2), float(c[1] - side / 2), side


@dataclass
class OverlayStyle:
    """Sizes of one rendering (the MP4 and the GIF use different ones)."""

    size: int = 384  # crop side in output pixels
    font_scale: float = 0.45
    point_radius: int = 2
    line_width: int = 1


def legend_height(names: Sequence[str], style: OverlayStyle) -> int:
    """Pixel height of the legend strip below the crop (entries wrapped into rows)."""
    return 8 + len(_legend_rows(names, style)) * _row_height(style)


def _row_height(style: OverlayStyle) -> int:
    (_, th), _ = cv2.getTextSize("Ag", _FONT, style.font_scale, 1)
    return th + 10


def _legend_rows(names: Sequence[str], style: OverlayStyle) -> list[list[int]]:
    rows: list[list[int]] = [[]]
    x = 6
    for i, n in enumerate(names):
        (tw, _), _ = cv2.getTextSize(n, _FONT, style.font_scale, 1)
        w = 16 + tw + 14
        if rows[-1] and x + w > style.size - 4:
            rows.append([])
            x = 6
        rows[-1].append(i)
        x += w
    return rows


def _draw_legend(
    canvas: np.ndarray, top: int, names: Sequence[str], colours: Sequence[tuple[int, int, int]], style: OverlayStyle
) -> None:
    rh = _row_height(style)
    for r, row in enumerate(_legend_rows(names, style)):
        x, y = 6, top + 4 + r * rh + rh // 2
        for i in row:
            cv2.rectangle(canvas, (x, y - 5), (x + 10, y + 5), colours[i], -1)
            cv2.rectangle(canvas, (x, y - 5), (x + 10, y + 5), (90, 90, 90), 1)
            (tw, th), _ = cv2.getTextSize(names[i], _FONT, style.font_scale, 1)
            cv2.putText(
                canvas, names[i], (x + 16, y + th // 2), _FONT, style.font_scale, (235, 235, 235), 1, cv2.LINE_AA
            )
            x += 16 + tw + 14


def _draw_shape(
    img: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int], edges, style: OverlayStyle, outline: bool
) -> None:
    shift = 4
    fixed = np.round(pts * (1 << shift)).astype(np.int32)
    ok = np.isfinite(pts).all(axis=1)
    for edge in edges:
        idx = [i for i in edge if ok[i]]
        if len(idx) >= 2:
            cv2.polylines(img, [fixed[idx]], False, colour, style.line_width, cv2.LINE_AA, shift=shift)
    for i in np.flatnonzero(ok):
        if outline:
            cv2.circle(img, tuple(fixed[i]), (style.point_radius + 1) << shift, (0, 0, 0), -1, cv2.LINE_AA, shift=shift)
        cv2.circle(img, tuple(fixed[i]), style.point_radius << shift, colour, -1, cv2.LINE_AA, shift=shift)


def render_frame(
    frame: np.ndarray,
    box: tuple[float, float, float],
    shapes: Sequence[np.ndarray],
    colours: Sequence[tuple[int, int, int]],
    names: Sequence[str],
    scheme: str,
    style: OverlayStyle,
    caption: str = "",
) -> np.ndarray:
    """One overlay frame: the face crop with every shape drawn, a legend strip below.

    Args:
        frame: (H, W, 3) BGR uint8 video frame.
        box: ``(x0, y0, side)`` crop square in frame pixels (:func:`face_box`); parts outside the frame are black.
        shapes: (K, 2) landmarks per entry, frame pixels; the first is drawn first (ground truth).
        colours: BGR colour per entry.
        names: legend text per entry.
    Returns:
        (size + legend height, size, 3) BGR uint8 image.
    """
    x0, y0, side = box
    s = style.size / side
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
    crop = cv2.warpAffine(
        frame,
        m,
        (style.size, style.size),
        flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )
    edges = get_scheme(scheme).edges
    for i, (pts, col) in enumerate(zip(shapes, colours)):
        p = (np.asarray(pts, float) - [x0, y0]) * s
        _draw_shape(crop, p, col, edges, style, outline=(i == 0))
    if caption:
        cv2.putText(
            crop, caption, (6, 6 + _row_height(style) // 2 + 2), _FONT, style.font_scale, (0, 0, 0), 3, cv2.LINE_AA
        )
        cv2.putText(
            crop,
            caption,
            (6, 6 + _row_height(style) // 2 + 2),
            _FONT,
            style.font_scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    lh = legend_height(names, style)
    canvas = np.full((style.size + lh, style.size, 3), 32, np.uint8)
    canvas[: style.size] = crop
    _draw_legend(canvas, style.size, names, colours, style)
    return canvas


def _even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % 2, : w - w % 2]


def gif_palette(frames: Sequence[np.ndarray], keep: Sequence[tuple[int, int, int]], size: int = 256) -> list[int]:
    """One palette for the whole GIF (flat ``[r, g, b, ...]``): the colours in ``keep`` exactly (each run's colour,
    the ground truth's, the legend's), the rest fitted to the frames (median cut over a sample of them).

    A palette fitted to each frame alone would give a run's thin lines whatever nearby colour the face offers
    (blue turning green); reserved entries keep every run's colour in every frame.
    """
    from PIL import Image

    reserved = list(dict.fromkeys(tuple(int(c) for c in rgb) for rgb in keep))
    if len(reserved) >= size:
        raise ValueError(f"{len(reserved)} colours to keep do not fit a {size}-colour GIF palette")
    step = max(1, len(frames) // 8)
    sample = np.concatenate([f[:, :, ::-1] for f in frames[::step]], axis=0)
    fitted = Image.fromarray(np.ascontiguousarray(sample)).quantize(
        colors=size - len(reserved), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    rest = fitted.getpalette()[: 3 * (size - len(reserved))]
    return [v for rgb in reserved for v in rgb] + rest


def _write_gif(path: Path, frames: list[np.ndarray], frame_ms: int, keep: Sequence[tuple[int, int, int]] = ()) -> None:
    from PIL import Image

    flat = gif_palette(frames, keep)
    palette = Image.new("P", (1, 1))
    palette.putpalette(flat)
    reserved = list(dict.fromkeys(tuple(int(c) for c in rgb) for rgb in keep))
    imgs = []
    for f in frames:
        rgb = np.ascontiguousarray(f[:, :, ::-1])
        # Pillow's palette lookup is approximate (it may pick a neighbour of an exact entry): pixels of a reserved
        # colour are given its entry explicitly
        idx = np.array(Image.fromarray(rgb).quantize(palette=palette, dither=Image.Dither.NONE))
        for i, colour in enumerate(reserved):
            idx[(rgb == colour).all(axis=2)] = i
        img = Image.fromarray(idx)  # mode L; the palette makes it P
        img.putpalette(flat)
        imgs.append(img)
    imgs[0].save(
        path, save_all=True, append_images=imgs[1:], duration=max(int(frame_ms), 20), loop=0, optimize=True, disposal=1
    )


def write_overlay(
    frames: Iterable[np.ndarray],
    gt: np.ndarray,
    preds: Mapping[str, np.ndarray],
    colours: Mapping[str, str],
    scheme: str,
    mp4_path: str | Path,
    gif_path: str | Path,
    fps: float = 25.0,
    video_size: int = 384,
    gif_size: int = 224,
    gif_max_frames: int = 60,
    title: str = "",
    log: Callable[[str], None] | None = None,
) -> tuple[Path, Path, int]:
    """Render the overlay of one clip to an MP4 and a GIF preview.

    Args:
        frames: the clip's BGR frames, in order (e.g. :func:`wflwv.protocol.video.iter_frames`).
        gt: (T, K, 2) ground truth, frame pixels.
        preds: ``{run label: (T, K, 2)}`` predictions, frame pixels.
        colours: ``{run label: "#RRGGBB"}``.
        gif_max_frames: the GIF keeps every n-th frame so it has at most this many (it plays at real speed).
    Returns:
        ``(mp4 path, gif path, number of frames rendered)``.
    """
    mp4_path, gif_path = Path(mp4_path), Path(gif_path)
    gt = np.asarray(gt, float)
    names = [GT_LABEL] + list(preds)
    bgr = [_GT_BGR] + [hex_to_bgr(colours[n]) for n in preds]
    box = face_box(gt)
    big = OverlayStyle(size=video_size, font_scale=0.45, point_radius=2, line_width=1)
    small = OverlayStyle(size=gif_size, font_scale=0.36, point_radius=1, line_width=1)
    n_total = len(gt)
    stride = max(1, int(np.ceil(n_total / max(gif_max_frames, 1))))
    video_frames: list[np.ndarray] = []
    gif_frames: list[np.ndarray] = []
    for t, frame in enumerate(frames):
        if t >= n_total:
            break
        shapes = [gt[t]] + [p[t] if t < len(p) else np.full_like(gt[t], np.nan) for p in preds.values()]
        caption = f"{title}  frame {t + 1}/{n_total}".strip()
        video_frames.append(_even(render_frame(frame, box, shapes, bgr, names, scheme, big, caption)))
        if t % stride == 0:
            gif_frames.append(render_frame(frame, box, shapes, bgr, names, scheme, small, f"{t + 1}/{n_total}"))
    if not video_frames:
        raise ValueError("the video yielded no frames to draw on")
    if log:
        log(f"encoding {len(video_frames)} frames")
    mp4_path.parent.mkdir(parents=True, exist_ok=True)
    write_video(mp4_path, video_frames, fps, crf=20)
    keep = [c[::-1] for c in bgr] + [(32, 32, 32), (235, 235, 235), (90, 90, 90), (0, 0, 0)]  # runs, legend
    _write_gif(gif_path, gif_frames, round(1000.0 * stride / (fps if fps > 0 else 25.0)), keep)
    return mp4_path, gif_path, len(video_frames)
