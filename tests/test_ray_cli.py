"""``wflwv bench`` / ``wflwv build`` on Ray from the command line: ``--workers 2`` (a Ray started by the command),
``--ray-address auto`` (after ``ray start --head``), the driver killed and the run resumed, and the message when
Ray is missing.

Every process a test starts carries a unique environment variable, so that whatever survives (Ray's agents can
outlive a killed driver) is found and ended by its pid, never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from wflwv.benchmark.results import RunDir
from wflwv.cli import cli
from wflwv.models import create_model
from wflwv.models.checkpoints import make_checkpoint, save_checkpoint
from wflwv.protocol.layout import WFLWVDataset
from wflwv.testing import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
TINY_LDEQ = dict(num_landmarks=98, injection_width=8, cell_base_width=8, cell_width_increment=4)


# ------------------------------------------------------------------------------------------------------------------
# without Ray (fast)
def test_workers_without_ray_installed_is_a_clear_message(synth_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    args = ["bench", "--model", "mean-shape", "--data", str(synth_root), "--out", str(tmp_path / "r"), "--quiet"]
    res = CliRunner().invoke(cli, args + ["--workers", "2"])
    assert res.exit_code != 0
    assert "not installed" in res.output and "pip install 'wflwv[ray]'" in res.output
    assert not (tmp_path / "r").exists()
    res = CliRunner().invoke(cli, args + ["--cpus-per-worker", "2"])
    assert res.exit_code == 2 and "only with --workers or --ray-address" in res.output


# ------------------------------------------------------------------------------------------------------------------
# helpers for the Ray runs
def _sweep(mark: str) -> None:
    """SIGKILL every process whose environment carries ``WFLWV_TEST_MARK=mark`` (started by this test)."""
    needle = f"WFLWV_TEST_MARK={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def marked_env(monkeypatch):
    """An environment for subprocesses (and for Ray processes this process starts) that the sweep can find."""
    mark = uuid.uuid4().hex
    monkeypatch.setenv("WFLWV_TEST_MARK", mark)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # in-process runs use the workers' thread count
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    yield dict(os.environ)
    _sweep(mark)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Fixed random weights for a tiny LDEQ and a tiny UNet (the same numbers in every process)."""
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ldeq = create_model("ldeq", weights="none", **TINY_LDEQ)
    save_checkpoint(d / "ldeq.pt", make_checkpoint("ldeq", ldeq.cfg.to_dict(), ldeq.net.state_dict(), scheme="wflw98"))
    torch.manual_seed(12)
    unet = create_model("unet", weights="none", size="tiny")
    unet.save(d / "unet.pt")
    return {"ldeq": d / "ldeq.pt", "unet": d / "unet.pt"}


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unseen_cli") / "data"
    make_synthetic_dataset(root, num_hard=2, num_easy=2, num_frames=10, seed=21)
    return root


MODELS = {
    "ldeq-rwr": lambda w: ["--model", "ldeq", "--model-arg", f"weights={w['ldeq']}", "--rwr"],
    "unet": lambda w: ["--model", "unet", "--model-arg", f"weights={w['unet']}"],
}
FILTERS = ["--filter", "ema:alpha=0.25|0.6", "--filter", "one-euro:min_cutoff=0.5,beta=0.1"]


