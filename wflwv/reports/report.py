"""``wflwv report``: figures, tables, trajectories, an overlay video and an HTML page from bench run folders.

The report reads only what ``wflwv bench`` wrote (plus the dataset's ground truth and video for trajectories and the
overlay); it never runs a model. :func:`build_report` is the library entry point (the command is :mod:`wflwv.cli.report`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import wflwv.reports.figures as F
import wflwv.reports.stats as S
import wflwv.reports.tables as T
from wflwv.benchmark.results import UNFILTERED
from wflwv.protocol.layout import DatasetError, WFLWVDataset
from wflwv.protocol.video import VideoError, iter_frames
from wflwv.reports.html import Figure, Overlay, PageContent, write_html
from wflwv.reports.load import ReportError, ReportRun, dataset_warnings, load_runs, parse_labels, splits_of
from wflwv.reports.reading import floor_warnings, how_to_read, resolve_label_floor
from wflwv.reports.selection import (
    clip_landmark_nmf,
    common_clips,
    compared_runs,
    mean_face_shape,
    pick_clip,
    pick_landmark,
)
from wflwv.reports.video import write_overlay
from wflwv.schemes import convert_landmarks, get_scheme

__all__ = ["ReportResult", "build_report"]


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        index: the HTML page.
        files: paths by kind: ``nme_nmf``, ``flicker_map``, ``trajectory``, ``overlay``, ``tables`` (PNG/SVG/MP4/GIF/CSV/MD).
        label_floor: the label floor shown (``label_floor`` of the runs' summary.json or of dataset.json), if known.
        warnings: the warnings shown on the page (different datasets, skipped parts...).
        clips: the clips shown in trajectories and overlays.
        landmarks: ``{clip: [landmark indices]}`` shown in the trajectory plots.
    """

    out: Path
    index: Path
    runs: list[ReportRun]
    baseline: str
    files: dict[str, list[Path]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    landmarks: dict[str, list[int]] = field(default_factory=dict)
    label_floor: dict | None = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _open_dataset(runs: Sequence[ReportRun], data: str | Path | None):
    """The dataset for ground truth and videos: ``data`` if given, else the one recorded in the first run.

    Returns ``(dataset or None, problem text or None)``.
    """
    root = Path(data) if data is not None else runs[0].dataset_root
    if root is None:
        return None, "the runs do not record their dataset folder; pass --data"
    try:
        ds = WFLWVDataset(root)
    except DatasetError as exc:
        how = "" if data is not None else " (recorded in the first run; pass --data if the dataset moved)"
        return None, f"cannot open the dataset {root}{how}: {exc}"
    return ds, None


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    labels: dict[str, str] | Sequence[str] | None = None,
    baseline: str | None = None,
    videos: Sequence[str] = (),
    landmarks: Sequence[int] = (),
    data: str | Path | None = None,
    overlay: bool = True,
    gif_max_frames: int = 60,
    log: Callable[[str], None] | None = None,
) -> ReportResult:
    """Write a report on bench runs into ``out``.

    Args:
        run_dirs: ``wflwv bench`` output folders, in the order they should appear (the first is the default baseline).
        out: report folder (created; files in it are overwritten).
        labels: ``{RUN: NAME}`` or ``["RUN=NAME", ...]``: display names overriding the model names.
        baseline: run label or ``"LABEL + FILTER"`` row the tables compare against (default: the first run).
        videos: clips for the trajectory plots and overlay videos (default: the clip with the largest NMF gap).
        landmarks: landmark indices for the trajectory plots (default: the most flickering one in each clip).
        data: dataset folder for ground truth and videos (default: the one recorded in the first run).
        overlay: write the overlay video(s).
        log: progress callback (one line per step); warnings are passed to it too, prefixed "warning:".
    Raises:
        ReportError: a folder that is not a bench run, an unknown label/baseline/clip/landmark, missing predictions.
    """
    say = log or (lambda msg: None)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: exists and is not a folder")
    if isinstance(labels, (list, tuple)):
        labels = parse_labels(labels)
    runs = load_runs(run_dirs, labels, log=say)
    for r in runs:
        if r.path.resolve() == out.resolve():
            raise ReportError(f"--out {out} is one of the run folders; write the report elsewhere")
    warn_list = dataset_warnings(runs)
    for w in warn_list:
        say(f"warning: {w}")

    def warn(msg: str) -> None:
        warn_list.append(msg)
        say(f"warning: {msg}")

    base = T.resolve_baseline(runs, baseline)

    # ---- dataset (ground truth and videos); chosen clips and landmarks are checked before anything is drawn ----------
    ds, problem = _open_dataset(runs, data)
    if ds is not None and data is not None:
        fp = {r.dataset_fingerprint for r in runs}
        if ds.fingerprint() not in fp:
            warn(f"--data {data} differs from the dataset the runs were scored on (fingerprint mismatch)")
    if ds is None:
        if videos:
            raise ReportError(f"--video needs the dataset's ground truth and videos: {problem}")
        warn(f"no trajectories or overlay video: {problem}")
    scheme = runs[0].scheme or (ds.scheme.name if ds is not None else "wflw98")

    chosen: list[str] = []
    if ds is not None:
        if videos:
            known = {v for r in runs for v in r.per_video["video_id"]}
            for v in videos:
                if v not in known:
                    sample = ", ".join(sorted(known)[:8])
                    raise ReportError(f"--video {v}: no run has this clip (clips include: {sample})")
            chosen = list(dict.fromkeys(videos))
        else:
            pick = pick_clip(runs)
            if pick is None:
                warn("no clip has predictions in every run: no trajectories or overlay video")
            else:
                chosen = [pick]
        k = get_num_points(scheme)
        for lm in landmarks:
            if not 0 <= lm < k:
                raise ReportError(f"--landmark {lm}: out of range; the {scheme} scheme has landmarks 0..{k - 1}")
        for vid in chosen:  # fail before drawing anything when a chosen clip lacks predictions
            for r in runs:
                if not r.has_predictions(vid):
                    r.predictions(vid)  # raises ReportError naming the run, the clip and why

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {k: [] for k in ("tables", "nme_nmf", "flicker_map", "trajectory", "overlay")}
    norm = runs[0].norm
    splits = splits_of(runs)

    # ---- how sure the numbers are, and what they can be compared with ---------------------------------------------
    dataset_info = ds.info if ds is not None else {}
    floor, problem = resolve_label_floor(runs, dataset_info)
    if problem:
        warn(problem)
    floor_nmf = float(floor["nmf"]) if floor else None
    for w in floor_warnings(runs, floor, splits):
        warn(w)
    say(f"bootstrap intervals over clips ({S.N_RESAMPLES} resamples)")
    uncertainty = S.uncertainty_table(runs, splits, (base.run, base.set))
    reading = how_to_read(runs, dataset_info, floor, uncertainty, base.name)

    # ---- tables ------------------------------------------------------------------------------------------------
    say(f"tables (baseline: {base.name})")
    results = T.results_table(runs, base, floor_nmf, uncertainty)
    clips = T.clip_table(runs)
    paths = T.write_tables(
        results, clips, [r.label for r in runs], base, out, norm, uncertainty=uncertainty, reading=reading.paragraphs
    )
    files["tables"] = list(paths.values())

    # ---- NME vs NMF ----------------------------------------------------------------------------------------------
    scatter = []
    for split in splits:
        say(f"figure: NME vs NMF, {split} split")
        png, svg = F.plot_nme_nmf(runs, split, out / f"nme_nmf_{split}", label_floor=floor_nmf)
        files["nme_nmf"] += [png, svg]
        scatter.append(Figure(f"NME vs NMF, {split} split", png, [svg]))

    # ---- flicker maps ------------------------------------------------------------------------------------------
    shape = None
    shape_note = "template face"
    if ds is not None:
        try:
            ids = common_clips(runs)[:50] or runs[0].ok_clips()[:50]
            gts = [convert_landmarks(ds.load(v).landmarks, ds.scheme, scheme) for v in ids]
            if gts and gts[0].shape[1] == len(F.template_shape(scheme)):
                shape, shape_note = mean_face_shape(gts), f"mean ground-truth shape of {len(gts)} clips"
        except Exception as exc:  # the map still works on the template face
            warn(f"flicker map drawn on the template face: cannot read ground truth ({exc})")
    flicker = []
    for split in splits:
        say(f"figure: per-landmark flicker map, {split} split")
        png, svg = F.plot_flicker_maps(runs, split, out / f"flicker_map_{split}", shape=shape, scheme=scheme)
        files["flicker_map"] += [png, svg]
        flicker.append(
            Figure(f"Per-landmark NMF, {split} split", png, [svg], caption=f"Landmarks at the {shape_note}.")
        )

    # ---- trajectories and overlays --------------------------------------------------------------------------------
    trajectories, overlays = [], []
    chosen_lms: dict[str, list[int]] = {}
    if ds is not None:
        for vid in chosen:
            try:
                clip = ds.load(vid)
            except Exception as exc:
                raise ReportError(f"clip {vid}: cannot read its ground truth from {ds.root}: {exc}") from None
            try:  # the ground truth in the runs' scoring scheme
                gt = convert_landmarks(clip.landmarks, ds.scheme, scheme)
            except ValueError as exc:
                raise ReportError(
                    f"clip {vid}: {ds.root} cannot be compared with the runs: {exc}; pass --data"
                ) from None
            preds = {r.label: r.predictions(vid) for r in runs}  # ReportError names the run without predictions
            for label, p in preds.items():
                if p.shape[1:] != gt.shape[1:]:
                    raise ReportError(
                        f"run '{label}': predictions of clip {vid} have shape {p.shape}, the ground truth "
                        f"{gt.shape}: the run was scored on another dataset; pass --data"
                    )
            per_lm = clip_landmark_nmf(gt, preds)
            lms = list(dict.fromkeys(int(x) for x in landmarks)) or [pick_landmark(per_lm)]
            chosen_lms[vid] = lms
            fps = _clip_fps(runs, vid)
            say(f"figure: trajectories of clip {vid}, landmark{'s' * (len(lms) > 1)} {', '.join(map(str, lms))}")
            png, svg = F.plot_trajectories(
                vid,
                gt,
                preds,
                {r.label: r.colour for r in runs},
                lms,
                out / f"trajectory_{_safe(vid)}",
                fps=fps,
                scheme=scheme,
                nmf=per_lm,
            )
            files["trajectory"] += [png, svg]
            compared = compared_runs(runs)
            left_out = [r.label for r in runs if r not in compared]
            if videos:
                why = ""
            elif len(compared) > 1:
                why = f" (the clip where the NMF of {', '.join(r.label for r in compared)} differ most"
                why += f"; {', '.join(left_out)} left out as reference models)" if left_out else ")"
            else:
                why = f" (the clip where {compared[0].label} flickers most)"
            which = "" if landmarks else "; the landmark that flickers most in this clip"
            trajectories.append(
                Figure(
                    f"Clip {vid}{why}",
                    png,
                    [svg],
                    caption=f"Landmark{'s' * (len(lms) > 1)} {', '.join(map(str, lms))}{which}.",
                )
            )
            if overlay:
                say(f"overlay video of clip {vid}")
                try:
                    mp4, gif, n = write_overlay(
                        iter_frames(clip.video_path),
                        gt,
                        preds,
                        {r.label: r.colour for r in runs},
                        scheme,
                        out / f"overlay_{_safe(vid)}.mp4",
                        out / f"overlay_{_safe(vid)}.gif",
                        fps=fps or 25.0,
                        gif_max_frames=gif_max_frames,
                        title=vid,
                    )
                except (VideoError, ValueError, OSError) as exc:
                    warn(f"no overlay video for clip {vid}: {exc}")
                    continue
                files["overlay"] += [mp4, gif]
                overlays.append(
                    Overlay(vid, gif, mp4, caption=f"Ground truth in white, runs in their colours ({n} frames).")
                )

    # ---- page ----------------------------------------------------------------------------------------------------
    say("writing index.html")
    content = PageContent(
        runs=runs,
        results=results,
        clips=clips,
        baseline=base,
        scatter=scatter,
        flicker=flicker,
        trajectories=trajectories,
        overlays=overlays,
        table_files=files["tables"],
        warnings=warn_list,
        reading=reading,
        label_floor=floor_nmf,
    )
    index = write_html(content, out / "index.html")
    return ReportResult(out, index, runs, base.name, files, warn_list, chosen, chosen_lms, floor)


def get_num_points(scheme: str) -> int:
    return get_scheme(scheme).num_points


def _clip_fps(runs: Sequence[ReportRun], vid: str) -> float:
    for r in runs:
        df = r.per_video
        row = df[(df["filter"] == UNFILTERED) & (df["video_id"] == vid)]
        if len(row) and "fps" in row:
            v = float(row["fps"].iloc[0])
            if np.isfinite(v) and v > 0:
                return v
    return 0.0
