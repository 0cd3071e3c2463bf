"""`wflwv build`: from videos to a labelled, split dataset in the official WFLW-V layout.

Stages (each resumable; every file is written atomically, and each item's record is written last, so an item
with a record is finished):

1. **acquire** (:mod:`wflwv.dataset.acquire`): YouTube clip ranges, Creative Commons search results or local
   files -> ``WORK/sources/``.
2. **scan**, per source (parallel): shot cuts (:mod:`wflwv.dataset.scenes`), face detection and IoU tracking
   (:mod:`wflwv.dataset.detect`), windows of ``window`` seconds with exactly one tracked face, each cut out to
   ``WORK/clips/CLIP_ID.mp4``; record ``WORK/scan/SOURCE_ID.json``.
3. **label**, per clip (parallel): the oracle ensemble (:mod:`wflwv.dataset.oracle`) with boxes re-derived from
   its own landmarks; per-frame per-landmark ensemble variance kept; checks that drop bad clips; record
   ``WORK/labels/CLIP_ID.json`` + ``.npz``.
4. **publish**: rank clips by mean ensemble variance, top ``hard_k`` -> hard, bottom ``easy_k`` -> easy, write the
   official layout (``videos/``, ``bboxes/``, ``landmarks/``, split lists, ``dataset.json``) plus ``variance/ID.npy``,
   ``manifest.parquet`` / ``manifest.csv`` (one row per source or clip: provenance, licence, frame range, fps,
   oracle, variance, status and drop reason) and ``build.json`` (configuration, timings, counts, provenance).

Records carry a hash of the configuration they depend on; changing e.g. the oracle relabels every clip on the next
run, while an interrupted run restarted with the same options only does what is missing. ``WORK`` defaults to
``OUT/.build``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wflwv.dataset.acquire import (
    AcquireResult,
    Downloader,
    DownloadOptions,
    LICENCE_PATTERN,
    SourceRecord,
    acquire_ranges,
    acquire_search,
    local_sources,
    parse_ranges,
)
from wflwv.dataset.detect import landmarks_box, square_box, track_faces
from wflwv.dataset.layout import VIDEO_ID_RE, WFLWVDataset, write_clip, write_dataset_info, write_split
from wflwv.dataset.scenes import ShotCutDetector, WindowCriteria, cut_clips, diagnose_window, find_windows
from wflwv.dataset.video import iter_frames
from wflwv.io import atomic_path, read_json, save_npz, write_json

__all__ = ["BuildConfig", "BuildSummary", "BuildError", "build_dataset", "format_summary", "render_overlay", "SIDECAR_SUFFIX"]

#: ``--detector sidecar`` reads boxes from ``VIDEO_PATH + SIDECAR_SUFFIX`` (see :func:`_sidecar_detections`)
SIDECAR_SUFFIX = ".boxes.npy"
_STATUS_KEPT, _STATUS_DROPPED, _STATUS_FAILED, _STATUS_REJECTED = "kept", "dropped", "failed", "rejected"


class BuildError(RuntimeError):
    """A problem with the whole build (bad options, nothing to build from)."""


@dataclass
class BuildConfig:
    """Everything `wflwv build` can be told. Paths may be str or Path.

    Sources (at least one): ``ids`` (a ranges file), ``search`` (queries), ``local`` (files / folders).
    """

    out: Path
    ids: Path | None = None
    search: Sequence[str] = ()
    max_results: int = 20
    local: Sequence[Path] = ()
    # clipping
    window: float = 5.0
    max_clips_per_video: int = 0
    cut_threshold: float = 0.3
    detector: str = "hog"
    min_coverage: float = 0.5
    max_gap: float = 0.5  # seconds without a detection inside a window
    min_face: float = 40.0  # pixels
    min_track_hits: int = 5
    # oracle
    members: Sequence[str] = ("dlib68",)
    tta: str = "flip,shift,scale"
    passes: int = 2
    box_smooth: int = 5
    batch_size: int = 16
    device: str = "cpu"
    max_outside: float = 0.05  # largest fraction of landmarks outside the frame in any frame
    # split
    hard_k: int | None = None
    easy_k: int | None = None
    keep_unselected: bool = False
    # running
    workers: int = 1
    work: Path | None = None
    download: DownloadOptions = field(default_factory=DownloadOptions)
    licence_pattern: str = LICENCE_PATTERN
    retry_failed: bool = False
    previews: int = 2
    progress: bool = True

    def __post_init__(self):
        self.out = Path(self.out).expanduser()
        self.ids = Path(self.ids).expanduser() if self.ids else None
        self.local = [Path(p).expanduser() for p in self.local]
        self.search = [self.search] if isinstance(self.search, str) else list(self.search)
        self.members = [self.members] if isinstance(self.members, str) else list(self.members)
        self.work = Path(self.work).expanduser() if self.work else self.out / ".build"

    def check(self) -> None:
        """Raise :class:`BuildError` for inconsistent options, saying what to change."""
        if not (self.ids or self.search or self.local):
            raise BuildError("nothing to build from: give --ids FILE, --search QUERY or --local PATH")
        if self.window <= 0:
            raise BuildError(f"--window must be positive (seconds), got {self.window}")
        if not 0 < self.cut_threshold < 1:
            raise BuildError(f"--cut-threshold must be in (0, 1), got {self.cut_threshold}")
        if self.passes < 1:
            raise BuildError(f"--passes must be >= 1, got {self.passes}")
        for k, name in ((self.hard_k, "--hard-k"), (self.easy_k, "--easy-k")):
            if k is not None and k < 0:
                raise BuildError(f"{name} must be >= 0, got {k}")
        if self.workers < 1:
            raise BuildError(f"--workers must be >= 1, got {self.workers}")
        if self.detector == "sidecar" and (self.ids or self.search):
            raise BuildError("--detector sidecar reads boxes beside local videos; it cannot be used with --ids/--search")
        if not self.members:
            raise BuildError("the oracle needs at least one member (--member dlib68)")
        uses_dlib = "hog" in self.detector.split("+") or any(str(m).split(":")[0] == "dlib68" for m in self.members)
        if uses_dlib:
            import importlib.util

            if importlib.util.find_spec("dlib") is None:
                raise BuildError(
                    "the hog detector and the dlib68 oracle need dlib: pip install dlib-bin face-recognition-models "
                    "(or use --detector haar and other --member models)"
                )

    def scan_key(self) -> str:
        return _hash(["scan", 1, self.window, self.max_clips_per_video, self.cut_threshold, self.detector,
                      self.min_coverage, self.max_gap, self.min_face, self.min_track_hits])  # fmt: skip

    def label_key(self) -> str:
        return _hash(["label", 1, self.scan_key(), list(self.members), self.tta, self.passes, self.box_smooth,
                      self.max_outside])  # fmt: skip


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class BuildSummary:
    """What a build did. ``rows`` is the manifest (one dict per source problem or clip)."""

    out: Path
    rows: list[dict]
    hard: list[str]
    easy: list[str]
    timings: dict[str, float]
    counts: dict[str, Any]
    scheme: str | None


# ------------------------------------------------------------------------------------------------ workers
_WORKER: dict[str, Any] = {}


def _worker_init(config: BuildConfig) -> None:
    """Process initialiser: one thread per worker (the stages are parallel across workers instead)."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _WORKER.clear()
    _WORKER["config"] = config


