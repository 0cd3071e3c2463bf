"""One writer per output folder: a bench run or a build holds its folder's lock for the whole run; a second process
is refused with a message naming the holder, and the folder never mixes two configurations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from wflwv.benchmark.harness import RunLockedError, run_benchmark
from wflwv.benchmark.results import RunDir
from wflwv.build.pipeline import BuildConfig, build_dataset
from wflwv.cli import cli
from wflwv.io import LOCK_FILE, LOCK_OWNER_FILE, FolderLockedError, folder_lock
from wflwv.models import create_model

REPO = Path(__file__).resolve().parents[1]


def test_a_held_run_folder_refuses_a_second_bench_and_names_the_holder(synth_root, tmp_path):
    out = tmp_path / "run"
    with RunDir(out).lock():
        with pytest.raises(RunLockedError) as err:
            run_benchmark(create_model("mean-shape"), synth_root, out, progress=False)
        # nothing was read or written by the refused run
        assert {p.name for p in out.iterdir()} == {LOCK_FILE, LOCK_OWNER_FILE}
    msg = str(err.value)
    assert str(out) in msg and f"PID {os.getpid()}" in msg
    assert f"kill {os.getpid()}" in msg and "another --out" in msg and "wflwv bench" in msg
    # released: the same call now runs, and the holder's note is gone
    run_benchmark(create_model("mean-shape"), synth_root, out, progress=False)
    assert (out / "summary.json").is_file() and not (out / LOCK_OWNER_FILE).exists()


def test_cli_bench_into_a_busy_folder_fails_with_the_holder(synth_root, tmp_path):
    out = tmp_path / "run"
    with folder_lock(out, command="wflwv bench"):
        res = CliRunner().invoke(
            cli, ["bench", "--model", "mean-shape", "--data", str(synth_root), "--out", str(out), "--quiet"]
        )
    assert res.exit_code != 0
    assert f"PID {os.getpid()}" in res.output and "in use by another `wflwv bench`" in res.output
    assert not (out / "run.json").exists()


def test_a_run_that_fails_before_writing_leaves_no_folder(synth_root, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(Exception, match="no clips|split"):
        run_benchmark(create_model("mean-shape"), synth_root, out, split=str(_empty_split(tmp_path)), progress=False)
    assert not out.exists()


def _empty_split(tmp_path: Path) -> Path:
    p = tmp_path / "ids.txt"
    p.write_text("")
    return p


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "f"
    code = (
        "import sys, time\nfrom wflwv.io import folder_lock\n"
        f"with folder_lock({str(folder)!r}, command='t'):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"PID {proc.pid}"):
            with folder_lock(folder, command="t"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with folder_lock(folder, command="t"):  # the kernel released the dead holder's lock
        assert json.loads((folder / LOCK_OWNER_FILE).read_text())["pid"] == os.getpid()


def test_a_busy_build_folder_is_refused_before_any_work(tmp_path):
    out = tmp_path / "ds"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not read")
    with folder_lock(out, command="wflwv build"):
        with pytest.raises(FolderLockedError, match=f"PID {os.getpid()}"):
            build_dataset(BuildConfig(out=out, local=[video], detector="haar", members=["mean-shape"], progress=False))
        assert {p.name for p in out.iterdir()} == {LOCK_FILE, LOCK_OWNER_FILE}  # the refused build wrote nothing


# ------------------------------------------------------------------------------------------------------------------
def _cli(data: Path, out: Path, jitter: float) -> list[str]:
    return [
        sys.executable, "-m", "wflwv.cli", "bench", "--model", "perturbed-oracle", "--model-arg", f"jitter={jitter}",
        "--data", str(data), "--out", str(out), "--quiet", "--filter", f"ema:alpha={0.2 if jitter < 2 else 0.6}",
    ]  # fmt: skip


def _numbers(folder: Path) -> pd.DataFrame:
    df = pd.read_parquet(folder / "per_video.parquet")
    return df.sort_values(["filter", "video_id"]).reset_index(drop=True)[["filter", "video_id", "nme", "nmf"]]


@pytest.mark.slow
def test_simultaneous_benches_into_one_folder_never_mix(synth_root, tmp_path):
    """Acceptance: 20 times, two `wflwv bench` processes with different settings start together into one --out:
    one finishes, the other is refused with a clear message, and the folder holds the winner's results only."""
    jitters = (1.0, 3.0)
    refs = {}
    for j in jitters:  # what each configuration gives when it runs alone
        ref = tmp_path / f"ref-{j}"
        subprocess.run(_cli(synth_root, ref, j), check=True, capture_output=True, env=_env())
        refs[j] = _numbers(ref)
    for trial in range(20):
        out = tmp_path / f"trial{trial}"
        order = jitters if trial % 2 == 0 else jitters[::-1]
        procs = [
            subprocess.Popen(_cli(synth_root, out, j), stderr=subprocess.PIPE, text=True, env=_env()) for j in order
        ]
        results = [(j, p.wait(timeout=300), p.stderr.read()) for j, p in zip(order, procs)]
        ok = [r for r in results if r[1] == 0]
        refused = [r for r in results if r[1] != 0]
        assert len(ok) == 1 and len(refused) == 1, f"trial {trial}: {results}"
        why = refused[0][2]
        assert (
            "is in use by another `wflwv bench` (PID" in why or "holds results of a different configuration" in why
        ), why
        winner = ok[0][0]
        run = json.loads((out / "run.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
        assert run["identity"]["model"]["config"]["jitter"] == winner
        assert summary["identity"] == run["identity"]
        assert [f["label"] for f in run["filters"]] == [f"ema(alpha={0.2 if winner < 2 else 0.6})"]
        pd.testing.assert_frame_equal(_numbers(out), refs[winner], check_exact=True)
        assert not (out / LOCK_OWNER_FILE).exists()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
