"""Reading bench run folders for a report: display names, labels, colours, dataset checks.

A report only reads what ``wflwv bench`` wrote (:class:`wflwv.benchmark.results.RunDir`); it never imports or runs
a model. Everything a figure, table or video needs about one run is gathered in a :class:`ReportRun`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wflwv.benchmark.results import UNFILTERED, RunDir

__all__ = [
    "ReportError",
    "ReportRun",
    "REFERENCE_CLASSES",
    "SPLIT_ORDER",
    "display_name",
    "parse_labels",
    "load_run",
    "load_runs",
    "dataset_warnings",
    "splits_of",
    "norm_text",
]

#: order in which splits appear in figures and tables (only those present in the runs are used)
SPLIT_ORDER = ("hard", "easy", "all")

#: one colour per run, in the order the runs are given (colour-blind-friendly Okabe-Ito set, then tab10 extras)
RUN_COLOURS = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # green
    "#CC79A7",  # purple-pink
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#8C564B",  # brown
    "#7F7F7F",  # grey
    "#BCBD22",  # olive
    "#17BECF",  # cyan
)


#: classes of the reference models (:attr:`ReportRun.is_reference`)
REFERENCE_CLASSES = ("wflwv.models.sanity.OracleModel", "wflwv.models.sanity.MeanShapeModel")


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


class ReportError(ValueError):
    """A report input is unusable (not a bench folder, unknown label or baseline, missing predictions...)."""


@dataclass
class ReportRun:
    """One bench run folder as the report sees it.

    Attributes:
        path: the run folder.
        label: the name shown in figures and tables (display name, or the user's ``--label``).
        model: ``identity.model.name`` (the registered model name).
        rwr: True when the model ran with Recurrence without Recurrence (``identity.model.args.rwr``).
        args: the model arguments recorded by bench (may be empty).
        info: run.json content (``identity``, ``config``, ``filters``, ``provenance``).
        summary: summary.json content (``info`` plus ``sets``).
        per_video: one row per (filter setting, clip) (see :mod:`wflwv.benchmark.results`).
        colour: matplotlib colour of this run (hex).
        marker: matplotlib marker of its unfiltered result (a star for RwR runs, a circle otherwise).
    """

    path: Path
    label: str
    model: str
    rwr: bool
    args: dict[str, Any]
    info: dict[str, Any]
    summary: dict[str, Any]
    per_video: pd.DataFrame
    colour: str = "#000000"
    marker: str = "o"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rundir(self) -> RunDir:
        return RunDir(self.path)

    @property
    def identity(self) -> dict[str, Any]:
        return self.info.get("identity", {})

    @property
    def dataset_root(self) -> Path | None:
        root = self.identity.get("dataset", {}).get("root")
        return Path(root) if root else None

    @property
    def dataset_fingerprint(self) -> str | None:
        return self.identity.get("dataset", {}).get("fingerprint")

    @property
    def scheme(self) -> str | None:
        """The scheme the run was scored and its predictions stored in (``scoring_scheme``; older runs: the
        dataset's)."""
        return self.info.get("scoring_scheme") or self.identity.get("dataset", {}).get("scheme")

    @property
    def norm(self) -> str:
        return self.identity.get("norm", "inter-ocular")

    @property
    def sets(self) -> dict[str, Any]:
        """``{set label: {"filter": None | {"name", "params"}, "splits": {...}}}`` from summary.json."""
        return self.summary.get("sets", {})

    @property
    def model_class(self) -> str:
        return str(self.identity.get("model", {}).get("class") or "")

    @property
    def is_reference(self) -> bool:
        """True for the sanity models that do not look at the image the way a trained model does: the ``oracle``
        (returns the labels) and ``mean-shape`` (one fixed face). The jittered ``perturbed-oracle`` is not one."""
        return self.model_class in REFERENCE_CLASSES

    @property
    def label_floor(self) -> dict[str, Any] | None:
        """The dataset's label-flicker floor recorded with the run (summary.json ``label_floor``), if any."""
        floor = self.summary.get("label_floor", self.info.get("label_floor"))
        return floor if isinstance(floor, dict) and _number(floor.get("nmf")) is not None else None

    def split_stats(self, set_label: str = UNFILTERED, split: str = "all") -> dict[str, Any] | None:
        """The aggregates of one result set on one split, or None when absent."""
        return self.sets.get(set_label, {}).get("splits", {}).get(split)

    def ok_clips(self) -> list[str]:
        """IDs of the clips scored successfully without a filter."""
        df = self.per_video
        rows = df[(df["filter"] == UNFILTERED) & (df["status"] == "ok")]
        return [str(v) for v in rows["video_id"]]

    def has_predictions(self, video_id: str) -> bool:
        return self.rundir.prediction_path(video_id).is_file()

    def predictions(self, video_id: str) -> np.ndarray:
        """(T, K, 2) unfiltered predictions of one clip in frame pixels.

        Raises:
            ReportError: when the clip has no predictions file in this run.
        """
        try:
            return np.asarray(self.rundir.load_predictions(video_id)["landmarks"], dtype=np.float64)
        except FileNotFoundError:
            status = ""
            df = self.per_video
            row = df[(df["filter"] == UNFILTERED) & (df["video_id"] == video_id)]
            if len(row):
                err = row.iloc[0].get("error")
                status = f" (the clip {row.iloc[0]['status']} in this run{': ' + str(err) if isinstance(err, str) and err else ''})"
            else:
                status = " (the clip is not part of this run)"
            raise ReportError(
                f"run '{self.label}' ({self.path}) has no predictions for clip {video_id}{status}; choose another "
                f"--video, or re-run `wflwv bench` into {self.path} to complete it"
            ) from None
        except KeyError:
            raise ReportError(
                f"{self.rundir.prediction_path(video_id)}: no 'landmarks' array in the predictions file"
            ) from None


def display_name(model: Mapping[str, Any]) -> str:
    """The name of a model as shown in reports: ``identity.model.name`` plus ``" + RwR"`` when its args say rwr, and
    the model's ``label_tags`` (options that differ from the released behaviour) in brackets.

    >>> display_name({"name": "ldeq", "args": {"rwr": True}, "config": {"label_tags": ["early exit"]}})
    'ldeq + RwR [early exit]'
    """
    name = str(model.get("name") or model.get("class") or "model")
    args = model.get("args") or {}
    if _truthy(args.get("rwr")):
        name += " + RwR"
    tags = (model.get("config") or {}).get("label_tags") or []
    if tags:
        name += f" [{', '.join(map(str, tags))}]"
    return name


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """Parse ``RUN=NAME`` strings (``RUN``: the run folder as given, its full path, or its folder name).

    Raises:
        ReportError: for an item without ``=`` or with an empty side.
    """
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ReportError(f"--label {item!r}: expected RUN=NAME, e.g. --label runs/ldeq-rwr='LDEQ + RwR'")
        key, name = item.split("=", 1)  # folder names rarely hold '=', display names may ("a=1")
        key, name = key.strip(), name.strip()
        if not key or not name:
            raise ReportError(f"--label {item!r}: both the run and the name must be non-empty (RUN=NAME)")
        out[key] = name
    return out


def load_run(path: str | Path) -> ReportRun:
    """Read one bench run folder (run.json/summary.json and the per-video table).

    Raises:
        ReportError: when the folder does not exist or is not a finished ``wflwv bench`` output.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ReportError(f"{path}: run folder not found (pass the --out folder of a `wflwv bench` run)")
    rd = RunDir(path)
    hint = "pass the --out folder of a `wflwv bench` run"
    try:
        info = rd.read_run()
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    if info is None:
        raise ReportError(f"{path}: not a bench run folder (no run.json); {hint}")
    try:
        summary = rd.summary()
    except FileNotFoundError:
        raise ReportError(
            f"{path}: has run.json but no summary.json: the bench run did not finish; re-run `wflwv bench` with the "
            "same --out to complete it"
        ) from None
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    try:
        per_video = rd.per_video()
    except FileNotFoundError:
        raise ReportError(
            f"{path}: no per_video.csv/.parquet: the bench run did not finish; re-run `wflwv bench` into it"
        ) from None
    if "sets" not in summary or UNFILTERED not in summary["sets"]:
        raise ReportError(
            f'{path / "summary.json"}: no result sets ("sets"/"{UNFILTERED}"); is this a `wflwv bench` summary?'
        )
    missing = [c for c in ("filter", "video_id", "status", "nme", "nmf") if c not in per_video.columns]
    if missing:
        raise ReportError(f"{path}: per-video table lacks columns {missing}; it was not written by `wflwv bench`")
    per_video = per_video.copy()
    per_video["video_id"] = per_video["video_id"].astype(str)
    if "split" in per_video:
        per_video["split"] = per_video["split"].fillna("").astype(str)
    model = info.get("identity", {}).get("model", {})
    return ReportRun(
        path=path,
        label=display_name(model),
        model=str(model.get("name") or ""),
        rwr=_truthy((model.get("args") or {}).get("rwr")),
        args=dict(model.get("args") or {}),
        info=info,
        summary=summary,
        per_video=per_video,
    )


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _disambiguate(runs: Sequence[ReportRun]) -> None:
    """Give runs that share a display name distinct labels from the model arguments that differ between them."""
    groups: dict[str, list[ReportRun]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    for label, members in groups.items():
        if len(members) < 2:
            continue
        for source in ("args", "config"):
            dicts = [
                {
                    k: v
                    for k, v in (
                        (r.args if source == "args" else r.identity.get("model", {}).get("config") or {}).items()
                    )
                    if k != "rwr"
                }
                for r in members
            ]
            keys = list(dict.fromkeys(k for d in dicts for k in d))
            differing = [k for k in keys if len({repr(d.get(k)) for d in dicts}) > 1]
            if differing:
                for r, d in zip(members, dicts):
                    parts = [f"{k}={_fmt_value(d[k])}" for k in differing if k in d]
                    r.label = f"{label} ({', '.join(parts)})" if parts else label
                break
        names = [r.label for r in members]
        if len(set(names)) < len(names):  # identical configurations: fall back to the folder names
            for r in members:
                r.label = f"{r.label} [{r.path.name}]"
        names = [r.label for r in members]
        if len(set(names)) < len(names):
            for i, r in enumerate(members):
                r.label = f"{r.label} #{i + 1}"


def _match_label_key(key: str, runs: Sequence[ReportRun], given: Sequence[str]) -> list[int]:
    hits = []
    for i, (r, g) in enumerate(zip(runs, given)):
        candidates = {g, str(Path(g)), str(r.path), str(r.path.resolve()), r.path.name}
        if key in candidates or str(Path(key).expanduser()) in candidates:
            hits.append(i)
        else:
            try:
                if Path(key).expanduser().resolve() == r.path.resolve():
                    hits.append(i)
            except OSError:
                pass
    return hits


def load_runs(
    paths: Sequence[str | Path],
    labels: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ReportRun]:
    """Read several run folders, give them unique labels and colours.

    Args:
        paths: the run folders, in the order they should appear.
        labels: ``{RUN: NAME}`` overrides; RUN is a folder as given, its full path or its folder name.
        log: progress callback (one line per run).
    Raises:
        ReportError: no runs, a folder that is not a bench run, the same folder twice, a label naming no run or
            several, or two runs ending up with the same label.
    """
    if not paths:
        raise ReportError("no run folders given: pass one or more `wflwv bench` output folders")
    runs = []
    seen: dict[Path, str] = {}
    for p in paths:
        run = load_run(p)
        key = run.path.resolve()
        if key in seen:
            raise ReportError(f"{p}: the same run folder is given twice (also as {seen[key]})")
        seen[key] = str(p)
        runs.append(run)
        if log:
            n_sets = len(run.sets)
            log(f"read {p}: {run.label}, {len(run.ok_clips())} clips, {n_sets} result set{'s' * (n_sets != 1)}")
    _disambiguate(runs)
    given = [str(p) for p in paths]
    for key, name in (labels or {}).items():
        hits = _match_label_key(key, runs, given)
        if not hits:
            raise ReportError(f"--label {key}={name}: {key!r} is none of the run folders ({', '.join(given)})")
        if len(hits) > 1:
            raise ReportError(f"--label {key}={name}: {key!r} matches several run folders; use the full path")
        runs[hits[0]].label = name
    names = [r.label for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ReportError(
            f"several runs are labelled {', '.join(map(repr, dup))}; give each a distinct --label RUN=NAME"
        )
    for i, r in enumerate(runs):
        r.colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        r.marker = "*" if r.rwr else "o"
    return runs


def dataset_warnings(runs: Sequence[ReportRun]) -> list[str]:
    """Warnings when the runs were scored on different data (fingerprint, scheme or normaliser differ)."""
    out = []
    fps = {r.dataset_fingerprint for r in runs}
    if len(fps) > 1:
        desc = "; ".join(f"{r.label}: {r.dataset_root} ({(r.dataset_fingerprint or '?')[:10]})" for r in runs)
        out.append(f"the runs were scored on different datasets, so their numbers are not directly comparable ({desc})")
    schemes = {r.scheme for r in runs}
    if len(schemes) > 1:
        out.append(f"the runs use different landmark schemes ({', '.join(f'{r.label}: {r.scheme}' for r in runs)})")
    norms = {r.norm for r in runs}
    if len(norms) > 1:
        out.append(f"the runs use different NME normalisers ({', '.join(f'{r.label}: {r.norm}' for r in runs)})")
    clip_sets = {frozenset(r.per_video.loc[r.per_video["filter"] == UNFILTERED, "video_id"]) for r in runs}
    if len(fps) == 1 and len(clip_sets) > 1:
        out.append("the runs cover different clips (different --split); split averages are over different videos")
    return out


def norm_text(norm: str) -> str:
    """How the NME normaliser reads in axis labels: ``"inter-ocular distance"``, ``"box diagonal"``..."""
    return {
        "inter-ocular": "inter-ocular distance",
        "inter-pupil": "inter-pupil distance",
        "box-diagonal": "box diagonal",
    }.get(norm, str(norm))


def splits_of(runs: Sequence[ReportRun]) -> list[str]:
    """The splits (hard, easy, all) that at least one run has results for, in :data:`SPLIT_ORDER`."""
    present = set()
    for r in runs:
        for s in r.sets.values():
            for name, agg in s.get("splits", {}).items():
                if agg.get("videos", 0) > 0:
                    present.add(name)
    return [s for s in SPLIT_ORDER if s in present]
