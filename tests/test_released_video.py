"""`wflwv bench --model ldeq` gives the released evaluation code's per-frame predictions (reference data: three
clips, fixed-point iteration and Anderson, without and with RwR, see tests/data/reference/README.md "ldeq/video")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wflwv.benchmark.results import RunDir
from wflwv.cli import cli

LDEQ = Path(__file__).resolve().parent / "data" / "reference" / "ldeq"
VIDEO = LDEQ / "video"
WEIGHTS = LDEQ / "ldeq_small_reference.pth.tar"

#: the released configurations (`configs` of released_video_outputs.json) as model arguments: same numbers
MODEL_ARGS = {
    "fpi": ["solver=fpi", "max_iters=6", "tol=0.3"],
    "anderson": ["solver=anderson", "max_iters=5", "tol=0.05"],
}


def _released():
    meta = json.loads((VIDEO / "released_video_outputs.json").read_text())
    with np.load(VIDEO / "released_video_outputs.npz") as z:
        return meta, {k: z[k] for k in z.files}


def test_model_args_are_the_released_settings():
    meta, _ = _released()
    for solver, args in MODEL_ARGS.items():
        cfg = meta["configs"][solver]
        assert args == [f"solver={cfg['solver']}", f"max_iters={cfg['max_iters']}", f"tol={cfg['rel_diff_target']}"]
    assert meta["rwr_max_iters"] == 1  # the default rwr_max_iters


def _bench(tmp_path, solver: str, rwr: bool, batch_videos: int) -> RunDir:
    out = tmp_path / "run"
    args = ["bench", "--model", "ldeq", "--model-arg", f"weights={WEIGHTS}"]
    for a in MODEL_ARGS[solver]:
        args += ["--model-arg", a]
    args += ["--data", str(VIDEO), "--out", str(out), "--device", "cpu", "--quiet"]
    args += ["--batch-videos", str(batch_videos)] + (["--rwr"] if rwr else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return RunDir(out)


@pytest.mark.slow
@pytest.mark.parametrize("batch_videos", [1, 3])
@pytest.mark.parametrize("mode", ["full", "rwr"])
@pytest.mark.parametrize("solver", ["fpi", "anderson"])
def test_bench_reproduces_the_released_video_evaluation(tmp_path, solver, mode, batch_videos):
    meta, released = _released()
    run = _bench(tmp_path, solver, mode == "rwr", batch_videos)
    per_video = run.per_video().set_index("video_id")
    for vid in meta["clips"]:
        pred = run.load_predictions(vid)
        ref = released[f"{solver}_{mode}_{vid}"]
        assert pred["landmarks"].shape == ref.shape
        err = float(np.abs(pred["landmarks"] - ref).max())
        assert err <= 0.01, f"{solver} {mode} batch {batch_videos} clip {vid}: max |pred - released| = {err:.4g} px"
        # the metrics the released code printed for the clip
        printed = meta["results"][f"{solver}_{mode}_{vid}"]
        assert per_video.loc[vid, "nme"] == pytest.approx(printed["nme"], rel=1e-4)
        assert per_video.loc[vid, "nmf"] == pytest.approx(printed["nmf"], rel=1e-3)
        evals = pred["stat_cell_evals"]
        if mode == "rwr":  # 1 iteration every frame (the first from zeros): fpi 1 + f once more; anderson 2 + 1
            assert set(evals.tolist()) == {2.0 if solver == "fpi" else 3.0}
        elif solver == "anderson":  # tolerance 0.05 never met: 2 + 5 evaluations, the best one's value reused
            assert set(evals.tolist()) == {7.0}
        else:  # fpi stops at its tolerance (i iterations, i <= 6) and applies f once more
            assert set(evals.tolist()) <= set(range(2, 8)) and len(set(evals.tolist())) > 1
        assert (pred["stat_solver_iters"] <= (1 if mode == "rwr" else 6 if solver == "fpi" else 5)).all()
    info = run.read_run()
    config = info["identity"]["model"]["config"]
    assert config["rwr"] is (mode == "rwr") and config["label_tags"] == [] and config["rwr_max_iters"] == 1


def test_report_labels_show_options_that_differ_from_the_release():
    import warnings

    from wflwv.models.registry import create_model
    from wflwv.reports.load import display_name

    def label(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = create_model("ldeq", weights=str(WEIGHTS), **kw)
        return display_name({"name": "ldeq", "args": kw, "config": m.config()})

    assert label() == "ldeq" and label(rwr=True) == "ldeq + RwR"
    assert label(rwr=True, early_exit=True, rwr_full_first_frame=True) == "ldeq + RwR [early exit, full first frame]"
    assert label(sequential=False) == "ldeq [batched]"
