"""The benchmark harness: run any :class:`~wflwv.models.LandmarkModel` over WFLW-V clips and score it.

For each clip the harness decodes the video, crops every frame with the protocol, runs the model over the frames
in order carrying the model's per-clip state, maps predictions back to frame pixels, scores them in the dataset's
landmark scheme (a 98-point model on 68-point data: its predictions converted) or, when the model has fewer points
than the data (a 68-point model on 98-point data), in the model's scheme with the ground truth converted (run.json
records the ``scoring_scheme``), and records per-clip metrics, predictions and per-frame model statistics in the
run folder (:mod:`wflwv.benchmark.results`). ``batch_videos`` clips are
processed together, frame t of each in one batch. Filters (:mod:`wflwv.filters`) are post-processing of the
saved predictions, so adding filter settings to a finished run does not run the model again.

A clip that fails (unreadable video, annotations of the wrong length, NaN predictions, ...) is recorded with its
reason and the run goes on. Re-running into the same folder skips finished clips; clips that failed are tried
again.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wflwv.benchmark import metrics as M
from wflwv.benchmark.results import UNFILTERED, RunDir, RunLockedError, holding_run_lock
from wflwv.filters import FilterSetting, apply_filter
from wflwv.io import provenance
from wflwv.models.api import CROP_SIZE, FrameInfo, LandmarkModel, resolve_device
from wflwv.protocol.crop import apply_affine
from wflwv.protocol.layout import Clip, ClipCrops, DatasetError, WFLWVDataset, decode_crops
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
]

#: bump when the meaning of stored results changes (a resumed run refuses results of another version)
RESULTS_VERSION = 1
FR_THRESHOLDS = (0.10, 0.08)


class BenchError(RuntimeError):
    """A problem with the whole run (not one clip): bad device, incompatible output folder, scheme mismatch."""


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
# the model pass
@dataclass
class _Loaded:
    clip: Clip
    crops: ClipCrops


@dataclass
class _Active:
    loaded: _Loaded
    state: Any = None
    preds: list[np.ndarray] = field(default_factory=list)
    stats: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None


def _load(dataset: WFLWVDataset, vid: str) -> _Loaded:
    clip = dataset.load(vid)
    return _Loaded(clip, decode_crops(clip, CROP_SIZE))


def _run_batch(
    model: LandmarkModel,
    batch: list[_Loaded],
    device: torch.device,
    dataset: WFLWVDataset,
    model_scheme: LandmarkScheme,
) -> list[_Active]:
    """Run the model over a group of clips, frame t of each clip in one batch; per-sample failures drop out."""
    active = [_Active(b) for b in batch]
    t_max = max(b.clip.num_frames for b in batch)
    for t in range(t_max):
        live = [a for a in active if a.error is None and t < a.loaded.clip.num_frames]
        if not live:
            break
        imgs = np.stack([a.loaded.crops.crops[t] for a in live])
        x = torch.from_numpy(imgs).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        infos = [
            FrameInfo(
                video_id=a.loaded.clip.video_id,
                frame_index=t,
                num_frames=a.loaded.clip.num_frames,
                fps=a.loaded.crops.fps,
                crop_to_frame=a.loaded.crops.crop_to_frame[t],
                dataset_root=dataset.root,
            )
            for a in live
        ]
        with torch.inference_mode():
            out = model.predict(x, [a.state for a in live], infos)
        lm = out.landmarks_numpy()
        if lm.shape != (len(live), model_scheme.num_points, 2):
            raise BenchError(
                f"model {model.name or type(model).__name__} returned landmarks of shape {lm.shape}; expected "
                f"({len(live)}, {model_scheme.num_points}, 2) for its scheme {model_scheme.name}"
            )
        if len(out.states) != len(live):
            raise BenchError(f"model returned {len(out.states)} states for a batch of {len(live)}")
        stats = out.stats_numpy()
        for i, a in enumerate(live):
            if not np.isfinite(lm[i]).all():
                a.error = f"model returned non-finite landmarks (NaN/inf) at frame {t}"
                continue
            a.state = out.states[i]
            a.preds.append(apply_affine(lm[i], a.loaded.crops.crop_to_frame[t]))
            for k, v in stats.items():
                a.stats.setdefault(k, []).append(float(v[i]))
    return active


def _finish_clip(
    run: RunDir, a: _Active, model_scheme: LandmarkScheme, data_scheme: LandmarkScheme, norm: str, score: LandmarkScheme
) -> dict[str, Any]:
    clip = a.loaded.clip
    rec: dict[str, Any] = {
        "video_id": clip.video_id,
        "split": clip.split,
        "frames": clip.num_frames,
        "fps": a.loaded.crops.fps,
        "status": "failed",
        "error": a.error,
    }
    if a.error is None:
        pred = convert_landmarks(np.stack(a.preds), model_scheme, score)
        gt = convert_landmarks(clip.landmarks, data_scheme, score)
        metrics, nme_frames = score_clip(pred, gt, score, norm)
        rec.update(status="ok", **metrics)
        stats = {f"stat_{k}": np.asarray(v) for k, v in a.stats.items()}
        for k, v in stats.items():
            rec[f"{k}_mean"] = float(v.mean())
        run.write_clip(rec, landmarks=pred, nme_frames=nme_frames, **stats)
    else:
        run.write_clip(rec)
    return rec


def _failed_record(vid: str, split: str, exc: BaseException) -> dict[str, Any]:
    msg = str(exc) if isinstance(exc, (DatasetError, BenchError)) else f"{type(exc).__name__}: {exc}"
    return {"video_id": vid, "split": split, "frames": 0, "fps": float("nan"), "status": "failed", "error": msg}


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
    batch_videos: int = 1,
    filters: Iterable[Any] = (),
    norm: str = "inter-ocular",
    model_spec: dict[str, Any] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Bench ``model`` on a dataset and write the run folder ``out``; returns the summary.

    Args:
        model: any object following :class:`~wflwv.models.LandmarkModel` (the harness takes objects; names only
            matter at the CLI).
        data: a dataset folder in the official layout (or an opened :class:`WFLWVDataset`).
        split: ``hard``, ``easy``, ``all`` or a file of IDs.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        batch_videos: clips processed together (frame t of each in one model call); results do not change.
        filters: filter settings (:func:`wflwv.filters.parse_filter_option`) scored on the saved predictions.
        norm: NME normaliser: ``inter-ocular`` (default), ``inter-pupil`` or ``box-diagonal``.
        model_spec: how the model was asked for (``{"name": ..., "args": {...}}``), recorded for provenance.
        overwrite: accept an output folder holding results of another configuration (they are discarded).
    Raises:
        RunLockedError: another process is writing into ``out`` (nothing is read or written here then).
    """
    if batch_videos < 1:
        raise BenchError(f"batch_videos must be >= 1, got {batch_videos}")
    dataset = data if isinstance(data, WFLWVDataset) else WFLWVDataset(data)
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
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
    previous = run.read_run()
    if previous is not None and previous.get("identity") != identity:
        if not overwrite:
            raise BenchError(
                f"{run.path} holds results of a different configuration (model, its arguments, dataset or normaliser "
                "differ); choose another --out, or pass --overwrite to discard them"
            )
        for sub in ("clips", "predictions"):
            shutil.rmtree(run.path / sub, ignore_errors=True)
        previous = None
    known_filters = {f["label"]: f for f in (previous or {}).get("filters", [])}
    for s in filters:
        known_filters[s.label] = {"label": s.label, "name": s.name, "params": dict(s.params)}
    run.write_run(
        {
            "identity": identity,
            "config": {"split": split, "device": str(dev), "batch_videos": batch_videos},
            "filters": list(known_filters.values()),
            "scoring_scheme": score.name,
            "provenance": provenance(),
        }
    )
    model.to(dev)

    todo = [v for v in video_ids if not run.finished(v)]
    skipped = len(video_ids) - len(todo)
    bar = tqdm(
        total=len(video_ids),
        initial=skipped,
        unit="clip",
        desc=f"bench {identity['model']['name']}",
        disable=None if progress else True,  # None: no bar when stderr is not a terminal (logs, pipes)
    )
    t0, frames_done = time.time(), 0
    groups = [todo[i : i + batch_videos] for i in range(0, len(todo), batch_videos)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[Future] = [pool.submit(_load, dataset, v) for v in groups[0]] if groups else []
        for gi, group in enumerate(groups):
            futures = pending
            pending = [pool.submit(_load, dataset, v) for v in groups[gi + 1]] if gi + 1 < len(groups) else []
            loaded: list[_Loaded] = []
            for vid, fut in zip(group, futures):
                try:
                    loaded.append(fut.result())
                except Exception as exc:
                    run.write_clip(_failed_record(vid, dataset.split_of(vid), exc))
                    bar.update(1)
            if not loaded:
                continue
            try:
                results = _run_batch(model, loaded, dev, dataset, model_scheme)
            except BenchError:
                raise
            except Exception as exc:
                if len(loaded) > 1:  # find which clip breaks the model: run them one at a time
                    results = []
                    for item in loaded:
                        try:
                            results.extend(_run_batch(model, [item], dev, dataset, model_scheme))
                        except BenchError:
                            raise
                        except Exception as exc1:
                            results.append(_Active(item, error=f"model raised {type(exc1).__name__}: {exc1}"))
                else:
                    tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                    results = [_Active(loaded[0], error=f"model raised {tb}")]
            for a in results:
                rec = _finish_clip(run, a, model_scheme, data_scheme, norm, score)
                frames_done += rec["frames"] if rec["status"] == "ok" else 0
                bar.set_postfix(fps=f"{frames_done / max(time.time() - t0, 1e-9):.1f}", refresh=False)
                bar.update(1)  # one redraw per clip, with the new rate
    bar.close()
    return rescore(run, dataset, video_ids, [None] + [_setting_from_dict(f) for f in known_filters.values()], norm)


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
