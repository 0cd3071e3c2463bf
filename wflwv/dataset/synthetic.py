"""Tiny synthetic clips with known landmarks, written in the official layout (tests and the offline demo).

Each clip shows a drawn face (skin-coloured ellipse, dark outlines along the landmark curves) moving smoothly
over a textured background while its mouth opens and closes. The landmarks are exact by construction; the boxes
are the landmarks' bounding boxes, as `wflwv build` derives them. Hard clips move faster and further than easy
ones. Nothing here is meant to look like a real face, only to give every test real videos with known answers.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wflwv.dataset.layout import WFLWVDataset, write_clip, write_dataset_info, write_split
from wflwv.schemes import get_scheme, template_shape

__all__ = ["synthetic_clip", "make_synthetic_dataset"]


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
    from wflwv.schemes import WFLW98_TO_IBUG68

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
                num_frames, size, scheme, motion=2.0 if split == "hard" else 0.5, seed=seed * 1000 + i * 2 + (split == "hard"), fps=fps
            )
            write_clip(root, vid, boxes=boxes, landmarks=lm, frames=frames, fps=fps)
        write_split(root, split, vids)
    write_dataset_info(root, scheme=scheme, source="synthetic")
    return WFLWVDataset(root)
