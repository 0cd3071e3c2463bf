"""The per-item stages of `wflwv build`: scan one source (shot cuts, detection, tracking, windows, cutting) and
label one clip (the oracle with boxes re-derived from its own landmarks, quality checks). Each item's record is
written last and carries a hash of the configuration it depends on, so an item with a matching record is done.

The stages run in this process, in worker processes or as Ray tasks (:func:`run_parallel`); a worker process
(pool or Ray) builds its detector and oracle once (:data:`_WORKER`).
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from wflwv.build import oracle as O
from wflwv.build.acquire import AcquireError, SourceRecord, fetch_range_job
from wflwv.build.config import SIDECAR_SUFFIX, BuildConfig, config_hash
from wflwv.build.detect import landmarks_box, make_detector, square_box, track_faces
from wflwv.build.oracle import build_members, build_oracle
from wflwv.build.scenes import ShotCutDetector, WindowCriteria, cut_clips, diagnose_window, find_windows
from wflwv.io import atomic_path, read_json, save_npz, write_json
from wflwv.protocol.layout import VIDEO_ID_RE
from wflwv.protocol.video import iter_frames

__all__ = ["run_parallel", "scan_source", "label_clip_item", "error_text", "RAY_TASK_RETRIES"]

#: retries of a Ray task whose worker process died (the stages are idempotent: records are written last)
RAY_TASK_RETRIES = 2

# ------------------------------------------------------------------------------------------------ workers
_WORKER: dict[str, Any] = {}


def _worker_init(config: BuildConfig, threads: int = 1) -> None:
    """Process initialiser: one thread per worker (the stages are parallel across workers instead)."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    _WORKER.clear()
    _WORKER["config"] = config


def _ray_item(fn: Callable, config: BuildConfig, item: Any, threads: int) -> Any:
    """One item as a Ray task; the worker process keeps its detector / oracle between tasks of one build."""
    if _WORKER.get("config") != config:
        _worker_init(config, threads)
    return fn(config, item)


def fetch_range_item(config: BuildConfig, job: tuple) -> Any:
    """Stage 1 for one clip range, in a worker: the source record or the AcquireError (see ``acquire_ranges``)."""
    rng, sid = job
    return fetch_range_job(config.download, rng, sid, config.work)


def _crash_record(fn: Callable, item: Any, reason: str) -> Any:
    """The record of an item whose worker died on every try (recorded like any failure; a re-run tries again)."""
    if fn is fetch_range_item:
        return AcquireError(f"{item[0].video_id}: {reason}", permanent=False)
    if fn is scan_source:
        return {"key": None, "source_id": item["source_id"], "status": "failed", "reason": reason, "clips": []}
    return {"key": None, "clip_id": item["clip_id"], "status": "failed", "reason": reason}


def _run_on_ray(
    fn: Callable, items: list, config: BuildConfig, cluster: Any, bar, use_gpu: bool, on_result: Callable | None
) -> list:
    """Every item as a Ray task, at most as many at once as the cluster's resources allow; results in order.

    A task whose worker dies (killed, out of memory) is retried by Ray (``RAY_TASK_RETRIES`` times); an item that
    kills its worker every time is recorded as failed. Exceptions of the stage functions are already records.
    """
    ray = cluster.ray
    from ray import exceptions as RE

    lost = tuple(getattr(RE, n) for n in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError") if hasattr(RE, n))

    opts = {"num_cpus": config.cpus_per_worker, "num_gpus": config.gpus_per_worker if use_gpu else 0}
    task = ray.remote(_ray_item).options(max_retries=RAY_TASK_RETRIES, retry_exceptions=False, **opts)
    cfg = ray.put(config)
    threads = max(1, int(config.cpus_per_worker))
    pending = {task.remote(fn, cfg, item, threads): i for i, item in enumerate(items)}
    results: list[Any] = [None] * len(items)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except lost as exc:
                why = f"the worker died on every one of {RAY_TASK_RETRIES + 1} tries ({type(exc).__name__})"
                results[i] = _crash_record(fn, items[i], why)
            except RE.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else exc) from None
            if on_result is not None:
                on_result(i, results[i])
            bar.update(1)
    except BaseException:
        for ref in pending:  # interrupted: queued items are dropped, a re-run picks up from the records
            ray.cancel(ref)
        raise
    return results