def _get_detector(config: BuildConfig):
    if "detector" not in _WORKER:
        from wflwv.dataset.detect import make_detector

        _WORKER["detector"] = None if config.detector == "sidecar" else make_detector(config.detector)
    return _WORKER["detector"]


def _get_oracle(config: BuildConfig):
    if "oracle" not in _WORKER:
        from wflwv.dataset.oracle import build_members, build_oracle

        members = build_members(config.members)
        _WORKER["oracle"] = build_oracle(members, config.tta, config.device)
        # the box-deriving passes need no test-time augmentation (only the final pass's numbers are kept); they
        # share the member models
        _WORKER["box_oracle"] = build_oracle(members, None, config.device) if config.passes > 1 else None
    return _WORKER["oracle"], _WORKER["box_oracle"]


def _run_parallel(fn: Callable, items: list, config: BuildConfig, desc: str, inline: bool) -> list:
    """Apply ``fn(config, item)`` to every item (in worker processes unless ``inline``), with a progress bar.
    Results come back in the items' order."""
    from tqdm.auto import tqdm

    results: list[Any] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not config.progress or not items, leave=True)
    try:
        if inline or config.workers <= 1 or len(items) <= 1:
            if not inline:
                _WORKER.setdefault("config", config)
            for i, item in enumerate(items):
                results[i] = fn(config, item)
                bar.update(1)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # fork after torch / OpenMP initialisation can deadlock
            pool = ProcessPoolExecutor(min(config.workers, len(items)), mp_context=ctx, initializer=_worker_init, initargs=(config,))
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


