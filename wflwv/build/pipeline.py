"""`wflwv build`: from videos to a labelled, split dataset in the official WFLW-V layout.

Stages (each resumable; every file is written atomically, and each item's record is written last, so an item
with a record is finished):

1. **acquire** (:mod:`wflwv.build.acquire`): YouTube clip ranges, Creative Commons search results or local
   files -> ``WORK/sources/``.
2. **scan**, per source (parallel): shot cuts (:mod:`wflwv.build.scenes`), face detection and IoU tracking
   (:mod:`wflwv.build.detect`), windows of ``window`` seconds with exactly one tracked face, each cut out to
   ``WORK/clips/CLIP_ID.mp4``; record ``WORK/scan/SOURCE_ID.json``.
3. **label**, per clip (parallel): the oracle ensemble (:mod:`wflwv.build.oracle`) with boxes re-derived from
   its own landmarks; per-frame per-landmark ensemble variance kept; checks that drop bad clips; record
   ``WORK/labels/CLIP_ID.json`` + ``.npz``.
4. **publish**: rank clips by mean ensemble variance, top ``hard_k`` -> hard, bottom ``easy_k`` -> easy, write the
   official layout (``videos/``, ``bboxes/``, ``landmarks/``, split lists, ``dataset.json``) plus ``variance/ID.npy``,
   ``manifest.parquet`` / ``manifest.csv`` (one row per source or clip: provenance, licence, frame range, fps,
   oracle, variance, status and drop reason) and ``build.json`` (configuration, timings, counts, provenance).

5. **label floor** (:mod:`wflwv.build.floor`): a few frames of the published clips moved by known warps,
   labelled like the clips; the oracle's own flicker (NMF against the exact motion) goes to ``build.json``,
   ``dataset.json`` and the manifest under ``label_floor``.

Records carry a hash of the configuration they depend on; changing e.g. the oracle relabels every clip on the next
run, while an interrupted run restarted with the same options only does what is missing. ``WORK`` defaults to
``OUT/.build``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from wflwv.benchmark.cluster import ClusterError, ClusterSpec, RayCluster
from wflwv.build.acquire import AcquireResult, Downloader, acquire_ranges, acquire_search, local_sources, parse_ranges
from wflwv.build.config import BuildConfig, BuildError, BuildSummary
from wflwv.build.floor import build_label_floor
from wflwv.build.oracle import check_oracle
from wflwv.build.publish import format_summary, publish, render_overlay
from wflwv.build.stages import _WORKER, fetch_range_item, label_clip_item, run_parallel, scan_source
from wflwv.io import folder_lock, provenance, write_json

__all__ = ["BuildConfig", "BuildSummary", "BuildError", "build_dataset", "format_summary", "render_overlay"]


# ------------------------------------------------------------------------------------------------ driver
def _uses_ray(config: BuildConfig, inline: bool, say: Callable[[str], None]) -> bool:
    """Whether the per-item stages run on Ray (``config.engine``; "auto" falls back to processes without Ray)."""
    if inline or config.engine == "processes":
        return False
    if config.engine == "ray" or config.ray_address:
        return True
    if config.workers <= 1:
        return False
    if importlib.util.find_spec("ray") is None:
        say(f"Ray is not installed: scanning and labelling in {config.workers} local processes instead")
        return False
    return True


def _cluster(config: BuildConfig) -> RayCluster:
    spec = ClusterSpec(
        workers=None if config.ray_address else config.workers,
        address=config.ray_address,
        cpus_per_worker=config.cpus_per_worker,
        gpus_per_worker=config.gpus_per_worker,
    )
    try:
        return RayCluster(spec)
    except ClusterError as exc:
        raise BuildError(str(exc)) from None


def _acquire(config: BuildConfig, downloader: Downloader | None, progress, cluster=None) -> AcquireResult:
    result = AcquireResult()
    work = Path(config.work)
    parallel = None
    if cluster is not None and downloader is None:  # clip ranges fetched as Ray tasks (an injected one stays here)

        def parallel(jobs, on_result):
            run_parallel(fetch_range_item, jobs, config, "acquire ids", False, cluster, on_result=on_result)

    if config.ids or config.search:
        downloader = downloader or Downloader(config.download)
    if config.ids:
        try:
            ranges = parse_ranges(config.ids)
        except ValueError as exc:
            raise BuildError(str(exc)) from None
        r = acquire_ranges(ranges, work, downloader, config.retry_failed, progress("acquire ids"), parallel)
        result.records += r.records
        result.problems += r.problems
        result.skipped += r.skipped
    for q in config.search:
        r = acquire_search(
            q,
            config.max_results,
            work,
            downloader,
            config.licence_pattern,
            config.retry_failed,
            progress(f"search {q!r}"),
        )
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
        downloader: a ready :class:`~wflwv.build.acquire.Downloader` (tests map IDs to a local server).
        log: where progress messages go (default: nowhere).
    Injected objects run every stage in this process (``workers`` is ignored for them).

    The oracle is built once before anything else, so a bad member fails at once and nothing is written; the
    output folder is then locked for the whole build (a second build into it is refused, naming this one).
    Raises:
        BuildError: bad options or oracle members; FolderLockedError: another process is building into ``out``.
    """
    config.check()
    if oracle is None:
        try:
            check_oracle(config.members, config.tta, config.device)
        except ValueError as exc:
            raise BuildError(str(exc)) from None
    with folder_lock(config.out, command="wflwv build", other="another --out"):
        return _build(config, detector, oracle, downloader, log)