def _get_detector(config: BuildConfig):
    if "detector" not in _WORKER:
        _WORKER["detector"] = None if config.detector == "sidecar" else make_detector(config.detector)
    return _WORKER["detector"]


def _get_oracle(config: BuildConfig):
    if "oracle" not in _WORKER:
        members = build_members(config.members)
        _WORKER["oracle"] = build_oracle(members, config.tta, config.device, config.combine)
        # the box-deriving passes need no test-time augmentation (only the final pass's numbers are kept); they
        # share the member models
        _WORKER["box_oracle"] = (
            build_oracle(members, None, config.device, config.combine) if config.passes > 1 else None
        )
    return _WORKER["oracle"], _WORKER["box_oracle"]


def run_parallel(
    fn: Callable,
    items: list,
    config: BuildConfig,
    desc: str,
    inline: bool,
    cluster: Any = None,
    gpu: bool = False,
    on_result: Callable[[int, Any], None] | None = None,
) -> list:
    """Apply ``fn(config, item)`` to every item (as Ray tasks with a ``cluster``, else in worker processes unless
    ``inline``), with a progress bar. Results come back in the items' order.

    Args:
        cluster: an open :class:`~wflwv.benchmark.cluster.RayCluster` to run the items on.
        gpu: the items may use ``config.gpus_per_worker`` GPUs each (labelling).
        on_result: called in this process with ``(index, result)`` as each item finishes (Ray only).
    """
    results: list[Any] = [None] * len(items)
    bar = tqdm(
        total=len(items), desc=desc, unit="item", disable=None if config.progress and items else True, leave=True
    )
    try:
        if cluster is not None and not inline and items:
            results = _run_on_ray(fn, items, config, cluster, bar, gpu, on_result)
        elif inline or config.workers <= 1 or len(items) <= 1:
            if not inline:
                _WORKER.setdefault("config", config)
            for i, item in enumerate(items):
                results[i] = fn(config, item)
                bar.update(1)
        else:
            ctx = mp.get_context("spawn")  # fork after torch / OpenMP initialisation can deadlock
            pool = ProcessPoolExecutor(
                min(config.workers, len(items)), mp_context=ctx, initializer=_worker_init, initargs=(config,)
            )
            try:
                futures = {pool.submit(fn, config, item): i for i, item in enumerate(items)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(1)
            except BaseException:
                # interrupted (Ctrl-C) or a worker died: drop the queued items, let running ones finish their
                # atomic writes; a re-run picks up from there
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    return results


def error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


# ------------------------------------------------------------------------------------------------ stage: scan
def _sidecar_detections(source: Path, num_frames: int | None = None) -> list[np.ndarray]:
    """Boxes from ``SOURCE.boxes.npy``: (T, 4) one box per frame (a row of NaN = no face) or (T, M, 4|5) several
    (NaN rows ignored); frame pixels in the landmark-square convention."""
    path = Path(str(source) + SIDECAR_SUFFIX)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sidecar box file not found (--detector sidecar needs one beside each video)")
    arr = np.load(path, allow_pickle=False).astype(np.float64)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3 or arr.shape[2] not in (4, 5):
        raise ValueError(f"{path}: sidecar boxes must have shape (T, 4) or (T, M, 4|5), got {arr.shape}")
    out = []
    for row in arr:
        row = row[np.isfinite(row[:, :4]).all(axis=1)]
        if row.shape[1] == 4:
            row = np.column_stack([row, np.ones(len(row))])
        out.append(row)
    return out


def _clip_id(rec: SourceRecord, start: int, config: BuildConfig) -> str:
    if rec.fixed_window or config.max_clips_per_video == 1:
        return rec.source_id
    return f"{rec.source_id}_{rec.frame_offset + start:06d}"


def scan_source(config: BuildConfig, rec_dict: dict) -> dict:
    """Stage 2 for one source; returns (and writes) its scan record."""
    rec = SourceRecord.from_dict(rec_dict)
    work = Path(config.work)
    out_json = work / "scan" / f"{rec.source_id}.json"
    st = Path(rec.path).stat()
    # the configuration and the source file's identity (a changed file is scanned again)
    key = config_hash([config.scan_key(), str(Path(rec.path).resolve()), st.st_size, st.st_mtime_ns])
    if out_json.is_file():
        done = read_json(out_json)
        if (
            done.get("key") == key
            and done.get("status") in ("ok", "dropped")
            and all(Path(c["video"]).is_file() for c in done.get("clips", []))
        ):
            done["resumed"] = True
            return done
    try:
        result = _scan(config, rec, key)
    except Exception as exc:  # one bad source must not stop the build
        result = {"key": key, "source_id": rec.source_id, "status": "failed", "reason": error_text(exc), "clips": []}
    write_json(out_json, result)
    return result


def _scan(config: BuildConfig, rec: SourceRecord, key: str) -> dict:
    src = Path(rec.path)
    fps = rec.fps
    if fps <= 0:
        raise ValueError(f"{src}: unknown frame rate")
    cuts_det = ShotCutDetector(config.cut_threshold)
    if config.detector == "sidecar":
        dets = _sidecar_detections(src)
        n = 0
        for frame in iter_frames(src):
            cuts_det.push(frame)
            n += 1
        if len(dets) != n:
            raise ValueError(f"{src}{SIDECAR_SUFFIX}: {len(dets)} rows of boxes but the video has {n} frames")
    else:
        detector = _WORKER.get("injected_detector") or _get_detector(config)
        dets = []
        for frame in iter_frames(src):
            cuts_det.push(frame)
            dets.append(detector.detect(frame))
        n = len(dets)
    max_gap = max(1, int(round(config.max_gap * fps)))
    crit = WindowCriteria(config.min_track_hits, config.min_coverage, max_gap, config.min_face)
    tracks = track_faces(dets, cuts_det.cuts, iou_threshold=0.3, max_gap=max_gap)
    base = {"key": key, "source_id": rec.source_id, "num_frames": n, "fps": fps, "cuts": cuts_det.cuts,
            "tracks": len(tracks), "detections": int(sum(len(d) for d in dets))}  # fmt: skip
    if rec.fixed_window:
        track, why = diagnose_window(0, n, tracks, cuts_det.cuts, crit)
        if track is None:
            return {**base, "status": "dropped", "reason": why, "clips": []}
        windows = [(0, n, track.box_series(0, n), track.hits_in(0, n) / n)]
    else:
        window_len = int(round(config.window * fps))
        found, reasons = find_windows(n, tracks, cuts_det.cuts, window_len, crit, config.max_clips_per_video)
        if not found:
            return {
                **base,
                "status": "dropped",
                "reason": "no usable window: " + ("; ".join(reasons[:3]) or "no face"),
                "clips": [],
            }
        windows = [(w.start, w.stop, w.boxes, w.coverage) for w in found]
    clips_dir = Path(config.work) / "clips"
    clips = []
    spans = []
    for start, stop, boxes, cov in windows:
        cid = _clip_id(rec, start, config)
        if not VIDEO_ID_RE.match(cid):
            raise ValueError(f"clip ID {cid!r} is not a safe file name")
        box_path = clips_dir / f"{cid}.detboxes.npy"
        with atomic_path(box_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, boxes)
        video = src if rec.fixed_window else clips_dir / f"{cid}.mp4"
        if not rec.fixed_window:
            spans.append((start, stop, video))
        clips.append({"clip_id": cid, "start": start, "stop": stop, "video": str(video), "det_boxes": str(box_path),
                      "coverage": round(float(cov), 4)})  # fmt: skip
    if spans:
        counts = cut_clips(src, spans, fps)
        for (start, stop, _), got in zip(spans, counts):
            if got != stop - start:
                raise ValueError(
                    f"{src}: wrote {got} frames for window {start}-{stop - 1} (source shorter than decoded?)"
                )
    return {**base, "status": "ok", "reason": "", "clips": clips}


# ------------------------------------------------------------------------------------------------ stage: label
def label_clip_item(config: BuildConfig, item: dict) -> dict:
    """Stage 3 for one clip; returns (and writes) its label record."""
    work = Path(config.work)
    cid = item["clip_id"]
    rec_path = work / "labels" / f"{cid}.json"
    key = config_hash([config.label_key(), item["scan_key"], item["start"], item["stop"]])
    if rec_path.is_file():
        done = read_json(rec_path)
        if (
            done.get("key") == key
            and done.get("status") in ("ok", "dropped")
            and (done["status"] == "dropped" or (work / "labels" / f"{cid}.npz").is_file())
        ):
            done["resumed"] = True
            return done
    t0 = time.perf_counter()
    try:
        result = _label(config, item, key)
    except Exception as exc:
        result = {"key": key, "clip_id": cid, "status": "failed", "reason": error_text(exc)}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(rec_path, result)
    return result


def _label(config: BuildConfig, item: dict, key: str) -> dict:
    work = Path(config.work)
    cid = item["clip_id"]
    injected = _WORKER.get("injected_oracle")
    oracle, box_oracle = (injected, injected) if injected is not None else _get_oracle(config)
    det = np.load(item["det_boxes"])
    video = Path(item["video"])
    fps = float(item["fps"])
    res = O.label_as_build(
        oracle, box_oracle, video, det, cid, fps, config.passes, config.box_smooth, config.batch_size
    )
    lm, boxes, var = res.landmarks, res.boxes, res.variance
    base = {"key": key, "clip_id": cid, "num_frames": int(len(lm)), "num_points": int(lm.shape[1]),
            "box_shift": [round(v, 5) for v in res.box_shift], "scheme": getattr(oracle, "scheme", None)}  # fmt: skip
    reason = _quality_problem(lm, det, item)
    if reason:
        return {**base, "status": "dropped", "reason": reason}
    save_npz(work / "labels" / f"{cid}.npz", landmarks=lm, boxes=boxes, variance=var)
    per_frame = var.mean(axis=1)
    return {
        **base,
        "status": "ok",
        "reason": "",
        "variance": float(var.mean()),
        "variance_p90_frame": float(np.percentile(per_frame, 90)),
    }


def _quality_problem(lm: np.ndarray, det: np.ndarray, item: dict) -> str:
    """Why the oracle's labels of a clip cannot be used ('' when they can)."""
    if not np.isfinite(lm).all():
        bad = np.flatnonzero(~np.isfinite(lm).reshape(len(lm), -1).all(axis=1))
        return f"oracle returned non-finite landmarks (frame {int(bad[0])})"
    w, h = item["width"], item["height"]
    if w and h:
        outside = ((lm[..., 0] < -0.5) | (lm[..., 0] > w - 0.5) | (lm[..., 1] < -0.5) | (lm[..., 1] > h - 0.5)).mean(
            axis=1
        )
        worst = int(np.argmax(outside))
        if outside[worst] > item.get("max_outside", 0.05):
            return f"face partly outside the frame ({100 * outside[worst]:.0f}% of landmarks at frame {worst})"
    # the oracle must have found the face the detector tracked: centre of its landmark square inside the detection
    sq = square_box(landmarks_box(lm))
    c = (sq[:, :2] + sq[:, 2:]) / 2
    dc = (det[:, :2] + det[:, 2:4]) / 2
    dside = np.maximum(det[:, 2] - det[:, 0], 1e-6)
    off = np.linalg.norm(c - dc, axis=1) / dside
    size = np.maximum(sq[:, 2] - sq[:, 0], 1e-6) / dside
    bad = (off > 0.5) | (size < 0.5) | (size > 2.0)
    if bad.mean() > 0.1:
        return f"oracle landmarks disagree with the tracked face ({100 * bad.mean():.0f}% of frames)"
    return ""
