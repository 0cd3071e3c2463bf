"""Learning checks: tiny networks trained for a few hundred steps on synthetic faces lower loss and NME.

* LDEQ (issue P3): a tiny LDEQ on 64 x 64 crops (16 x 16 heatmaps), trained by :func:`wflwv.training.train`
  with implicit differentiation through the equilibrium.
* heatmap baselines (issue P6): the tiny UNet trained by the ``wflwv train`` command on a synthetic WFLW folder
  with the default (foreground-weighted) heatmap loss, and the tiny HRNet and HRFormer trained by ``train``;
  their validation NME (read from the ``metrics.json`` the run writes) drops clearly. With the plain pixel-mean
  MSE the tiny UNet stays at the flat all-zero output for these step counts (see
  :class:`wflwv.training.losses.HeatmapMSE`).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils.data import Dataset

from wflwv.benchmark.metrics import nme_per_frame
from wflwv.models.archs import build_net
from wflwv.models.archs import make_config as make_arch_config
from wflwv.schemes import template_shape
from wflwv.testing import make_synthetic_wflw
from wflwv.training import TrainConfig, TrainData, evaluate, train
from wflwv.training.data import WFLWStillDataset
from wflwv.training.loop import METRICS_JSON

pytestmark = pytest.mark.slow  # learning runs: the full suite only


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """64 training and 16 test cartoon faces with known WFLW-98 landmarks."""
    return make_synthetic_wflw(tmp_path_factory.mktemp("faces"), n_train=64, n_test=16, seed=0)


class SmallCrops(Dataset):
    """A WFLW still set held in memory with its 256 x 256 crops shrunk 4x (4 x 4 box average) to 64 x 64.

    Keypoints stay in unit crop coordinates. Items: ``"image"`` (3, 64, 64), ``"keypoints"`` (K, 2).
    """

    def __init__(self, dataset: WFLWStillDataset):
        items = [dataset[i] for i in range(len(dataset))]
        self.images = F.avg_pool2d(torch.stack([it["image"] for it in items]), 4)
        self.keypoints = torch.stack([it["keypoints"] for it in items])
        self._masks = dataset.subset_masks()

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "keypoints": self.keypoints[index]}

    def subset_masks(self) -> dict:
        return self._masks


def _mean_shape_nme(dataset) -> float:
    """NME (%) of always answering the template face (a localisation-free baseline)."""
    gt = dataset.keypoints.double().numpy() * 256
    return float(nme_per_frame(np.broadcast_to(template_shape("wflw98") * 256, gt.shape), gt).mean() * 100)


def _quiet(_msg):
    pass


@pytest.mark.skipif(importlib.util.find_spec("wflwv.models.ldeq") is None, reason="LDEQ not present")
def test_tiny_ldeq_learns_to_localise_with_implicit_gradients(faces, tmp_path):
    from wflwv.models.ldeq import LDEQConfig, LDEQNet

    torch.set_num_threads(1)
    train_set = SmallCrops(WFLWStillDataset(faces, "train"))
    val_set = SmallCrops(WFLWStillDataset(faces, "test"))
    config = LDEQConfig(
        num_landmarks=98,
        input_size=64,
        heatmap_size=16,
        injection_width=16,
        cell_base_width=8,
        cell_width_increment=4,
        max_iters=3,
    )
    assert config.grad_mode == "implicit"
    torch.manual_seed(0)  # train() seeds the same way before building the net: this is its starting point
    untrained = evaluate(LDEQNet(config), val_set)["full"]["nme"]
    cfg = TrainConfig(epochs=16, batch_size=4, lr=5e-3, device="cpu", progress=False, val_every=4)
    res = train("ldeq", config, TrainData(train_set, val_set), tmp_path, cfg, log=_quiet)
    assert res.step == 256
    # the gradient came through the implicit backward solve (its hook records the solver's statistics)
    stats = res.net.last_backward_stats
    assert stats is not None and bool(torch.isfinite(stats.f_star).all())

    summary = json.loads((tmp_path / METRICS_JSON).read_text())
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < 0.2 * losses[0], losses
    nmes = [h["val"]["full"]["nme"] for h in summary["history"] if h["val"]]
    assert len(nmes) == 4 and nmes[-1] < nmes[0], nmes
    # from "all points near the centre" to better than the mean face: it localises the landmarks
    assert nmes[-1] < 0.4 * untrained, (untrained, nmes)
    assert nmes[-1] < 0.8 * _mean_shape_nme(val_set), (_mean_shape_nme(val_set), nmes)


@pytest.mark.skipif(importlib.util.find_spec("wflwv.baselines.unet") is None, reason="UNet baseline not present")
def test_tiny_unet_lowers_its_validation_nme_with_the_default_heatmap_loss(faces, tmp_path):
    from wflwv.cli.train import train as train_command

    torch.set_num_threads(1)
    out = tmp_path / "unet"
    args = [
        "--arch",
        "unet",
        "--set",
        "size=tiny",
        "--data",
        str(faces),
        "--out",
        str(out),
        "--epochs",
        "20",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--schedule",
        "constant",
        "--no-augment",
        "--val-every",
        "5",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
    ]
    res = CliRunner().invoke(train_command, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / METRICS_JSON).read_text())
    assert summary["loss"] == "heatmap_mse" and summary["train_config"]["heatmap_foreground_weight"] > 0
    torch.manual_seed(0)  # the command's default seed: the net it started from
    net = build_net("unet", summary["config"])
    untrained = evaluate(net, WFLWStillDataset(faces, "test"))["full"]["nme"]

    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < 0.5 * losses[0], losses
    nmes = [h["val"]["full"]["nme"] for h in summary["history"] if h["val"]]
    assert len(nmes) == 4 and nmes[-1] < nmes[0], nmes
    assert nmes[-1] < 0.5 * untrained, (untrained, nmes)
    assert summary["best"]["nme"] == min(nmes)


@pytest.mark.parametrize("arch", ["hrnet", "hrformer"])
def test_tiny_hr_networks_lower_their_validation_nme(arch, faces, tmp_path):
    from wflwv.training import AugmentConfig

    if importlib.util.find_spec(f"wflwv.baselines.{arch}") is None:
        pytest.skip(f"{arch} baseline not present")
    torch.set_num_threads(1)
    config = make_arch_config(arch, ["size=tiny"], num_landmarks=98)
    torch.manual_seed(0)
    net = build_net(arch, config)
    untrained = evaluate(net, WFLWStillDataset(faces, "test"))["full"]["nme"]
    # these learn faster per step than the tiny UNet (and cost more per step): 32 steps show it
    cfg = TrainConfig(
        epochs=4,
        batch_size=8,
        lr=3e-3,
        schedule="constant",
        device="cpu",
        progress=False,
        val_every=4,
        augment=AugmentConfig.disabled(),
    )
    res = train(arch, config, faces, tmp_path, cfg, log=_quiet)
    summary = json.loads((tmp_path / METRICS_JSON).read_text())
    assert res.step == 32 and summary["loss"] == "heatmap_mse"
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < 0.5 * losses[0], losses
    final = summary["history"][-1]["val"]["full"]["nme"]
    assert final < 0.5 * untrained, (untrained, final)
