"""The labelling oracle of `wflwv build`: an ensemble of landmark models run on protocol crops.

The ensemble itself is :class:`wflwv.baselines.ensemble.OracleEnsemble` (heatmap averaging over members and
test-time augmentations, per-landmark variance of all votes). This module adds

* ``dlib68`` (:class:`Dlib68Model`), an offline teacher: dlib's 68-point shape predictor (the iBUG-300W model
  shipped in the PyPI package ``face-recognition-models``) run on the crop, registered as a LandmarkModel with
  scheme ``ibug68``. The predictor needs a face rectangle; the crop of a landmark-derived box puts the face at a
  known place, so the rectangle is fixed in crop coordinates (:data:`DLIB_RECT_IN_CROP`, the rectangle dlib's own
  HOG detector draws around such a face, measured on real faces). Its output depends only on the crop: no
  randomness, no state, no dependence on the batch.
* :func:`build_oracle` from member specs (``NAME`` or ``NAME:WEIGHTS``) and TTA names.
* :func:`run_oracle` / :func:`label_clip`: the oracle over every frame of a clip, in batches, with the boxes
  re-derived from the oracle's own landmarks (``passes``) and smoothed over time, so the stored boxes are the
  crops the final landmarks were computed on.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import torch

from wflwv.dataset.crop import CROP_MARGIN, apply_affine, crop_matrix, invert_affine, warp_crop
from wflwv.dataset.detect import landmarks_box, square_box
from wflwv.dataset.video import iter_frames
from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel, ModelOutput
from wflwv.models.registry import register_model

__all__ = [
    "DLIB_RECT_IN_CROP",
    "dlib_predictor_path",
    "Dlib68Model",
    "parse_member",
    "build_oracle",
    "build_members",
    "smooth_boxes",
    "OracleResult",
    "run_oracle",
    "label_clip",
]

# The rectangle dlib's HOG detector draws around a face, relative to the face's landmark square (side S, centre c):
# centre c + (0, -0.10 S), side 1.04 S (medians over ~300 detections on real talking-face video; see
# wflwv.dataset.detect). In a protocol crop the landmark square has side CROP_SIZE / CROP_MARGIN and is centred.
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


@register_model("dlib68")
class Dlib68Model(LandmarkModel):
    """dlib's 68-point shape predictor (iBUG-300W) on the crop's face rectangle; an offline oracle member."""

    scheme = "ibug68"

    def __init__(self, weights: str | None = None, upsample: int = 2):
        """
        Args:
            weights: a dlib ``.dat`` shape-predictor file (default: the 68-point model of face-recognition-models).
            upsample: the crop is enlarged by this factor before prediction; dlib returns whole pixels, so 2 gives
                half-pixel landmark positions in the crop.
        """
        try:
            import dlib
        except ImportError as exc:
            raise RuntimeError("the dlib68 model needs dlib: pip install dlib-bin face-recognition-models") from exc
        path = Path(weights) if weights else dlib_predictor_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: dlib shape-predictor file not found")
        if int(upsample) < 1:
            raise ValueError(f"upsample must be a positive integer, got {upsample}")
        self.weights = str(path)
        self.upsample = int(upsample)
        key = str(path.resolve())
        if key not in _PREDICTORS:  # loading the 100 MB model takes most of a second: once per process
            _PREDICTORS[key] = dlib.shape_predictor(key)
        self._predictor = _PREDICTORS[key]
        u = self.upsample
        l, t, r, b = (int(round((v + 0.5) * u - 0.5)) for v in DLIB_RECT_IN_CROP)
        self._rect = dlib.rectangle(l, t, r, b)

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


def parse_member(spec: str) -> tuple[str, str | None]:
    """``"NAME"`` or ``"NAME:WEIGHTS"`` -> ``(name, weights or None)``."""
    name, _, weights = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"bad oracle member {spec!r}: use NAME or NAME:WEIGHTS (e.g. dlib68, hrnet:hrnet.pt)")
    return name, (weights.strip() or None)


def build_oracle(members: Sequence[str | tuple | LandmarkModel], tta: Sequence[str] | str | None, device: str = "cpu"):
    """The oracle ensemble (:func:`wflwv.baselines.ensemble.make_oracle`) from member specs.

    Args:
        members: ``"NAME"``, ``"NAME:WEIGHTS"``, ``(name, weights[, kwargs])`` or ready LandmarkModels (which
            may be shared between several ensembles, e.g. one with and one without test-time augmentation).
        tta: test-time augmentation names (``flip``, ``shift[:D]``, ``scale[:A/B]``), list or comma string.
    """
    from wflwv.baselines.ensemble import make_oracle

    specs = [parse_member(m) if isinstance(m, str) else m for m in members]
    if not specs:
        raise ValueError("the oracle needs at least one member (e.g. dlib68)")
    return make_oracle(specs, tta, device)


def build_members(members: Sequence[str | tuple | LandmarkModel]) -> list[LandmarkModel]:
    """Create the member models once (``"NAME"``, ``"NAME:WEIGHTS"``, ``(name, weights[, kwargs])`` or models)."""
    from wflwv.models.registry import create_model

    out = []
    for m in members:
        if isinstance(m, str):
            m = parse_member(m)
        if isinstance(m, (tuple, list)):
            name, weights = m[0], m[1] if len(m) > 1 else None
            kwargs = dict(m[2]) if len(m) > 2 else {}
            if weights is not None:
                kwargs["weights"] = str(weights)
            m = create_model(name, **kwargs)
        out.append(m)
    return out


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of box centres and sides over ``window`` frames (shrinking at the ends).

    Args:
        boxes: (T, >=4) ``x1, y1, x2, y2``. window: odd number of frames (1 = unchanged).
    Returns:
        (T, 4) boxes.
    """
    b = np.asarray(boxes, dtype=np.float64)[:, :4]
    if window <= 1 or len(b) < 2:
        return b.copy()
    c = (b[:, :2] + b[:, 2:]) / 2
    wh = b[:, 2:] - b[:, :2]
    r = window // 2
    t = len(b)
    cs, whs = np.empty_like(c), np.empty_like(wh)
    for i in range(t):
        k = min(r, i, t - 1 - i)  # symmetric window, so a steady motion is not delayed
        cs[i] = c[i - k : i + k + 1].mean(axis=0)
        whs[i] = wh[i - k : i + k + 1].mean(axis=0)
    return np.concatenate([cs - whs / 2, cs + whs / 2], axis=1)


