"""Augmentations, losses, config overrides, the training loop (learning, exact resume) and `wflwv train`."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from wflwv.benchmark.metrics import nme_per_frame
from wflwv.cli.train import train as train_command
from wflwv.config import apply_overrides, make_config
from wflwv.models.archs import ARCHS, ArchSpec, build_net, get_arch
from wflwv.models.archs import make_config as make_arch_config
from wflwv.models.checkpoints import CheckpointError, load_checkpoint, load_net
from wflwv.protocol.wflw import SUBSETS
from wflwv.schemes import get_scheme, template_shape
from wflwv.testing import make_synthetic_wflw
from wflwv.training import AugmentConfig, TrainConfig, TrainData, evaluate, train
from wflwv.training.augment import (
    augment,
    flip_horizontal,
    gaussian_blur,
    motion_blur,
    photometric,
    sample_geometry,
    sample_rng,
)
from wflwv.training.data import WFLWStillDataset
from wflwv.training.evaluate import format_table
from wflwv.training.loop import BEST_NAME, CHECKPOINT_NAME, METRICS_CSV, METRICS_JSON
from wflwv.training.losses import AdaptiveWingLoss, HeatmapMSE, KeypointMSE, adaptive_wing, make_loss, target_heatmaps

# --------------------------------------------------------------------------------------------------
# augmentations


def _blob(point, size=256, sigma=2.5):
    """A smooth bright spot centred exactly at the sub-pixel ``point`` (x, y), as a uint8 image."""
    ys, xs = np.mgrid[0:size, 0:size]
    g = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * sigma**2))
    return np.repeat((g * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)


def _centroid(image):
    w = image.astype(np.float64).mean(axis=2)
    ys, xs = np.mgrid[0 : w.shape[0], 0 : w.shape[1]]
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def test_augmented_keypoints_sit_on_the_augmented_image():
    scheme = get_scheme("wflw98")
    perm = scheme.flip_index()
    points = template_shape("wflw98") * 256
    cfg = AugmentConfig.geometric_only(
        rotation_deg=30, rotation_prob=1.0, flip_prob=0.5, scale_jitter=0.1, translate=0.03
    )
    indices = [8, 24, 33, 46, 54, 60, 72, 76, 82, 96, 97]
    checked, flipped_seen = 0, set()
    for seed in range(6):
        flipped = sample_geometry(cfg, sample_rng(seed, 0, 0), 256).flipped
        flipped_seen.add(flipped)
        for i in indices:
            image, out_pts = augment(_blob(points[i]), points, cfg, sample_rng(seed, 0, 0), scheme)
            j = perm[i] if flipped else i  # where landmark i went (flip permutations are involutions)
            if not np.all((out_pts[j] > 12) & (out_pts[j] < 243)):
                continue  # blob partly outside the crop: its centroid is biased
            np.testing.assert_allclose(_centroid(image), out_pts[j], atol=0.25)
            checked += 1
    assert checked >= 50 and flipped_seen == {False, True}


def test_blurs_do_not_move_content_and_occlusion_leaves_keypoints():
    p = (101.3, 140.7)
    img = _blob(p, sigma=3.0)
    np.testing.assert_allclose(_centroid(gaussian_blur(img, 2.0)), p, atol=0.15)
    for angle in (0.0, 33.0, 90.0, 151.0):
        np.testing.assert_allclose(_centroid(motion_blur(img, 11, angle)), p, atol=0.15)
    assert motion_blur(img, 11, 0.0)[141].astype(int).sum() > img[141].astype(int).sum()  # it does blur
    cfg = AugmentConfig.disabled()
    cfg = dataclasses.replace(cfg, occlusion_prob=1.0, occlusion_size=(0.3, 0.3))
    rng = np.random.default_rng(0)
    out = photometric(np.zeros((256, 256, 3), np.uint8) + 7, cfg, rng)
    changed = np.any(out != 7, axis=2)
    ys, xs = np.nonzero(changed)
    assert 60 <= xs.max() - xs.min() + 1 <= 80 and 60 <= ys.max() - ys.min() + 1 <= 80  # one ~77 px square


def test_flip_twice_is_identity_and_matches_the_augment_flip():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    pts = template_shape("wflw98") * 256 + rng.normal(0, 3, size=(98, 2))
    once_img, once_pts = flip_horizontal(image, pts, "wflw98")
    twice_img, twice_pts = flip_horizontal(once_img, once_pts, "wflw98")
    assert np.array_equal(twice_img, image)
    np.testing.assert_allclose(twice_pts, pts, atol=1e-12)
    # left/right relabelled: the new image-left eye corner (60) is the mirrored old image-right corner (72)
    np.testing.assert_allclose(once_pts[60], [255 - pts[72, 0], pts[72, 1]])
    # the flip inside `augment` (an affine warp) gives exactly the same result
    only_flip = dataclasses.replace(AugmentConfig.disabled(), flip_prob=1.0)
    aug_img, aug_pts = augment(image, pts, only_flip, np.random.default_rng(0), "wflw98")
    assert np.array_equal(aug_img, once_img)
    np.testing.assert_allclose(aug_pts, once_pts, atol=1e-9)
    # and nothing at all when disabled
    same_img, same_pts = augment(image, pts, AugmentConfig.disabled(), np.random.default_rng(0), "wflw98")
    assert np.array_equal(same_img, image)
    np.testing.assert_allclose(same_pts, pts, atol=1e-9)


def test_augmentation_draws_are_seeded():
    cfg = AugmentConfig()
    a = sample_geometry(cfg, sample_rng(3, 1, 7))
    b = sample_geometry(cfg, sample_rng(3, 1, 7))
    c = sample_geometry(cfg, sample_rng(3, 2, 7))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert not np.allclose(a.matrix, c.matrix)
    with pytest.raises(ValueError, match="flip_prob is a probability"):
        AugmentConfig(flip_prob=1.5)


# --------------------------------------------------------------------------------------------------
# losses


def test_keypoint_and_heatmap_losses():
    torch.manual_seed(0)
    kp = torch.rand(2, 98, 2)
    pred = kp + 0.01 * torch.randn_like(kp)
    assert torch.isclose(KeypointMSE()({"keypoints": pred}, {"keypoints": kp}), ((pred - kp) ** 2).mean())
    assert KeypointMSE()({"keypoints": kp}, {"keypoints": kp}) == 0
    like = torch.zeros(2, 98, 64, 64)
    target = target_heatmaps(kp, like, 1.5)
    # peak 1 at the keypoint (x = column / 64)
    n, k = 1, 17
    col, row = (kp[n, k] * 64).round().long()
    if 0 <= col < 64 and 0 <= row < 64:
        assert target[n, k, row, col] > 0.75
    hm = HeatmapMSE(sigma=1.5)
    assert hm({"heatmaps": target}, {"keypoints": kp}) < 1e-12
    assert hm({"heatmaps": target.roll(2, dims=-1)}, {"keypoints": kp}) > 1e-4
    # pixels weigh 1 + foreground_weight * target; weight 0 is the plain MSE
    pred = target + 0.05 * torch.randn_like(target)
    plain = ((pred - target) ** 2).mean()
    assert torch.isclose(HeatmapMSE(foreground_weight=0)({"heatmaps": pred}, {"keypoints": kp}), plain)
    weighted = ((1 + 100 * target) * (pred - target) ** 2).mean()
    assert torch.isclose(hm({"heatmaps": pred}, {"keypoints": kp}), weighted)
    # an all-zero output is no longer nearly as good as the truth: the peaks carry a real share of the loss
    zeros = torch.zeros_like(target)
    assert hm({"heatmaps": zeros}, {"keypoints": kp}) > 30 * HeatmapMSE(foreground_weight=0)(
        {"heatmaps": zeros}, {"keypoints": kp}
    )
    with pytest.raises(ValueError, match="foreground_weight must be >= 0"):
        HeatmapMSE(foreground_weight=-1)
    with pytest.raises(KeyError, match="needs the network output 'heatmaps'.*keypoints"):
        hm({"keypoints": kp}, {"keypoints": kp})
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        make_loss("l1")


def test_adaptive_wing_is_continuous_and_weights_the_peaks():
    theta = 0.5
    y = torch.tensor([0.0, 0.3, 1.0])
    below = (y - (theta - 1e-6)).clone().requires_grad_(True)
    above = (y - (theta + 1e-6)).clone().requires_grad_(True)
    lb, la = adaptive_wing(below, y), adaptive_wing(above, y)
    torch.testing.assert_close(lb, la, atol=1e-3, rtol=0)
    lb.sum().backward()
    la.sum().backward()
    torch.testing.assert_close(below.grad, above.grad, atol=1e-3, rtol=1e-3)
    assert torch.all(adaptive_wing(y, y) == 0)
    d = torch.linspace(0, 2, 50)
    vals = adaptive_wing(torch.full_like(d, 0.2) + d, torch.full_like(d, 0.2))
    assert torch.all(vals[1:] > vals[:-1])
    # with the loss map, the same error costs more at a peak than in the background
    kp = torch.tensor([[[0.5, 0.5]]])
    like = torch.zeros(1, 1, 64, 64)
    target = target_heatmaps(kp, like, 1.5)
    loss = AdaptiveWingLoss()
    assert loss({"heatmaps": target}, {"keypoints": kp}) == 0
    at_peak, far = target.clone(), target.clone()
    at_peak[0, 0, 32, 32] -= 0.3
    far[0, 0, 5, 5] += 0.3
    assert loss({"heatmaps": at_peak}, {"keypoints": kp}) > 5 * loss({"heatmaps": far}, {"keypoints": kp})


# --------------------------------------------------------------------------------------------------
# config overrides and the architecture table


@dataclass
class _Inner:
    depth: int = 2
    name: str = "x"


@dataclass
class _Cfg:
    num_landmarks: int = 98
    width: int = 16
    rate: float = 0.1
    flag: bool = False
    widths: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.5, 1.0)
    limit: int | None = None
    mode: Literal["a", "b"] = "a"
    inner: _Inner = field(default_factory=_Inner)

    def __post_init__(self):
        if self.width < 1:
            raise ValueError("width must be >= 1")


def test_overrides_convert_types_and_reject_unknown_keys():
    cfg = make_config(
        _Cfg,
        [
            "width=32",
            "rate=1e-3",
            "flag=yes",
            "widths=4,8,16",
            "pair=(0.1, 0.2)",
            "limit=none",
            "mode=b",
            "inner.depth=5",
        ],
        num_landmarks=68,
    )
    assert cfg == _Cfg(68, 32, 1e-3, True, (4, 8, 16), (0.1, 0.2), None, "b", _Inner(5, "x"))
    cfg = apply_overrides(cfg, ["limit=7", "inner.name=deep", "width=1e2"])
    assert cfg.limit == 7 and cfg.inner.name == "deep" and cfg.width == 100
    with pytest.raises(ValueError, match=r"unknown config key 'widht' for _Cfg; valid keys: flag, inner, limit"):
        make_config(_Cfg, ["widht=3"])
    with pytest.raises(ValueError, match=r"cannot set flag='maybe': expected bool"):
        make_config(_Cfg, ["flag=maybe"])
    with pytest.raises(ValueError, match=r"cannot set pair=.*needs 2 comma-separated items"):
        make_config(_Cfg, ["pair=1,2,3"])
    with pytest.raises(ValueError, match=r"cannot set width='2.5'.*whole number"):
        make_config(_Cfg, ["width=2.5"])
    with pytest.raises(ValueError, match="must look like key=value"):
        make_config(_Cfg, ["width"])
    with pytest.raises(ValueError, match="width must be >= 1"):
        make_config(_Cfg, ["width=0"])
    with pytest.raises(ValueError, match="mode.*one of a, b"):
        make_config(_Cfg, ["mode=c"])


def test_arch_table_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; available: .*hrnet.*ldeq.*unet"):
        get_arch("resnet")
    monkeypatch.setitem(
        ARCHS, "ghost", ArchSpec("ghost", "wflwv.not_a_module:Cfg", "wflwv.not_a_module:Net", loss="keypoint_mse")
    )
    with pytest.raises(ImportError, match="architecture 'ghost' .* needs module wflwv.not_a_module"):
        get_arch("ghost")


# --------------------------------------------------------------------------------------------------
# training


@dataclass
class TinyConfig:
    num_landmarks: int = 98
    width: int = 16


class TinyNet(nn.Module):
    """A small convolutional keypoint regressor (stands in for the real architectures in fast tests)."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        w, self.k = config.width, config.num_landmarks
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 5, 4, 2),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.head = nn.Linear(32 * w, self.k * 2)

    def forward(self, x):
        return {"keypoints": self.head(self.body(x)).view(-1, self.k, 2) + 0.5}


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setitem(ARCHS, "tiny", ArchSpec("tiny", TinyConfig, TinyNet, loss="keypoint_mse"))
    return "tiny"