def _bench(env, model_args, data, out, *extra, timeout=600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "wflwv.cli", "bench", *model_args, "--data", str(data), "--out", str(out)]
    res = subprocess.run(
        cmd + ["--quiet", *extra], env=env, capture_output=True, text=True, timeout=timeout, cwd=str(out.parent)
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _assert_same_runs(a: Path, b: Path, data: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a / "per_video.csv"), pd.read_csv(b / "per_video.csv"), check_exact=True)
    assert json.loads((a / "summary.json").read_text())["sets"] == json.loads((b / "summary.json").read_text())["sets"]
    ra, rb = RunDir(a), RunDir(b)
    for vid in WFLWVDataset(data).ids():
        pa, pb = ra.load_predictions(vid), rb.load_predictions(vid)
        assert pa.keys() == pb.keys()
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{vid}: {k}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_workers_2_equals_in_process(weights, unseen, tmp_path, marked_env):
    pytest.importorskip("ray")
    for name, model in MODELS.items():
        _bench(marked_env, model(weights), unseen, tmp_path / f"{name}-local", *FILTERS)
        _bench(marked_env, model(weights), unseen, tmp_path / f"{name}-ray", *FILTERS, "--workers", "2")
        _assert_same_runs(tmp_path / f"{name}-local", tmp_path / f"{name}-ray", unseen)
        run = json.loads((tmp_path / f"{name}-ray" / "run.json").read_text())
        assert run["engine"]["name"] == "ray" and run["engine"]["workers"] == 2 and run["engine"]["address"] == "local"
        assert len(pd.read_csv(tmp_path / f"{name}-ray" / "per_video.csv")) == 4 * 4  # unfiltered + 3 settings


