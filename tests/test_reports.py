"""`wflwv report`: every artefact from real (tiny) bench runs, numbers traced back to the runs, clear errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from wflwv.benchmark import metrics as M
from wflwv.benchmark.harness import run_benchmark
from wflwv.cli.report import report
from wflwv.filters import parse_filter_options
from wflwv.models import create_model
from wflwv.protocol.layout import WFLWVDataset
from wflwv.reports import ReportError, build_report, load_runs
from wflwv.reports.figures import FIG_DPI, NME_NMF_SIZE, filter_sweeps, flicker_map_size, place_labels, trajectory_size
from wflwv.reports.load import ReportRun, display_name
from wflwv.reports.selection import pick_clip
from wflwv.reports.tables import format_change, format_number, resolve_baseline, results_table
from wflwv.testing import make_synthetic_dataset

NUM_FRAMES = 12


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A synthetic dataset and three bench runs on it: jittery oracle with an EMA sweep, a calmer "RwR" one, mean shape."""
    root = tmp_path_factory.mktemp("reports")
    data = make_synthetic_dataset(root / "data", num_hard=2, num_easy=2, num_frames=NUM_FRAMES)
    runs = {
        "jitter": root / "run-jitter",
        "calm": root / "run-calm",
        "mean": root / "run-mean",
    }
    run_benchmark(
        create_model("perturbed-oracle", jitter=2.0),
        data,
        runs["jitter"],
        filters=parse_filter_options(["ema:alpha=0.3|0.6"]),
        model_spec={"name": "perturbed-oracle", "args": {"jitter": 2.0}},
        progress=False,
        device="cpu",
    )
    # recorded as an RwR run: the report only reads identity.model.args, which is what this exercises
    run_benchmark(
        create_model("perturbed-oracle", jitter=0.5),
        data,
        runs["calm"],
        model_spec={"name": "perturbed-oracle", "args": {"jitter": 0.5, "rwr": True}},
        progress=False,
        device="cpu",
    )
    run_benchmark(
        create_model("mean-shape"),
        data,
        runs["mean"],
        model_spec={"name": "mean-shape", "args": {}},
        progress=False,
        device="cpu",
    )
    return root, data, runs


@pytest.fixture(scope="module")
def built(bench):
    root, data, runs = bench
    messages: list[str] = []
    result = build_report(
        [runs["jitter"], runs["calm"], runs["mean"]],
        root / "report",
        labels=[f"{runs['mean']}=Mean face"],
        baseline="perturbed-oracle",
        log=messages.append,
    )
    return result, messages


def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def _png_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} does not decode"
    return img.shape[1], img.shape[0]


