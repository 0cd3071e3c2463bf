"""Result tables of a report: per run and filter setting, per split, with changes against a baseline.

Two tables:

* the **results table** (``results.csv`` / ``results.md``): one row per (run, result set, split) with NME (%),
  NMF, FR@0.1, AUC@0.1 (also FR/AUC@0.08 in the CSV), taken from each run's summary.json, and the relative change
  of NME and NMF against a baseline row (``nme_change_pct`` = 100 * (NME - NME_baseline) / NME_baseline); with the
  bootstrap intervals of :mod:`wflwv.reports.stats` (``nme_low``/``nme_high``..., and for the paired difference from
  the baseline ``d_nme``, ``d_nme_low``, ``d_nme_high``, ``d_nme_significant``...), and when the dataset's label
  floor is known ``label_floor_nmf`` and ``nmf_over_floor``;
* the **per-clip table** (``per_clip.csv`` / in ``results.md``): the unfiltered NME and NMF of every clip in every
  run, from per_video, with the NMF gap between the runs (clips where the runs differ most come first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wflwv.benchmark.results import UNFILTERED
from wflwv.reports.load import ReportError, ReportRun, norm_text, splits_of

__all__ = [
    "Baseline",
    "resolve_baseline",
    "results_table",
    "clip_table",
    "format_change",
    "format_number",
    "markdown_results",
    "markdown_clips",
    "write_tables",
    "METRIC_COLUMNS",
]

#: (column, heading, lower is better) of the summary metrics shown in the Markdown/HTML tables
METRIC_COLUMNS = (
    ("nme", "NME (%) ↓", True),
    ("nmf", "NMF ↓", True),
    ("fr_0.1", "FR@0.1 ↓", True),
    ("auc_0.1", "AUC@0.1 ↑", False),
)
_CSV_METRICS = ("nme", "nmf", "fr_0.1", "auc_0.1", "fr_0.08", "auc_0.08")


class Baseline(tuple):
    """``(run label, result set label)`` of the baseline row."""

    @property
    def run(self) -> str:
        return self[0]

    @property
    def set(self) -> str:
        return self[1]

    @property
    def name(self) -> str:
        return row_name(self[0], self[1])


def row_name(run_label: str, set_label: str) -> str:
    """How a (run, result set) is named in tables: ``"ldeq"`` or ``"ldeq + ema(alpha=0.2)"``."""
    return run_label if set_label == UNFILTERED else f"{run_label} + {set_label}"


def resolve_baseline(runs: Sequence[ReportRun], name: str | None) -> Baseline:
    """Find the baseline a user named.

    ``name`` may be a run label (its unfiltered results), a row name ``"LABEL + FILTER"``, a run folder (as given,
    its full path or folder name), or None (the first run, unfiltered). Matching is exact first, then ignoring case.

    Raises:
        ReportError: when nothing or several rows match (the message lists the names to choose from).
    """
    if name is None:
        return Baseline((runs[0].label, UNFILTERED))
    options: list[tuple[str, Baseline]] = []
    for r in runs:
        for s in r.sets:
            options.append((row_name(r.label, s), Baseline((r.label, s))))
    for exact in (True, False):
        hits = [b for n, b in options if (n == name if exact else n.lower() == name.strip().lower())]
        if len(hits) == 1:
            return hits[0]
    for r in runs:
        try:
            if name in (r.path.name, str(r.path)) or Path(name).expanduser().resolve() == r.path.resolve():
                return Baseline((r.label, UNFILTERED))
        except OSError:
            pass
    names = ", ".join(repr(n) for n, _ in options[:30])
    folders = ", ".join(repr(r.path.name) for r in runs)
    raise ReportError(
        f"--baseline {name!r} names no run or result set; choose one of: {names} (or a run folder: {folders})"
    )


def results_table(
    runs: Sequence[ReportRun],
    baseline: Baseline | None = None,
    label_floor: float | None = None,
    uncertainty: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (run, result set, split) with the summary metrics and the change against ``baseline``.

    Columns: run, model, rwr, filter (set label, ``"none"`` unfiltered), filter_name, name, split, videos, failed,
    frames, nme, nmf, fr_0.1, auc_0.1, fr_0.08, auc_0.08, nme_change_pct, nmf_change_pct, run_dir; with
    ``label_floor`` also label_floor_nmf and nmf_over_floor; with ``uncertainty``
    (:func:`wflwv.reports.stats.uncertainty_table`) its interval and difference columns.
    Missing values are NaN (e.g. a split without clips, or a baseline that has no results on that split).
    """
    splits = splits_of(runs)
    rows = []
    for r in runs:
        for set_label, s in r.sets.items():
            filt = s.get("filter") or {}
            for split in splits:
                agg = s.get("splits", {}).get(split)
                if agg is None:
                    continue
                row: dict[str, Any] = {
                    "run": r.label,
                    "model": r.model,
                    "rwr": r.rwr,
                    "filter": set_label,
                    "filter_name": filt.get("name", "") if set_label != UNFILTERED else "",
                    "name": row_name(r.label, set_label),
                    "split": split,
                    "videos": int(agg.get("videos", 0)),
                    "failed": int(agg.get("failed", 0)),
                    "frames": int(agg.get("frames", 0)),
                }
                for k in _CSV_METRICS:
                    v = agg.get(k)
                    row[k] = float(v) if isinstance(v, (int, float)) and v is not None else np.nan
                row["run_dir"] = str(r.path)
                rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for k in ("nme", "nmf"):
        df[f"{k}_change_pct"] = np.nan
    if baseline is not None:
        base = df[(df["run"] == baseline.run) & (df["filter"] == baseline.set)].set_index("split")
        for k in ("nme", "nmf"):
            ref = df["split"].map(base[k]) if len(base) else pd.Series(np.nan, index=df.index)
            with np.errstate(divide="ignore", invalid="ignore"):
                change = 100.0 * (df[k] - ref) / ref
            df[f"{k}_change_pct"] = change.where(ref.notna() & (ref != 0))
    if label_floor is not None and math.isfinite(label_floor):
        df["label_floor_nmf"] = float(label_floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            df["nmf_over_floor"] = (df["nmf"] / label_floor) if label_floor > 0 else np.nan
    if uncertainty is not None and not uncertainty.empty:
        extra = [c for c in uncertainty.columns if c not in ("run", "filter", "split", "nme", "nmf")]
        df = df.merge(uncertainty[["run", "filter", "split", *extra]], on=["run", "filter", "split"], how="left")
    return df


def clip_table(runs: Sequence[ReportRun]) -> pd.DataFrame:
    """Unfiltered per-clip results of every run, long form.

    Columns: run, video_id, split, frames, status, error, nme, nmf, nmf_gap (max - min NMF of the clip over the runs
    that scored it; NaN when fewer than two did). Sorted by nmf_gap (largest first), then clip and run order.
    """
    parts = []
    for order, r in enumerate(runs):
        df = r.per_video[r.per_video["filter"] == UNFILTERED]
        cols = [c for c in ("video_id", "split", "frames", "status", "error", "nme", "nmf") if c in df.columns]
        part = df[cols].copy()
        part.insert(0, "run", r.label)
        part["_order"] = order
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    for c in ("split", "error"):
        if c not in out:
            out[c] = ""
    ok = out[out["status"] == "ok"]
    counts = ok.groupby("video_id")["nmf"].count()
    gap = ok.groupby("video_id")["nmf"].agg(lambda v: v.max() - v.min())
    gap[counts < 2] = np.nan
    out["nmf_gap"] = out["video_id"].map(gap)
    out = out.sort_values(["nmf_gap", "video_id", "_order"], ascending=[False, True, True], na_position="last")
    return out.drop(columns="_order").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------------------
# formatting
def format_number(v: Any, kind: str = "") -> str:
    """Numbers as in the tables: FR/AUC with 4 decimals, others with about 4 significant digits; NaN -> "–"."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    if kind.startswith(("fr_", "auc_")):
        return f"{v:.4f}"
    if v == 0:
        return "0"
    decimals = min(4, max(0, 3 - int(math.floor(math.log10(abs(v))))))
    return f"{v:.{decimals}f}"


def format_change(pct: Any) -> str:
    """A relative change in percent: ``-13%``, ``+4.2%``, ``0%``; NaN -> "–"."""
    if pct is None or (isinstance(pct, float) and not math.isfinite(pct)):
        return "–"
    pct = float(pct)
    if abs(pct) < 0.05:
        return "0%"
    return f"{pct:+.0f}%" if abs(pct) >= 10 else f"{pct:+.1f}%"


def _best_mask(values: pd.Series, lower_better: bool) -> pd.Series:
    finite = values.astype(float)
    if finite.notna().sum() < 2:
        return pd.Series(False, index=values.index)
    best = finite.min() if lower_better else finite.max()
    mask = pd.Series(np.isclose(finite, best, rtol=1e-12, atol=0) & finite.notna(), index=values.index)
    if mask.sum() > max(1, len(values) // 2):  # a value most rows share is not a "best" worth marking
        return pd.Series(False, index=values.index)
    return mask


def split_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    return df[df["split"] == split].reset_index(drop=True)


def table_cells(
    df: pd.DataFrame, split: str, baseline: Baseline | None
) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and cells ``(text, is_best)`` of one split's results table (shared by Markdown and HTML)."""
    part = split_rows(df, split)
    header = ["Model", "Filter", "Videos"] + [h for _, h, _ in METRIC_COLUMNS]
    floor = "nmf_over_floor" in part and part["nmf_over_floor"].notna().any()
    if floor:
        header.append("NMF ÷ floor")
    noise = baseline is not None and "d_nme_significant" in part
    if baseline is not None:
        header += ["ΔNME", "ΔNMF"] + (["Beyond noise"] if noise else [])
    best = {k: _best_mask(part[k], lower) for k, _, lower in METRIC_COLUMNS}
    rows = []
    for i, row in part.iterrows():
        is_base = baseline is not None and row["run"] == baseline.run and row["filter"] == baseline.set
        videos = f"{row['videos']}" + (f" ({row['failed']} failed)" if row["failed"] else "")
        cells = [(row["run"], False), ("—" if row["filter"] == UNFILTERED else row["filter"], False), (videos, False)]
        cells += [(format_number(row[k], k), bool(best[k].iloc[i])) for k, _, _ in METRIC_COLUMNS]
        if floor:
            ratio = row["nmf_over_floor"]
            cells.append((_ratio(ratio), False))
        if baseline is not None:
            if is_base:
                cells += [("baseline", False), ("baseline", False)] + ([("baseline", False)] if noise else [])
            else:
                cells += [(format_change(row["nme_change_pct"]), False), (format_change(row["nmf_change_pct"]), False)]
                if noise:
                    cells.append((_beyond_noise(row), False))
        rows.append(cells)
    return header, rows


def _ratio(ratio: Any) -> str:
    """NMF over the label floor: ``1.4×``, ``12×``, ``<0.01×``; ``–`` when unknown."""
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        return "–"
    return "<0.01×" if ratio < 0.01 else f"{ratio:.2g}×"


def _beyond_noise(row: pd.Series) -> str:
    """Which of the row's differences from the baseline are beyond the noise (their interval excludes 0)."""
    known = [k for k in ("nme", "nmf") if math.isfinite(row.get(f"d_{k}_low", np.nan))]
    if not known:
        return "–"
    sig = [k.upper() for k in known if bool(row.get(f"d_{k}_significant"))]
    return " and ".join(sig) if sig else "neither"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
    ]
    for cells in rows:
        lines.append("| " + " | ".join(f"**{_md_escape(t)}**" if b else _md_escape(t) for t, b in cells) + " |")
    return "\n".join(lines)


