"""The benchmark harness: run any :class:`~wflwv.models.LandmarkModel` over WFLW-V clips and score it.

For each clip the model pass (:mod:`wflwv.benchmark.inference`) decodes the video, crops every frame with the
protocol, runs the model over the frames (in order, carrying the model's per-clip state, for a stateful model; in
batches of ``frame_batch`` frames for a stateless one) and maps predictions back to frame pixels. The harness then
scores them in the dataset's landmark scheme (a 98-point model on 68-point data: its predictions converted) or,
when the model has fewer points than the data (a 68-point model on 98-point data), in the model's scheme with the
ground truth converted (run.json records the ``scoring_scheme``), and records per-clip metrics, predictions and
per-frame model statistics in the run folder (:mod:`wflwv.benchmark.results`).
``batch_videos`` clips are processed together. Where the model pass runs is the engine's business
(:mod:`wflwv.benchmark.engines`: this process, or Ray workers); scoring and writing happen here, in this process
only. Filters (:mod:`wflwv.filters`) are post-processing of the saved predictions, so adding filter settings to a
finished run does not run the model again.

A clip that fails (unreadable video, annotations of the wrong length, NaN predictions, ...) is recorded with its
reason and the run goes on. Re-running into the same folder skips finished clips (whichever engine wrote them);
clips that failed are tried again.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wflwv.benchmark import metrics as M
from wflwv.benchmark.engines import BenchJob, Engine, InProcessEngine
from wflwv.benchmark.inference import DEFAULT_FRAME_BATCH, PRECISIONS, BenchError, ClipOutcome, is_stateful
from wflwv.benchmark.results import UNFILTERED, RunDir, RunLockedError, holding_run_lock
from wflwv.filters import FilterSetting, apply_filter
from wflwv.io import provenance
from wflwv.models.api import LandmarkModel, resolve_device
from wflwv.protocol.layout import DatasetError, WFLWVDataset
from wflwv.schemes import LandmarkScheme, convert_landmarks, get_scheme

__all__ = [
    "BenchError",
    "RunLockedError",
    "resolve_device",
    "score_clip",
    "run_benchmark",
    "evaluate_set",
    "summarise",
    "rescore",
    "DEFAULT_FRAME_BATCH",
    "PRECISIONS",
]

#: bump when the meaning of stored results changes (a resumed run refuses results of another version)
RESULTS_VERSION = 1
FR_THRESHOLDS = (0.10, 0.08)


# ------------------------------------------------------------------------------------------------------------------
# scoring
def score_clip(
    pred: np.ndarray, gt: np.ndarray, scheme: LandmarkScheme, norm: str = "inter-ocular"
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of one clip.

    Args:
        pred, gt: (T, K, 2) frame pixels in the same scheme.
    Returns:
        ``(metrics, nme_frames)``: ``{"nme": percent, "nmf": ..., "nmf_<region>": ...}`` and (T,) per-frame NMEs
        (fractions).
    """
    nme_frames = M.nme_per_frame(pred, gt, scheme, norm=norm)
    out = {"nme": float(100.0 * nme_frames.mean()), "nmf": float(M.nmf_video(pred, gt))}
    for region, value in M.nmf_groups(pred, gt, scheme).items():
        out[f"nmf_{region}"] = float(value)
    return out, nme_frames