@pytest.fixture(scope="module")
def small_wflw(tmp_path_factory):
    return make_synthetic_wflw(tmp_path_factory.mktemp("small"), n_train=8, n_test=6, seed=1)


@pytest.fixture(scope="module")
def wflw64(tmp_path_factory):
    return make_synthetic_wflw(tmp_path_factory.mktemp("w64"), n_train=64, n_test=16, seed=0)


def _quiet(_msg):
    pass


@pytest.mark.slow
def test_training_learns_the_synthetic_faces(tiny_arch, wflw64, tmp_path):
    torch.set_num_threads(1)
    val = WFLWStillDataset(wflw64, "test")
    gt = np.stack([val[i]["keypoints"].numpy() for i in range(len(val))]).astype(np.float64) * 256
    mean_shape_nme = nme_per_frame(np.broadcast_to(template_shape() * 256, gt.shape), gt).mean() * 100
    torch.manual_seed(0)
    untrained = evaluate(TinyNet(TinyConfig()), val)["full"]["nme"]
    cfg = TrainConfig(
        epochs=25,
        batch_size=8,
        lr=3e-3,
        device="cpu",
        progress=False,
        val_every=8,
        augment=AugmentConfig.geometric_only(rotation_deg=10, scale_jitter=0.05, translate=0.02),
    )
    result = train(tiny_arch, None, wflw64, tmp_path, cfg, resume=False, log=_quiet)
    assert result.step == 200 and result.epoch == 25
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.15 * losses[0]
    final = result.history[-1]["val"]
    assert set(final) == set(SUBSETS)
    # far better than the untrained net and than always answering the mean face
    assert final["full"]["nme"] < 0.25 * untrained
    assert final["full"]["nme"] < 0.7 * mean_shape_nme
    assert final["full"]["auc"] > 0.1 and final["full"]["fr"] < 60
    # metrics files and the table
    summary = json.loads((tmp_path / METRICS_JSON).read_text())
    assert [h["epoch"] for h in summary["history"]] == list(range(1, 26))
    assert summary["best"]["nme"] == min(h["val"]["full"]["nme"] for h in summary["history"] if h["val"])
    rows = (tmp_path / METRICS_CSV).read_text().strip().splitlines()
    assert rows[0].startswith("epoch,step") and len(rows) == 1 + 4 * len(SUBSETS)  # epochs 8, 16, 24, 25
    table = format_table(final)
    assert table.splitlines()[0].split() == ["Metric", "Full", "Pose", "Exp.", "Illum.", "Mu.", "Occ.", "Blur"]
    assert f"{final['full']['nme']:.2f}" in table


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_exactly(tiny_arch, small_wflw, tmp_path):
    base = dict(
        epochs=3,
        batch_size=4,
        lr=1e-3,
        device="cpu",
        progress=False,
        seed=3,
        augment=AugmentConfig(rotation_prob=1.0, gaussian_blur_prob=0.5, occlusion_prob=0.5),
    )
    straight = train(tiny_arch, None, small_wflw, tmp_path / "a", TrainConfig(**base), log=_quiet)
    assert straight.step == 6
    # stop in the middle of the second epoch, then run again
    first = train(tiny_arch, None, small_wflw, tmp_path / "b", TrainConfig(**base, max_steps=3), log=_quiet)
    assert first.step == 3 and first.epoch == 1
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["epoch_step"] == 1 and ckpt["step"] == 3
    assert (
        ckpt["arch"] == "tiny" and ckpt["scheme"] == "wflw98" and ckpt["config"] == {"num_landmarks": 98, "width": 16}
    )
    assert {"state_dict", "optimizer", "metrics", "wflwv_version", "scheduler", "rng"} <= set(ckpt)
    assert set(ckpt["metrics"]) == set(SUBSETS)
    messages = []
    resumed = train(tiny_arch, None, small_wflw, tmp_path / "b", TrainConfig(**base), log=messages.append)
    assert any("resuming tiny" in m and "epoch 1 + 1 steps" in m for m in messages)
    assert resumed.step == 6 and resumed.epoch == 3
    assert _states_equal(straight.net.state_dict(), resumed.net.state_dict())
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert a["epoch"] == b["epoch"] == 3
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq"))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    assert a["metrics"] == b["metrics"]
    # best.pt holds the best validation so far
    best = load_checkpoint(tmp_path / "b" / BEST_NAME)
    assert best["metrics"]["full"]["nme"] == min(h["val"]["full"]["nme"] for h in b["history"] if h["val"])
    # a finished run has nothing left to do; resuming with another config is refused
    again = train(tiny_arch, None, small_wflw, tmp_path / "b", TrainConfig(**base), log=_quiet)
    assert again.step == 6 and _states_equal(again.net.state_dict(), resumed.net.state_dict())
    with pytest.raises(ValueError, match=r"different TinyConfig:\n  width: checkpoint 16 vs now 8"):
        train(tiny_arch, TinyConfig(width=8), small_wflw, tmp_path / "b", TrainConfig(**base), log=_quiet)
    fresh = train(
        tiny_arch,
        TinyConfig(width=8),
        small_wflw,
        tmp_path / "b",
        TrainConfig(**{**base, "epochs": 1}),
        resume=False,
        log=_quiet,
    )
    assert fresh.step == 2 and load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["config"]["width"] == 8