def _error_text(exc: BaseException) -> str:
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


def _scan_source(config: BuildConfig, rec_dict: dict) -> dict:
    """Stage 2 for one source; returns (and writes) its scan record."""
    rec = SourceRecord.from_dict(rec_dict)
    work = Path(config.work)
    out_json = work / "scan" / f"{rec.source_id}.json"
    st = Path(rec.path).stat()
    # the configuration and the source file's identity (a changed file is scanned again)
    key = _hash([config.scan_key(), str(Path(rec.path).resolve()), st.st_size, st.st_mtime_ns])
    if out_json.is_file():
        done = read_json(out_json)
        if done.get("key") == key and done.get("status") in ("ok", "dropped") and all(
            Path(c["video"]).is_file() for c in done.get("clips", [])
        ):
            done["resumed"] = True
            return done
    try:
        result = _scan(config, rec, key)
    except Exception as exc:  # one bad source must not stop the build
        result = {"key": key, "source_id": rec.source_id, "status": "failed", "reason": _error_text(exc), "clips": []}
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
            return {**base, "status": "dropped", "reason": "no usable window: " + ("; ".join(reasons[:3]) or "no face"), "clips": []}
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
                raise ValueError(f"{src}: wrote {got} frames for window {start}-{stop - 1} (source shorter than decoded?)")
    return {**base, "status": "ok", "reason": "", "clips": clips}


# ------------------------------------------------------------------------------------------------ stage: label
def _label_clip_item(config: BuildConfig, item: dict) -> dict:
    """Stage 3 for one clip; returns (and writes) its label record."""
    work = Path(config.work)
    cid = item["clip_id"]
    rec_path = work / "labels" / f"{cid}.json"
    key = _hash([config.label_key(), item["scan_key"], item["start"], item["stop"]])
    if rec_path.is_file():
        done = read_json(rec_path)
        if done.get("key") == key and done.get("status") in ("ok", "dropped") and (
            done["status"] == "dropped" or (work / "labels" / f"{cid}.npz").is_file()
        ):
            done["resumed"] = True
            return done
    t0 = time.perf_counter()
    try:
        result = _label(config, item, key)
    except Exception as exc:
        result = {"key": key, "clip_id": cid, "status": "failed", "reason": _error_text(exc)}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(rec_path, result)
    return result


def _label(config: BuildConfig, item: dict, key: str) -> dict:
    from wflwv.dataset import oracle as O

    work = Path(config.work)
    cid = item["clip_id"]
    injected = _WORKER.get("injected_oracle")
    oracle, box_oracle = (injected, injected) if injected is not None else _get_oracle(config)
    det = np.load(item["det_boxes"])
    video = Path(item["video"])
    fps = float(item["fps"])
    res = O.label_clip(oracle, video, det, cid, fps, passes=1, smooth=config.box_smooth, batch_size=config.batch_size) if config.passes == 1 else None
    if res is None:
        # box-deriving passes (no TTA), then the final pass with the full oracle on the derived boxes
        pre = O.label_clip(box_oracle, video, det, cid, fps, passes=config.passes - 1, smooth=config.box_smooth, batch_size=config.batch_size)
        boxes = O.smooth_boxes(square_box(landmarks_box(pre.landmarks)), config.box_smooth)
        lm, var = O.run_oracle(oracle, video, boxes, cid, fps, config.batch_size)
        side = np.maximum(pre.boxes[:, 2] - pre.boxes[:, 0], 1e-6)
        moved = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - (pre.boxes[:, :2] + pre.boxes[:, 2:]) / 2, axis=1) / side
        res = O.OracleResult(lm, boxes, var, config.passes, pre.box_shift + [float(np.median(moved))])
    lm, boxes, var = res.landmarks, res.boxes, res.variance
    base = {"key": key, "clip_id": cid, "num_frames": int(len(lm)), "num_points": int(lm.shape[1]),
            "box_shift": [round(v, 5) for v in res.box_shift], "scheme": getattr(oracle, "scheme", None)}  # fmt: skip
    reason = _quality_problem(lm, det, item)
    if reason:
        return {**base, "status": "dropped", "reason": reason}
    save_npz(work / "labels" / f"{cid}.npz", landmarks=lm, boxes=boxes, variance=var)
    per_frame = var.mean(axis=1)
    return {**base, "status": "ok", "reason": "", "variance": float(var.mean()), "variance_p90_frame": float(np.percentile(per_frame, 90))}


