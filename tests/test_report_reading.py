"""The report states its conclusions and draws every run: ground truth, splits, label floor, bootstrap intervals
and which differences are below the noise; figures that survive an NME = NMF = 0 run, keep each run visible and
its colour; a default clip the reference models do not decide; a default output folder."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from wflwv.benchmark.harness import run_benchmark
from wflwv.cli.report import report
from wflwv.filters import parse_filter_options
from wflwv.models import create_model
from wflwv.reports import build_report, load_runs
from wflwv.reports.figures import _log_ticks, nme_nmf_figure, run_line_style, trajectory_figure
from wflwv.reports.reading import floor_text, ground_truth_text, resolve_label_floor
from wflwv.reports.selection import pick_clip
from wflwv.reports.stats import mean_interval, uncertainty_table
from wflwv.testing import make_synthetic_dataset

FLOOR = {"nmf": 0.0, "nmf_static": 0.0, "nmf_slow": 0.0, "clips": 4, "method": "oracle on still frames"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four bench runs on one synthetic dataset: jittery (with an EMA sweep), calmer (recorded as RwR), the mean
    face and the exact oracle (NME = NMF = 0)."""
    root = tmp_path_factory.mktemp("reading")
    data = make_synthetic_dataset(root / "data", num_hard=2, num_easy=2, num_frames=10)
    specs = {
        "jitter": ("perturbed-oracle", {"jitter": 2.0}, ["ema:alpha=0.3|0.6"]),
        "calm": ("perturbed-oracle", {"jitter": 0.7, "rwr": True}, []),
        "mean": ("mean-shape", {}, []),
        "oracle": ("oracle", {}, []),
    }
    out = {}
    for key, (name, args, filters) in specs.items():
        model = create_model(name, **{k: v for k, v in args.items() if k != "rwr"})
        run_benchmark(model, data, root / key, filters=parse_filter_options(filters),
                      model_spec={"name": name, "args": args}, progress=False, device="cpu")  # fmt: skip
        out[key] = root / key
    return root, data, out


def _nmf(run: Path, split: str = "all") -> float:
    return json.loads((run / "summary.json").read_text())["sets"]["none"]["splits"][split]["nmf"]


def _with_floor(src: Path, dst: Path, floor: dict) -> Path:
    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text())
    summary["label_floor"] = floor
    (dst / "summary.json").write_text(json.dumps(summary))
    return dst


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_label_floor_in_figures_tables_text_and_warnings(runs, tmp_path):
    root, data, r = runs
    calm, jitter = _nmf(r["calm"]), _nmf(r["jitter"])
    level = 0.6 * calm  # the calm run is within 2x of it, the jittery one far above it
    assert jitter > 2 * level
    floor = {**FLOOR, "nmf": level, "nmf_static": level / 2}
    paths = [_with_floor(r[k], tmp_path / k, floor) for k in ("jitter", "calm", "oracle")]
    result = build_report(paths, tmp_path / "report", overlay=False)
    assert result.label_floor["nmf"] == pytest.approx(level)
    df = pd.read_csv(result.out / "results.csv")
    assert np.allclose(df["label_floor_nmf"], level)
    assert df["nmf_over_floor"].to_numpy() == pytest.approx((df["nmf"] / level).to_numpy())
    html = result.index.read_text()
    assert "How to read this" in html and "Label floor" in html and f"NMF {level:.4g}" in html
    assert "NMF ÷ floor" in html and "NMF ÷ floor" in (result.out / "results.md").read_text()
    near = [w for w in result.warnings if "within 2x of the label floor" in w]
    assert len(near) == 1 and near[0].startswith("perturbed-oracle + RwR")  # not the oracle, not the jittery run
    fig = nme_nmf_figure(load_runs(paths), "all", label_floor=level)
    ax = fig.axes[0]
    bands = [p for p in ax.patches if abs(p.get_bbox().x1 - level) < 1e-9 * level + 1e-12]
    assert len(bands) == 1 and bands[0].get_bbox().x0 <= ax.get_xlim()[0] + 1e-9
    assert any("label floor" in t.get_text() for t in fig.legends[0].get_texts())
    plt.close(fig)