class _InterruptOnce(torch.utils.data.Dataset):
    """Wraps a dataset and raises KeyboardInterrupt (like Ctrl-C) on the n-th item fetched."""

    def __init__(self, inner, n):
        self.inner, self.n, self.count = inner, n, 0

    def __len__(self):
        return len(self.inner)

    def set_epoch(self, epoch):
        self.inner.set_epoch(epoch)

    def __getitem__(self, i):
        self.count += 1
        if self.count == self.n:
            raise KeyboardInterrupt
        return self.inner[i]


def test_interrupt_saves_a_resumable_checkpoint(tiny_arch, small_wflw, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, device="cpu", progress=False, seed=1)
    val = WFLWStillDataset(small_wflw, "test")

    def data(n=0):
        ds = WFLWStillDataset(small_wflw, "train", augment=cfg.augment, seed=cfg.seed)
        return TrainData(_InterruptOnce(ds, n) if n else ds, val)

    straight = train(tiny_arch, None, data(), tmp_path / "a", cfg, log=_quiet)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_arch, None, data(n=15), tmp_path / "b", cfg, log=_quiet)  # while loading step 4
    ckpt = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"]) == (1, 1, 3)
    resumed = train(tiny_arch, None, data(), tmp_path / "b", cfg, log=_quiet)
    assert resumed.step == 4 and _states_equal(straight.net.state_dict(), resumed.net.state_dict())