def _quality_problem(lm: np.ndarray, det: np.ndarray, item: dict) -> str:
    """Why the oracle's labels of a clip cannot be used ('' when they can)."""
    if not np.isfinite(lm).all():
        bad = np.flatnonzero(~np.isfinite(lm).reshape(len(lm), -1).all(axis=1))
        return f"oracle returned non-finite landmarks (frame {int(bad[0])})"
    w, h = item["width"], item["height"]
    if w and h:
        outside = ((lm[..., 0] < -0.5) | (lm[..., 0] > w - 0.5) | (lm[..., 1] < -0.5) | (lm[..., 1] > h - 0.5)).mean(axis=1)
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


# ------------------------------------------------------------------------------------------------ publish
def _select(scores: dict[str, float], hard_k: int | None, easy_k: int | None) -> tuple[list[str], list[str]]:
    """Top ``hard_k`` by score -> hard, bottom ``easy_k`` of the rest -> easy (default: split in halves)."""
    ranked = sorted(scores, key=lambda c: (-scores[c], c))
    n = len(ranked)
    if hard_k is None and easy_k is None:
        hard_k, easy_k = n // 2, n - n // 2
    hard_k = min(n, hard_k if hard_k is not None else 0)
    hard = ranked[:hard_k]
    rest = ranked[hard_k:]
    easy_k = min(len(rest), easy_k if easy_k is not None else 0)
    easy = rest[len(rest) - easy_k :] if easy_k else []
    return hard, sorted(easy, key=lambda c: (scores[c], c))


def _remove_clip(root: Path, cid: str) -> None:
    for sub, ext in (("videos", ".mp4"), ("bboxes", ".npy"), ("landmarks", ".npy"), ("variance", ".npy")):
        p = root / sub / f"{cid}{ext}"
        if p.is_file():
            p.unlink()


def _publish_clip(root: Path, cid: str, video: Path, labels: Path) -> None:
    with np.load(labels) as z:
        lm, boxes, var = z["landmarks"], z["boxes"], z["variance"]
    lm_path = root / "landmarks" / f"{cid}.npy"
    if lm_path.is_file() and (root / "videos" / f"{cid}.mp4").is_file():
        cur = np.load(lm_path)
        if cur.shape == lm.shape and np.array_equal(cur, lm) and (root / "variance" / f"{cid}.npy").is_file():
            return  # already published from the same labels
    lm_path.unlink(missing_ok=True)  # the clip is incomplete until its landmarks are written again
    from wflwv.io import save_npy

    save_npy(root / "variance" / f"{cid}.npy", var.astype(np.float32))
    write_clip(root, cid, boxes=boxes, landmarks=lm, video=video)


