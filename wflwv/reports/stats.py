"""How sure the numbers are: bootstrap confidence intervals over clips.

A split's NME and NMF are means over its clips (every clip weighs the same), so the uncertainty that matters is
which clips happened to be in the split. Resampling the clips with replacement (the bootstrap,
:func:`scipy.stats.bootstrap`, percentile intervals) gives a confidence interval for each run's mean, and, over the
clips two result sets share, for the difference of their means (paired: each clip is compared with itself). A
difference whose interval contains 0 is below the noise of the run: another draw of clips could reverse it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from wflwv.reports.load import ReportRun

__all__ = [
    "CONFIDENCE",
    "N_RESAMPLES",
    "Interval",
    "mean_interval",
    "clip_values",
    "uncertainty_table",
    "format_interval",
]

#: confidence level of every interval in a report
CONFIDENCE = 0.95
#: bootstrap resamples per interval
N_RESAMPLES = 2000
# scipy >= 1.15 calls the generator argument `rng`; older versions `random_state`
_RNG_ARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` clips with its confidence interval (``low``/``high`` NaN when fewer than 2 clips)."""

    value: float
    low: float
    high: float
    n: int

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or below 0 (for a difference: significant at :data:`CONFIDENCE`)."""
        return self.known and (self.low > 0 or self.high < 0)


def mean_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Mean of the finite ``values`` with a percentile bootstrap interval (seeded: a report is reproducible).

    Args:
        values: (N,) one value per clip (for a paired difference: the per-clip differences).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    if np.all(v == v[0]):  # every resample has the same mean
        return Interval(mean, mean, mean, n)
    res = stats.bootstrap(
        (v,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        **{_RNG_ARG: np.random.default_rng(seed)},
    )
    ci = res.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high), n)


def clip_values(run: ReportRun, set_label: str, split: str) -> pd.DataFrame:
    """Per-clip ``nme`` and ``nmf`` of one result set on one split (successful clips), indexed by video ID."""
    df = run.per_video
    rows = df[(df["filter"] == set_label) & (df["status"] == "ok")]
    if split != "all":
        rows = rows[rows["split"] == split] if "split" in rows else rows.iloc[0:0]
    out = rows[["video_id", "nme", "nmf"]].copy()
    out["video_id"] = out["video_id"].astype(str)
    return out.drop_duplicates("video_id").set_index("video_id").astype(float)


def uncertainty_table(
    runs: Sequence[ReportRun], splits: Sequence[str], baseline: tuple[str, str] | None = None
) -> pd.DataFrame:
    """One row per (run, result set, split): each metric's mean over clips with its interval, and the paired
    difference from the baseline row with its interval.

    Columns: run, filter, split, clips, nme, nme_low, nme_high, nmf, nmf_low, nmf_high, and with a baseline
    common_clips, d_nme, d_nme_low, d_nme_high, d_nme_significant, and the same for nmf (``d_`` = this row minus the
    baseline, over the clips both scored; ``significant``: the interval excludes 0; NaN/False for the baseline).
    """
    base_run = next((r for r in runs if baseline is not None and r.label == baseline[0]), None)
    rows = []
    for r in runs:
        for set_label in r.sets:
            for split in splits:
                vals = clip_values(r, set_label, split)
                if vals.empty:
                    continue
                row: dict = {"run": r.label, "filter": set_label, "split": split, "clips": len(vals)}
                for k in ("nme", "nmf"):
                    iv = mean_interval(vals[k].to_numpy())
                    row[k], row[f"{k}_low"], row[f"{k}_high"] = iv.value, iv.low, iv.high
                if base_run is not None:
                    is_base = r.label == baseline[0] and set_label == baseline[1]
                    ref = clip_values(base_run, baseline[1], split)
                    common = vals.index.intersection(ref.index)
                    row["common_clips"] = 0 if is_base else len(common)
                    for k in ("nme", "nmf"):
                        if is_base or not len(common):
                            iv = Interval(math.nan, math.nan, math.nan, 0)
                        else:
                            iv = mean_interval(vals.loc[common, k].to_numpy() - ref.loc[common, k].to_numpy())
                        row[f"d_{k}"], row[f"d_{k}_low"], row[f"d_{k}_high"] = iv.value, iv.low, iv.high
                        row[f"d_{k}_significant"] = iv.excludes_zero
                rows.append(row)
    return pd.DataFrame(rows)


def format_interval(value: float, low: float, high: float, signed: bool = False) -> str:
    """``12.3 [11.8, 12.9]`` (``+0.41 [-0.10, +0.93]`` when ``signed``); ``–`` for an unknown value."""
    if not math.isfinite(value):
        return "–"

    def f(v: float) -> str:
        if not math.isfinite(v):
            return "?"
        mag = max(abs(value), abs(low) if math.isfinite(low) else 0, abs(high) if math.isfinite(high) else 0)
        digits = 2 if mag < 10 else 1 if mag < 100 else 0
        return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"

    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{f(value)} (one clip: no interval)"
    return f"{f(value)} [{f(low)}, {f(high)}]"