def test_training_checkpoints_use_the_safe_checkpoint_io(tiny_arch, small_wflw, tmp_path):
    from wflwv.models.checkpoints import save_checkpoint
    from wflwv.training import load_training_checkpoint

    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False)
    res = train(tiny_arch, None, small_wflw, tmp_path / "a", cfg, log=_quiet)
    ckpt = load_checkpoint(res.checkpoint)  # the project's loader: weights_only + allow-list
    assert ckpt["format"] == "toolkit" and ckpt["arch"] == "tiny"
    rng = ckpt["rng"]  # generator states are tensors and plain lists, not numpy objects
    assert isinstance(rng["torch"], torch.Tensor) and rng["numpy"][0] == "MT19937"
    assert len(rng["numpy"][1]) == 624 and all(type(v) is int for v in rng["numpy"][1])
    net, info = load_net(res.best_checkpoint)
    assert info["epoch"] == 1 and _states_equal(net.state_dict(), res.net.state_dict())
    # a checkpoint without the training state (e.g. exported weights) cannot be resumed from
    out = tmp_path / "b"
    save_checkpoint(
        out / CHECKPOINT_NAME,
        {
            "arch": "tiny",
            "config": dataclasses.asdict(TinyConfig()),
            "scheme": "wflw98",
            "state_dict": res.net.state_dict(),
            "epoch": 1,
        },
    )
    assert load_training_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 1
    with pytest.raises(CheckpointError, match="not a resumable wflwv training checkpoint.*optimizer, scheduler"):
        train(tiny_arch, None, small_wflw, out, cfg, log=_quiet)
    with pytest.raises(CheckpointError, match="bare state dict without a configuration"):
        load_net(_bare_state_dict(out / "bare.pt", res.net))
    assert train(tiny_arch, None, small_wflw, out, cfg, resume=False, log=_quiet).step == 2


