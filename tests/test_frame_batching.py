"""Frame batching of stateless models and precision modes in the harness."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from wflwv.benchmark import inference
from wflwv.benchmark.harness import BenchError, run_benchmark
from wflwv.benchmark.results import RunDir
from wflwv.cli import cli
from wflwv.models import LandmarkModel, ModelOutput, create_model
from wflwv.protocol.layout import WFLWVDataset


class _PerFrame(LandmarkModel):
    """A stateless model whose output for a frame depends on that frame's pixels only (numpy, per sample)."""

    scheme = "wflw98"
    stateful = False
    batch_invariant = True  # numpy, per sample: the harness hands it whole batches even in exact mode

    def __init__(self):
        from wflwv.schemes import template_shape

        self.base = template_shape("wflw98") * 256
        self.batches: list[int] = []

    def predict(self, images, states, frames):
        assert all(s is None for s in states), "a stateless model never gets a state"
        self.batches.append(len(frames))
        px = images.numpy().astype(np.float64)
        out = [self.base + 20 * p.mean() + 5 * p[0].std() + 0.01 * f.frame_index for p, f in zip(px, frames)]
        return ModelOutput(np.stack(out), [None] * len(frames), stats={"brightness": px.mean(axis=(1, 2, 3))})


def _bench(model, data, out, **kw):
    return run_benchmark(model, data, out, progress=False, **kw)


def _runs_equal(a, b, data):
    pd.testing.assert_frame_equal(pd.read_csv(a / "per_video.csv"), pd.read_csv(b / "per_video.csv"), check_exact=True)
    for vid in WFLWVDataset(data).ids():
        if not RunDir(a).finished(vid):
            assert not RunDir(b).finished(vid)
            continue
        pa, pb = RunDir(a).load_predictions(vid), RunDir(b).load_predictions(vid)
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_stateless_models_and_the_default_say_so():
    assert LandmarkModel.stateful is True  # the safe default for models that do not say
    for name, kw in [("oracle", {}), ("mean-shape", {}), ("perturbed-oracle", {}), ("unet", {"weights": "none"})]:
        assert create_model(name, **kw).stateful is False, name
    with pytest.warns(UserWarning):
        tiny = dict(weights="none", num_landmarks=98, injection_width=8, cell_base_width=8, cell_width_increment=4)
        assert create_model("ldeq", **tiny).stateful is False
        assert create_model("ldeq", rwr=True, **tiny).stateful is True


@pytest.mark.parametrize("batch_videos", [1, 3])
def test_frame_batch_does_not_change_results(synth_root, tmp_path, batch_videos):
    ref = _PerFrame()
    _bench(ref, synth_root, tmp_path / "fb1", frame_batch=1)
    assert set(ref.batches) == {1}
    for fb in (7, 32):
        m = _PerFrame()
        _bench(m, synth_root, tmp_path / f"fb{fb}", frame_batch=fb, batch_videos=batch_videos)
        # 4 clips x 12 frames: batches of fb frames across the clips of a group, the last one shorter
        group_frames = 12 * batch_videos
        assert max(m.batches) == min(fb, group_frames)
        _runs_equal(tmp_path / "fb1", tmp_path / f"fb{fb}", synth_root)
    info = json.loads((tmp_path / "fb7" / "run.json").read_text())
    assert info["config"]["frame_batch"] == 7 and info["config"]["stateful"] is False


def test_frame_batch_with_a_failing_clip_in_the_batch(synth_root, tmp_path):
    class NanAt(_PerFrame):
        def predict(self, images, states, frames):
            out = super().predict(images, states, frames)
            for i, f in enumerate(frames):
                if f.video_id == bad and f.frame_index == 5:
                    out.landmarks[i] = np.nan
            return out

    bad = WFLWVDataset(synth_root).ids()[1]
    _bench(NanAt(), synth_root, tmp_path / "a", frame_batch=1)
    _bench(NanAt(), synth_root, tmp_path / "b", frame_batch=32, batch_videos=4)
    _runs_equal(tmp_path / "a", tmp_path / "b", synth_root)
    df = pd.read_csv(tmp_path / "b" / "per_video.csv").set_index("video_id")
    assert "frame 5" in df.loc[bad, "error"] and (df.drop(index=bad).status == "ok").all()


