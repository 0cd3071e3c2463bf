"""Sanity models that show the metrics respond as they should.

``oracle``
    Returns the dataset's own landmarks for the clip and frame it is shown: NME = NMF = 0.
``mean-shape``
    A fixed mean face in the crop, whatever the image: a floor any trained model must beat.
``perturbed-oracle``
    The ground truth plus seeded i.i.d. jitter and/or a slow drift, amplitudes in crop pixels: NME and NMF grow
    with the jitter, the drift raises NME much more than NMF.

The oracles read the landmarks from ``FrameInfo.dataset_root`` by clip ID and frame index: the harness tells a
model where a crop comes from, never the ground truth itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel, ModelOutput
from wflwv.models.checkpoints import inspect_file
from wflwv.protocol.crop import apply_affine, invert_affine
from wflwv.protocol.layout import WFLWVDataset
from wflwv.schemes import get_scheme, scheme_for_num_points, template_shape

__all__ = ["OracleModel", "MeanShapeModel", "PerturbedOracleModel"]


def _crop_points(frame_points: np.ndarray, crop_to_frame: np.ndarray) -> np.ndarray:
    return apply_affine(frame_points, invert_affine(crop_to_frame))


class OracleModel(LandmarkModel):
    """Looks up the dataset's own landmarks for the clip and frame shown (NME = NMF = 0)."""

    stateful = False
    batch_invariant = True  # numpy, one frame at a time

    scheme = None  # whatever the dataset uses

    def __init__(self, data: str | None = None):
        self.data = data
        self._cache: dict[tuple[Path, str], np.ndarray] = {}

    def _truth(self, info: FrameInfo) -> np.ndarray:
        root = Path(self.data) if self.data else info.dataset_root
        if root is None:
            raise ValueError("the oracle needs the dataset folder: run it through the harness or pass data=DIR")
        key = (root, info.video_id)
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = WFLWVDataset(root).load(info.video_id).landmarks
        return self._cache[key][info.frame_index]

    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        pts = np.stack([_crop_points(self._truth(f), f.crop_to_frame) for f in frames])
        return ModelOutput(pts, [None] * len(frames))

    def config(self) -> dict[str, Any]:
        return {"data": self.data}


def _load_shape(path: str) -> np.ndarray:
    """The array of a ``.npy`` file, with errors that name the file and say what it is instead."""
    kind, desc = inspect_file(path)
    expected = "expected a .npy file (np.save) with a (K, 2) mean shape in unit crop coordinates"
    if kind == "missing":
        raise FileNotFoundError(f"mean shape file not found: {path}")
    if kind != "npy":
        raise ValueError(f"{path} is {desc}; {expected}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is {desc} but it cannot be read (truncated or damaged: {exc}); {expected}") from None


class MeanShapeModel(LandmarkModel):
    """A fixed mean face shape in the crop, whatever the image (the floor any model must beat)."""

    stateful = False
    batch_invariant = True  # numpy, one frame at a time

    def __init__(self, scheme: str | None = None, shape: str | None = None):
        """
        Args:
            scheme: landmark scheme of the shape (default: from the shape file's K, else ``wflw98``, which the
                harness converts to iBUG-68 on 68-point data).
            shape: optional ``.npy`` file with a (K, 2) mean shape in unit crop coordinates ([0, 1]); the default
                is the toolkit's template face (:func:`wflwv.schemes.template_shape`).
        """
        self.shape_file = shape
        if shape is not None:
            arr = _load_shape(shape)
            if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
                raise ValueError(f"{shape}: a mean shape must be a finite (K, 2) array in unit crop coordinates")
            self._shape = arr.astype(np.float64)
            self.scheme = scheme or scheme_for_num_points(len(arr)).name
            if get_scheme(self.scheme).num_points != len(arr):
                raise ValueError(
                    f"{shape}: {len(arr)} points, but scheme {self.scheme!r} has {get_scheme(self.scheme).num_points}"
                )
        else:
            self.scheme = get_scheme(scheme or "wflw98").name
            self._shape = template_shape(self.scheme)

    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        shape = self._shape
        pts = np.broadcast_to(shape * CROP_SIZE, (len(frames),) + shape.shape).copy()
        return ModelOutput(pts, [None] * len(frames))

    def config(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "shape": self.shape_file}


class PerturbedOracleModel(OracleModel):
    """Ground truth plus seeded i.i.d. jitter and/or slow drift (amplitudes in crop pixels)."""

    def __init__(
        self,
        jitter: float = 2.0,
        drift: float = 0.0,
        drift_period: float = 2.0,
        seed: int = 0,
        data: str | None = None,
    ):
        """
        Args:
            jitter: standard deviation of the i.i.d. Gaussian noise per landmark, coordinate and frame (crop pixels).
            drift: amplitude of a slow sinusoidal drift per landmark (crop pixels), random direction and phase.
            drift_period: period of the drift in seconds (uses the clip's fps).
            seed: the noise is a function of (seed, clip ID, frame index) only, so batching never changes it.
        """
        super().__init__(data)
        if jitter < 0 or drift < 0 or drift_period <= 0:
            raise ValueError("jitter and drift must be >= 0 and drift_period > 0")
        self.jitter, self.drift, self.drift_period, self.seed = (
            float(jitter),
            float(drift),
            float(drift_period),
            int(seed),
        )

    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        out = super().predict(images, states, frames)
        pts = out.landmarks
        for i, f in enumerate(frames):
            clip_key = zlib.crc32(f.video_id.encode())
            k = pts.shape[1]
            if self.jitter:
                rng = np.random.default_rng([self.seed, clip_key, f.frame_index])
                pts[i] += rng.normal(0.0, self.jitter, (k, 2))
            if self.drift:
                rng = np.random.default_rng([self.seed, clip_key, 1 << 30])
                phase = rng.uniform(0, 2 * np.pi, k)
                angle = rng.uniform(0, 2 * np.pi, k)
                t = f.frame_index / (f.fps if f.fps > 0 else 25.0)
                amp = self.drift * np.sin(2 * np.pi * t / self.drift_period + phase)
                pts[i] += amp[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return out

    def config(self) -> dict[str, Any]:
        return {
            "jitter": self.jitter,
            "drift": self.drift,
            "drift_period": self.drift_period,
            "seed": self.seed,
            "data": self.data,
        }
