"""Training augmentations for face crops, applied to the image and its landmarks consistently.

Geometric augmentations (rotation, scale, translation, horizontal flip) are one affine map in crop pixels
(pixel centres at integers, crop spanning ``[-0.5, S - 0.5]``), so a dataset can compose it with its
frame-to-crop matrix and warp the original image once (no black corners where the frame has content).
A flip mirrors ``x -> S - 1 - x`` and re-labels left/right with the scheme's flip permutation, exactly as
:meth:`wflwv.schemes.LandmarkScheme.mirror` does. Photometric augmentations (Gaussian blur, motion blur,
occlusion rectangles) then act on the crop and leave the landmarks where they are.

Every random draw comes from a ``numpy.random.Generator`` passed in; :func:`sample_rng` derives one from
``(seed, epoch, index)`` so augmentations are reproducible whatever the data-loader worker or a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from wflwv.schemes import LandmarkScheme, get_scheme

__all__ = [
    "AugmentConfig",
    "Geometry",
    "sample_rng",
    "sample_geometry",
    "compose_affine",
    "transform_points",
    "warp",
    "flip_horizontal",
    "gaussian_blur",
    "motion_blur",
    "occlude",
    "photometric",
    "augment",
]


@dataclass
class AugmentConfig:
    """Augmentation parameters (defaults: the usual face-landmark pipeline at moderate strength).

    Sizes are relative to the crop side S (256) unless marked as pixels.
    """

    rotation_deg: float = 30.0  # max |rotation| in degrees; the angle is uniform in [-r, r]
    rotation_prob: float = 0.6  # probability that a sample is rotated at all
    flip_prob: float = 0.5  # probability of a horizontal flip (with left/right relabelling)
    scale_jitter: float = 0.15  # zoom factor uniform in [1 - s, 1 + s] (> 1 makes the face larger)
    translate: float = 0.05  # shift per axis uniform in [-t, t] x S
    gaussian_blur_prob: float = 0.1  # probability of a Gaussian blur
    gaussian_sigma: tuple[float, float] = (0.5, 2.5)  # its standard deviation range, crop pixels
    motion_blur_prob: float = 0.1  # probability of a linear motion blur
    motion_length: tuple[int, int] = (5, 15)  # its kernel length range, crop pixels (direction uniform)
    occlusion_prob: float = 0.3  # probability of pasting one occluding rectangle
    occlusion_size: tuple[float, float] = (0.1, 0.4)  # rectangle side range, fraction of S (each side drawn)

    def __post_init__(self):
        for name in ("rotation_prob", "flip_prob", "gaussian_blur_prob", "motion_blur_prob", "occlusion_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} is a probability and must be in [0, 1], got {v}")
        if self.rotation_deg < 0 or self.translate < 0 or not 0 <= self.scale_jitter < 1:
            raise ValueError(
                "AugmentConfig: rotation_deg and translate must be >= 0 and scale_jitter in [0, 1); got "
                f"rotation_deg={self.rotation_deg}, translate={self.translate}, scale_jitter={self.scale_jitter}"
            )
        for name in ("gaussian_sigma", "motion_length", "occlusion_size"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not 0 < lo <= hi:
                raise ValueError(
                    f"AugmentConfig.{name} must be a range (low, high) with 0 < low <= high, got {(lo, hi)}"
                )
        if self.occlusion_size[1] > 1:
            raise ValueError(
                f"AugmentConfig.occlusion_size is a fraction of the crop side (<= 1), got {self.occlusion_size}"
            )

    @classmethod
    def disabled(cls) -> AugmentConfig:
        """A configuration that changes nothing (all probabilities and ranges zero)."""
        return cls(
            rotation_prob=0.0,
            flip_prob=0.0,
            scale_jitter=0.0,
            translate=0.0,
            gaussian_blur_prob=0.0,
            motion_blur_prob=0.0,
            occlusion_prob=0.0,
        )

    @classmethod
    def geometric_only(cls, **kw) -> AugmentConfig:
        """Default geometry, no photometric changes (keyword arguments override fields)."""
        base = dict(gaussian_blur_prob=0.0, motion_blur_prob=0.0, occlusion_prob=0.0)
        base.update(kw)
        return cls(**base)


@dataclass(frozen=True)
class Geometry:
    """One drawn geometric augmentation.

    Attributes:
        matrix: (2, 3) affine map from crop pixels before to crop pixels after (flip included).
        flipped: whether it mirrors (then landmarks must be re-ordered with the scheme's flip permutation).
        angle_deg, scale, shift: the drawn parameters (for logging and tests).
    """

    matrix: np.ndarray
    flipped: bool
    angle_deg: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """An independent generator for one (seed, epoch, sample index); all three must be >= 0."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def _as3(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"affine matrix must have shape (2, 3), got {m.shape}")
    return np.vstack([m, [0.0, 0.0, 1.0]])


def compose_affine(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The (2, 3) affine ``second o first`` (apply ``first``, then ``second``)."""
    return (_as3(second) @ _as3(first))[:2]


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine map to points (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]


def sample_geometry(cfg: AugmentConfig, rng: np.random.Generator, size: int = 256) -> Geometry:
    """Draw a rotation / scale / translation / flip about the centre of an S x S crop (S = ``size``)."""
    angle = 0.0
    if cfg.rotation_deg > 0 and rng.random() < cfg.rotation_prob:
        angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    scale = float(rng.uniform(1.0 - cfg.scale_jitter, 1.0 + cfg.scale_jitter)) if cfg.scale_jitter > 0 else 1.0
    shift = (0.0, 0.0)
    if cfg.translate > 0:
        shift = tuple(float(v) for v in rng.uniform(-cfg.translate, cfg.translate, size=2) * size)
    flipped = bool(rng.random() < cfg.flip_prob)
    c = (size - 1) / 2.0
    a = math.radians(angle)
    # positive angle = counter-clockwise as seen on screen (y points down)
    rot = scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    t = np.array([c + shift[0], c + shift[1]]) - rot @ np.array([c, c])
    m = np.hstack([rot, t[:, None]])
    if flipped:
        m = compose_affine(np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]), m)
    return Geometry(matrix=m, flipped=flipped, angle_deg=angle, scale=scale, shift=shift)


def warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warp an image with a (2, 3) affine map onto a ``size`` x ``size`` canvas (bilinear, black border)."""
    return cv2.warpAffine(
        image, np.asarray(m, dtype=np.float64), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def flip_horizontal(
    image: np.ndarray, points: np.ndarray, scheme: str | LandmarkScheme
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an image (H, W, C) and its landmarks (K, 2); left/right landmarks swap labels.

    Applying it twice gives the input back exactly.
    """
    scheme = get_scheme(scheme)
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2] != scheme.num_points:
        raise ValueError(
            f"flip_horizontal: {points.shape[-2]} landmarks but scheme {scheme.name} has {scheme.num_points}"
        )
    return np.ascontiguousarray(image[:, ::-1]), scheme.mirror(points, image.shape[1])


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel chosen by OpenCV)."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def motion_blur(image: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Blur along a straight line of ``length`` pixels at ``angle_deg``, centred (content does not move)."""
    length = max(1, int(length))
    k = length if length % 2 == 1 else length + 1
    kernel = np.zeros((k, k), dtype=np.float32)
    c = (k - 1) / 2.0
    a = math.radians(angle_deg)
    dx, dy = math.cos(a), -math.sin(a)
    # sample the line densely and splat bilinearly; symmetric about the centre by construction
    for s in np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, 4 * length + 1):
        x, y = c + s * dx, c + s * dy
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for xx, yy, w in (
            (x0, y0, (1 - fx) * (1 - fy)),
            (x0 + 1, y0, fx * (1 - fy)),
            (x0, y0 + 1, (1 - fx) * fy),
            (x0 + 1, y0 + 1, fx * fy),
        ):
            if 0 <= xx < k and 0 <= yy < k:
                kernel[yy, xx] += w
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def occlude(image: np.ndarray, rng: np.random.Generator, size_range: tuple[float, float]) -> np.ndarray:
    """Paste one rectangle (uniform random colour or noise) whose sides are drawn from ``size_range`` x side."""
    out = image.copy()
    h, w = image.shape[:2]
    rw = max(1, int(round(rng.uniform(*size_range) * w)))
    rh = max(1, int(round(rng.uniform(*size_range) * h)))
    x0 = int(rng.integers(0, w - rw + 1))
    y0 = int(rng.integers(0, h - rh + 1))
    channels = image.shape[2] if image.ndim == 3 else 1
    if rng.random() < 0.5:
        fill = rng.integers(0, 256, size=channels).astype(image.dtype)
        out[y0 : y0 + rh, x0 : x0 + rw] = fill if image.ndim == 3 else fill[0]
    else:
        shape = (rh, rw, channels) if image.ndim == 3 else (rh, rw)
        out[y0 : y0 + rh, x0 : x0 + rw] = rng.integers(0, 256, size=shape).astype(image.dtype)
    return out


def photometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Draw and apply the blur / occlusion augmentations to a uint8 crop (landmarks are unaffected)."""
    if rng.random() < cfg.gaussian_blur_prob:
        image = gaussian_blur(image, rng.uniform(*cfg.gaussian_sigma))
    if rng.random() < cfg.motion_blur_prob:
        lo, hi = int(cfg.motion_length[0]), int(cfg.motion_length[1])
        image = motion_blur(image, int(rng.integers(lo, hi + 1)), rng.uniform(0.0, 180.0))
    if rng.random() < cfg.occlusion_prob:
        image = occlude(image, rng, cfg.occlusion_size)
    return image


def augment(
    image: np.ndarray,
    points: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    scheme: str | LandmarkScheme,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a square crop and its landmarks.

    Args:
        image: (S, S, C) uint8 crop.
        points: (K, 2) crop pixels, K matching ``scheme``.
        cfg: what to draw; rng: where from.
    Returns:
        ``(image, points)``: the augmented (S, S, C) crop and (K, 2) landmarks on it (flip-relabelled).
    """
    scheme = get_scheme(scheme)
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (scheme.num_points, 2):
        raise ValueError(
            f"augment: landmarks must have shape ({scheme.num_points}, 2) for {scheme.name}, got {points.shape}"
        )
    h, w = image.shape[:2]
    if h != w:
        raise ValueError(f"augment expects a square crop, got {w} x {h}")
    geom = sample_geometry(cfg, rng, w)
    out = warp(image, geom.matrix, w)
    pts = transform_points(points, geom.matrix)
    if geom.flipped:
        pts = pts[scheme.flip_index()]
    return photometric(out, cfg, rng), pts
