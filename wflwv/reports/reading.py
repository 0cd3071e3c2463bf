"""The report's "How to read this" section, generated from the runs and the dataset: what the ground truth is,
what the hard and easy splits mean, how much the labels flicker themselves (the label floor), and which
differences between runs are below the noise of the run (:mod:`wflwv.reports.stats`).

The label floor comes from the runs' ``summary.json`` (``label_floor``) or else the dataset's ``dataset.json``::

    {"nmf": 0.42, "nmf_static": ..., "nmf_slow": ..., "clips": 12, "method": "...", "oracle": {...}}

(``{"nmf": 0.0, "method": "exact-motion"}`` for exact-motion datasets, whose labels do not flicker at all).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from wflwv.benchmark.results import UNFILTERED
from wflwv.protocol.floor import FLOOR_FACTOR, floor_dominates
from wflwv.reports.load import ReportRun
from wflwv.reports.stats import CONFIDENCE, N_RESAMPLES, format_interval

__all__ = [
    "Reading",
    "resolve_label_floor",
    "ground_truth_text",
    "splits_text",
    "floor_text",
    "floor_warnings",
    "noise_text",
    "how_to_read",
]


@dataclass
class Reading:
    """The section: titled paragraphs, and the per-run numbers with their intervals (unfiltered result sets)."""

    paragraphs: list[tuple[str, str]] = field(default_factory=list)
    intervals: pd.DataFrame = field(default_factory=pd.DataFrame)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def resolve_label_floor(
    runs: Sequence[ReportRun], dataset_info: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The label floor to show: the runs' (summary.json), else the dataset's (dataset.json).

    Returns:
        ``(floor or None, warning or None)``; the warning when runs record different floors.
    """
    found = [(r, r.label_floor) for r in runs if r.label_floor is not None]
    if found:
        values = {round(float(f["nmf"]), 9) for _, f in found}
        warning = None
        if len(values) > 1:
            warning = (
                "the runs record different label floors ("
                + ", ".join(f"{r.label}: {float(f['nmf']):.4g}" for r, f in found)
                + f"); the report uses {found[0][0].label}'s"
            )
        return dict(found[0][1]), warning
    floor = (dataset_info or {}).get("label_floor")
    if isinstance(floor, Mapping) and _num(floor.get("nmf")) is not None:
        return dict(floor), None
    return None, None


def _is_exact(info: Mapping[str, Any], floor: Mapping[str, Any] | None) -> bool:
    method = str((floor or {}).get("method", "")) + " " + str(info.get("source", ""))
    return "exact-motion" in method or "exact motion" in method


def ground_truth_text(info: Mapping[str, Any], floor: Mapping[str, Any] | None = None) -> str:
    """What the labels are, from dataset.json: an oracle (which members, test-time augmentation, passes), exact
    labels of synthesised motion, synthetic drawings, or unknown."""
    if _is_exact(info, floor):
        return (
            "Exact: the clips were synthesised by moving still images with a known motion (exact-motion synthesis), "
            "so every label is the true position by construction. NME and NMF measure the model alone."
        )
    oracle = info.get("oracle") or (floor or {}).get("oracle")
    if isinstance(oracle, Mapping) and oracle.get("members"):
        members = ", ".join(str(m) for m in oracle["members"])
        tta = oracle.get("tta") or "none"
        passes = oracle.get("passes")
        return (
            f"An offline oracle, not human annotation: the ensemble of {members} with test-time augmentation "
            f"{tta}" + (f", {passes} passes with boxes re-derived from its own landmarks" if passes else "") + ". "
            "The oracle's own errors and flicker are part of every number: a model that imitates the oracle scores "
            "well, and NMF near the oracle's own flicker (the label floor below) cannot be improved on."
        )
    if str(info.get("source", "")) == "synthetic":
        return (
            "Synthetic clips drawn by wflwv.testing: the landmarks are exact by construction, the faces are cartoons "
            "(for tests, not for judging models)."
        )
    return (
        "dataset.json does not say where the labels come from (for the released WFLW-V: the authors' oracle of "
        "about 45 models); their own flicker is part of every NMF."
    )


def splits_text(info: Mapping[str, Any], floor: Mapping[str, Any] | None = None) -> str:
    """What hard / easy / all mean for this dataset."""
    if _is_exact(info, floor):
        how = "the dataset's hard and easy lists (for exact-motion clips: by how demanding the synthesised motion is)"
    elif info.get("oracle") or str(info.get("source", "")) == "wflwv build":
        how = (
            "oracle variance: hard clips are those where the oracle's members and augmentations disagree most (the "
            "labels are least certain: fast motion, profile views, occlusion), easy clips those where they agree most"
        )
    elif str(info.get("source", "")) == "synthetic":
        how = "motion: hard synthetic clips move faster and further than easy ones"
    else:
        how = "the dataset's hard_video_IDs.txt and easy_video_IDs.txt (WFLW-V: by the oracle's variance)"
    return f"Clips are split by {how}. 'all' is every clip; every clip weighs the same in a split's average."


