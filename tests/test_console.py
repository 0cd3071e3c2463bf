"""What a user reads on the console: whole filter labels, only this call's result sets, no progress-bar redraws in
logs, no FFmpeg chatter, no Python reprs or double spaces in messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from wflwv.build.config import BuildSummary
from wflwv.build.publish import format_summary
from wflwv.cli import cli
from wflwv.cli.demo import bench_line
from wflwv.protocol.video import write_video
from wflwv.testing import synthetic_clip

REPO = Path(__file__).resolve().parents[1]
LONG = "one-euro:min_cutoff=0.5,beta=0.25,d_cutoff=2.0"
LONG_LABEL = "one-euro(min_cutoff=0.5,beta=0.25,d_cutoff=2.0)"


def _bench(data: Path, out: Path, *extra: str):
    res = CliRunner().invoke(cli, ["bench", "--model", "mean-shape", "--data", str(data), "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return res


def test_summary_shows_whole_labels_and_only_this_calls_sets(synth_root, tmp_path):
    out = tmp_path / "run"
    first = _bench(synth_root, out, "--filter", LONG, "--quiet")
    rows = [line for line in first.stdout.splitlines() if line.startswith(LONG_LABEL)]
    assert len(rows) == 3  # all, hard, easy: the label is never cut
    second = _bench(synth_root, out, "--filter", "ema:alpha=0.2", "--quiet")
    assert LONG_LABEL not in second.stdout.split("(1 filter setting")[0]
    assert "ema(alpha=0.2)" in second.stdout
    assert f"(1 filter setting from earlier calls into {out} not shown: {LONG_LABEL}; --all-sets shows them)" in (
        second.stdout
    )
    everything = _bench(synth_root, out, "--all-sets", "--quiet")
    assert LONG_LABEL in everything.stdout and "ema(alpha=0.2)" in everything.stdout
    assert "not shown" not in everything.stdout


def test_progress_bars_stay_out_of_logs(synth_root, tmp_path):
    """Without a terminal (a log file, a pipe, CI) there is no bar whose redraws would pile up."""
    res = _bench(synth_root, tmp_path / "run", "--filter", "ema")
    assert "\r" not in res.output and "100%" not in res.output


def test_shipped_weights_notice_once_on_its_own_line(synth_root68, tmp_path, monkeypatch):
    from wflwv.models import checkpoints

    monkeypatch.setattr(
        checkpoints, "_NOTICED", set()
    )  # the notice is once per process: earlier tests may have shown it
    res = CliRunner().invoke(
        cli, ["bench", "--model", "unet", "--data", str(synth_root68), "--out", str(tmp_path / "r"), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    notices = [line for line in res.stderr.splitlines() if "shipped demo weights" in line]
    assert len(notices) == 1 and notices[0].startswith("unet: no weights given")
    assert "\n\n" not in res.stderr


def test_demo_lines_read_as_commands():
    assert bench_line("ldeq", {"rwr": True}, ()) == "bench ldeq rwr=True"
    assert bench_line("unet", {}, ("ema:alpha=0.3|0.5",)) == "bench unet ema:alpha=0.3|0.5"
    assert bench_line("mean-shape", {}, ()) == "bench mean-shape"


def test_build_summary_has_no_double_spaces(tmp_path):
    counts = dict(sources=1, sources_failed=0, candidate_clips=0, labelled=0, kept=0, hard=0, easy=0,
                  resumed_scans=0, resumed_labels=0, drop_reasons={}, mean_variance_hard=None,
                  mean_variance_easy=None)  # fmt: skip
    text = format_summary(BuildSummary(tmp_path, [], [], [], {"scan": 1.0}, counts, None))
    assert all("  " not in line for line in text.splitlines()), text
    assert "scheme ?" not in text


def test_a_damaged_video_gives_our_error_not_ffmpeg_chatter(tmp_path):
    frames, _, _ = synthetic_clip(num_frames=30)
    video = tmp_path / "v.mp4"
    write_video(video, frames, 25.0)
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    code = (
        "import sys\nfrom wflwv.protocol.video import iter_frames\n"
        f"n = sum(1 for _ in iter_frames({str(video)!r}))\nprint(n)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO)}.items() if k != "OPENCV_FFMPEG_LOGLEVEL"},
    )
    assert res.returncode == 0 and 0 < int(res.stdout) < 30
    assert res.stderr == "", res.stderr


def test_model_arg_weights_none_asks_for_random_weights():
    from wflwv.cli.common import parse_kv

    assert parse_kv(["weights=none", "seed=3"]) == {"weights": "none", "seed": 3}
    assert parse_kv(["weights=NONE"])["weights"] == "none"
    assert parse_kv(["tol=none"]) == {"tol": None}  # other arguments: none is Python's None
