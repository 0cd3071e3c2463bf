"""dlib's 68-point shape predictor as a landmark model (``dlib68``): an offline oracle member.

The predictor is the iBUG-300W model shipped in the PyPI package ``face-recognition-models``, run on the protocol
crop with scheme ``ibug68``. It needs a face rectangle; the crop of a landmark-derived box puts the face at a known
place, so the rectangle is fixed in crop coordinates (:data:`DLIB_RECT_IN_CROP`, the rectangle dlib's own HOG
detector draws around such a face, measured on real faces). Its output depends only on the crop: no randomness, no
state, no dependence on the batch. dlib is imported when the model is created (``pip install 'wflwv[build]'``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel, ModelOutput
from wflwv.models.checkpoints import CheckpointError, inspect_file
from wflwv.protocol.crop import CROP_MARGIN

__all__ = ["DLIB_RECT_IN_CROP", "dlib_predictor_path", "Dlib68Model"]

# The rectangle dlib's HOG detector draws around a face, relative to the face's landmark square (side S, centre c):
# centre c + (0, -0.10 S), side 1.04 S (medians over ~300 detections on real talking-face video; see
# wflwv.build.detect). In a protocol crop the landmark square has side CROP_SIZE / CROP_MARGIN and is centred.
_S = CROP_SIZE / CROP_MARGIN
_C = (CROP_SIZE - 1) / 2
_HALF = 1.042 * _S / 2
#: (left, top, right, bottom) of the face rectangle handed to the shape predictor, crop pixels
DLIB_RECT_IN_CROP = (_C - _HALF, _C - 0.10 * _S - _HALF, _C + _HALF, _C - 0.10 * _S + _HALF)


def dlib_predictor_path() -> Path:
    """Location of dlib's 68-point model from the ``face-recognition-models`` package.

    Raises:
        FileNotFoundError: with the install command when the package is missing.
    """
    try:
        import face_recognition_models

        return Path(face_recognition_models.pose_predictor_model_location())
    except ImportError:
        pass  # the package imports pkg_resources, absent from recent setuptools: find the file directly
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "models" / "shape_predictor_68_face_landmarks.dat"
            if p.is_file():
                return p
    raise FileNotFoundError(
        "dlib's 68-point shape predictor was not found: pip install face-recognition-models dlib-bin "
        "(or pass weights=PATH/shape_predictor_68_face_landmarks.dat)"
    )


_PREDICTORS: dict[str, Any] = {}


class Dlib68Model(LandmarkModel):
    """dlib's 68-point shape predictor (iBUG-300W) on the crop's face rectangle; an offline oracle member."""

    scheme = "ibug68"
    stateful = False
    batch_invariant = True  # dlib predicts one crop at a time

    def __init__(self, weights: str | None = None, upsample: int = 2):
        """
        Args:
            weights: a dlib ``.dat`` shape-predictor file (default: the 68-point model of face-recognition-models).
            upsample: the crop is enlarged by this factor before prediction; dlib returns whole pixels, so 2 gives
                half-pixel landmark positions in the crop.
        """
        try:
            import dlib  # noqa: F401  (here for the message; _load uses it)
        except ImportError as exc:
            raise RuntimeError("the dlib68 model needs dlib: pip install dlib-bin face-recognition-models") from exc
        path = Path(weights) if weights else dlib_predictor_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: dlib shape-predictor file not found")
        if int(upsample) < 1:
            raise ValueError(f"upsample must be a positive integer, got {upsample}")
        self.weights = str(path)
        self.upsample = int(upsample)
        self._load()

    def _load(self) -> None:
        import dlib

        path = Path(self.weights)
        key = str(path.resolve())
        if key not in _PREDICTORS:  # loading the 100 MB model takes most of a second: once per process
            try:
                _PREDICTORS[key] = dlib.shape_predictor(key)
            except RuntimeError:  # dlib's message ("Error deserializing object of type int") names no file
                kind, desc = inspect_file(path)
                what = (
                    "a file dlib cannot read as a shape predictor (truncated, or another kind of file)"
                    if kind == "unknown"
                    else desc
                )
                raise CheckpointError(
                    f"{path} is {what}; expected a dlib shape-predictor .dat file such as "
                    "shape_predictor_68_face_landmarks.dat (pip install face-recognition-models ships one; leave "
                    "weights unset to use it)"
                ) from None
        self._predictor = _PREDICTORS[key]
        u = self.upsample
        left, top, right, bottom = (int(round((v + 0.5) * u - 0.5)) for v in DLIB_RECT_IN_CROP)
        self._rect = dlib.rectangle(left, top, right, bottom)

    def __getstate__(self) -> dict[str, Any]:
        # sent to another process (Ray workers) as the path of its weights, not 100 MB of predictor: the
        # receiving process loads the file (which must exist there) once
        return {k: v for k, v in self.__dict__.items() if k not in ("_predictor", "_rect")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()

    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        """(N, 3, 256, 256) RGB [0, 1] crops -> (N, 68, 2) crop-pixel landmarks."""
        imgs = torch.as_tensor(images).detach().to("cpu", torch.float32)
        if imgs.ndim != 4 or imgs.shape[1] != 3:
            raise ValueError(f"dlib68 expects (N, 3, H, W) RGB crops, got {tuple(imgs.shape)}")
        u8 = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = np.empty((len(u8), 68, 2))
        u = self.upsample
        for i, img in enumerate(u8):
            img = np.ascontiguousarray(img)
            if u > 1:
                img = cv2.resize(img, (img.shape[1] * u, img.shape[0] * u), interpolation=cv2.INTER_LINEAR)
            shape = self._predictor(img, self._rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            out[i] = (pts + 0.5) / u - 0.5  # pixel centres of the enlarged image -> crop pixels
        return ModelOutput(out, [None] * len(u8))

    def config(self) -> dict[str, Any]:
        return {"weights": self.weights, "upsample": self.upsample}
