"""The WFLW-V evaluation crop and its inverse.

The protocol (as in the released evaluation code): the box ``(x1, y1, x2, y2)`` is rounded with ``int(v + 0.5)``;
``w = x2 - x1 + 1``, ``h = y2 - y1 + 1``; the centre is ``(x1 + w // 2, y1 + h // 2)``; the side of the square is
``1.2 * max(ceil(x2) - floor(x1), ceil(y2) - floor(y1))``. The square ``[cx - side/2, cx + side/2] x
[cy - side/2, cy + side/2]`` of the frame is warped (bilinear) onto a 256 x 256 crop, and predictions made in the
crop go back to the frame through the inverse map.

Matrices are 2 x 3 affine matrices acting on column vectors ``(x, y, 1)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "CROP_SIZE",
    "CROP_MARGIN",
    "crop_square",
    "crop_matrix",
    "invert_affine",
    "warp_crop",
    "to_crop",
    "to_frame",
    "apply_affine",
]

#: side of the square face crop every model receives, in pixels
CROP_SIZE = 256
#: the square's side is this factor times the box's larger side
CROP_MARGIN = 1.2


def crop_square(box) -> tuple[float, float, float]:
    """Centre and side of the protocol's square for one box.

    Args:
        box: (>=4,) ``x1, y1, x2, y2`` in frame pixels (extra entries, e.g. a score, are ignored).
    Returns:
        ``(cx, cy, side)`` in frame pixels.
    Raises:
        ValueError: for a non-finite or zero-size box.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size < 4 or not np.all(np.isfinite(b[:4])):
        raise ValueError(f"face box must be 4 finite numbers x1, y1, x2, y2; got {b[:4].tolist()}")
    x1, y1, x2, y2 = (int(v + 0.5) for v in b[:4])
    w, h = x2 - x1 + 1, y2 - y1 + 1
    cx, cy = x1 + w // 2, y1 + h // 2
    side = CROP_MARGIN * max(math.ceil(x2) - math.floor(x1), math.ceil(y2) - math.floor(y1))
    if side <= 0:
        raise ValueError(f"zero-size face box {b[:4].tolist()} (x2 <= x1 and y2 <= y1 after rounding)")
    return float(cx), float(cy), float(side)


def crop_matrix(box, size: int = CROP_SIZE) -> np.ndarray:
    """The (2, 3) affine map from frame pixels to crop pixels for one box (see module docstring)."""
    cx, cy, side = crop_square(box)
    s = size / side
    return np.array([[s, 0.0, -s * (cx - side / 2)], [0.0, s, -s * (cy - side / 2)]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a (..., 2, 3) affine matrix, shape (..., 2, 3)."""
    m = np.asarray(m, dtype=np.float64)
    a = m[..., :2]
    t = m[..., 2:]
    ainv = np.linalg.inv(a)
    return np.concatenate([ainv, -ainv @ t], axis=-1)


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply (2, 3) affine ``m`` (or (T, 2, 3) for (T, K, 2) points) to points (..., K, 2)."""
    points = np.asarray(points, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return points @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2]


def to_crop(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Frame pixels -> crop pixels with the frame-to-crop matrix ``m`` from :func:`crop_matrix`."""
    return apply_affine(points, m)


def to_frame(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Crop pixels -> frame pixels, inverting the frame-to-crop matrix ``m``."""
    return apply_affine(points, invert_affine(m))


def warp_crop(image: np.ndarray, m: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warp a frame (H, W, C) uint8 to the (size, size, C) crop with the frame-to-crop matrix ``m`` (bilinear)."""
    return cv2.warpAffine(
        image, np.asarray(m, dtype=np.float64), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