def test_stateful_models_still_get_one_frame_per_clip_per_call(synth_root, tmp_path):
    from test_bench import _Recorder  # the stateful recorder of the harness tests

    m = _Recorder()
    _bench(m, synth_root, tmp_path / "r", frame_batch=32, batch_videos=2)
    assert max(len(c) for c in m.calls) == 2
    assert all(len({vid for vid, _ in call}) == len(call) for call in m.calls)


def test_a_network_in_exact_mode_gives_the_same_bits_at_any_batching_and_thread_count(synth_root, tmp_path):
    """Exact mode (the CPU default): every frame alone on one-threaded kernels, whatever the batching and threads."""
    unet = create_model("unet", weights="none", size="tiny")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _bench(unet, synth_root, tmp_path / "fb1", frame_batch=1)
        torch.set_num_threads(2)
        _bench(unet, synth_root, tmp_path / "fb32", frame_batch=32, batch_videos=3)
    finally:
        torch.set_num_threads(threads)
    _runs_equal(tmp_path / "fb1", tmp_path / "fb32", synth_root)


@pytest.mark.slow
def test_a_heatmap_network_batched_stays_within_float_round_off(synth_root, tmp_path):
    """--batched: conv kernels pick other algorithms for other batch sizes, so a network's float32 numbers may move
    in the last bits (measured: < 1e-3 frame pixels)."""
    unet = create_model("unet", weights="none", size="tiny")
    _bench(unet, synth_root, tmp_path / "fb1", frame_batch=1, exact=False)
    _bench(unet, synth_root, tmp_path / "fb32", frame_batch=32, batch_videos=2, exact=False)
    for vid in WFLWVDataset(synth_root).ids():
        a, b = RunDir(tmp_path / "fb1").load_predictions(vid), RunDir(tmp_path / "fb32").load_predictions(vid)
        np.testing.assert_allclose(a["landmarks"], b["landmarks"], atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# precision
def test_precision_checks_are_clear(monkeypatch):
    cpu = torch.device("cpu")
    inference.check_precision("fp32", cpu)
    with pytest.raises(BenchError, match="fp16 runs on CUDA GPUs only"):
        inference.check_precision("fp16", cpu)
    with pytest.raises(BenchError, match="unknown precision"):
        inference.check_precision("fp8", cpu)
    monkeypatch.setattr(inference, "_cpu_has_bf16", lambda: False)
    with pytest.raises(BenchError, match="native bfloat16"):
        inference.check_precision("bf16", cpu)
    monkeypatch.setattr(inference, "_cpu_has_bf16", lambda: True)
    inference.check_precision("bf16", cpu)


def test_precision_runs_under_autocast_and_is_part_of_the_identity(synth_root, tmp_path, monkeypatch):
    seen = []

    class Probe(_PerFrame):
        def predict(self, images, states, frames):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return super().predict(images, states, frames)

    monkeypatch.setattr(inference, "_cpu_has_bf16", lambda: True)  # whatever this CPU is: autocast runs anyway
    _bench(Probe(), synth_root, tmp_path / "run", device="cpu")
    assert {s[0] for s in seen} == {False}
    seen.clear()
    with pytest.raises(BenchError, match="different configuration"):
        _bench(Probe(), synth_root, tmp_path / "run", device="cpu", precision="bf16")
    s = _bench(Probe(), synth_root, tmp_path / "bf16", device="cpu", precision="bf16")
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)
    assert s["identity"]["precision"] == "bf16" and s["config"]["precision"] == "bf16"
    assert "precision" not in json.loads((tmp_path / "run" / "run.json").read_text())["identity"]  # fp32 as before


def test_cli_precision_and_frame_batch(synth_root, tmp_path):
    out = tmp_path / "run"
    base = ["bench", "--model", "mean-shape", "--data", str(synth_root), "--quiet", "--device", "cpu"]
    res = CliRunner().invoke(cli, base + ["--out", str(out), "--precision", "fp16"])
    assert res.exit_code != 0 and "fp16 runs on CUDA GPUs only" in res.output
    res = CliRunner().invoke(cli, base + ["--out", str(out), "--frame-batch", "5"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "run.json").read_text())["config"]["frame_batch"] == 5
    res = CliRunner().invoke(cli, base + ["--out", str(out), "--frame-batch", "0"])
    assert res.exit_code == 2