def render_overlay(root: str | Path, clip_id: str, frame: int, out_png: str | Path) -> Path:
    """Draw a published clip's landmarks and box on one of its frames and save a PNG (for a human to look at)."""
    import cv2

    from wflwv.schemes import scheme_for_num_points

    ds = WFLWVDataset(root)
    clip = ds.load(clip_id)
    frame = int(np.clip(frame, 0, clip.num_frames - 1))
    img = None
    for i, f in enumerate(iter_frames(clip.video_path)):
        if i == frame:
            img = f.copy()
            break
    if img is None:
        raise ValueError(f"{clip.video_path}: frame {frame} could not be decoded")
    scale = max(1, int(np.ceil(480 / max(img.shape[:2]))))
    img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
    pts = clip.landmarks[frame] * scale + (scale - 1) / 2
    b = clip.boxes[frame] * scale
    cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (255, 160, 0), 1, cv2.LINE_AA)
    scheme = scheme_for_num_points(len(pts))
    for edge in scheme.edges:
        cv2.polylines(img, [np.round(pts[list(edge)] * 16).astype(np.int32)], False, (0, 200, 0), 1, cv2.LINE_AA, shift=4)
    for p in pts:
        cv2.circle(img, (int(round(p[0] * 16)), int(round(p[1] * 16))), 2 * 16, (0, 0, 255), -1, cv2.LINE_AA, shift=4)
    cv2.putText(img, f"{clip_id} frame {frame}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"{out_png}: cannot write PNG")
    return out_png


def _write_manifest(root: Path, rows: list[dict]) -> None:
    import pandas as pd

    cols = ["clip_id", "source_id", "status", "reason", "split", "variance", "origin", "video_id", "url", "source_path",
            "licence", "uploader", "title", "retrieved", "start_frame", "end_frame", "num_frames", "fps", "width",
            "height", "oracle_members", "oracle_tta", "oracle_passes", "detector", "scheme"]  # fmt: skip
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    df = df[cols + [c for c in df.columns if c not in cols]]
    for c in ("start_frame", "end_frame", "num_frames", "width", "height"):
        df[c] = pd.array(df[c], dtype="Int64")
    for c in ("variance", "fps"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: "" if v is None else str(v))
    with atomic_path(root / "manifest.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(root / "manifest.csv") as tmp:
        df.to_csv(tmp, index=False)


# ------------------------------------------------------------------------------------------------ driver
def _acquire(config: BuildConfig, downloader: Downloader | None, progress) -> AcquireResult:
    result = AcquireResult()
    work = Path(config.work)
    if config.ids or config.search:
        downloader = downloader or Downloader(config.download)
    if config.ids:
        try:
            ranges = parse_ranges(config.ids)
        except ValueError as exc:
            raise BuildError(str(exc)) from None
        r = acquire_ranges(ranges, work, downloader, config.retry_failed, progress("acquire ids"))
        result.records += r.records
        result.problems += r.problems
        result.skipped += r.skipped
    for q in config.search:
        r = acquire_search(q, config.max_results, work, downloader, config.licence_pattern, config.retry_failed, progress(f"search {q!r}"))
        result.records += r.records
        result.problems += r.problems
        result.skipped += r.skipped
    if config.local:
        try:
            r = local_sources(config.local)
        except ValueError as exc:
            raise BuildError(str(exc)) from None
        result.records += r.records
        result.problems += r.problems
    ids = [r.source_id for r in result.records]
    dup = [k for k, v in Counter(ids).items() if v > 1]
    if dup:
        raise BuildError(f"two sources share the ID {dup[0]!r} (e.g. a local file named like a YouTube ID); rename one")
    return result


def build_dataset(
    config: BuildConfig,
    *,
    detector: Any = None,
    oracle: Any = None,
    downloader: Downloader | None = None,
    log: Callable[[str], None] | None = None,
) -> BuildSummary:
    """Run every stage (see the module docstring) and return the summary.

    Args:
        detector: a ready face detector (``detect(frame) -> (M, 5)``) instead of ``config.detector``.
        oracle: a ready oracle LandmarkModel instead of building one from ``config.members`` / ``config.tta``
            (its ``last_landmark_var`` is used as the variance when present).
        downloader: a ready :class:`~wflwv.dataset.acquire.Downloader` (tests map IDs to a local server).
        log: where progress messages go (default: nowhere).
    Injected objects run every stage in this process (``workers`` is ignored for them).
    """
    from tqdm.auto import tqdm

    config.check()
    say = log or (lambda msg: None)
    root, work = Path(config.out), Path(config.work)
    root.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    inline = detector is not None or oracle is not None
    _WORKER.clear()
    _WORKER["config"] = config
    if detector is not None:
        _WORKER["injected_detector"] = detector
    if oracle is not None:
        _WORKER["injected_oracle"] = oracle

    def progress(desc):
        return lambda it: tqdm(it, desc=desc, disable=not config.progress, leave=True)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    acq = _acquire(config, downloader, progress)
    timings["acquire"] = time.perf_counter() - t
    say(f"acquire: {len(acq.records)} source(s) ({acq.skipped} from earlier runs), {len(acq.problems)} failed or rejected")
    if not acq.records and not acq.problems:
        raise BuildError("no video found in the given sources")

    # ---- scan
    t = time.perf_counter()
    scans = _run_parallel(_scan_source, [r.to_dict() for r in acq.records], config, "scan", inline)
    timings["scan"] = time.perf_counter() - t
    items = []
    recs = {r.source_id: r for r in acq.records}
    for s in scans:
        rec = recs[s["source_id"]]
        for c in s.get("clips", []):
            items.append({**c, "source_id": rec.source_id, "fps": s["fps"], "width": rec.width, "height": rec.height,
                          "max_outside": config.max_outside, "scan_key": s["key"]})  # fmt: skip
    say(f"scan: {len(items)} candidate clip(s) from {sum(s['status'] == 'ok' for s in scans)} source(s)")

    # ---- label
    t = time.perf_counter()
    labels = _run_parallel(_label_clip_item, items, config, "label", inline)
    timings["label"] = time.perf_counter() - t

    # ---- publish
    t = time.perf_counter()
    summary = _publish(config, acq, scans, items, labels, timings)
    timings["publish"] = time.perf_counter() - t
    summary.timings = timings
    from wflwv.benchmark.results import provenance

    write_json(root / "build.json", {"config": dataclasses.asdict(config), "counts": summary.counts, "scheme": summary.scheme,
                                     "timings_s": {k: round(v, 2) for k, v in timings.items()}, "provenance": provenance()})  # fmt: skip
    _WORKER.clear()
    return summary


def _publish(config: BuildConfig, acq: AcquireResult, scans: list[dict], items: list[dict], labels: list[dict], timings) -> BuildSummary:
    root, work = Path(config.out), Path(config.work)
    recs = {r.source_id: r for r in acq.records}
    ok = {lab["clip_id"]: lab for lab in labels if lab["status"] == "ok"}
    scores = {cid: lab["variance"] for cid, lab in ok.items()}
    hard, easy = _select(scores, config.hard_k, config.easy_k)
    selected = set(hard) | set(easy)
    publish = [c for c in ok if c in selected or config.keep_unselected]
    schemes = {lab.get("scheme") for lab in ok.values()} - {None}
    scheme = schemes.pop() if len(schemes) == 1 else None
    if scheme is None and ok:
        from wflwv.schemes import scheme_for_num_points

        scheme = scheme_for_num_points(next(iter(ok.values()))["num_points"]).name

    # clips of earlier runs of this build that are no longer published
    known = {p.stem for p in (work / "labels").glob("*.json")}
    for cid in known - set(publish):
        _remove_clip(root, cid)
    by_id = {it["clip_id"]: it for it in items}
    from tqdm.auto import tqdm

    for cid in tqdm(publish, desc="publish", disable=not config.progress or not publish):
        _publish_clip(root, cid, Path(by_id[cid]["video"]), work / "labels" / f"{cid}.npz")
    write_split(root, "hard", hard)
    write_split(root, "easy", easy)

    rows: list[dict] = []
    oracle_cols = {"oracle_members": ",".join(config.members), "oracle_tta": config.tta or "none",
                   "oracle_passes": config.passes, "detector": config.detector, "scheme": scheme or ""}  # fmt: skip

    def src_cols(rec: SourceRecord) -> dict:
        return {"source_id": rec.source_id, "origin": rec.origin, "video_id": rec.video_id, "url": rec.url,
                "source_path": rec.path if rec.origin == "local" else "", "licence": rec.licence,
                "uploader": rec.uploader, "title": rec.title, "retrieved": rec.retrieved, "fps": rec.fps,
                "width": rec.width, "height": rec.height}  # fmt: skip

    for p in acq.problems:
        rows.append({"clip_id": "", "source_id": p.source_id, "status": p.status, "reason": p.reason, "origin": p.origin,
                     "video_id": p.video_id, "url": p.url, "licence": p.licence, "uploader": p.uploader, "title": p.title})  # fmt: skip
    for s in scans:
        rec = recs[s["source_id"]]
        if s["status"] != "ok":
            rows.append({**src_cols(rec), "clip_id": "", "status": _STATUS_FAILED if s["status"] == "failed" else _STATUS_DROPPED,
                         "reason": s["reason"]})  # fmt: skip
    lab_by_id = {lab["clip_id"]: lab for lab in labels}
    split_of = {**{c: "hard" for c in hard}, **{c: "easy" for c in easy}}
    for it in items:
        cid = it["clip_id"]
        rec = recs[it["source_id"]]
        lab = lab_by_id[cid]
        row = {**src_cols(rec), **oracle_cols, "clip_id": cid, "start_frame": rec.frame_offset + it["start"],
               "end_frame": rec.frame_offset + it["stop"] - 1, "num_frames": it["stop"] - it["start"],
               "variance": lab.get("variance"), "split": split_of.get(cid, "")}  # fmt: skip
        if lab["status"] == "ok":
            if cid in selected or config.keep_unselected:
                row.update(status=_STATUS_KEPT, reason="")
            else:
                row.update(status=_STATUS_DROPPED, reason="not selected (variance between the hard and easy splits)")
        else:
            row.update(status=_STATUS_FAILED if lab["status"] == "failed" else _STATUS_DROPPED, reason=lab["reason"])
        rows.append(row)
    _write_manifest(root, rows)

    if scheme:
        write_dataset_info(root, scheme=scheme)
    write_dataset_info(root, source="wflwv build", oracle={"members": list(config.members), "tta": config.tta,
                       "passes": config.passes, "box_smooth": config.box_smooth}, window_s=config.window, clips=len(publish))  # fmt: skip
    dropped = Counter(_reason_key(r["reason"]) for r in rows if r["status"] != _STATUS_KEPT)
    counts = {
        "sources": len(acq.records) + len(acq.problems),
        "sources_failed": sum(r["status"] in (_STATUS_FAILED, _STATUS_REJECTED) and not r["clip_id"] for r in rows),
        "candidate_clips": len(items),
        "labelled": len(ok),
        "kept": len(publish),
        "hard": len(hard),
        "easy": len(easy),
        "resumed_scans": sum(bool(s.get("resumed")) for s in scans),
        "resumed_labels": sum(bool(lab.get("resumed")) for lab in labels),
        "drop_reasons": dict(dropped.most_common()),
        "mean_variance_hard": float(np.mean([scores[c] for c in hard])) if hard else None,
        "mean_variance_easy": float(np.mean([scores[c] for c in easy])) if easy else None,
    }
    if config.previews:
        for cid in hard[: config.previews] + easy[: config.previews]:
            try:
                render_overlay(root, cid, 0, root / "previews" / f"{cid}.png")
            except Exception:  # a preview is a convenience; never fail the build over it
                pass
    return BuildSummary(root, rows, hard, easy, timings, counts, scheme)


def _reason_key(reason: str) -> str:
    """Group drop reasons for the summary: details in parentheses, URLs and per-video prefixes removed."""
    import re

    r = re.sub(r"\s*\(.*?\)", "", reason or "")
    r = re.sub(r"^(metadata|download) of \S+: ", "", r)
    r = re.sub(r"\[\w+\] [\w-]+: ", "", r)
    r = re.sub(r"\b[A-Za-z0-9_-]{11}: ", "", r)
    return r.strip() or "unknown"


def format_summary(s: BuildSummary) -> str:
    """A short human-readable report of a build."""
    c = s.counts
    t = s.timings
    lines = [
        f"dataset: {s.out}  (scheme {s.scheme or '?'})",
        f"sources: {c['sources']} ({c['sources_failed']} failed or rejected)",
        f"clips: {c['candidate_clips']} candidates, {c['labelled']} labelled, {c['kept']} kept "
        f"(hard {c['hard']}, easy {c['easy']})",
    ]
    if c["mean_variance_hard"] is not None and c["mean_variance_easy"] is not None:
        lines.append(f"mean oracle variance: hard {c['mean_variance_hard']:.3f}, easy {c['mean_variance_easy']:.3f} (crop px^2)")
    if c["resumed_scans"] or c["resumed_labels"]:
        lines.append(f"resumed from earlier runs: {c['resumed_scans']} scans, {c['resumed_labels']} labelled clips")
    if c["drop_reasons"]:
        lines.append("not kept:")
        lines += [f"  {n:4d}  {why}" for why, n in c["drop_reasons"].items()]
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    lines.append(f"manifest: {s.out / 'manifest.csv'}")
    return "\n".join(lines)