def test_floor_sources_and_texts(runs):
    _, _, r = runs
    loaded = load_runs([r["jitter"]])
    floor, problem = resolve_label_floor(loaded, {"label_floor": {"nmf": 0.0, "method": "exact-motion"}})
    assert floor == {"nmf": 0.0, "method": "exact-motion"} and problem is None
    assert "do not flicker" in floor_text(floor) and ground_truth_text({}, floor).startswith("Exact")
    assert resolve_label_floor(loaded, {}) == (None, None)
    assert floor_text(None).startswith("Unknown")
    oracle = {"oracle": {"members": ["dlib68", "unet"], "tta": "flip,shift", "passes": 2}}
    text = ground_truth_text(oracle)
    assert "dlib68, unet" in text and "flip,shift" in text and "2 passes" in text


@pytest.mark.slow
def test_bootstrap_intervals_and_noise(runs, tmp_path):
    root, data, r = runs
    twin = tmp_path / "twin"
    shutil.copytree(r["jitter"], twin)  # the same numbers again: every difference is exactly 0
    result = build_report([r["jitter"], twin, r["calm"]], tmp_path / "report", overlay=False)
    unc = pd.read_csv(result.out / "uncertainty.csv")
    base = unc[(unc["run"] == "perturbed-oracle (jitter=2)") | (unc["run"] == result.runs[0].label)]
    assert len(base)
    for _, row in unc.iterrows():
        assert row["nme_low"] <= row["nme"] <= row["nme_high"] and row["nmf_low"] <= row["nmf"] <= row["nmf_high"]
    labels = [x.label for x in result.runs]
    same = unc[(unc["run"] == labels[1]) & (unc["filter"] == "none")]
    assert (same["d_nme"] == 0).all() and not same["d_nme_significant"].any()
    calm = unc[(unc["run"] == labels[2]) & (unc["split"] == "all")].iloc[0]
    assert calm["d_nmf"] < 0 and bool(calm["d_nmf_significant"])  # less jitter: clearly less flicker
    html = result.index.read_text()
    assert "Below the noise (the interval contains 0: not significant)" in html
    assert f"{labels[1]} NMF on all" in html and "(within noise)" in html
    md = (result.out / "results.md").read_text()
    assert "| Beyond noise |" in md and "| neither |" in md


def test_mean_interval_covers_the_mean_at_the_stated_rate():
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        iv = mean_interval(rng.normal(3.0, 1.0, 25), n_resamples=500, seed=int(rng.integers(1 << 30)))
        hits += iv.low <= 3.0 <= iv.high
    assert 0.85 <= hits / 200 <= 0.99
    assert math.isnan(mean_interval([1.0]).low) and mean_interval([2.0, 2.0]).excludes_zero
    assert not mean_interval([-1.0, 1.0, -0.5, 0.5]).excludes_zero


def test_uncertainty_table_pairs_clips(runs):
    _, _, r = runs
    loaded = load_runs([r["jitter"], r["calm"]])
    unc = uncertainty_table(loaded, ["all"], (loaded[0].label, "none"))
    row = unc[(unc["run"] == loaded[1].label)].iloc[0]
    a = loaded[0].per_video.query("filter == 'none'").set_index("video_id")["nmf"]
    b = loaded[1].per_video.query("filter == 'none'").set_index("video_id")["nmf"]
    assert row["d_nmf"] == pytest.approx(float((b - a).mean())) and row["common_clips"] == 4


# ------------------------------------------------------------------------------------------------------------------
def _ticks(axis) -> list[str]:
    lo, hi = sorted(axis.get_view_interval())
    return [t.get_text() for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs()) if lo <= v <= hi and t.get_text()]


