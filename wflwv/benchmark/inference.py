"""The model pass of a bench: decode and crop clips, run the model over their frames, map predictions to frames.

This is the part every execution engine (:mod:`wflwv.benchmark.engines`) does the same way, in the driver
process or in a Ray worker; scoring and writing the run folder stay with the driver (:mod:`wflwv.benchmark.harness`).

Two frame orders, chosen by the model's :attr:`~wflwv.models.LandmarkModel.stateful`:

* **stateful** (LDEQ + RwR, and any model that does not say otherwise): the clips of a group advance together,
  frame t of each in one ``predict`` call, each clip's state handed back at its next frame.
* **stateless** (per-frame models): the frames of the group's clips, clip after clip, are fed in batches of
  ``frame_batch`` frames; states are always ``None``.

Either way a clip's predictions must not depend on how frames were batched (the model contract,
:mod:`wflwv.models.api`). ``precision`` runs ``predict`` under :func:`torch.autocast` (:func:`precision_context`).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel
from wflwv.models.parallel import cpu_threads, predict_per_sample, spread_over
from wflwv.protocol.crop import apply_affine
from wflwv.protocol.layout import Clip, ClipCrops, DatasetError, WFLWVDataset, decode_crops
from wflwv.schemes import LandmarkScheme

__all__ = [
    "BenchError",
    "PRECISIONS",
    "DEFAULT_FRAME_BATCH",
    "AUTO_CLIPS_PER_THREAD",
    "AUTO_BATCH_VIDEOS_MAX",
    "auto_batch_videos",
    "ClipOutcome",
    "LoadedClip",
    "load_clip",
    "failed_outcome",
    "run_group",
    "check_precision",
    "precision_context",
    "is_stateful",
]

#: ``--precision`` choices; fp32 is the default and the reference
PRECISIONS = ("fp32", "bf16", "fp16")
#: ``batch_videos="auto"`` on a CPU: clips per group for each thread the model pass spreads over, at most
#: :data:`AUTO_BATCH_VIDEOS_MAX` (a group's clips are decoded and held at once). Two per thread rather than one: the
#: clips of a frame step finish their solves after different numbers of cell evaluations, and a second clip per
#: thread fills the gaps (benchmarks/ldeq_speed.py)
AUTO_CLIPS_PER_THREAD = 2
AUTO_BATCH_VIDEOS_MAX = 8
#: frames per ``predict`` call for stateless models when nothing else is asked. 16 rather than more: on a CPU the
#: shipped UNet gains nothing past 16 and HRNet-small gets slower per frame with larger batches
#: (benchmarks/throughput.py); on a GPU pass a larger --frame-batch
DEFAULT_FRAME_BATCH = 16


class BenchError(RuntimeError):
    """A problem with the whole run (not one clip): bad device, incompatible output folder, scheme mismatch."""


@dataclass
class LoadedClip:
    """A clip's annotations and its decoded protocol crops."""

    clip: Clip
    crops: ClipCrops


@dataclass
class ClipOutcome:
    """What the model pass produced for one clip: everything the driver needs to score it and write it.

    Attributes:
        landmarks: (T, K, 2) predictions in frame pixels, in the **model's** scheme (None when the clip failed).
        stats: per-frame model statistics, name -> (T,) float64.
        error: why the clip failed (None when it did not).
        clip: the clip's annotations when the pass ran in the driver's process; engines that run elsewhere leave
            it None (the driver reads the annotations itself rather than receiving them over the network).
    """

    video_id: str
    split: str
    frames: int
    fps: float
    landmarks: np.ndarray | None = None
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    clip: Clip | None = None


def load_clip(dataset: WFLWVDataset, video_id: str) -> LoadedClip:
    """Read a clip's annotations and decode its protocol crops (raises :class:`DatasetError` for bad clips)."""
    clip = dataset.load(video_id)
    return LoadedClip(clip, decode_crops(clip, CROP_SIZE))


def failed_outcome(video_id: str, split: str, exc: BaseException) -> ClipOutcome:
    """The outcome of a clip that could not even be loaded (no frames, unknown frame rate)."""
    msg = str(exc) if isinstance(exc, (DatasetError, BenchError)) else f"{type(exc).__name__}: {exc}"
    return ClipOutcome(video_id, split, 0, float("nan"), error=msg)