def markdown_results(df: pd.DataFrame, baseline: Baseline | None, norm: str = "inter-ocular") -> str:
    """The results table as Markdown, one section per split; the best value of each metric column in bold."""
    out = []
    if baseline is not None:
        out.append(f"ΔNME / ΔNMF: relative change against **{baseline.name}** on the same split (negative = better).\n")
    out.append(
        f"NME in % of the {norm_text(norm)}, NMF on the released evaluation code's scale, "
        "FR/AUC as fractions; ↓ lower is better, ↑ higher is better; best value per column in bold.\n"
    )
    if "d_nme_significant" in df:
        out.append(
            "Beyond noise: which differences from the baseline have a 95% bootstrap interval over clips that excludes "
            "0 ('neither': both are within the noise of the run; intervals in uncertainty.csv).\n"
        )
    if "label_floor_nmf" in df:
        out.append(
            f"NMF ÷ floor: NMF over the labels' own flicker (label floor NMF {df['label_floor_nmf'].iloc[0]:.4g}).\n"
        )
    for split in [s for s in ("hard", "easy", "all") if s in set(df["split"])]:
        n = int(split_rows(df, split)["videos"].max())
        out.append(f"### Split: {split} ({n} videos)\n")
        header, rows = table_cells(df, split, baseline)
        out.append(_md_table(header, rows) + "\n")
    return "\n".join(out)


