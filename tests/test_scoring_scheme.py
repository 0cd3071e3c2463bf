"""A 68-point model on 98-point data: the ground truth is converted to iBUG-68 and the run is scored in that scheme
(the shipped demo models on a synthetic WFLW-98 dataset)."""

from __future__ import annotations

import numpy as np
import pytest

from wflwv.benchmark.harness import run_benchmark
from wflwv.benchmark.results import RunDir
from wflwv.filters import parse_filter_options
from wflwv.models.registry import create_model
from wflwv.protocol.layout import WFLWVDataset
from wflwv.reports.load import load_run
from wflwv.schemes import WFLW98_TO_IBUG68
from wflwv.testing import make_synthetic_dataset


@pytest.fixture(scope="module")
def data98(tmp_path_factory):
    root = tmp_path_factory.mktemp("d98") / "data"
    make_synthetic_dataset(root, num_hard=1, num_easy=1, num_frames=6)
    return root


def _own_nme_percent(pred: np.ndarray, gt98: np.ndarray) -> float:
    """Video NME in percent, written out: iBUG-68 ground truth, outer eye corners 36 and 45 as the normaliser."""
    gt = gt98[:, list(WFLW98_TO_IBUG68)]
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    return float(100 * (np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / iod).mean())


@pytest.mark.parametrize("name", ["ldeq", "unet"])
def test_shipped_68_point_models_are_scored_on_98_point_data(name, data98, tmp_path, capsys):
    model = create_model(name)  # the shipped demo weights, iBUG-68
    assert model.scheme == "ibug68"
    out = tmp_path / "run"
    summary = run_benchmark(model, data98, out, device="cpu", progress=False, model_spec={"name": name, "args": {}})
    notice = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notice) == 1 and "wflw98 ground truth" in notice[0] and "scored in ibug68" in notice[0]
    assert summary["scoring_scheme"] == "ibug68" and summary["identity"]["dataset"]["scheme"] == "wflw98"
    run = RunDir(out)
    assert run.read_run()["scoring_scheme"] == "ibug68"
    ds = WFLWVDataset(data98)
    rows = run.per_video().set_index("video_id")
    for vid in ds.ids("all"):
        pred = run.load_predictions(vid)["landmarks"]
        assert pred.shape == (6, 68, 2)
        assert rows.loc[vid, "nme"] == pytest.approx(_own_nme_percent(pred, ds.load(vid).landmarks), rel=1e-9)
    agg = summary["sets"]["none"]["splits"]["all"]
    assert agg["videos"] == 2 and agg["failed"] == 0 and len(agg["nmf_per_landmark"]) == 68
    assert np.isfinite(agg["nme"]) and agg["nme"] < 100
    # adding a filter re-scores the saved predictions from the run folder: still in iBUG-68
    again = run_benchmark(
        model, data98, out, device="cpu", progress=False, model_spec={"name": name, "args": {}},
        filters=parse_filter_options(["ema:alpha=0.5"]),
    )  # fmt: skip
    assert again["sets"]["none"]["splits"]["all"]["nme"] == pytest.approx(agg["nme"], rel=1e-12)
    assert len(again["sets"]["ema(alpha=0.5)"]["splits"]["all"]["nmf_per_landmark"]) == 68
    # a report reads the scoring scheme
    assert load_run(out).scheme == "ibug68"