def auto_batch_videos(device_type: str, threads: int) -> int:
    """What ``batch_videos="auto"`` means for a model pass on ``device_type`` spread over ``threads`` CPU threads:
    on a CPU, :data:`AUTO_CLIPS_PER_THREAD` clips per thread up to :data:`AUTO_BATCH_VIDEOS_MAX` (in exact mode the
    samples of a call are spread over the threads, so a lone clip would leave all but one idle for a stateful
    model); on a GPU 1 (pass a number: what fits depends on the model and the GPU)."""
    if device_type != "cpu":
        return 1
    return max(1, min(AUTO_CLIPS_PER_THREAD * int(threads), AUTO_BATCH_VIDEOS_MAX))


def is_stateful(model: LandmarkModel) -> bool:
    """Whether the harness must feed ``model`` a clip's frames in order, one call per frame (default True)."""
    return bool(getattr(model, "stateful", True))


# ------------------------------------------------------------------------------------------------------------------
# precision
def _cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:
                pass
    return False


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`BenchError` when ``precision`` cannot run on ``device``, saying what can."""
    if precision not in PRECISIONS:
        raise BenchError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise BenchError(f"{device} does not support bf16; use --precision fp16 or fp32")
        return
    if device.type == "cpu":
        if precision == "fp16":
            raise BenchError("--precision fp16 runs on CUDA GPUs only; on this CPU use bf16 (if supported) or fp32")
        if not _cpu_has_bf16():
            raise BenchError(
                "--precision bf16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); this one has neither, use fp32"
            )
        return
    raise BenchError(f"--precision {precision} is not supported on device type {device.type!r}; use fp32")


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for bf16 / fp16 on ``device`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------------------------
# the frame loops
@dataclass
class _Active:
    loaded: LoadedClip
    state: Any = None
    preds: list[np.ndarray] = field(default_factory=list)
    stats: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class _Pass:
    """What a frame loop needs besides the clips."""

    model: LandmarkModel
    device: torch.device
    dataset_root: Path | None
    model_scheme: LandmarkScheme
    precision: str
    exact: bool = True

    def predict(self, items: Sequence[tuple[_Active, int]]) -> tuple[np.ndarray, list[Any], dict[str, np.ndarray]]:
        """One ``predict`` call on frame ``t`` of each ``(clip, t)``; checks the output's shapes."""
        imgs = np.stack([a.loaded.crops.crops[t] for a, t in items])
        x = torch.from_numpy(imgs).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        infos = [
            FrameInfo(
                video_id=a.loaded.clip.video_id,
                frame_index=t,
                num_frames=a.loaded.clip.num_frames,
                fps=a.loaded.crops.fps,
                crop_to_frame=a.loaded.crops.crop_to_frame[t],
                dataset_root=self.dataset_root,
            )
            for a, t in items
        ]
        states = [a.state for a, _ in items]
        with torch.inference_mode(), precision_context(self.precision, self.device):
            if self.exact and self.device.type == "cpu" and not getattr(self.model, "batch_invariant", False):
                out = predict_per_sample(self.model, x, states, infos, cpu_threads())
            else:
                out = self.model.predict(x, states, infos)
        lm = out.landmarks_numpy()
        n = len(items)
        if lm.shape != (n, self.model_scheme.num_points, 2):
            name = self.model.name or type(self.model).__name__
            raise BenchError(
                f"model {name} returned landmarks of shape {lm.shape}; expected "
                f"({n}, {self.model_scheme.num_points}, 2) for its scheme {self.model_scheme.name}"
            )
        if len(out.states) != n:
            raise BenchError(f"model returned {len(out.states)} states for a batch of {n}")
        return lm, list(out.states), out.stats_numpy()

    def record(self, a: _Active, t: int, lm: np.ndarray, stats: dict[str, np.ndarray], i: int) -> None:
        if not np.isfinite(lm).all():
            a.error = f"model returned non-finite landmarks (NaN/inf) at frame {t}"
            return
        a.preds.append(apply_affine(lm, a.loaded.crops.crop_to_frame[t]))
        for k, v in stats.items():
            a.stats.setdefault(k, []).append(float(v[i]))