def _bare_state_dict(path, net):
    torch.save(net.state_dict(), path)
    return path


def test_train_checks_landmark_count_and_data(tiny_arch, small_wflw, tmp_path):
    with pytest.raises(ValueError, match="num_landmarks = 98 but scheme ibug68 has 68"):
        train(tiny_arch, TinyConfig(), small_wflw, tmp_path, TrainConfig(scheme="ibug68", device="cpu"), log=_quiet)
    # iBUG-68 training with the config's landmark count filled in from the scheme
    res = train(
        tiny_arch,
        None,
        small_wflw,
        tmp_path,
        TrainConfig(scheme="ibug68", epochs=1, batch_size=4, device="cpu", progress=False),
        log=_quiet,
    )
    assert res.config.num_landmarks == 68 and load_checkpoint(res.checkpoint)["scheme"] == "ibug68"
    with pytest.raises(TypeError, match="data must be a WFLW folder"):
        train(tiny_arch, None, 42, tmp_path / "x", TrainConfig(device="cpu"), log=_quiet)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("wflwv.baselines.unet") is None, reason="UNet baseline not present")
def test_unet_trains_with_heatmap_losses(small_wflw, tmp_path):
    torch.set_num_threads(1)
    train_ds = WFLWStillDataset(small_wflw, "train", augment=AugmentConfig.geometric_only())
    val = WFLWStillDataset(small_wflw, "test")
    for loss in ("heatmap_mse", "awing"):
        cfg = TrainConfig(epochs=4, batch_size=4, lr=3e-3, device="cpu", progress=False, loss=loss, val_every=4)
        config = make_arch_config("unet", ["size=tiny"], num_landmarks=98)
        res = train("unet", config, TrainData(train_ds, val), tmp_path / loss, cfg, log=_quiet)
        losses = [h["train_loss"] for h in res.history]
        # (learning to localise is checked in test_train_learning.py; 8 steps only show the loss going down)
        assert losses[-1] < 0.75 * losses[0], (loss, losses)
        ckpt = load_checkpoint(res.checkpoint)
        assert ckpt["loss"] == loss and ckpt["config"]["size"] == "tiny"
        net = build_net("unet", ckpt["config"])
        net.load_state_dict(ckpt["state_dict"])
        assert get_arch("unet").loss == "heatmap_mse"
        assert np.isfinite(res.history[-1]["val"]["full"]["nme"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("wflwv.models.ldeq") is None, reason="LDEQ not present")
def test_ldeq_trains_with_implicit_differentiation(small_wflw, tmp_path):
    from wflwv.models.ldeq import LDEQNet

    torch.set_num_threads(1)
    config = make_arch_config(
        "ldeq", ["injection_width=8", "cell_base_width=8", "cell_width_increment=2", "max_iters=2"], num_landmarks=98
    )
    assert config.grad_mode == "implicit"
    val = WFLWStillDataset(small_wflw, "test")
    torch.manual_seed(0)  # train() seeds the same way, so this is its starting point
    untrained = evaluate(LDEQNet(config), val)["full"]["nme"]
    cfg = TrainConfig(
        epochs=4,
        batch_size=4,
        lr=3e-3,
        device="cpu",
        progress=False,
        val_every=4,
        augment=AugmentConfig.geometric_only(rotation_deg=10, scale_jitter=0.05, translate=0.02),
    )
    res = train("ldeq", config, small_wflw, tmp_path, cfg, log=_quiet)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert res.history[-1]["val"]["full"]["nme"] < untrained
    net, ckpt = load_net(res.checkpoint)
    assert ckpt["arch"] == "ldeq" and ckpt["loss"] == "keypoint_mse" and ckpt["config"]["max_iters"] == 2
    assert evaluate(net, val)["full"]["nme"] == pytest.approx(res.history[-1]["val"]["full"]["nme"], rel=1e-6)


# --------------------------------------------------------------------------------------------------
# the click command


def test_train_command_end_to_end(tiny_arch, small_wflw, tmp_path):
    out = tmp_path / "run"
    args = [
        "--arch",
        "tiny",
        "--data",
        str(small_wflw),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--no-progress",
        "--set",
        "width=8",
        "--aug",
        "rotation_deg=10",
        "--train-opt",
        "grad_clip=1.0",
        "--max-steps",
        "3",
        "--lr",
        "2e-3",
    ]
    runner = CliRunner()
    res = runner.invoke(train_command, args)
    assert res.exit_code == 0, res.output
    assert "done: 1 epochs, 3 steps" in res.output and "NME (%)" in res.output
    for name in (CHECKPOINT_NAME, BEST_NAME, METRICS_JSON, METRICS_CSV):
        assert (out / name).is_file()
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["config"]["width"] == 8 and ckpt["train_config"]["grad_clip"] == 1.0
    assert ckpt["train_config"]["augment"]["rotation_deg"] == 10
    # running it again without the step limit resumes and finishes
    res = runner.invoke(train_command, [a for a in args if a not in ("--max-steps", "3")])
    assert res.exit_code == 0, res.output
    assert "resuming tiny" in res.output and "done: 2 epochs, 4 steps" in res.output
    # bad input is reported clearly
    res = runner.invoke(train_command, args[:-4] + ["--set", "depth=3"])
    assert (
        res.exit_code == 2
        and "unknown config key 'depth' for TinyConfig; valid keys: num_landmarks, width" in res.output
    )
    res = runner.invoke(train_command, ["--arch", "resnet", "--data", str(small_wflw), "--out", str(out)])
    assert res.exit_code == 2 and "unknown architecture 'resnet'" in res.output
    res = runner.invoke(
        train_command,
        [
            "--arch",
            "tiny",
            "--data",
            str(tmp_path),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert res.exit_code == 1 and "no WFLW train annotations" in res.output