@dataclass
class OracleResult:
    """Oracle labels of one clip.

    Attributes:
        landmarks: (T, K, 2) frame pixels.
        boxes: (T, 4) the boxes whose protocol crops the landmarks were computed on.
        variance: (T, K) per-landmark ensemble variance (crop pixels squared).
        passes: number of oracle passes run.
        box_shift: (passes,) median movement of the box centre between consecutive passes, in units of the box
            side (how much the re-derivation changed the crops; the last value near 0 means converged).
    """

    landmarks: np.ndarray
    boxes: np.ndarray
    variance: np.ndarray
    passes: int
    box_shift: list[float]


def _crops(frames: Iterable[np.ndarray], boxes: np.ndarray, video):
    for t, frame in enumerate(frames):
        if t >= len(boxes):
            raise ValueError(f"{video}: the video has more frames than the {len(boxes)} boxes given")
        m = crop_matrix(boxes[t], CROP_SIZE)
        yield t, m, warp_crop(frame, m, CROP_SIZE)[..., ::-1]


def run_oracle(
    oracle: LandmarkModel,
    video: str | Path,
    boxes: np.ndarray,
    video_id: str = "clip",
    fps: float = 25.0,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the oracle on the protocol crops of every frame of ``video``.

    Frames are independent (the states handed to the oracle are always None), so any batching gives the same
    numbers.

    Args:
        boxes: (T, >=4) one box per frame.
    Returns:
        ``(landmarks, variance)``: (T, K, 2) frame pixels and (T, K) per-landmark variance (zeros for a model
        that reports none).
    Raises:
        ValueError: when the video has a different number of frames than ``boxes``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    t_total = len(boxes)
    lms: list[np.ndarray] = []
    var: list[np.ndarray] = []
    batch: list[tuple[int, np.ndarray, np.ndarray]] = []

    def flush():
        imgs = torch.from_numpy(np.stack([b[2] for b in batch])).permute(0, 3, 1, 2).float().div_(255.0)
        infos = [FrameInfo(video_id, t, t_total, fps, invert_affine(m)) for t, m, _ in batch]
        with torch.no_grad():
            out = oracle.predict(imgs, [None] * len(batch), infos)
        pts = out.landmarks_numpy()
        for (t, m, _), p in zip(batch, pts):
            lms.append(apply_affine(p, invert_affine(m)))
        lv = getattr(oracle, "last_landmark_var", None)
        if lv is not None and np.shape(lv) == pts.shape[:2]:
            var.extend(np.asarray(lv, dtype=np.float64))
        else:
            var.extend(np.zeros(pts.shape[:2]))
        batch.clear()

    n = 0
    for item in _crops(iter_frames(video), boxes, video):
        batch.append(item)
        n += 1
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if n != t_total:
        raise ValueError(f"{video}: decoded {n} frames but {t_total} boxes were given")
    return np.stack(lms), np.stack(var)


def label_clip(
    oracle: LandmarkModel,
    video: str | Path,
    boxes: np.ndarray,
    video_id: str = "clip",
    fps: float = 25.0,
    passes: int = 2,
    smooth: int = 5,
    batch_size: int = 16,
) -> OracleResult:
    """Oracle labels with boxes stabilised by the oracle itself.

    Pass 1 crops with ``boxes`` (e.g. detector squares). Every further pass crops with the squares of the previous
    pass's landmarks (bounding box made square, smoothed over ``smooth`` frames) and predicts again. The result
    keeps the last pass's landmarks, variance and the boxes it cropped with.

    Args:
        boxes: (T, >=4) initial boxes in the landmark-square convention (see :mod:`wflwv.dataset.detect`).
        passes: total number of oracle passes (>= 1; 2 is enough when the detector boxes are calibrated).
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    cur = np.asarray(boxes, dtype=np.float64)[:, :4]
    shifts: list[float] = []
    lm = var = None
    for p in range(passes):
        if p > 0:
            new = smooth_boxes(square_box(landmarks_box(lm)), smooth)
            side = np.maximum(cur[:, 2] - cur[:, 0], 1e-6)
            moved = np.linalg.norm((new[:, :2] + new[:, 2:]) / 2 - (cur[:, :2] + cur[:, 2:]) / 2, axis=1) / side
            shifts.append(float(np.median(moved)))
            cur = new
        lm, var = run_oracle(oracle, video, cur, video_id, fps, batch_size)
    return OracleResult(lm, cur, var, passes, shifts)