def _expected(size_in: tuple[float, float]) -> tuple[int, int]:
    return round(size_in[0] * FIG_DPI), round(size_in[1] * FIG_DPI)


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_artefact_is_written_and_decodes(built):
    result, messages = built
    out = result.out
    vid = result.clips[0]
    for split in ("hard", "easy", "all"):
        assert _png_size(out / f"nme_nmf_{split}.png") == _expected(NME_NMF_SIZE)
        assert _png_size(out / f"flicker_map_{split}.png") == _expected(flicker_map_size(3))
        for stem in ("nme_nmf", "flicker_map"):
            svg = (out / f"{stem}_{split}.svg").read_text()
            assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert _png_size(out / f"trajectory_{vid}.png") == _expected(trajectory_size(1))
    cap = cv2.VideoCapture(str(out / f"overlay_{vid}.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == NUM_FRAMES
    assert frames[0].shape[1] == 384 and frames[0].shape[0] > 384  # face crop plus the legend strip
    gif = Image.open(out / f"overlay_{vid}.gif")
    assert gif.n_frames == NUM_FRAMES and gif.size[0] == 224
    for name in ("results.csv", "per_clip.csv", "results.md", "index.html"):
        assert (out / name).is_file()
    assert any("tables" in m for m in messages) and any("overlay" in m for m in messages)
    assert not result.warnings


def test_labels_colours_and_markers(built):
    result, _ = built
    labels = [r.label for r in result.runs]
    assert labels == ["perturbed-oracle", "perturbed-oracle + RwR", "Mean face"]
    assert [r.marker for r in result.runs] == ["o", "*", "o"]
    assert len({r.colour for r in result.runs}) == 3


def test_results_table_carries_summary_numbers(bench, built):
    _, _, runs = bench
    result, _ = built
    df = pd.read_csv(result.out / "results.csv")
    for key, label in (("jitter", "perturbed-oracle"), ("calm", "perturbed-oracle + RwR"), ("mean", "Mean face")):
        sets = _summary(runs[key])["sets"]
        mine = df[df["run"] == label]
        assert len(mine) == 3 * len(sets)  # every result set on every split
        for set_label, s in sets.items():
            for split, agg in s["splits"].items():
                row = mine[(mine["filter"] == set_label) & (mine["split"] == split)].iloc[0]
                for k in ("nme", "nmf", "fr_0.1", "auc_0.1"):
                    assert row[k] == pytest.approx(agg[k], rel=1e-12)
                assert row["videos"] == agg["videos"]
    base = df[(df["run"] == "perturbed-oracle") & (df["filter"] == "none")].set_index("split")
    for _, row in df.iterrows():
        ref = base.loc[row["split"]]
        assert row["nmf_change_pct"] == pytest.approx(100 * (row["nmf"] - ref["nmf"]) / ref["nmf"])
        assert row["nme_change_pct"] == pytest.approx(100 * (row["nme"] - ref["nme"]) / ref["nme"])
    # the calm run really flickers less, and the tables say so
    calm = df[(df["run"] == "perturbed-oracle + RwR") & (df["split"] == "all")].iloc[0]
    assert calm["nmf_change_pct"] < -30


def test_markdown_shows_the_numbers_and_changes(bench, built):
    _, _, runs = bench
    result, _ = built
    md = (result.out / "results.md").read_text()
    df = pd.read_csv(result.out / "results.csv")
    for split in ("hard", "easy", "all"):
        assert f"### Split: {split}" in md
    for _, row in df.iterrows():
        assert format_number(row["nme"], "nme") in md
        assert format_number(row["nmf"], "nmf") in md
        if row["run"] != "perturbed-oracle" or row["filter"] != "none":
            assert format_change(row["nmf_change_pct"]) in md
    assert "baseline" in md and "**perturbed-oracle**" in md
    # best NMF on the all split in bold
    best = df[df["split"] == "all"]["nmf"].min()
    assert f"**{format_number(best)}**" in md


def test_per_clip_table_matches_per_video(bench, built):
    _, _, runs = bench
    result, _ = built
    clips = pd.read_csv(result.out / "per_clip.csv")
    pv = pd.read_csv(runs["jitter"] / "per_video.csv")
    pv = pv[pv["filter"] == "none"].set_index("video_id")
    mine = clips[clips["run"] == "perturbed-oracle"].set_index("video_id")
    assert set(mine.index) == set(pv.index)
    for vid in pv.index:
        assert mine.loc[vid, "nmf"] == pytest.approx(pv.loc[vid, "nmf"])
        assert mine.loc[vid, "nme"] == pytest.approx(pv.loc[vid, "nme"])
    assert clips["nmf_gap"].is_monotonic_decreasing


def test_default_clip_and_landmark(bench, built):
    root, data, runs = bench
    result, _ = built
    nmf = {}
    for key in ("jitter", "calm"):  # the mean face is a reference model: it does not choose the clip
        pv = pd.read_csv(runs[key] / "per_video.csv")
        nmf[key] = pv[pv["filter"] == "none"].set_index("video_id")["nmf"]
    gap = (nmf["jitter"] - nmf["calm"]).abs()
    vid = gap.idxmax()
    assert result.clips == [vid]
    gt = WFLWVDataset(data.root).load(vid).landmarks
    worst = np.max(
        [
            M.nmf_per_landmark(np.load(runs[k] / "predictions" / f"{vid}.npz")["landmarks"], gt)
            for k in ("jitter", "calm", "mean")
        ],
        axis=0,
    )
    assert result.landmarks[vid] == [int(np.argmax(worst))]


def test_html_embeds_and_links_everything(built):
    result, _ = built
    html = result.index.read_text()
    pngs = [p for k in ("nme_nmf", "flicker_map", "trajectory") for p in result.files[k] if p.suffix == ".png"]
    assert html.count("data:image/png;base64,") == len(pngs) == 7
    assert html.count("data:image/gif;base64,") == 1
    for p in (
        result.files["nme_nmf"] + result.files["flicker_map"] + result.files["trajectory"] + result.files["overlay"]
    ):
        if p.suffix in (".svg", ".mp4"):
            assert f'href="{p.name}"' in html
    for name in ("results.csv", "per_clip.csv", "results.md"):
        assert f'href="{name}"' in html
    df = pd.read_csv(result.out / "results.csv")
    row = df[(df["run"] == "Mean face") & (df["split"] == "hard")].iloc[0]
    assert f">{format_number(row['nmf'])}<" in html and f">{format_change(row['nmf_change_pct'])}<" in html
    # the embedded PNG is the file on disk
    import base64

    first = re.search(r'data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(first) == (result.out / "nme_nmf_hard.png").read_bytes()


@pytest.mark.slow
def test_chosen_clip_and_landmarks(bench, tmp_path):
    _, _, runs = bench
    result = build_report(
        [runs["jitter"], runs["calm"]], tmp_path / "r", videos=["synth0000e0"], landmarks=[3, 96], overlay=False
    )
    assert result.clips == ["synth0000e0"] and result.landmarks == {"synth0000e0": [3, 96]}
    assert _png_size(tmp_path / "r" / "trajectory_synth0000e0.png") == _expected(trajectory_size(2))
    assert not list((tmp_path / "r").glob("*.mp4"))
    assert "data:image/gif" not in result.index.read_text()


# ------------------------------------------------------------------------------------------------------------------
# errors and warnings
def test_not_a_bench_folder(tmp_path, bench):
    _, _, runs = bench
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="not a bench run folder"):
        build_report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ReportError, match="run folder not found"):
        build_report([tmp_path / "nope"], tmp_path / "out")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(runs["jitter"] / "run.json", half / "run.json")
    with pytest.raises(ReportError, match="did not finish"):
        build_report([half], tmp_path / "out")


def test_bad_labels_baseline_clip_landmark(bench, tmp_path):
    _, _, runs = bench
    with pytest.raises(ReportError, match="none of the run folders"):
        load_runs([runs["jitter"]], {"elsewhere": "x"})
    with pytest.raises(ReportError, match="expected RUN=NAME"):
        build_report([runs["jitter"]], tmp_path / "o", labels=["no-equals-sign"])
    with pytest.raises(ReportError, match="choose one of: 'perturbed-oracle'"):
        build_report([runs["jitter"]], tmp_path / "o", baseline="ldeq")
    with pytest.raises(ReportError, match="no run has this clip"):
        build_report([runs["jitter"]], tmp_path / "o", videos=["notaclip"])
    with pytest.raises(ReportError, match="landmarks 0..97"):
        build_report([runs["jitter"]], tmp_path / "o", landmarks=[98])
    with pytest.raises(ReportError, match="given twice"):
        load_runs([runs["jitter"], runs["jitter"]])


def test_same_model_runs_get_distinct_labels_and_baseline_by_filter(bench, tmp_path):
    _, _, runs = bench
    twin = tmp_path / "twin"
    shutil.copytree(runs["jitter"], twin)
    for name in ("run.json", "summary.json"):
        d = json.loads((twin / name).read_text())
        d["identity"]["model"]["args"]["jitter"] = 3.0
        (twin / name).write_text(json.dumps(d))
    loaded = load_runs([runs["jitter"], twin])
    assert [r.label for r in loaded] == ["perturbed-oracle (jitter=2)", "perturbed-oracle (jitter=3)"]
    loaded = load_runs([runs["jitter"], twin], {"twin": "Twin"})
    assert loaded[1].label == "Twin"
    one = load_runs([runs["jitter"]])
    base = resolve_baseline(one, "perturbed-oracle + EMA(alpha=0.6)")  # case does not matter
    assert base.name == "perturbed-oracle + ema(alpha=0.6)"
    df = results_table(one, base)
    ref = df[df["filter"] == "ema(alpha=0.6)"].set_index("split")["nmf"]
    assert np.allclose(df[df["filter"] == "ema(alpha=0.6)"]["nmf_change_pct"], 0.0)
    raw = df[df["filter"] == "none"].set_index("split")
    assert np.allclose(raw["nmf_change_pct"], 100 * (raw["nmf"] - ref[raw.index]) / ref[raw.index])


def test_missing_predictions(bench, tmp_path):
    _, _, runs = bench
    broken = tmp_path / "broken"
    shutil.copytree(runs["calm"], broken)
    pv = pd.read_csv(broken / "per_video.csv")
    # make the clip the calm and jittery runs differ most on lose its predictions
    gap = {}
    jit = pd.read_csv(runs["jitter"] / "per_video.csv")
    for vid in pv[pv["filter"] == "none"]["video_id"]:
        a = jit[(jit["filter"] == "none") & (jit["video_id"] == vid)]["nmf"].iloc[0]
        b = pv[(pv["filter"] == "none") & (pv["video_id"] == vid)]["nmf"].iloc[0]
        gap[vid] = abs(a - b)
    victim = max(gap, key=gap.get)
    (broken / "predictions" / f"{victim}.npz").unlink()
    with pytest.raises(ReportError, match=rf"run 'perturbed-oracle \+ RwR' .* no predictions for clip {victim}"):
        build_report([runs["jitter"], broken], tmp_path / "o", videos=[victim], overlay=False)
    assert not (tmp_path / "o").exists()  # nothing was drawn
    pick = pick_clip(load_runs([runs["jitter"], broken]))
    assert pick is not None and pick != victim


@pytest.mark.slow
def test_cli_warns_about_different_datasets(bench, tmp_path):
    root, _, runs = bench
    other = make_synthetic_dataset(tmp_path / "other", num_hard=1, num_easy=1, num_frames=NUM_FRAMES, seed=5)
    run_benchmark(
        create_model("perturbed-oracle", jitter=1.0), other, tmp_path / "run-other", progress=False, device="cpu"
    )
    res = CliRunner().invoke(
        report, [str(runs["jitter"]), str(tmp_path / "run-other"), "--out", str(tmp_path / "rep"), "--no-video"]
    )
    assert res.exit_code == 0, res.output
    assert "different datasets" in res.output and "index.html" in res.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Warning:" in html and "different datasets" in html
    res = CliRunner().invoke(report, [str(tmp_path), "--out", str(tmp_path / "rep2")])
    assert res.exit_code != 0 and "not a bench run folder" in res.output


# ------------------------------------------------------------------------------------------------------------------
# pieces
def test_display_name_and_formatting():
    assert display_name({"name": "ldeq", "args": {"rwr": True}}) == "ldeq + RwR"
    assert display_name({"name": "ldeq", "args": {"rwr": False}}) == "ldeq"
    assert display_name({"name": "ldeq", "args": {"rwr": "true"}}) == "ldeq + RwR"
    assert format_change(-13.2) == "-13%" and format_change(4.24) == "+4.2%" and format_change(float("nan")) == "–"
    assert (
        format_number(1.23456) == "1.235"
        and format_number(278.29) == "278.3"
        and format_number(0.5, "auc_0.1") == "0.5000"
    )


def _fake_run(sets: dict) -> ReportRun:
    return ReportRun(Path("x"), "m", "m", False, {}, {}, {"sets": sets}, pd.DataFrame())


def test_filter_sweeps_group_and_order():
    def s(name, **p):
        return {"filter": {"name": name, "params": p}, "splits": {}}

    sets = {"none": {"filter": None, "splits": {}}}
    for mc in (2.0, 0.5, 1.0):
        for beta in (0.1, 1.0):
            sets[f"oe{mc}{beta}"] = s("one-euro", min_cutoff=mc, beta=beta, d_cutoff=1.0)
    sets["e2"] = s("ema", alpha=0.6)
    sets["e1"] = s("ema", alpha=0.2)
    sets["sg(window=9,order=2)"] = s("sg", window=9, order=2)
    sweeps = filter_sweeps(_fake_run(sets))
    lone = [w for w in sweeps if w.filter_name == "sg"]
    assert len(lone) == 1 and lone[0].param is None and lone[0].title == "sg(window=9,order=2)"
    ema = [w for w in sweeps if w.filter_name == "ema"]
    assert len(ema) == 1 and ema[0].param == "alpha" and [v for _, v in ema[0].sets] == [0.2, 0.6]
    oe = [w for w in sweeps if w.filter_name == "one-euro"]
    assert len(oe) == 2 and all(w.param == "min_cutoff" for w in oe)
    assert sorted(w.fixed["beta"] for w in oe) == [0.1, 1.0]
    assert all([v for _, v in w.sets] == [0.5, 1.0, 2.0] for w in oe)


def test_place_labels_removes_overlaps():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1], "o")
    anns = [
        ax.annotate(
            f"label {i}", xy=(0.5, 0.5), xytext=(4, 4), textcoords="offset points", arrowprops=dict(arrowstyle="-")
        )
        for i in range(6)
    ]
    fig.canvas.draw()
    pts = ax.transData.transform([[0.5, 0.5]])
    left = place_labels(ax, anns, np.array([[pts[0, 0], pts[0, 1], 5.0]]))
    assert left == 0
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, r) for a in anns]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j])
    plt.close(fig)