def floor_text(floor: Mapping[str, Any] | None, info: Mapping[str, Any] | None = None) -> str:
    """What the label floor is and how to use it (or that it is unknown)."""
    if floor is None:
        return (
            "Unknown: neither the runs nor dataset.json record the labels' own flicker (label_floor), so a small NMF "
            "may partly be the labels' jitter rather than the model's."
        )
    nmf = float(floor["nmf"])
    if nmf == 0:
        return (
            "0: the labels do not flicker (" + str(floor.get("method", "exact labels")) + "); any NMF is the model's."
        )
    parts = [f"NMF {nmf:.4g}"]
    for key, name in (("nmf_static", "still faces"), ("nmf_slow", "slow motion")):
        if _num(floor.get(key)) is not None:
            parts.append(f"{name} {float(floor[key]):.4g}")
    how = f", measured by {floor['method']}" if floor.get("method") else ""
    over = f" over {int(floor['clips'])} clips" if _num(floor.get("clips")) is not None else ""
    return (
        f"{'; '.join(parts)}{how}{over}. This is how much the labels themselves flicker: a model cannot be shown to "
        f"flicker less than that, and one within {FLOOR_FACTOR:g}x of it is at the level of label noise. The floor is "
        "the shaded band in the NME-vs-NMF figures and the 'NMF ÷ floor' column of the tables."
    )


def floor_warnings(runs: Sequence[ReportRun], floor: Mapping[str, Any] | None, splits: Sequence[str]) -> list[str]:
    """A warning for every model (not the label-reproducing ``oracle``) whose unfiltered NMF on a split is within
    :data:`FLOOR_FACTOR` times the label floor."""
    if floor is None or not float(floor["nmf"]) > 0:
        return []
    level = float(floor["nmf"])
    out = []
    for r in runs:
        if r.model_class.endswith(".OracleModel"):
            continue
        near = []
        for split in splits:
            agg = r.split_stats(UNFILTERED, split) or {}
            v = _num(agg.get("nmf"))
            if floor_dominates(v, floor):
                near.append(f"{split} {v:.4g}")
        if near:
            out.append(
                f"{r.label}: NMF ({', '.join(near)}) is within {FLOOR_FACTOR:g}x of the label floor ({level:.4g}): "
                "its flicker is at the level of the labels' own, so NMF differences there mostly measure the labels"
            )
    return out


def noise_text(unc: pd.DataFrame, baseline_name: str) -> str:
    """Which unfiltered differences against the baseline are below the noise (their interval contains 0)."""
    if unc.empty or "d_nme" not in unc:
        return ""
    rows = unc[(unc["filter"] == UNFILTERED) & unc["d_nme"].notna()]
    below, beyond = [], []
    for _, row in rows.iterrows():
        for k, name in (("nme", "NME"), ("nmf", "NMF")):
            text = f"{row['run']} {name} on {row['split']} ({format_interval(row[f'd_{k}'], row[f'd_{k}_low'], row[f'd_{k}_high'], signed=True)})"
            if not (math.isfinite(row[f"d_{k}_low"]) and math.isfinite(row[f"d_{k}_high"])):
                continue
            (beyond if row[f"d_{k}_significant"] else below).append(text)
    pct = f"{CONFIDENCE:.0%}"
    head = (
        f"Intervals are {pct} bootstrap confidence intervals over clips ({N_RESAMPLES} resamples): another draw of "
        f"clips of the same kind would land inside them {pct} of the time. Differences are paired against "
        f"{baseline_name} over the clips both scored."
    )
    if not below and not beyond:
        return head + " No difference has an interval (the splits have fewer than two common clips)."
    out = head
    if below:
        out += f" Below the noise (the interval contains 0: not significant): {'; '.join(below)}."
    else:
        out += " No difference from the baseline is below the noise."
    if beyond:
        out += (
            f" {'All other' if below else 'All'} {len(beyond)} difference{'s' * (len(beyond) != 1)} (runs without a "
            "filter) are beyond the noise; the table below gives each with its interval."
        )
    return out


def how_to_read(
    runs: Sequence[ReportRun],
    dataset_info: Mapping[str, Any] | None,
    floor: Mapping[str, Any] | None,
    unc: pd.DataFrame,
    baseline_name: str,
) -> Reading:
    """The whole section."""
    info = dict(dataset_info or {})
    paragraphs = [
        ("Ground truth", ground_truth_text(info, floor)),
        ("Hard and easy", splits_text(info, floor)),
        ("Label floor", floor_text(floor, info)),
    ]
    noise = noise_text(unc, baseline_name)
    if noise:
        paragraphs.append(("Noise", noise))
    intervals = unc[unc["filter"] == UNFILTERED].reset_index(drop=True) if not unc.empty else unc
    return Reading(paragraphs, intervals)
