"""Synthetic data with known landmarks for the tests (and for trying the toolkit without real data).

* :func:`synthetic_clip` / :func:`make_synthetic_dataset`: tiny clips in the official WFLW-V layout. Each clip shows a drawn face (skin-coloured ellipse, dark outlines along the landmark curves) moving smoothly
over a textured background while its mouth opens and closes. The landmarks are exact by construction; the boxes
are the landmarks' bounding boxes, as `wflwv build` derives them. Hard clips move faster and further than easy
ones.
* :func:`render_synthetic_face` / :func:`make_synthetic_wflw`: cartoon still faces in the WFLW annotation format.

Nothing here is meant to look like a real face, only to give every test real images and videos with known answers.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from wflwv.protocol.layout import WFLWVDataset, write_clip, write_dataset_info, write_split
from wflwv.protocol.wflw import ATTRIBUTES, WFLWSample, annotation_filename, write_annotations
from wflwv.schemes import WFLW98_TO_IBUG68, get_scheme, template_shape

__all__ = ["synthetic_clip", "make_synthetic_dataset", "render_synthetic_face", "make_synthetic_wflw"]


def synthetic_clip(
    num_frames: int = 16,
    size: tuple[int, int] = (192, 144),
    scheme: str = "wflw98",
    motion: float = 1.0,
    seed: int = 0,
    fps: float = 25.0,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Render one clip.

    Args:
        num_frames: T. size: (width, height) of the frames. motion: scale of the head motion (1 = moderate: the
            head sways by about 12% of the frame width over a few seconds). fps: frame rate the motion is timed for.
    Returns:
        ``(frames, boxes, landmarks)``: T BGR uint8 frames (H, W, 3), boxes (T, 4) x1 y1 x2 y2 and landmarks (T, K, 2),
        all in frame pixels.
    """
    rng = np.random.default_rng(seed)
    scheme = get_scheme(scheme)
    w, h = size
    tpl98 = template_shape("wflw98")
    bg = cv2.GaussianBlur(rng.integers(40, 200, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    skin = tuple(int(v) for v in rng.integers([90, 120, 170], [130, 170, 230]))
    side0 = 0.75 * min(w, h)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames, lms = [], []
    for t in range(num_frames):
        u = t / fps  # seconds
        cx = w / 2 + motion * 0.12 * w * np.sin(2 * np.pi * u / 3.0 + phase[0])
        cy = h / 2 + motion * 0.08 * h * np.sin(2 * np.pi * u / 4.0 + phase[1])
        side = side0 * (1 + motion * 0.08 * np.sin(2 * np.pi * u / 5.0 + phase[2]))
        tpl = tpl98.copy()
        opening = 0.5 + 0.5 * np.sin(2 * np.pi * 1.0 * u)
        lower = [83, 84, 85, 86, 87, 93, 94, 95]
        tpl[lower, 1] += 0.04 * opening
        lm98 = np.stack([cx + (tpl[:, 0] - 0.5) * side, cy + (tpl[:, 1] - 0.5) * side], axis=1)
        img = bg.copy()
        jaw = lm98[0:33]
        centre = (int(round(cx)), int(round(cy - 0.02 * side)))
        axes = (int(round((jaw[:, 0].max() - jaw[:, 0].min()) / 2)), int(round(0.47 * side)))
        cv2.ellipse(img, centre, axes, 0, 0, 360, skin, -1, cv2.LINE_AA)
        for edge in get_scheme("wflw98").edges:
            pts = np.round(lm98[list(edge)] * 16).astype(np.int32)
            cv2.polylines(img, [pts], False, (30, 30, 60), 2, cv2.LINE_AA, shift=4)
        for p in (96, 97):
            c = tuple(int(v) for v in np.round(lm98[p] * 16))
            cv2.circle(img, c, int(0.02 * side * 16), (20, 20, 20), -1, cv2.LINE_AA, shift=4)
        frames.append(img)
        lms.append(lm98 if scheme.name == "wflw98" else lm98[_ibug_index()])
    landmarks = np.asarray(lms)
    boxes = np.concatenate([landmarks.min(axis=1), landmarks.max(axis=1)], axis=1)
    return frames, boxes, landmarks


def _ibug_index() -> list[int]:
    return list(WFLW98_TO_IBUG68)


def make_synthetic_dataset(
    root: str | Path,
    num_hard: int = 2,
    num_easy: int = 2,
    num_frames: int = 16,
    size: tuple[int, int] = (192, 144),
    fps: float = 25.0,
    scheme: str = "wflw98",
    seed: int = 0,
) -> WFLWVDataset:
    """Write ``num_hard + num_easy`` synthetic clips with split lists in the official layout under ``root``.

    Clip IDs look like YouTube IDs (11 characters: ``synth0000h0``...). Existing complete clips are kept.
    """
    root = Path(root)
    ids = {"hard": [f"synth{i:04d}h0" for i in range(num_hard)], "easy": [f"synth{i:04d}e0" for i in range(num_easy)]}
    for split, vids in ids.items():
        for i, vid in enumerate(vids):
            if (root / "landmarks" / f"{vid}.npy").is_file():
                continue
            frames, boxes, lm = synthetic_clip(
                num_frames,
                size,
                scheme,
                motion=2.0 if split == "hard" else 0.5,
                seed=seed * 1000 + i * 2 + (split == "hard"),
                fps=fps,
            )
            write_clip(root, vid, boxes=boxes, landmarks=lm, frames=frames, fps=fps)
        write_split(root, split, vids)
    write_dataset_info(root, scheme=scheme, source="synthetic")
    return WFLWVDataset(root)


def render_synthetic_face(rng: np.random.Generator, size: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a cartoon face with known WFLW-98 landmarks on a noisy background.

    The template face of :func:`wflwv.schemes.template_shape` is deformed (eye and mouth opening, jaw width),
    rotated by up to 20 degrees, scaled and placed at random; face, brows, eyes, nose and lips are drawn
    along the landmark polylines, pupils as dots.

    Returns:
        ``(image_bgr (size, size, 3) uint8, landmarks (98, 2) image pixels, box (4,))``; the box is the
        landmarks' bounding box grown or shrunk by a few percent per side, like a detector's.
    """
    scheme = get_scheme("wflw98")
    pts = template_shape("wflw98").copy()
    for group in ("left_eye", "right_eye"):  # eye opening
        idx = list(scheme.groups[group])
        cy = pts[idx, 1].mean()
        pts[idx, 1] = cy + (pts[idx, 1] - cy) * rng.uniform(0.3, 1.6)
    mouth = list(scheme.groups["mouth"])  # mouth opening
    cy = pts[mouth, 1].mean()
    pts[mouth, 1] = cy + (pts[mouth, 1] - cy) * rng.uniform(0.6, 2.2)
    jaw = list(scheme.groups["jaw"])
    pts[jaw, 0] = 0.5 + (pts[jaw, 0] - 0.5) * rng.uniform(0.85, 1.1)
    # unit template -> image: random similarity
    side = rng.uniform(0.45, 0.75) * size
    angle = np.deg2rad(rng.uniform(-20, 20))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([size / 2, size / 2]) + rng.uniform(-0.12, 0.12, size=2) * size
    landmarks = (pts - 0.55) @ rot.T * side + centre

    background = rng.integers(0, 256, size=(size // 8, size // 8, 3)).astype(np.uint8)
    image = cv2.resize(background, (size, size), interpolation=cv2.INTER_LINEAR)
    skin = tuple(int(v) for v in rng.integers(120, 256, size=3))
    dark = tuple(int(v) for v in rng.integers(0, 70, size=3))
    q = 4  # fixed-point bits for sub-pixel drawing

    def poly(idx, closed, color, thick=1, fill=False):
        p = np.round(landmarks[list(idx)] * (1 << q)).astype(np.int32)[None]
        if fill:
            cv2.fillPoly(image, p, color, lineType=cv2.LINE_AA, shift=q)
        else:
            cv2.polylines(image, p, closed, color, thick, lineType=cv2.LINE_AA, shift=q)

    # face: jaw plus the brow tops closes the outline
    outline = list(scheme.groups["jaw"]) + [46, 45, 44, 43, 42, 37, 36, 35, 34, 33]
    poly(outline, True, skin, fill=True)
    for edge in scheme.edges:
        closed = edge[0] == edge[-1]
        poly(edge[:-1] if closed else edge, closed, dark, 1)
    for i in (96, 97):
        c = tuple(int(v) for v in np.round(landmarks[i] * (1 << q)))
        cv2.circle(image, c, int(max(1.5, side * 0.015) * (1 << q)), dark, -1, cv2.LINE_AA, shift=q)
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    extent = hi - lo
    box = np.concatenate([lo - rng.uniform(-0.04, 0.06, 2) * extent, hi + rng.uniform(-0.04, 0.06, 2) * extent])
    return image, landmarks, box


def make_synthetic_wflw(
    root: str | os.PathLike,
    n_train: int = 32,
    n_test: int = 16,
    size: int = 160,
    seed: int = 0,
) -> Path:
    """Write a tiny synthetic dataset in the WFLW layout (for smoke tests and examples).

    Creates ``root/WFLW_images/synthetic/<split>_<i>.png`` and
    ``root/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_<split>.txt``; attribute flags
    are drawn at random (about one face in three per flag) so every test subset is populated.

    Returns:
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / "WFLW_images" / "synthetic"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    for split, n in (("train", n_train), ("test", n_test)):
        samples = []
        for i in range(n):
            image, landmarks, box = render_synthetic_face(rng, size)
            rel = f"synthetic/{split}_{i:05d}.png"
            if not cv2.imwrite(str(root / "WFLW_images" / rel), image):
                raise OSError(f"could not write {root / 'WFLW_images' / rel}")
            flags = tuple(int(v) for v in (rng.random(len(ATTRIBUTES)) < 0.35))
            samples.append(WFLWSample(landmarks=landmarks, box=box, attributes=flags, image_path=rel))
        write_annotations(ann_dir / annotation_filename(split), samples)
    return root
