"""One contract test, parametrized over every registered model (built-in and plug-in)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wflwv.benchmark.harness import run_benchmark
from wflwv.models import FrameInfo, create_model, list_models
from wflwv.protocol.layout import WFLWVDataset, decode_crops
from wflwv.schemes import get_scheme

#: small configurations so every model runs on a CPU in seconds; models not listed take no arguments
CONTRACT_KWARGS: dict[str, dict] = {
    "ldeq": dict(injection_width=16, cell_base_width=16, cell_width_increment=4, max_iters=4),
    "unet": dict(size="tiny"),
    "hrnet": dict(size="tiny"),
    "hrformer": dict(size="tiny"),
    "faceapi68": dict(weights="none"),  # random weights: the contract does not need face-api's (fetched with npm)
    "oracle-ensemble": dict(
        members=[("unet", None, {"size": "tiny"}), ("perturbed-oracle", None, {"jitter": 1.0})], tta="flip,shift"
    ),
}


def _frames(ds: WFLWVDataset, vids, t: int):
    clips = [ds.load(v) for v in vids]
    crops = [decode_crops(c) for c in clips]
    imgs = torch.from_numpy(np.stack([c.crops[t] for c in crops])).permute(0, 3, 1, 2).float() / 255
    infos = [
        FrameInfo(v, t, c.num_frames, cc.fps, cc.crop_to_frame[t], ds.root) for v, c, cc in zip(vids, clips, crops)
    ]
    return imgs, infos


#: models whose contract run takes seconds (the fast loop, `pytest -m "not slow"`, skips them; CI runs them)
SLOW_MODELS = {"ldeq", "hrnet", "hrformer", "oracle-ensemble", "dlib68"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in list_models()]
)
def test_model_contract(name, synth_root, synth_root68, tmp_path):
    model = create_model(name, **CONTRACT_KWARGS.get(name, {})).to("cpu")
    ds = WFLWVDataset(synth_root68 if model.scheme == "ibug68" else synth_root)
    assert model.name == name
    scheme = get_scheme(model.scheme) if model.scheme is not None else ds.scheme
    vids = ds.ids()[:2]
    imgs0, info0 = _frames(ds, vids, 0)
    out0 = model.predict(imgs0, [None, None], info0)
    lm0 = out0.landmarks_numpy()
    assert lm0.shape == (2, scheme.num_points, 2) and np.isfinite(lm0).all()
    assert len(out0.states) == 2
    for k, v in out0.stats_numpy().items():
        assert v.shape == (2,), f"statistic {k} must have one value per sample"
    # the next frame, carrying state; and the same frame of each clip alone gives the same numbers
    imgs1, info1 = _frames(ds, vids, 1)
    both = model.predict(imgs1, out0.states, info1).landmarks_numpy()
    for i in range(2):
        alone = model.predict(imgs1[i : i + 1], [out0.states[i]], [info1[i]]).landmarks_numpy()
        # the same numbers up to float32 rounding (convolutions may sum in another order for another batch size,
        # and an untrained equilibrium model amplifies that a little): well below a hundredth of a pixel
        np.testing.assert_allclose(alone[0], both[i], atol=1e-2, rtol=0)
    # and it benches through the harness
    summary = run_benchmark(model, ds, tmp_path / "run", split="easy", progress=False)
    assert summary["sets"]["none"]["splits"]["all"]["videos"] == 2