def clip_cells(
    clips: pd.DataFrame, runs_order: Sequence[str], limit: int | None = 30
) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the wide per-clip table (one row per clip, NME and NMF per run, NMF gap)."""
    ids = list(dict.fromkeys(clips["video_id"]))
    if limit is not None:
        ids = ids[:limit]
    header = ["Clip", "Split"] + [f"{r} NME / NMF" for r in runs_order] + ["NMF gap"]
    rows = []
    for vid in ids:
        part = clips[clips["video_id"] == vid]
        split = str(part["split"].iloc[0]) if len(part) else ""
        cells = [vid, split or "–"]
        for r in runs_order:
            rr = part[part["run"] == r]
            if not len(rr):
                cells.append("not run")
            elif rr["status"].iloc[0] != "ok":
                cells.append("failed")
            else:
                cells.append(f"{format_number(rr['nme'].iloc[0])} / {format_number(rr['nmf'].iloc[0])}")
        cells.append(format_number(part["nmf_gap"].iloc[0]))
        rows.append(cells)
    return header, rows


def markdown_clips(clips: pd.DataFrame, runs_order: Sequence[str], limit: int | None = 30) -> str:
    header, rows = clip_cells(clips, runs_order, limit)
    total = clips["video_id"].nunique()
    note = (
        f" (the {limit} with the largest NMF gap of {total}; all in per_clip.csv)"
        if limit is not None and total > limit
        else ""
    )
    md = _md_table(header, [[(c, False) for c in row] for row in rows])
    return f"### Per clip, unfiltered{note}\n\n{md}\n"


def write_tables(
    df: pd.DataFrame,
    clips: pd.DataFrame,
    runs_order: Sequence[str],
    baseline: Baseline | None,
    out: str | Path,
    norm: str = "inter-ocular",
    uncertainty: pd.DataFrame | None = None,
    reading: Sequence[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Write results.csv, per_clip.csv, results.md (and uncertainty.csv) into ``out``; returns their paths by kind.

    ``reading``: the "How to read this" paragraphs (title, text), put at the top of results.md.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results_csv": out / "results.csv", "per_clip_csv": out / "per_clip.csv", "markdown": out / "results.md"}
    df.to_csv(paths["results_csv"], index=False)
    clips.to_csv(paths["per_clip_csv"], index=False)
    if uncertainty is not None and not uncertainty.empty:
        paths["uncertainty_csv"] = out / "uncertainty.csv"
        uncertainty.to_csv(paths["uncertainty_csv"], index=False)
    text = "# Results\n\n"
    if reading:
        text += "## How to read this\n\n" + "".join(f"**{t}.** {body}\n\n" for t, body in reading)
    text += markdown_results(df, baseline, norm) + "\n" + markdown_clips(clips, runs_order)
    paths["markdown"].write_text(text, encoding="utf-8")
    return paths