def _clip_major(active: list[_Active], frame_batch: int) -> Iterator[list[tuple[_Active, int]]]:
    """Frames of the clips one clip after the other, in batches of ``frame_batch`` (clips that failed drop out)."""
    batch: list[tuple[_Active, int]] = []
    for a in active:
        for t in range(a.loaded.clip.num_frames):
            if a.error is not None:
                break
            batch.append((a, t))
            if len(batch) == frame_batch:
                yield batch
                batch = []
    if batch:
        yield batch


def _run_stateless(p: _Pass, active: list[_Active], frame_batch: int) -> None:
    for batch in _clip_major(active, frame_batch):
        live = [(a, t) for a, t in batch if a.error is None]
        if not live:
            continue
        lm, _, stats = p.predict(live)
        for i, (a, t) in enumerate(live):
            if a.error is None:
                p.record(a, t, lm[i], stats, i)


def _run_stateful(p: _Pass, active: list[_Active]) -> None:
    t_max = max(a.loaded.clip.num_frames for a in active)
    for t in range(t_max):
        live = [a for a in active if a.error is None and t < a.loaded.clip.num_frames]
        if not live:
            break
        lm, states, stats = p.predict([(a, t) for a in live])
        for i, a in enumerate(live):
            p.record(a, t, lm[i], stats, i)
            if a.error is None:
                a.state = states[i]


def _outcome(a: _Active) -> ClipOutcome:
    clip, crops = a.loaded.clip, a.loaded.crops
    out = ClipOutcome(clip.video_id, clip.split, clip.num_frames, float(crops.fps), error=a.error, clip=clip)
    if a.error is None:
        out.landmarks = np.stack(a.preds)
        out.stats = {k: np.asarray(v, dtype=np.float64) for k, v in a.stats.items()}
    return out


def _run(p: _Pass, loaded: list[LoadedClip], frame_batch: int, stateful: bool) -> list[ClipOutcome]:
    active = [_Active(b) for b in loaded]
    # exact mode on a CPU: the work is spread over the cores above the kernels (wflwv.models.parallel), so the frame
    # loop itself stays on one torch thread and no idle OpenMP thread spins between two calls
    spread = p.exact and p.device.type == "cpu"
    with spread_over(cpu_threads()) if spread else contextlib.nullcontext():
        if stateful:
            _run_stateful(p, active)
        else:
            _run_stateless(p, active, frame_batch)
    return [_outcome(a) for a in active]


def run_group(
    model: LandmarkModel,
    loaded: list[LoadedClip],
    *,
    device: torch.device,
    dataset_root: Path | None,
    model_scheme: LandmarkScheme,
    frame_batch: int = DEFAULT_FRAME_BATCH,
    precision: str = "fp32",
    exact: bool = True,
) -> list[ClipOutcome]:
    """Run ``model`` over a group of loaded clips; one outcome per clip, in order.

    A clip whose predictions are non-finite fails alone. When ``predict`` raises on a group of several clips,
    they are run again one at a time to find the clip that breaks the model; a :class:`BenchError` (the model
    breaks its contract) ends the run.
    """
    if not loaded:
        return []
    p = _Pass(model, device, dataset_root, model_scheme, precision, exact)
    stateful = is_stateful(model)
    try:
        return _run(p, loaded, frame_batch, stateful)
    except BenchError:
        raise
    except Exception as exc:
        if len(loaded) == 1:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return [_failed_after_load(loaded[0], f"model raised {tb}")]
    results = []
    for item in loaded:  # find which clip breaks the model
        try:
            results.extend(_run(p, [item], frame_batch, stateful))
        except BenchError:
            raise
        except Exception as exc1:
            results.append(_failed_after_load(item, f"model raised {type(exc1).__name__}: {exc1}"))
    return results


def _failed_after_load(item: LoadedClip, error: str) -> ClipOutcome:
    return ClipOutcome(
        item.clip.video_id, item.clip.split, item.clip.num_frames, float(item.crops.fps), error=error, clip=item.clip
    )