def _build(config: BuildConfig, detector: Any, oracle: Any, downloader: Downloader | None, log) -> BuildSummary:
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
        return lambda it: tqdm(it, desc=desc, disable=None if config.progress else True, leave=True)

    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(_cluster(config)) if _uses_ray(config, inline, say) else None
        if cluster is not None:
            engine = {"name": "ray", **cluster.describe()}
            say(f"running on Ray {engine['ray_version']}: {engine['nodes']} node(s), {engine['cluster_cpus']:g} CPU(s)")
        else:
            engine = {"name": "in-process" if inline or config.workers <= 1 else "processes", "workers": config.workers}
        t = time.perf_counter()
        acq = _acquire(config, downloader, progress, cluster)
        timings["acquire"] = time.perf_counter() - t
        say(
            f"acquire: {len(acq.records)} source(s) ({acq.skipped} from earlier runs), {len(acq.problems)} failed or "
            "rejected"
        )
        if not acq.records and not acq.problems:
            raise BuildError("no video found in the given sources")
        scans, items, labels = _scan_and_label(config, acq, inline, cluster, timings, say)

    # ---- publish
    t = time.perf_counter()
    summary = publish(config, acq, scans, items, labels, timings)
    timings["publish"] = time.perf_counter() - t

    # ---- label-flicker floor (frames of the published clips moved by known warps, labelled the same way)
    t = time.perf_counter()
    summary.label_floor = build_label_floor(config, oracle, say)
    timings["label_floor"] = time.perf_counter() - t
    summary.timings = timings
    write_json(root / "build.json", {"config": dataclasses.asdict(config), "counts": summary.counts, "scheme": summary.scheme,
                                     "label_floor": summary.label_floor, "timings_s": {k: round(v, 2) for k, v in timings.items()},
                                     "engine": engine, "provenance": provenance()})  # fmt: skip
    _WORKER.clear()
    return summary


def _scan_and_label(config: BuildConfig, acq: AcquireResult, inline: bool, cluster, timings, say):
    # ---- scan
    t = time.perf_counter()
    scans = run_parallel(scan_source, [r.to_dict() for r in acq.records], config, "scan", inline, cluster)
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
    labels = run_parallel(label_clip_item, items, config, "label", inline, cluster, gpu=True)
    timings["label"] = time.perf_counter() - t
    return scans, items, labels