def test_a_zero_run_does_not_break_the_log_plot(runs):
    _, _, r = runs
    without = nme_nmf_figure(load_runs([r["jitter"], r["calm"], r["mean"]]), "all")
    fig = nme_nmf_figure(load_runs([r["jitter"], r["calm"], r["mean"], r["oracle"]]), "all")
    ax, ref = fig.axes[0], without.axes[0]
    fig.canvas.draw()
    assert ax.get_yscale() == "log"  # NME from ~0.3 to ~15: the case that lost its tick labels
    assert ax.get_xlim() == pytest.approx(ref.get_xlim()) and ax.get_ylim() == pytest.approx(ref.get_ylim())
    assert len(_ticks(ax.xaxis)) >= 2 and len(_ticks(ax.yaxis)) >= 2
    oracle = [t.get_text() for t in fig.legends[0].get_texts() if t.get_text().startswith("oracle")]
    assert oracle == ["oracle\n(NME = NMF = 0: drawn at the axes' edge)"]
    plt.close(fig)
    plt.close(without)


def test_log_ticks_always_label_the_axis():
    for lo, hi in ((3.0, 4.0), (0.31, 0.37), (1.0, 1e6), (1e-3, 2e-3), (120.0, 950.0)):
        ticks = _log_ticks(lo, hi)
        assert len(ticks) >= 2 and all(lo <= t <= hi for t in ticks) and len(ticks) <= 12


def test_trajectory_legend_inside_and_every_run_distinct():
    rng = np.random.default_rng(0)
    gt = np.cumsum(rng.normal(0, 1, (40, 68, 2)), axis=0) + 100
    long = "a model with a rather long display name (a=1, b=2)"
    preds = {f"{long} {i}": gt + rng.normal(0, 0.5, gt.shape) for i in range(4)}
    preds["identical twin"] = preds[f"{long} 0"].copy()  # would hide under the first without styles
    colours = {k: c for k, c in zip(preds, ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00"))}
    fig = trajectory_figure("clip", gt, preds, colours, [36], fps=25.0, scheme="ibug68",
                            nmf={k: np.ones(68) for k in preds})  # fmt: skip
    fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() != "ground truth"]
    assert len(lines) == 5
    assert len({(str(ln.get_linestyle()), ln.get_marker()) for ln in lines}) == 5
    assert len({ln.get_zorder() for ln in lines}) == 5
    plt.close(fig)
    assert run_line_style(1, 5, 40)["markevery"] != run_line_style(2, 5, 40)["markevery"]


@pytest.mark.slow
def test_gif_keeps_every_run_colour(runs, tmp_path):
    _, _, r = runs
    result = build_report([r["jitter"], r["calm"], r["mean"]], tmp_path / "report")
    gif = Image.open(result.files["overlay"][1])
    gif.seek(0)
    pixels = np.asarray(gif.convert("RGB")).reshape(-1, 3)
    for run in result.runs:
        rgb = tuple(int(run.colour[i : i + 2], 16) for i in (1, 3, 5))
        assert (pixels == rgb).all(axis=1).sum() >= 20, f"{run.label}'s {run.colour} is not in the GIF"


def test_reference_models_do_not_choose_the_clip(runs):
    _, _, r = runs
    loaded = load_runs([r["jitter"], r["calm"], r["mean"], r["oracle"]])
    nmf = {}
    for run in loaded[:2]:
        pv = run.per_video[run.per_video["filter"] == "none"].set_index("video_id")["nmf"]
        nmf[run.label] = pv
    gap = (nmf[loaded[0].label] - nmf[loaded[1].label]).abs()
    assert pick_clip(loaded) == gap.idxmax()
    only_refs = load_runs([r["mean"], r["oracle"]])
    assert pick_clip(only_refs) is not None  # falls back to the reference models themselves


@pytest.mark.slow
def test_report_without_out_goes_to_report_folder(runs, tmp_path, monkeypatch):
    _, _, r = runs
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(report, [str(r["mean"]), "--no-video", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report" / "index.html").is_file() and "report/index.html" in res.output