@pytest.mark.slow
def test_cli_ray_address_auto_after_ray_start(weights, unseen, tmp_path, marked_env):
    pytest.importorskip("ray")
    port = _free_port()
    temp = Path(f"/tmp/wflwv-ray-{marked_env['WFLWV_TEST_MARK'][:8]}")
    head = subprocess.Popen(
        [shutil.which("ray") or "ray", "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
         "--port", str(port), "--include-dashboard", "false", "--dashboard-agent-listen-port", str(_free_port()),
         "--temp-dir", str(temp), "--disable-usage-stats"],
        env=marked_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        log = []
        for line in head.stdout:  # up once it says it blocks
            log.append(line)
            if "will now block" in line:
                break
        assert head.poll() is None, "".join(log)
        threading.Thread(target=head.stdout.read, daemon=True).start()  # keep its pipe from filling up
        # `auto` finds the cluster through RAY_ADDRESS first: point it at ours, not at another one on this machine;
        # `ray start` turns on token authentication, which the driver must opt in to
        env = {**marked_env, "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token"}
        for name, model in MODELS.items():
            _bench(env, model(weights), unseen, tmp_path / f"{name}-local", *FILTERS)
            _bench(env, model(weights), unseen, tmp_path / f"{name}-auto", *FILTERS, "--ray-address", "auto")
            _assert_same_runs(tmp_path / f"{name}-local", tmp_path / f"{name}-auto", unseen)
            eng = json.loads((tmp_path / f"{name}-auto" / "run.json").read_text())["engine"]
            assert eng["address"] == "auto" and eng["workers"] == 2 and eng["cluster_cpus"] == 2
    finally:
        head.send_signal(signal.SIGTERM)  # --block: stops the processes of this cluster
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_driver_killed_mid_run_resumes_to_the_same_numbers(weights, tmp_path, marked_env):
    pytest.importorskip("ray")
    data = tmp_path / "data"
    make_synthetic_dataset(data, num_hard=3, num_easy=3, num_frames=60, seed=31)
    model = MODELS["ldeq-rwr"](weights)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "wflwv.cli", "bench", *model, "--data", str(data), "--out", str(out), "--quiet"]
    driver = subprocess.Popen(cmd + ["--workers", "2"], env=marked_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if len(list((out / "clips").glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before the test could kill it: " + driver.stderr.read().decode()
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    _sweep(marked_env["WFLWV_TEST_MARK"])  # the Ray it started dies with it (or is ended here)
    done = {p.stem for p in (out / "clips").glob("*.json")}
    assert 2 <= len(done) < 6, f"{len(done)} of 6 clips were finished when the driver was killed"
    for rec in (out / "clips").glob("*.json"):  # every finished file is whole (writes are atomic)
        assert json.loads(rec.read_text())["video_id"] == rec.stem
        RunDir(out).load_predictions(rec.stem)
    _bench(marked_env, model, data, out, "--workers", "2")  # the same command again: resumes
    stray = [p for p in out.rglob("*") if p.name.startswith(".") and not p.name.startswith(".wflwv.lock")]
    assert not stray, "temporaries of writes the SIGKILL interrupted are cleared by the next run"
    _bench(marked_env, model, data, tmp_path / "calm")
    _assert_same_runs(tmp_path / "calm", out, data)


# ------------------------------------------------------------------------------------------------------------------
# build
def _build_sources(root: Path) -> Path:
    """Two 10-fps synthetic videos with sidecar boxes (one shot of 40 frames; two shots of 20 with a cut)."""
    from wflwv.build.config import SIDECAR_SUFFIX
    from wflwv.build.detect import square_box
    from wflwv.protocol.video import write_video
    from wflwv.testing import synthetic_clip

    root.mkdir(parents=True)
    for name, parts in (("oneshot", [(41, 40)]), ("twoshots", [(42, 20), (43, 20)])):
        frames, boxes = [], []
        for seed, n in parts:
            f, b, _ = synthetic_clip(n, (192, 144), "ibug68", motion=1.5, seed=seed, fps=10)
            frames += f
            boxes.append(square_box(b))
        write_video(root / f"{name}.mp4", frames, 10.0)
        np.save(root / f"{name}.mp4{SIDECAR_SUFFIX}", np.concatenate(boxes)[:, None, :])
    return root


def _dataset_files(out: Path) -> dict[str, bytes]:
    """Every published file (the work folder aside) byte for byte, except what says when, how fast and where: the
    manifests' ``retrieved`` time and build.json's timings, provenance, engine and paths."""
    files = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and ".build" not in p.relative_to(out).parts
        and p.name not in ("build.json", "manifest.csv", "manifest.parquet")
    }
    csv, pq = pd.read_csv(out / "manifest.csv"), pd.read_parquet(out / "manifest.parquet")
    files["manifest.csv (results)"] = (
        csv.drop(columns="retrieved").to_csv(index=False).replace(str(out), "OUT").encode()
    )
    files["manifest.parquet (results)"] = (
        pq.drop(columns="retrieved").to_csv(index=False).replace(str(out), "OUT").encode()
    )
    info = json.loads((out / "build.json").read_text())
    for key in ("timings_s", "provenance", "engine"):
        info.pop(key)
    for key in ("workers", "engine", "out", "work"):
        info["config"].pop(key)
    files["build.json (results)"] = json.dumps(info, sort_keys=True).encode()
    return files


@pytest.mark.slow
def test_cli_build_with_workers_2_on_ray_writes_the_same_dataset(tmp_path, marked_env):
    pytest.importorskip("ray")
    pytest.importorskip("dlib")
    src = _build_sources(tmp_path / "src")
    common = ["--local", str(src), "--detector", "sidecar", "--window", "1.5", "--min-face", "20", "--tta", "flip",
              "--hard-k", "1", "--easy-k", "1", "--previews", "1", "--quiet"]  # fmt: skip
    outs = {}
    for name, extra in (("alone", []), ("ray", ["--workers", "2"])):
        outs[name] = tmp_path / name
        cmd = [sys.executable, "-m", "wflwv.cli", "build", "--out", str(outs[name]), *common, *extra]
        res = subprocess.run(cmd, env=marked_env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
    engine = json.loads((outs["ray"] / "build.json").read_text())["engine"]
    assert engine["name"] == "ray" and engine["cluster_cpus"] == 2 and engine["ray_version"]
    assert json.loads((outs["alone"] / "build.json").read_text())["engine"]["name"] == "in-process"
    a, b = _dataset_files(outs["alone"]), _dataset_files(outs["ray"])
    assert sorted(a) == sorted(b)
    assert any(k.startswith("videos/") for k in a) and "manifest.csv (results)" in a
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"files that differ: {different}"
