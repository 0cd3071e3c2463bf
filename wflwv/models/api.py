"""The model plug-in API: what the benchmark harness hands a model and what it expects back.

A model sees a batch of face crops, one per clip being processed, all at the same frame index t of their
clips. Crops follow the WFLW-V evaluation protocol (:mod:`wflwv.protocol.crop`):

* ``images``: ``torch.float32`` tensor of shape ``(N, 3, 256, 256)``, **RGB**, values in ``[0, 1]``, already on
  the model's device. Models apply their own normalisation (e.g. ImageNet mean / std).
* ``states``: a list of N per-clip states. For a model with ``stateful = True`` (the default) the entry is
  ``None`` at a clip's first frame; afterwards it is exactly what the model returned for that clip at the
  previous frame. The harness never looks inside, so a warm-started model (LDEQ + RwR) keeps its previous
  equilibrium there instead of in hidden globals. A model that declares ``stateful = False`` always gets
  ``None`` and may be handed several frames of one clip in one batch (``--frame-batch``).
* ``frames``: a list of N :class:`FrameInfo` saying which clip and frame each crop is (never the ground truth).

It returns a :class:`ModelOutput`: landmarks in **crop pixels** ``(N, K, 2)`` (x, y; pixel centres at integer
coordinates, so the crop spans ``[-0.5, 255.5]``), the N new states, and optionally per-frame statistics
(``{"solver_iters": (N,), ...}``) that the harness records, and heatmaps for ensemble averaging.

Results must not depend on which other clips or frames share the batch: the harness may batch frame t of several
clips (``--batch-videos``) or, for a stateless model, many frames of a clip (``--frame-batch``), and expects the
numbers of one frame at a time. Networks meet this only up to float rounding; a model whose numbers are exactly
invariant says so with ``batch_invariant = True``, and for the others the harness's exact mode (the CPU default)
evaluates every sample alone.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wflwv.protocol.crop import CROP_SIZE

__all__ = [
    "CROP_SIZE",
    "FrameInfo",
    "ModelOutput",
    "LandmarkModel",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_normalise",
    "resolve_device",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> ImageNet-normalised (mean / std per channel), as every built-in network expects."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error.

    Raises:
        ValueError: an unknown device name, or CUDA asked for on a machine without a GPU.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but no CUDA GPU is available; use --device cpu or auto")
    return dev


@dataclass(frozen=True)
class FrameInfo:
    """Where a crop comes from. The harness fills this in; it never carries ground truth.

    Attributes:
        video_id: the clip's ID (file stem in the dataset).
        frame_index: 0-based index of the frame within the clip.
        num_frames: number of frames in the clip.
        fps: the clip's frame rate (frames per second).
        crop_to_frame: (2, 3) affine matrix taking crop pixels to frame pixels.
        dataset_root: the dataset folder, for models that read per-clip side information (e.g. ``oracle``).
    """

    video_id: str
    frame_index: int
    num_frames: int
    fps: float
    crop_to_frame: np.ndarray
    dataset_root: Path | None = None


@dataclass
class ModelOutput:
    """What :meth:`LandmarkModel.predict` returns.

    Attributes:
        landmarks: (N, K, 2) crop-pixel coordinates, numpy or torch (any device).
        states: N per-clip states to hand back at the clip's next frame.
        stats: per-frame statistics, name -> (N,) numbers (e.g. ``solver_iters``, ``residual``).
        heatmaps: optional (N, K, H, W) non-negative heatmaps over the crop, for oracle ensembles.
    """

    landmarks: Any
    states: list[Any]
    stats: dict[str, Any] = field(default_factory=dict)
    heatmaps: Any = None

    def landmarks_numpy(self) -> np.ndarray:
        """Landmarks as a float64 numpy array (N, K, 2)."""
        lm = self.landmarks
        if isinstance(lm, torch.Tensor):
            lm = lm.detach().to("cpu", torch.float64).numpy()
        return np.asarray(lm, dtype=np.float64)

    def stats_numpy(self) -> dict[str, np.ndarray]:
        """Statistics as float64 numpy arrays of shape (N,)."""
        out = {}
        for k, v in self.stats.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().to("cpu", torch.float64).numpy()
            out[k] = np.asarray(v, dtype=np.float64).reshape(-1)
        return out


class LandmarkModel(abc.ABC):
    """Base class for every model the harness can run.

    Subclasses set :attr:`scheme` (``"wflw98"`` or ``"ibug68"``) and implement :meth:`predict`. Torch models
    keep their network in :attr:`net` (an ``nn.Module``) so that the default :meth:`to` moves it and puts it
    in eval mode; models without a network need nothing more. The registry sets :attr:`name`.
    """

    #: landmark scheme of the output (decides K and which points the metrics compare); ``None`` means "the
    #: dataset's scheme" (for models such as ``oracle`` that echo the data)
    scheme: str | None = "wflw98"
    #: set by :func:`wflwv.models.create_model`
    name: str = ""
    #: whether :meth:`predict` carries per-clip state from frame to frame. True (the safe default): the harness
    #: feeds each clip's frames in order, one per call, handing back the state. False: states are always None and
    #: the harness may batch many frames of a clip in one call (``--frame-batch``), which is much faster.
    stateful: bool = True
    #: whether a sample's numbers are the same whatever else shares the call and whatever torch's thread count (as
    #: for numpy models, or LDEQ's sequential evaluation). False (the default for networks, whose convolution
    #: kernels round differently for other batch sizes and thread counts): on a CPU the harness's exact mode then
    #: computes every sample alone on one-threaded kernels, samples spread over threads
    #: (:func:`wflwv.models.parallel.predict_per_sample`). True: the exact mode calls :meth:`predict` on the whole
    #: batch with torch on one thread; :func:`wflwv.models.parallel.cpu_threads` says how many threads the model may
    #: spread its own work over (:func:`wflwv.models.parallel.run_tasks`), as LDEQ does
    batch_invariant: bool = False
    #: the network, if any (moved by :meth:`to`)
    net: torch.nn.Module | None = None
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        """Predict landmarks for a batch of crops (see the module docstring for shapes and units)."""

    def to(self, device: str | torch.device) -> LandmarkModel:
        """Move the model to ``device`` and return it (eval mode for torch networks)."""
        self.device = torch.device(device)
        if self.net is not None:
            self.net.to(self.device).eval()
        return self

    def config(self) -> dict[str, Any]:
        """The resolved configuration, recorded in results for provenance (JSON-serialisable)."""
        return {}
