"""The harness end to end on synthetic clips: exact oracle, monotone jitter, batching, failures, resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from wflwv.benchmark.harness import BenchError, run_benchmark
from wflwv.benchmark.results import RunDir
from wflwv.cli import cli
from wflwv.io import LOCK_FILE, LOCK_OWNER_FILE
from wflwv.models import LandmarkModel, ModelOutput, create_model
from wflwv.protocol.layout import WFLWVDataset


def _bench(model, data, out, **kw):
    return run_benchmark(model, data, out, progress=False, **kw)


def test_oracle_scores_zero_on_every_clip(synth_root, tmp_path):
    summary = _bench(create_model("oracle"), synth_root, tmp_path / "run")
    df = pd.read_csv(tmp_path / "run" / "per_video.csv")
    assert len(df) == 4 and (df.status == "ok").all()
    assert df.nme.abs().max() < 1e-9 and df.nmf.abs().max() < 1e-9
    assert set(summary["sets"]["none"]["splits"]) == {"all", "hard", "easy"}
    assert summary["sets"]["none"]["splits"]["hard"]["videos"] == 2
    pq = pd.read_parquet(tmp_path / "run" / "per_video.parquet")
    assert list(pq.video_id) == list(df.video_id)


def test_results_carry_provenance_and_predictions(synth_root, tmp_path):
    summary = _bench(create_model("perturbed-oracle", jitter=1.0), synth_root, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    info = run.read_run()
    assert info["identity"]["dataset"]["fingerprint"] == WFLWVDataset(synth_root).fingerprint()
    assert info["identity"]["model"]["name"] == "perturbed-oracle"
    assert info["identity"]["model"]["config"]["jitter"] == 1.0
    assert "torch" in info["provenance"]["packages"] and "git" in info["provenance"]
    assert summary["identity"] == info["identity"]
    vid = WFLWVDataset(synth_root).ids()[0]
    pred = run.load_predictions(vid)
    gt = WFLWVDataset(synth_root).load(vid).landmarks
    assert pred["landmarks"].shape == gt.shape and pred["nme_frames"].shape == (len(gt),)
    # jitter of 1 crop pixel is a fraction of a frame pixel here: predictions are close to but not the truth
    assert 0 < np.abs(pred["landmarks"] - gt).mean() < 2


@pytest.mark.slow
def test_perturbed_oracle_metrics_grow_with_jitter(synth_root, tmp_path):
    nme, nmf = [], []
    for j in (0.5, 2.0, 6.0):
        s = _bench(create_model("perturbed-oracle", jitter=j), synth_root, tmp_path / f"j{j}")
        nme.append(s["sets"]["none"]["splits"]["all"]["nme"])
        nmf.append(s["sets"]["none"]["splits"]["all"]["nmf"])
    assert nme[0] < nme[1] < nme[2] and nmf[0] < nmf[1] < nmf[2]


def test_drift_raises_nme_more_than_nmf(synth_root, tmp_path):
    jit = _bench(create_model("perturbed-oracle", jitter=2.0), synth_root, tmp_path / "a")["sets"]["none"]["splits"][
        "all"
    ]
    drift = _bench(create_model("perturbed-oracle", jitter=0.0, drift=6.0), synth_root, tmp_path / "b")["sets"]["none"][
        "splits"
    ]["all"]
    assert drift["nme"] > jit["nme"] and drift["nmf"] < jit["nmf"]


class _Recorder(LandmarkModel):
    """A deterministic stateful test model: mean shape + a per-clip counter in its state; logs calls."""

    scheme = "wflw98"
    batch_invariant = True  # numpy per sample: the harness hands it whole batches (what the tests look at)

    def __init__(self, nan_clip=None, raise_after=None):
        from wflwv.schemes import template_shape

        self.base = template_shape("wflw98") * 256
        self.calls = []
        self.nan_clip = nan_clip
        self.raise_after = raise_after

    def predict(self, images, states, frames):
        self.calls.append([(f.video_id, f.frame_index) for f in frames])
        if self.raise_after is not None and len(self.calls) > self.raise_after:
            raise KeyboardInterrupt
        out, new = [], []
        for img, st, f in zip(images, states, frames):
            assert (st is None) == (f.frame_index == 0), "state must be None exactly at a clip's first frame"
            count = 0 if st is None else st + 1
            shift = float(img.mean()) * 10 + count * 0.1
            pts = self.base + shift
            if f.video_id == self.nan_clip and f.frame_index == 3:
                pts = pts * np.nan
            out.append(pts)
            new.append(count)
        return ModelOutput(np.stack(out), new, stats={"counter": np.array(new, float)})


def test_batching_clips_gives_identical_numbers(synth_root, tmp_path):
    _bench(_Recorder(), synth_root, tmp_path / "b1", batch_videos=1)
    m3 = _Recorder()
    _bench(m3, synth_root, tmp_path / "b3", batch_videos=3)
    assert max(len(c) for c in m3.calls) == 3
    a, b = RunDir(tmp_path / "b1"), RunDir(tmp_path / "b3")
    for vid in WFLWVDataset(synth_root).ids():
        pa, pb = a.load_predictions(vid), b.load_predictions(vid)
        np.testing.assert_array_equal(pa["landmarks"], pb["landmarks"])
        np.testing.assert_array_equal(pa["stat_counter"], np.arange(12))
    da = pd.read_csv(tmp_path / "b1" / "per_video.csv")
    db = pd.read_csv(tmp_path / "b3" / "per_video.csv")
    pd.testing.assert_frame_equal(da, db)
    assert "stat_counter_mean" in da.columns


def test_bad_clips_are_recorded_and_the_rest_scored(synth_copy, tmp_path):
    ds = WFLWVDataset(synth_copy)
    hard, easy = ds.ids("hard"), ds.ids("easy")
    (synth_copy / "videos" / f"{hard[0]}.mp4").write_bytes(b"not a video at all" * 100)
    lm = np.load(synth_copy / "landmarks" / f"{hard[1]}.npy")
    np.save(synth_copy / "landmarks" / f"{hard[1]}.npy", lm[:-2])
    np.save(synth_copy / "bboxes" / f"{hard[1]}.npy", np.load(synth_copy / "bboxes" / f"{hard[1]}.npy")[:-2])
    _bench(_Recorder(nan_clip=easy[0]), synth_copy, tmp_path / "run", batch_videos=2)
    df = pd.read_csv(tmp_path / "run" / "per_video.csv").set_index("video_id")
    assert df.loc[easy[1], "status"] == "ok"
    assert "cannot open video" in df.loc[hard[0], "error"] or "no frame" in df.loc[hard[0], "error"]
    assert f"{hard[0]}.mp4" in df.loc[hard[0], "error"]
    assert "12 decodable frames" in df.loc[hard[1], "error"] and "10" in df.loc[hard[1], "error"]
    assert "non-finite" in df.loc[easy[0], "error"] and "frame 3" in df.loc[easy[0], "error"]


def test_batch_videos_auto_puts_two_clips_per_thread_in_a_call(synth_root, tmp_path):
    from wflwv.benchmark.inference import auto_batch_videos

    assert auto_batch_videos("cpu", 1) == 2 and auto_batch_videos("cpu", 2) == 4 and auto_batch_videos("cpu", 64) == 8
    assert auto_batch_videos("cuda", 8) == 1
    m = _Recorder()
    _bench(m, synth_root, tmp_path / "auto", device="cpu")  # the default is auto
    config = json.loads((tmp_path / "auto" / "run.json").read_text())["config"]
    want = auto_batch_videos("cpu", torch.get_num_threads())
    assert config["batch_videos"] == want and config["batch_videos_auto"] is True
    assert max(len(c) for c in m.calls) == min(want, 4)  # the synthetic set has 4 clips
    with pytest.raises(BenchError, match="integer >= 1 or 'auto'"):
        _bench(_Recorder(), synth_root, tmp_path / "bad", batch_videos=0)


def test_interrupted_run_resumes_without_redoing_finished_clips(synth_root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _bench(_Recorder(raise_after=12 + 5), synth_root, out, batch_videos=1)  # dies inside the second clip
    done = sorted(p.stem for p in (out / "clips").glob("*.json"))
    assert len(done) == 1
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") and p.name != LOCK_FILE]  # the lock file stays
    assert not list(out.rglob(".*.tmp")) and not leftovers and not (out / LOCK_OWNER_FILE).exists()
    m = _Recorder()
    _bench(m, synth_root, out)
    seen = {vid for call in m.calls for vid, _ in call}
    assert done[0] not in seen and len(seen) == 3
    assert len(pd.read_csv(out / "per_video.csv")) == 4


def test_other_configuration_in_out_is_refused(synth_root, tmp_path):
    _bench(create_model("perturbed-oracle", jitter=1.0), synth_root, tmp_path / "run")
    with pytest.raises(BenchError, match="different configuration"):
        _bench(create_model("perturbed-oracle", jitter=2.0), synth_root, tmp_path / "run")
    s = _bench(create_model("perturbed-oracle", jitter=2.0), synth_root, tmp_path / "run", overwrite=True)
    assert s["identity"]["model"]["config"]["jitter"] == 2.0


def test_split_selection_and_split_file(synth_root, tmp_path):
    s = _bench(create_model("oracle"), synth_root, tmp_path / "hard", split="hard")
    assert s["sets"]["none"]["splits"]["all"]["videos"] == 2
    ids = tmp_path / "ids.txt"
    ids.write_text(WFLWVDataset(synth_root).ids("easy")[0] + "\n")
    s = _bench(create_model("oracle"), synth_root, tmp_path / "file", split=str(ids))
    assert s["sets"]["none"]["splits"]["all"]["videos"] == 1


def test_98_point_model_is_scored_on_68_point_data(tmp_path):
    from wflwv.testing import make_synthetic_dataset

    root = tmp_path / "d68"
    make_synthetic_dataset(root, num_hard=1, num_easy=1, num_frames=6, scheme="ibug68")
    s = _bench(create_model("mean-shape", scheme="wflw98"), root, tmp_path / "run")
    assert s["sets"]["none"]["splits"]["all"]["videos"] == 2
    assert len(s["sets"]["none"]["splits"]["all"]["nmf_per_landmark"]) == 68
    # the other way round the ground truth is converted: scored in iBUG-68 (tests/test_scoring_scheme.py)
    make_synthetic_dataset(tmp_path / "d98", num_hard=1, num_easy=0, num_frames=4)
    s = _bench(create_model("mean-shape", scheme="ibug68"), tmp_path / "d98", tmp_path / "run2")
    assert s["scoring_scheme"] == "ibug68" and len(s["sets"]["none"]["splits"]["all"]["nmf_per_landmark"]) == 68


def test_cuda_request_without_gpu_is_a_clear_error(synth_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BenchError, match="no CUDA GPU"):
        _bench(create_model("oracle"), synth_root, tmp_path / "run", device="cuda")


def test_cli_bench_with_filter_sweep(synth_root, tmp_path):
    out = tmp_path / "run"
    args = [
        "bench",
        "--model",
        "perturbed-oracle",
        "--model-arg",
        "jitter=3",
        "--data",
        str(synth_root),
        "--out",
        str(out),
        "--quiet",
    ]
    r = CliRunner().invoke(cli, args + ["--filter", "ema:alpha=0.3|0.7"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "per_video.csv")
    assert set(df["filter"]) == {"none", "ema(alpha=0.3)", "ema(alpha=0.7)"}
    summary = json.loads((out / "summary.json").read_text())
    nmf = {k: v["splits"]["all"]["nmf"] for k, v in summary["sets"].items()}
    assert nmf["ema(alpha=0.3)"] < nmf["ema(alpha=0.7)"] < nmf["none"]
    # adding a filter later reuses the predictions: the model is not run again, earlier settings are kept
    before = {p: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()}
    r = CliRunner().invoke(cli, args + ["--filter", "one-euro:min_cutoff=1.0,beta=0.1"])
    assert r.exit_code == 0, r.output
    assert before == {p: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()}
    assert len(set(pd.read_csv(out / "per_video.csv")["filter"])) == 4


def test_cli_errors_are_clear(synth_root, tmp_path):
    r = CliRunner().invoke(
        cli, ["bench", "--model", "no-such-model", "--data", str(synth_root), "--out", str(tmp_path / "x")]
    )
    assert r.exit_code != 0 and "unknown model 'no-such-model'" in r.output and "oracle" in r.output
    r = CliRunner().invoke(cli, ["bench", "--model", "oracle", "--model-arg", "bogus=1", "--data", str(synth_root)])
    assert r.exit_code != 0 and "does not accept" in r.output
    r = CliRunner().invoke(cli, ["bench", "--model", "oracle", "--data", str(tmp_path / "missing")])
    assert r.exit_code != 0 and "not found" in r.output
    r = CliRunner().invoke(cli, ["bench", "--model", "oracle", "--data", str(synth_root), "--filter", "ema:alpha"])
    assert r.exit_code != 0 and "--filter" in r.output
    for bad in ("0", "many"):
        r = CliRunner().invoke(cli, ["bench", "--model", "oracle", "--data", str(synth_root), "--batch-videos", bad])
        assert r.exit_code == 2 and "neither a positive integer nor 'auto'" in r.output
    out = tmp_path / "three"
    r = CliRunner().invoke(
        cli, ["bench", "--model", "oracle", "--data", str(synth_root), "--batch-videos", "3", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["config"]["batch_videos"] == 3


def test_models_command_lists_descriptions():
    r = CliRunner().invoke(cli, ["models"])
    assert r.exit_code == 0
    lines = {ln.split()[0]: ln for ln in r.output.splitlines() if ln.strip()}
    assert "NME = NMF = 0" in lines["oracle"] and "perturbed-oracle" in lines


def test_filter_sweep_shows_the_jitter_lag_trade_off(tmp_path):
    """P2's acceptance in one run: on i.i.d. jitter every filter lowers NMF; strong EMA lags moving faces."""
    from wflwv.filters import parse_filter_options
    from wflwv.testing import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", num_hard=2, num_easy=1, num_frames=40)
    specs = [
        "ema:alpha=0.1|0.5",
        "sg:window=9,order=2",
        "sg-causal:window=9,order=2",
        "one-euro:min_cutoff=1.0,beta=0.1",
    ]
    s = _bench(
        create_model("perturbed-oracle", jitter=3.0), data, tmp_path / "run", filters=parse_filter_options(specs)
    )
    hard = {k: v["splits"]["hard"] for k, v in s["sets"].items()}
    assert len(hard) == 6
    for label, agg in hard.items():
        if label != "none":
            assert agg["nmf"] < hard["none"]["nmf"], label
    assert hard["ema(alpha=0.1)"]["nme"] > 2 * hard["none"]["nme"]  # lag on the moving (hard) clips
    assert hard["ema(alpha=0.1)"]["nme"] > hard["ema(alpha=0.5)"]["nme"]