def summarise(
    rows: Sequence[dict[str, Any]], nme_frames: dict[str, np.ndarray], per_landmark: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Per-split aggregates of one result set: every video weighs the same.

    ``nme``/``nmf``/``nmf_<region>``: mean of the per-video values; ``fr_X``/``auc_X``: over the per-frame NMEs of
    the split's clips pooled; ``nmf_per_landmark``: mean over videos of each landmark's NMF.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    splits: dict[str, list[dict[str, Any]]] = {"all": ok}
    for name in ("hard", "easy"):
        members = [r for r in ok if r.get("split") == name]
        if members or any(r.get("split") == name for r in rows):
            splits[name] = members
    out: dict[str, Any] = {}
    for name, members in splits.items():
        agg: dict[str, Any] = {
            "videos": len(members),
            "failed": sum(1 for r in rows if r.get("status") != "ok" and (name == "all" or r.get("split") == name)),
            "frames": int(sum(r["frames"] for r in members)),
        }
        keys = [k for k in (members[0] if members else {}) if k in ("nme", "nmf") or k.startswith(("nmf_", "stat_"))]
        for k in keys:
            agg[k] = M.split_aggregate([r.get(k, np.nan) for r in members])
        if members:
            pooled = np.concatenate([nme_frames[r["video_id"]] for r in members])
            for x in FR_THRESHOLDS:
                fr, auc = M.ced_fr_auc(pooled, threshold=x)
                agg[f"fr_{x:g}"], agg[f"auc_{x:g}"] = float(fr), float(auc)
            agg["nmf_per_landmark"] = np.mean([per_landmark[r["video_id"]] for r in members], axis=0).tolist()
        out[name] = agg
    return out


def evaluate_set(
    run: RunDir,
    dataset: WFLWVDataset,
    video_ids: Sequence[str],
    setting: Any = None,
    norm: str = "inter-ocular",
    cache: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score the saved predictions of ``video_ids``, optionally through a filter setting (post-processing).

    Args:
        cache: a dict shared between calls on the same run, so that scoring several filter settings reads each
            clip's record, predictions and ground truth once.
    Returns:
        ``(rows, splits)``: one row per clip (failed clips keep their error) and :func:`summarise`'s aggregates.
    """
    label = UNFILTERED if setting is None else setting.label
    rows, frames_nme, per_lm = [], {}, {}
    scheme = get_scheme((run.read_run() or {}).get("scoring_scheme") or dataset.scheme)
    cache = {} if cache is None else cache

    for vid in video_ids:
        entry = cache.setdefault(vid, {})
        if "record" not in entry:
            entry["record"] = run.read_record(vid)
        rec = entry["record"]
        if rec is None:
            continue
        row = {"filter": label, **{k: v for k, v in rec.items() if not isinstance(v, (list, dict))}}
        if rec.get("status") == "ok":
            try:
                if "pred" not in entry:
                    gt = convert_landmarks(dataset.load(vid).landmarks, dataset.scheme, scheme)
                    entry["pred"], entry["gt"] = run.load_predictions(vid)["landmarks"], gt
                pred, gt = entry["pred"], entry["gt"]
                if setting is not None:
                    pred = apply_filter(setting, pred, fps=rec["fps"])
                metrics, nme_frames = score_clip(pred, gt, scheme, norm)
                row.update(metrics)
                frames_nme[vid] = nme_frames
                per_lm[vid] = M.nmf_per_landmark(pred, gt)
            except Exception as exc:  # a clip that cannot be scored is reported, the rest go on
                row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    return rows, summarise(rows, frames_nme, per_lm)


# ------------------------------------------------------------------------------------------------------------------
# the model pass (in an engine) and the per-clip results (here, on the driver)
def _finish_clip(
    run: RunDir,
    o: ClipOutcome,
    dataset: WFLWVDataset,
    model_scheme: LandmarkScheme,
    data_scheme: LandmarkScheme,
    norm: str,
    score: LandmarkScheme,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "video_id": o.video_id,
        "split": o.split or dataset.split_of(o.video_id),
        "frames": o.frames,
        "fps": o.fps,
        "status": "failed",
        "error": o.error,
    }
    if o.error is None:
        try:
            gt = (o.clip or dataset.load(o.video_id)).landmarks
        except DatasetError as exc:
            rec["error"] = str(exc)
            run.write_clip(rec)
            return rec
        pred = convert_landmarks(o.landmarks, model_scheme, score)
        gt = convert_landmarks(gt, data_scheme, score)
        metrics, nme_frames = score_clip(pred, gt, score, norm)
        rec.update(status="ok", **metrics)
        stats = {f"stat_{k}": np.asarray(v) for k, v in o.stats.items()}
        for k, v in stats.items():
            rec[f"{k}_mean"] = float(v.mean())
        run.write_clip(rec, landmarks=pred, nme_frames=nme_frames, **stats)
    else:
        run.write_clip(rec)
    return rec


def _model_identity(model: LandmarkModel, model_spec: dict[str, Any] | None) -> dict[str, Any]:
    spec = dict(model_spec or {})
    spec.setdefault("name", getattr(model, "name", "") or type(model).__name__)
    spec["class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    spec["config"] = model.config() if hasattr(model, "config") else {}
    spec["scheme"] = model.scheme
    return spec


@holding_run_lock  # the whole run, from the configuration check to the last write
def run_benchmark(
    model: LandmarkModel,
    data: str | Path | WFLWVDataset,
    out: str | Path,
    *,
    split: str = "all",
    device: str | torch.device | None = "auto",
    batch_videos: int | str = "auto",
    frame_batch: int = DEFAULT_FRAME_BATCH,
    precision: str = "fp32",
    exact: bool = True,
    filters: Iterable[Any] = (),
    norm: str = "inter-ocular",
    model_spec: dict[str, Any] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Bench ``model`` on a dataset and write the run folder ``out``; returns the summary.

    Args:
        model: any object following :class:`~wflwv.models.LandmarkModel` (the harness takes objects; names only
            matter at the CLI).
        data: a dataset folder in the official layout (or an opened :class:`WFLWVDataset`).
        split: ``hard``, ``easy``, ``all`` or a file of IDs.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``... (with a Ray engine: resolved on each worker).
        batch_videos: clips processed together (frame t of each in one batch for a stateful model; one stream
            of frames for a stateless one); results do not change. ``"auto"`` (default): on a CPU two clips per
            thread the model pass spreads over, at most 8; on a GPU 1 (:func:`~wflwv.benchmark.inference.auto_batch_videos`).
        frame_batch: frames per model call for a stateless model (``model.stateful`` False); results do not
            change. Stateful models always see one frame per clip per call.
        precision: ``fp32`` (default), ``bf16`` or ``fp16``: ``predict`` under ``torch.autocast``. Part of the
            run's identity (another precision is another run).
        exact: on a CPU, compute every frame of a model that is not ``batch_invariant`` alone, on one-threaded
            kernels, frames spread over the threads (:func:`wflwv.models.parallel.predict_per_sample`), so that
            no number depends on ``batch_videos``, ``frame_batch``, the engine or the thread count. False: batched
            calls on torch's own threads (faster for large frame batches; the same numbers up to float rounding).
            Part of the run's identity when False.
        filters: filter settings (:func:`wflwv.filters.parse_filter_option`) scored on the saved predictions.
        norm: NME normaliser: ``inter-ocular`` (default), ``inter-pupil`` or ``box-diagonal``.
        model_spec: how the model was asked for (``{"name": ..., "args": {...}}``), recorded for provenance.
        overwrite: accept an output folder holding results of another configuration (they are discarded).
        engine: where the model runs (:mod:`wflwv.benchmark.engines`): in this process (default) or on Ray
            workers. Results and the run folder are the same either way; only this process writes the folder.
    Raises:
        RunLockedError: another process is writing into ``out`` (nothing is read or written here then).
    """
    auto = batch_videos == "auto"
    if not auto and (isinstance(batch_videos, bool) or not isinstance(batch_videos, int) or batch_videos < 1):
        raise BenchError(f"batch_videos must be an integer >= 1 or 'auto', got {batch_videos!r}")
    if frame_batch < 1:
        raise BenchError(f"frame_batch must be >= 1, got {frame_batch}")
    if precision not in PRECISIONS:
        raise BenchError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    dataset = data if isinstance(data, WFLWVDataset) else WFLWVDataset(data)
    engine = engine or InProcessEngine()
    data_scheme = dataset.scheme
    model_scheme = get_scheme(model.scheme) if model.scheme is not None else data_scheme
    score = _scoring_scheme(model, model_scheme, dataset)
    video_ids = dataset.ids(split)
    if not video_ids:
        raise BenchError(f"{dataset.root}: split {split!r} has no clips")
    filters = list(filters)
    run = RunDir(out)
    identity = {
        "results_version": RESULTS_VERSION,
        "model": _model_identity(model, model_spec),
        "dataset": {
            "root": str(dataset.root.resolve()),
            "scheme": data_scheme.name,
            "fingerprint": dataset.fingerprint(),
        },
        "norm": norm,
    }
    if precision != "fp32":  # fp32 runs keep the identity they had before precision modes existed
        identity["precision"] = precision
    if not exact:  # batched calls round differently: another run
        identity["exact"] = False
    previous = run.read_run()
    if previous is not None and previous.get("identity") != identity:
        if not overwrite:
            raise BenchError(
                f"{run.path} holds results of a different configuration (model, its arguments, dataset, normaliser "
                "or precision differ); choose another --out, or pass --overwrite to discard them"
            )
        for sub in ("clips", "predictions"):
            shutil.rmtree(run.path / sub, ignore_errors=True)
        previous = None
    for sub in ("clips", "predictions"):  # temporaries of writes a killed run left behind (we hold the lock)
        for tmp in (run.path / sub).glob(".*"):
            tmp.unlink(missing_ok=True)
    known_filters = {f["label"]: f for f in (previous or {}).get("filters", [])}
    for s in filters:
        known_filters[s.label] = {"label": s.label, "name": s.name, "params": dict(s.params)}

    todo = [v for v in video_ids if not run.finished(v)]
    job = BenchJob(
        model,
        dataset,
        model_scheme.name,
        device=str(device) if device is not None else "auto",
        frame_batch=frame_batch,
        precision=precision,
        exact=exact,
        video_ids=todo,
    )
    config = {
        "split": split,
        "batch_videos": batch_videos,  # "auto" is replaced by what it means on the started engine
        "frame_batch": frame_batch,
        "precision": precision,
        "exact": exact,
        "stateful": is_stateful(model),
    }
    try:
        engine_info = engine.start(job) if todo else engine.describe()
        if auto:
            batch_videos = engine.auto_batch_videos() if todo else 1
            config.update(batch_videos=batch_videos, batch_videos_auto=True)
        run.write_run(
            {
                "identity": identity,
                "config": {**config, "device": engine_info.get("device", str(device))},
                "engine": engine_info,
                "filters": list(known_filters.values()),
                "scoring_scheme": score.name,
                "provenance": provenance(),
            }
        )
        _model_pass(
            run, engine, dataset, todo, len(video_ids), batch_videos, model_scheme, score, norm, identity, progress
        )
    finally:
        engine.close()
    return rescore(run, dataset, video_ids, [None] + [_setting_from_dict(f) for f in known_filters.values()], norm)


def _model_pass(run, engine, dataset, todo, total, batch_videos, model_scheme, score, norm, identity, progress) -> None:
    """Feed the engine groups of unfinished clips and write each clip's results as they come back."""
    bar = tqdm(
        total=total,
        initial=total - len(todo),
        unit="clip",
        desc=f"bench {identity['model']['name']}",
        disable=None if progress else True,  # None: no bar when stderr is not a terminal (logs, pipes)
    )
    t0, frames_done = time.time(), 0
    groups = [todo[i : i + batch_videos] for i in range(0, len(todo), batch_videos)]
    try:
        for outcomes in engine.run(groups) if groups else ():
            for o in outcomes:
                rec = _finish_clip(run, o, dataset, model_scheme, dataset.scheme, norm, score)
                frames_done += rec["frames"] if rec["status"] == "ok" else 0
                bar.set_postfix(fps=f"{frames_done / max(time.time() - t0, 1e-9):.1f}", refresh=False)
                bar.update(1)  # one redraw per clip, with the new rate
    finally:
        bar.close()


def _scoring_scheme(model: LandmarkModel, model_scheme: LandmarkScheme, dataset: WFLWVDataset) -> LandmarkScheme:
    """The scheme a run is scored in: the dataset's, or the model's when only the ground truth can be converted."""
    probe = np.zeros((1, dataset.scheme.num_points, 2))
    try:
        convert_landmarks(np.zeros((1, model_scheme.num_points, 2)), model_scheme, dataset.scheme)
        return dataset.scheme
    except ValueError as exc:
        try:
            convert_landmarks(probe, dataset.scheme, model_scheme)
        except ValueError:
            raise BenchError(f"model {model.name!r} cannot be scored on {dataset.root}: {exc}") from None
    print(
        f"note: model {model.name!r} predicts {model_scheme.name} landmarks; the {dataset.scheme.name} ground truth "
        f"of {dataset.root} is converted to {model_scheme.name} and the run is scored in {model_scheme.name}",
        file=sys.stderr,
    )
    return model_scheme


def _setting_from_dict(d: dict[str, Any]):
    return FilterSetting(d["name"], d["params"])


def rescore(
    run: RunDir, dataset: WFLWVDataset, video_ids: Sequence[str], settings: Sequence[Any], norm: str
) -> dict[str, Any]:
    """Score every result set (unfiltered and each filter setting) and write the tables and summary."""
    all_rows, sets, cache = [], {}, {}
    for s in settings:
        rows, splits = evaluate_set(run, dataset, video_ids, s, norm, cache)
        all_rows.extend(rows)
        label = UNFILTERED if s is None else s.label
        sets[label] = {"filter": None if s is None else {"name": s.name, "params": dict(s.params)}, "splits": splits}
    summary = {**(run.read_run() or {}), "sets": sets}
    if dataset.info.get("label_floor") is not None:  # the labels' own flicker (wflwv.build.floor), for the report
        summary["label_floor"] = dataset.info["label_floor"]
    run.write_tables(all_rows, summary)
    return summary
