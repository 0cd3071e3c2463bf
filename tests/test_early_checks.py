"""Failing early and clearly: unknown model names before any download, bad oracle members before any scanning,
checkpoint and annotation errors that name the file and say what it is, filter aliases, seeded random models."""

from __future__ import annotations

import contextlib
import pickle
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from wflwv.build.config import SIDECAR_SUFFIX
from wflwv.cli import cli
from wflwv.filters import FilterError, parse_filter_options
from wflwv.models import create_model
from wflwv.models.checkpoints import CheckpointError, inspect_file, load_checkpoint, torch_load
from wflwv.protocol.layout import DatasetError, WFLWVDataset
from wflwv.protocol.video import write_video
from wflwv.testing import synthetic_clip


# ------------------------------------------------------------------------------------------------ checkpoint files
def _files(tmp_path):
    """Broken or wrong checkpoint files, each with a phrase its error must contain."""
    d = tmp_path / "files"
    d.mkdir()
    good = d / "good.pt"
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, good)
    data = good.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    legacy = d / "legacy.pt"
    torch.save({"w": torch.zeros(64, 64)}, legacy, _use_new_zipfile_serialization=False)
    (d / "truncated_legacy.pt").write_bytes(legacy.read_bytes()[:300])
    (d / "empty.pt").write_bytes(b"")
    (d / "random.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "text.pt").write_text("this is not a checkpoint\n")
    (d / "page.pt").write_text("<!DOCTYPE html><html><body>404</body></html>")
    with open(d / "array.pt", "wb") as fh:
        np.save(fh, np.zeros((3, 2)))
    (d / "pickle.pt").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with zipfile.ZipFile(d / "other.zip.pt", "w") as z:
        z.writestr("notes.txt", "hello")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": np.float64(1.0)}, d / "numpy_inside.pt")
    return {
        "truncated.pt": "truncated",
        "truncated_legacy.pt": "truncated",
        "empty.pt": "empty file",
        "random.pt": "unrecognised content",
        "text.pt": "text file",
        "page.pt": "HTML page",
        "array.pt": "NumPy .npy array",
        "pickle.pt": "plain Python pickle, not a torch checkpoint",
        "other.zip.pt": "zip archive without a torch checkpoint",
        "numpy_inside.pt": "outside the allow-list",
    }, d


def test_every_checkpoint_error_names_the_file_and_what_it_is(tmp_path):
    cases, d = _files(tmp_path)
    for name, phrase in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(d / name)
        msg = str(err.value)
        assert str(d / name) in msg and phrase in msg, msg
        assert "weights_only" not in msg and "Weights only" not in msg, msg  # never torch's unsafe advice
    assert "numpy" in str(pytest.raises(CheckpointError, load_checkpoint, d / "numpy_inside.pt").value)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(d / "nope.pt")
    assert inspect_file(d / "good.pt")[0] == "torch" and inspect_file(d / "legacy.pt")[0] == "torch-legacy"
    assert torch_load(d / "legacy.pt")["w"].shape == (64, 64)


def test_model_factories_report_bad_weight_files_by_name(tmp_path):
    cases, d = _files(tmp_path)
    for name in ("random.pt", "truncated.pt", "text.pt"):
        with pytest.raises(CheckpointError, match=f"{d / name}.*{cases[name]}") as err:
            create_model("unet", weights=str(d / name))
        assert "weights_only" not in str(err.value)


@pytest.mark.slow
def test_hrnet_pretrained_backbone_bad_file(tmp_path):
    cases, d = _files(tmp_path)
    for name in ("random.pt", "pickle.pt", "truncated.pt"):
        with pytest.raises(CheckpointError) as err:
            create_model("hrnet", size="small", pretrained_backbone=str(d / name))
        msg = str(err.value)
        assert str(d / name) in msg and cases[name] in msg and "timm HRNet" in msg and "weights_only" not in msg


def test_cli_bench_reports_a_bad_backbone_file_without_a_traceback(synth_root, tmp_path):
    bad = tmp_path / "backbone.pth"
    bad.write_bytes(pickle.dumps(object))  # a pickle that needs a global: torch's message would advise weights_only
    res = CliRunner().invoke(
        cli,
        ["bench", "--model", "hrnet", "--model-arg", "size=small", "--model-arg", f"pretrained_backbone={bad}",
         "--data", str(synth_root), "--out", str(tmp_path / "run"), "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 1
    assert str(bad) in res.output and "plain Python pickle" in res.output and "weights_only" not in res.output
    assert "Traceback" not in res.output


def test_dlib68_garbage_weights_name_the_file(tmp_path):
    pytest.importorskip("dlib")
    cases, d = _files(tmp_path)
    with pytest.raises(CheckpointError) as err:
        create_model("dlib68", weights=str(d / "random.pt"))
    msg = str(err.value)
    assert str(d / "random.pt") in msg and "shape predictor" in msg and "deserializing" not in msg
    with pytest.raises(CheckpointError, match=f"{d / 'good.pt'} is a torch checkpoint"):
        create_model("dlib68", weights=str(d / "good.pt"))


def test_mean_shape_file_errors_name_the_file(tmp_path):
    cases, d = _files(tmp_path)
    with pytest.raises(ValueError, match=f"{d / 'good.pt'} is a torch checkpoint.*expected a .npy file"):
        create_model("mean-shape", shape=str(d / "good.pt"))
    with open(tmp_path / "short.npy", "wb") as fh:
        np.save(fh, np.zeros((98, 2)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "short.npy").read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.npy is a NumPy .npy array file but it cannot be read"):
        create_model("mean-shape", shape=str(tmp_path / "cut.npy"))
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        create_model("mean-shape", shape=str(tmp_path / "nope.npy"))
    assert create_model("mean-shape", shape=str(tmp_path / "short.npy")).scheme == "wflw98"


def test_wrong_length_annotations_name_the_short_file(synth_copy):
    ds = WFLWVDataset(synth_copy)
    vid = ds.ids()[0]
    p = ds.paths(vid)
    np.save(p["landmarks"], np.load(p["landmarks"])[:-3])
    with pytest.raises(DatasetError) as err:
        WFLWVDataset(synth_copy).load(vid)
    msg = str(err.value)
    assert msg.startswith(f"{p['landmarks']}: 9 frames of landmarks") and f"{p['bboxes']} has 12 boxes" in msg
    vid2 = ds.ids()[1]
    p2 = ds.paths(vid2)
    np.save(p2["bboxes"], np.load(p2["bboxes"])[:-2])
    with pytest.raises(DatasetError, match=rf"^{p2['bboxes']}: 10 boxes, but {p2['landmarks']} has 12"):
        WFLWVDataset(synth_copy).load(vid2)


# ------------------------------------------------------------------------------------------------ model names
def test_bench_unknown_model_fails_before_any_download(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("WFLWV_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    for name, hint in (("nonexistent", "Available models"), ("ldeqq", "Did you mean 'ldeq'"), ("unett", "'unet'")):
        res = CliRunner().invoke(cli, ["bench", "--model", name])
        assert res.exit_code == 2, res.output
        assert f"unknown model {name!r}" in res.output and hint in res.output
        assert "demo dataset" not in res.output
    assert not cache.exists() and not (tmp_path / "runs").exists()  # nothing fetched, built or written


def test_build_unknown_member_fails_before_anything(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    res = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "ds"), "--local", str(video), "--member", "unett"])
    assert res.exit_code == 2 and "Did you mean 'unet'" in res.output
    assert not (tmp_path / "ds").exists()


@pytest.fixture
def sidecar_video(tmp_path):
    frames, boxes, _ = synthetic_clip(num_frames=20, scheme="ibug68", fps=10.0)
    video = tmp_path / "src" / "v.mp4"
    video.parent.mkdir()
    write_video(video, frames, 10.0)
    return video, boxes


def test_build_bad_oracle_member_fails_in_seconds_and_writes_nothing(sidecar_video, tmp_path):
    video, boxes = sidecar_video
    np.save(str(video) + SIDECAR_SUFFIX, boxes)
    for spec, phrase in ((f"unet:{tmp_path / 'BAD.pt'}", "not found"), (f"unet:{video}", "unrecognised content")):
        out = tmp_path / "ds"
        t0 = time.perf_counter()
        res = CliRunner().invoke(
            cli,
            ["build", "--out", str(out), "--local", str(video), "--detector", "sidecar", "--member", spec, "--quiet"],
        )
        assert res.exit_code == 1, res.output
        assert f"oracle member {spec!r}" in res.output and phrase in res.output, res.output
        assert time.perf_counter() - t0 < 20 and not out.exists()


def test_build_without_any_clip_exits_non_zero(sidecar_video, tmp_path):
    video, boxes = sidecar_video
    np.save(str(video) + SIDECAR_SUFFIX, np.full_like(boxes, np.nan))  # no face in any frame
    out = tmp_path / "ds"
    res = CliRunner().invoke(
        cli,
        ["build", "--out", str(out), "--local", str(video), "--detector", "sidecar", "--member", "mean-shape",
         "--tta", "none", "--window", "1", "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "produced no clip" in res.output and "manifest.csv" in res.output


# ------------------------------------------------------------------------------------------------ filter names
def test_filter_aliases_and_suggestions():
    assert [s.label for s in parse_filter_options(["savgol:window=5", "Savitzky-Golay:window=7"])] == [
        "sg(window=5,order=2)",
        "sg(window=7,order=2)",
    ]
    assert parse_filter_options(["savgol-causal"])[0].name == "sg-causal"
    with pytest.raises(FilterError, match="did you mean 'sg', also called 'savitzky-golay'"):
        parse_filter_options(["savitzky"])
    with pytest.raises(FilterError, match="savgol, savitzky-golay for sg"):
        parse_filter_options(["kalman"])


# ------------------------------------------------------------------------------------------------ seeds
def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("unet", dict(weights="none", size="tiny")),
        ("hrnet", dict(weights="none", size="tiny")),
        ("ldeq", dict(weights="none", injection_width=8, cell_base_width=8, cell_width_increment=4)),
    ],
)
def test_random_initialisation_is_seeded_and_recorded(name, kwargs):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    with pytest.warns(UserWarning) if name == "ldeq" else contextlib.nullcontext():
        a, b = create_model(name, **kwargs), create_model(name, **kwargs)
        c = create_model(name, seed=1, **kwargs)
    assert torch.equal(torch.rand(3), before)  # the caller's random state is left alone
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert a.config()["seed"] == 0 and c.config()["seed"] == 1


def test_seed_is_not_recorded_when_weights_decide(tmp_path):
    path = create_model("unet", weights="none", size="tiny").save(tmp_path / "u.pt")
    assert "seed" not in create_model("unet", weights=str(path)).config()


@pytest.mark.slow
def test_two_runs_of_one_random_weights_command_give_identical_numbers(synth_root, tmp_path):
    cmd = ["bench", "--model", "unet", "--model-arg", "weights=none", "--model-arg", "size=tiny", "--data",
           str(synth_root), "--quiet"]  # fmt: skip
    tables = []
    for i in range(2):
        res = CliRunner().invoke(cli, cmd + ["--out", str(tmp_path / f"r{i}")])
        assert res.exit_code == 0, res.output
        tables.append(pd.read_parquet(tmp_path / f"r{i}" / "per_video.parquet"))
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
    run = pd.read_json(tmp_path / "r0" / "run.json", typ="series")
    assert run["identity"]["model"]["config"]["seed"] == 0
