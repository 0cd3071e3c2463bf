"""Tests of the baseline heatmap networks, the heatmap conventions and the oracle ensemble (CPU, tiny sizes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wflwv.baselines.ensemble import OracleEnsemble, make_oracle, parse_tta, warp_heatmaps, warp_images
from wflwv.baselines.heatmaps import (
    average_heatmaps,
    combine_heatmaps,
    gaussian_heatmaps,
    heatmap_readout,
    normalise_heatmaps,
    points_to_heatmaps,
)
from wflwv.baselines.hrformer import HRFormerConfig, WindowAttention
from wflwv.baselines.hrnet import HRNetConfig
from wflwv.baselines.unet import UNetConfig
from wflwv.models import FrameInfo, LandmarkModel, ModelOutput, create_model, list_models
from wflwv.models.archs import build_net, count_parameters, make_config
from wflwv.schemes import get_scheme

ARCHS = ["unet", "hrnet", "hrformer"]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _frames(n: int) -> list[FrameInfo]:
    return [FrameInfo(f"clip{i}", 0, 1, 25.0, np.array([[1.0, 0, 0], [0, 1.0, 0]])) for i in range(n)]


# --------------------------------------------------------------------------------------------- heatmaps
@pytest.mark.parametrize("sigma", [0.8, 1.5, 3.0])
def test_readout_inverts_gaussian_targets_anywhere(sigma):
    gen = torch.Generator().manual_seed(1)
    # centres anywhere on the map, including the first and last cells
    pts = torch.rand(400, 3, 2, generator=gen, dtype=torch.float64) * (63 / 64)
    pts[0, 0] = torch.tensor([0.0, 63 / 64], dtype=torch.float64)
    back = heatmap_readout(gaussian_heatmaps(pts, 64, sigma))
    assert back.shape == pts.shape
    assert torch.abs(back - pts).max().item() * 64 < 1e-6  # exact up to rounding (far below a quarter cell)
    back32 = heatmap_readout(gaussian_heatmaps(pts.float(), 64, sigma))
    assert torch.abs(back32 - pts.float()).max().item() * 64 < 1e-3


def test_readout_non_square_maps_and_convention():
    # cell (i, j) of an (H, W) map is unit point (j / W, i / H): a one-hot map reads out at that cell exactly
    hm = torch.zeros(1, 1, 16, 32)
    hm[0, 0, 5, 20] = 1.0
    assert torch.allclose(heatmap_readout(hm), torch.tensor([[[20 / 32, 5 / 16]]]))
    pts = torch.tensor([[[0.3, 0.7], [0.91, 0.05]]], dtype=torch.float64)
    assert torch.allclose(heatmap_readout(gaussian_heatmaps(pts, (16, 32), 1.2)), pts, atol=1e-9)
    # crop-pixel rendering is unit rendering at p / 256
    px = pts * 256
    assert torch.allclose(points_to_heatmaps(px, 64, 1.5), gaussian_heatmaps(pts, 64, 1.5))


def test_readout_stays_within_half_a_cell_of_the_argmax_on_noisy_maps():
    gen = torch.Generator().manual_seed(2)
    hm = torch.randn(50, 4, 20, 20, generator=gen)
    out = heatmap_readout(hm) * 20
    flat = hm.reshape(50, 4, -1).argmax(-1)
    ix, iy = (flat % 20).float(), (flat // 20).float()
    assert torch.all(torch.abs(out[..., 0] - ix) <= 0.5 + 1e-5)
    assert torch.all(torch.abs(out[..., 1] - iy) <= 0.5 + 1e-5)
    # the refinement moves towards the higher neighbour
    hm = torch.zeros(1, 1, 5, 5)
    hm[0, 0, 2, 1:4] = torch.tensor([0.2, 1.0, 0.6])
    x = heatmap_readout(hm)[0, 0, 0].item() * 5
    assert 2.0 < x < 2.5
    # an all-negative map reads out at its arg-max cell
    hm = -torch.ones(1, 1, 8, 8)
    hm[0, 0, 3, 6] = -0.5
    assert torch.allclose(heatmap_readout(hm), torch.tensor([[[6 / 8, 3 / 8]]]))


def test_gaussian_targets_values_and_errors():
    hm = gaussian_heatmaps(torch.tensor([[0.5, 0.25]]), 64, 2.0)
    assert hm.shape == (1, 64, 64)
    assert hm[0, 16, 32].item() == pytest.approx(1.0)
    assert hm[0, 16, 34].item() == pytest.approx(np.exp(-4 / 8))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(torch.zeros(1, 2), 64, 0.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., K, 2\)"):
        gaussian_heatmaps(torch.zeros(1, 3), 64, 1.0)


def test_average_and_combine_heatmaps():
    a = torch.zeros(1, 1, 8, 8)
    a[0, 0, 2, 2] = 4.0
    a[0, 0, 0, 0] = -3.0  # negative values are dropped before normalising
    b = torch.zeros(1, 1, 8, 8)
    b[0, 0, 5, 5] = 1.0
    mean = average_heatmaps([a, b])
    assert mean.sum().item() == pytest.approx(1.0)
    assert mean[0, 0, 2, 2].item() == pytest.approx(0.5) and mean[0, 0, 5, 5].item() == pytest.approx(0.5)
    assert mean.min().item() >= 0
    assert torch.all(normalise_heatmaps(-torch.ones(2, 3, 4)) == 0)
    # a confident member outweighs a spread-out one at the readout
    pts = torch.tensor([[[[0.3, 0.3]]], [[[0.6, 0.6]]]])  # (M=2, N=1, K=1, 2)
    sharp = gaussian_heatmaps(pts[0], 64, 1.0)
    broad = gaussian_heatmaps(pts[1], 64, 4.0)
    mean, kp, var = combine_heatmaps(torch.stack([sharp, broad]), pts)
    assert torch.allclose(kp, pts[0], atol=1e-3)
    assert var.shape == (1, 1)
    assert var.item() == pytest.approx(2 * 0.15**2, rel=1e-5)  # var(x) + var(y), population
    with pytest.raises(ValueError, match="share a shape"):
        average_heatmaps([a, torch.zeros(1, 1, 4, 4)])


# ------------------------------------------------------------------------------------------ networks
@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_and_contract(arch):
    torch.manual_seed(0)
    net = build_net(arch, size="tiny", num_landmarks=5).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 256, 256))
    assert set(out) == {"heatmaps", "keypoints"}
    assert out["heatmaps"].shape == (2, 5, 64, 64)
    assert out["keypoints"].shape == (2, 5, 2)
    assert torch.isfinite(out["heatmaps"]).all()
    assert torch.equal(out["keypoints"], heatmap_readout(out["heatmaps"]))
    assert out["keypoints"].min() >= -0.01 and out["keypoints"].max() <= 1.0
    assert count_parameters(net) < 400_000  # tiny preset: a few hundred K parameters at most
    # fully convolutional: other multiples of 32 work, heatmaps at 1/4
    with torch.no_grad():
        assert net(torch.randn(1, 3, 96, 128))["heatmaps"].shape == (1, 5, 24, 32)
    # gradients reach the first layer through the heatmaps
    net.train()
    net(torch.randn(2, 3, 64, 64))["heatmaps"].square().mean().backward()
    first = next(p for p in net.parameters() if p.ndim == 4)
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_config_presets_overrides_and_errors():
    c = UNetConfig(size="tiny", num_landmarks=3)
    assert (c.width, c.depth, c.max_width) == (8, 3, 32)
    c = UNetConfig(size="tiny", width=12, max_width=48)
    assert (c.width, c.depth) == (12, 3)
    assert UNetConfig(**dataclasses.asdict(c)) == c  # a resolved config rebuilds itself exactly
    assert HRNetConfig(size="base").backbone == "hrnet_w18"
    assert HRFormerConfig(size="large").widths == (78, 156, 312, 624)
    assert HRFormerConfig(widths=[8, 16, 32, 64], heads=[1, 1, 2, 4]).widths == (8, 16, 32, 64)
    assert make_config("hrformer", size="tiny", num_landmarks=7, window=4).window == 4
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        UNetConfig(size="huge")
    with pytest.raises(ValueError, match="unknown HRNet backbone"):
        HRNetConfig(backbone="resnet50")
    with pytest.raises(ValueError, match="divisible"):
        HRFormerConfig(size="tiny", heads=(3, 1, 2, 4))
    with pytest.raises(ValueError, match="no field"):
        make_config("unet", size="tiny", colour="red")
    with pytest.raises(ValueError, match="unknown architecture"):
        build_net("resnet", size="tiny")


def test_hrnet_base_matches_the_papers_parameter_count():
    # the paper's table lists HRNet (W18) at 9.7M parameters
    net = build_net("hrnet", size="base", num_landmarks=98)
    assert count_parameters(net) / 1e6 == pytest.approx(9.7, abs=0.1)


def test_window_attention_with_padding_matches_a_direct_computation():
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, heads=2, window=4)
    with torch.no_grad():
        attn.rel_bias.normal_()
    x = torch.randn(1, 6, 7, 8)  # 6 x 7 is not a multiple of the window: padded and masked
    out = attn(x)
    # direct computation for the window at rows 4-7, cols 4-7 (valid rows 4-5, cols 4-6)
    rows, cols = [4, 5], [4, 5, 6]
    tokens = torch.stack([x[0, r, c] for r in rows for c in cols])  # (T, C)
    pos = [(r - 4, c - 4) for r in rows for c in cols]
    q, k, v = attn.qkv(tokens).view(len(pos), 3, 2, 4).unbind(1)
    ref = []
    for h in range(2):
        logits = q[:, h] @ k[:, h].T / 2.0
        for a, (ya, xa) in enumerate(pos):
            for b, (yb, xb) in enumerate(pos):
                logits[a, b] += attn.rel_bias[h, (ya - yb + 3) * 7 + (xa - xb + 3)]
        ref.append(torch.softmax(logits, dim=-1) @ v[:, h])
    ref = attn.proj(torch.cat(ref, dim=-1))
    got = torch.stack([out[0, r, c] for r in rows for c in cols])
    assert torch.allclose(got, ref, atol=1e-5)


def _blob_batch(n: int, k: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark noisy images with one bright Gaussian blob per landmark (landmark j in colour channel j)."""
    pts = torch.rand(n, k, 2, generator=gen) * 0.7 + 0.15
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    img = 0.1 * torch.rand(n, 3, size, size, generator=gen)
    for j in range(k):
        cx, cy = (pts[:, j, 0] * size)[:, None, None], (pts[:, j, 1] * size)[:, None, None]
        img[:, j] += torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 40) ** 2))
    return img, pts


@pytest.mark.parametrize(
    "arch, steps", [("unet", 150), ("hrformer", 100), pytest.param("hrnet", 150, marks=pytest.mark.slow)]
)
@pytest.mark.slow
def test_tiny_net_learns_to_find_blobs(arch, steps):
    torch.manual_seed(0)
    size, k = 64, 2
    net = build_net(arch, size="tiny", num_landmarks=k)
    val_img, val_pts = _blob_batch(16, k, size, torch.Generator().manual_seed(123))
    val_target = gaussian_heatmaps(val_pts, size // 4, 1.0)

    def evaluate() -> tuple[float, float]:
        net.eval()
        with torch.no_grad():
            out = net(val_img)
        net.train()
        err = ((out["keypoints"] - val_pts).norm(dim=-1) * size).mean().item()
        return F.mse_loss(out["heatmaps"], val_target).item(), err

    loss0, err0 = evaluate()
    assert err0 > 8.0  # untrained: far off
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        img, pts = _blob_batch(8, k, size, gen)
        loss = F.mse_loss(net(img)["heatmaps"], gaussian_heatmaps(pts, size // 4, 1.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, err1 = evaluate()
    assert loss1 < 0.3 * loss0
    assert err1 < 0.25 * err0 and err1 < 2.0  # pixels of a 64-pixel image (heatmap cells are 4 pixels)


# ---------------------------------------------------------------------------------- harness models
@pytest.mark.parametrize("arch", ARCHS)
def test_registered_model_predict_and_checkpoint_round_trip(arch, tmp_path):
    assert arch in list_models()
    torch.manual_seed(0)
    model = create_model(arch, size="tiny")
    assert isinstance(model, LandmarkModel) and model.scheme == "wflw98" and model.name == arch
    images = torch.rand(2, 3, 256, 256)
    out = model.predict(images, [None, None], _frames(2))
    lm = out.landmarks_numpy()
    assert lm.shape == (2, 98, 2) and out.states == [None, None]
    assert out.heatmaps.shape == (2, 98, 64, 64) and out.heatmaps.min() >= 0
    # landmarks are the unit readout of the network times 256 (ImageNet normalisation applied inside)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        kp = model.net((images - mean) / std)["keypoints"]
    assert np.allclose(lm, kp.numpy() * 256, atol=1e-4)
    # one clip at a time gives the same numbers as a batch
    single = model.predict(images[1:], [None], _frames(1)).landmarks_numpy()
    assert np.allclose(single, lm[1:], atol=1e-4)

    path = model.save(tmp_path / f"{arch}.pt")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["arch"] == arch and ckpt["scheme"] == "wflw98" and ckpt["config"]["size"] == "tiny"
    again = create_model(arch, weights=str(path))
    assert again.net_config == model.net_config
    out2 = again.predict(images, [None, None], _frames(2))
    assert np.array_equal(out2.landmarks_numpy(), lm)
    assert torch.equal(out2.heatmaps, out.heatmaps)
    assert again.config()["weights"] == str(path)


def test_checkpoint_errors(tmp_path):
    model = create_model("unet", size="tiny", num_landmarks=68)
    assert model.scheme == "ibug68"
    path = model.save(tmp_path / "unet.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        create_model("unet", weights=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="holds a 'unet' network, not 'hrnet'"):
        create_model("hrnet", weights=str(path))
    with pytest.raises(ValueError, match="comes from the checkpoint"):
        create_model("unet", weights=str(path), size="base")
    with pytest.raises(ValueError, match="predicts 68 landmarks"):
        create_model("unet", weights=str(path), num_landmarks=98)
    with pytest.raises(TypeError, match="no field"):
        create_model("unet", size="tiny", colour="red")
    with pytest.raises(ValueError, match="scheme 'wflw98' has 98 landmarks"):
        create_model("unet", size="tiny", num_landmarks=68, scheme="wflw98")
    # tampered weights: the message names the missing, unexpected and mis-shaped keys
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt["state_dict"]
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["head.weight"] = torch.zeros(3, 8, 1, 1)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        create_model("unet", weights=str(tmp_path / "bad.pt"))
    msg = str(err.value)
    assert "missing keys (1): head.bias" in msg and "unexpected keys (1): extra.weight" in msg
    assert "head.weight: checkpoint (3, 8, 1, 1)" in msg
    torch.save(sd, tmp_path / "bare.pt")  # a bare state dict carries no configuration
    with pytest.raises(ValueError, match="bare state dict without a configuration"):
        create_model("unet", weights=str(tmp_path / "bare.pt"))
    torch.save({"arch": "unet", "state_dict": {}}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="state_dict"):
        create_model("unet", weights=str(tmp_path / "empty.pt"))


def test_hrnet_pretrained_backbone_from_local_timm_file(tmp_path):
    import timm

    torch.manual_seed(3)
    classifier = timm.create_model("hrnet_w18_small", pretrained=False)  # stands in for ImageNet weights
    path = tmp_path / "hrnet_w18_small.pth"
    torch.save(classifier.state_dict(), path)
    model = create_model("hrnet", size="small", pretrained_backbone=str(path))
    assert torch.equal(
        model.net.backbone.stage4[0].branches[3][0].conv1.weight, classifier.stage4[0].branches[3][0].conv1.weight
    )
    assert torch.equal(model.net.backbone.conv1.weight, classifier.conv1.weight)
    assert model.config()["pretrained_backbone"] == str(path)
    with pytest.raises(FileNotFoundError):
        create_model("hrnet", size="small", pretrained_backbone=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="does not match the hrnet_w18 backbone"):
        create_model("hrnet", size="base", pretrained_backbone=str(path))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        create_model("hrnet", size="tiny", pretrained_backbone=str(path))


# ------------------------------------------------------------------------------------------ ensemble
class BlobModel(LandmarkModel):
    """Analytic member: landmark 0 = brightness centroid of the image's left half, landmark 1 of the right
    half (channel 0). Equivariant to shifts, zooms and mirroring (with the left/right swap)."""

    def __init__(self, heatmaps: bool = False, offset: float = 0.0):
        self.with_heatmaps, self.offset = heatmaps, offset
        self.scheme = None
        self.calls = 0

    def predict(self, images, states, frames):
        self.calls += 1
        img = images[:, 0].double()
        n, h, w = img.shape
        ys, xs = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
        pts = []
        for half in (xs < (w - 1) / 2, xs > (w - 1) / 2):
            mass = (img * half).sum(dim=(1, 2))
            pts.append(
                torch.stack(
                    [(img * half * xs).sum(dim=(1, 2)) / mass, (img * half * ys).sum(dim=(1, 2)) / mass], dim=-1
                )
            )
        pts = torch.stack(pts, dim=1) + self.offset  # (N, 2, 2)
        hm = points_to_heatmaps(pts, 64, 1.5) if self.with_heatmaps else None
        return ModelOutput(pts.numpy(), [f"state{self.calls}"] * n, heatmaps=hm)


def _two_blob_images(centres: list[tuple[tuple[float, float], tuple[float, float]]]) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    imgs = torch.zeros(len(centres), 3, 256, 256)
    for i, pair in enumerate(centres):
        for cx, cy in pair:
            imgs[i] += torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 6.0**2))
    return imgs.clamp(max=1)


def test_tta_geometry_is_undone_exactly():
    gen = torch.Generator().manual_seed(0)
    # points that stay inside every augmented crop (zooming by 1.25 moves 216 to 238)
    pts = torch.rand(20, 3, 2, generator=gen, dtype=torch.float64) * 176 + 40
    for v in parse_tta(["flip", "shift:6", "scale:0.8,1.25"]):
        m = v.matrix()
        aug = torch.as_tensor(pts.numpy() @ m[:2, :2].T + m[:2, 2])
        back = heatmap_readout(warp_heatmaps(points_to_heatmaps(aug, 64, 1.5), m, 64)) * 256
        assert (back - pts).norm(dim=-1).max().item() < 0.25, v.name  # crop pixels
    # the flip variant mirrors pixel x to 255 - x exactly
    img = torch.rand(1, 3, 256, 256)
    assert torch.allclose(warp_images(img, parse_tta("flip")[1].matrix()), img.flip(-1), atol=1e-6)
    assert [v.name for v in parse_tta("flip,shift")] == [
        "identity",
        "flip",
        "shift(8,0)",
        "shift(-8,0)",
        "shift(0,8)",
        "shift(0,-8)",
    ]
    with pytest.raises(ValueError, match="unknown test-time augmentation 'twist'"):
        parse_tta(["twist"])
    with pytest.raises(ValueError, match="scales > 0"):
        parse_tta(["scale:0"])


@pytest.mark.parametrize("with_heatmaps", [False, True])
def test_flip_tta_uses_the_flip_permutation(with_heatmaps):
    member = BlobModel(heatmaps=with_heatmaps)
    # an asymmetric image and a mirror-symmetric one
    images = _two_blob_images([((90, 100), (180, 140)), ((100, 120), (155, 120))])
    ref = member.predict(images, [None] * 2, _frames(2)).landmarks_numpy()
    assert np.allclose(ref[1, 0, 0] + ref[1, 1, 0], 255, atol=1e-6)  # symmetric image: symmetric answer
    ens = OracleEnsemble([member], tta=["flip"], flip_index=[1, 0])
    out = ens.predict(images, [None] * 2, _frames(2))
    assert np.abs(out.landmarks_numpy() - ref).max() < 0.3  # crop pixels
    assert out.stats["ensemble_var"].shape == (2,) and out.stats["ensemble_var"].max() < 1e-6
    assert ens.last_landmark_var.shape == (2, 2)
    assert out.heatmaps.shape == (2, 2, 64, 64)
    assert np.allclose(out.heatmaps.sum(dim=(-2, -1)).numpy(), 1.0, atol=1e-5)
    # without the left/right relabelling the flipped votes land on the other blob
    wrong = OracleEnsemble([member], tta=["flip"], flip_index=[0, 1]).predict(images, [None] * 2, _frames(2))
    assert wrong.stats["ensemble_var"][0] > 100


def test_shift_and_scale_tta_map_predictions_back():
    member = BlobModel(heatmaps=True)
    images = _two_blob_images([((90, 100), (180, 140))])
    ref = member.predict(images, [None], _frames(1)).landmarks_numpy()
    ens = OracleEnsemble([member], tta=["shift", "scale"])
    out = ens.predict(images, [None], _frames(1))
    assert len(ens.variants) == 7 and ens.last_votes.shape == (7, 1, 2, 2)
    assert np.abs(ens.last_votes - ref[None]).max() < 0.3
    assert np.abs(out.landmarks_numpy() - ref).max() < 0.3
    # a shift variant's FrameInfo maps its crop to the same frame points as the original crop
    m = ens.variants[1].matrix()
    f_aug = ens._frames_for(_frames(1), m)[0]
    p = np.array([10.0, 20.0, 1.0])
    assert np.allclose(f_aug.crop_to_frame @ (m @ p), p[:2])


def test_ensemble_of_identical_members_equals_the_member(tmp_path):
    torch.manual_seed(0)
    member = create_model("unet", size="tiny")
    path = member.save(tmp_path / "unet.pt")
    twin = create_model("unet", weights=str(path))
    images = torch.rand(2, 3, 256, 256)
    ref = member.predict(images, [None] * 2, _frames(2))
    ens = make_oracle([member, twin], tta=[])
    out = ens.predict(images, [None] * 2, _frames(2))
    assert np.abs(out.landmarks_numpy() - ref.landmarks_numpy()).max() < 1e-3
    assert out.stats["ensemble_var"].max() < 1e-8
    # the average is the member's normalised map; maps without positive mass fall back to a Gaussian at the point
    has_mass = ref.heatmaps.sum(dim=(-2, -1)) > 0
    expected = torch.where(
        has_mass[..., None, None],
        normalise_heatmaps(ref.heatmaps),
        normalise_heatmaps(points_to_heatmaps(ref.landmarks, 64, 1.5)),
    )
    assert torch.allclose(out.heatmaps, expected, atol=1e-6)


def test_ensemble_mixes_point_and_heatmap_members_and_keeps_states():
    images = _two_blob_images([((90, 100), (180, 140))])
    a, b = BlobModel(heatmaps=True), BlobModel(heatmaps=False, offset=2.0)
    ens = OracleEnsemble([a, b], tta=["flip"], flip_index=[1, 0])
    out = ens.predict(images, [None], _frames(1))
    # two members x two variants = four votes; the states come back nested [member][variant]
    assert ens.last_votes.shape == (4, 1, 2, 2)
    assert out.states[0] == [["state1", "state2"], ["state1", "state2"]]
    ref = a.predict(images, [None], _frames(1)).landmarks_numpy()
    # member b adds (2, 2) px in the crop it sees: (2, 2) on the original, (-2, 2) once mirrored back, so the
    # x votes are 0, 0, 2, -2 (variance 2) and the y votes 0, 0, 2, 2 (variance 1)
    assert np.allclose(ens.last_landmark_var, 3.0, atol=1e-6)
    assert np.allclose(out.stats["ensemble_var"], 3.0, atol=1e-6)
    assert np.all(np.abs(out.landmarks_numpy() - ref) <= 2.1)
    # the states handed back reach the members at the next frame
    seen = []
    a.predict = (lambda f: lambda imgs, st, fr: (seen.append(list(st)), f(imgs, st, fr))[1])(a.predict)
    ens.predict(images, out.states, _frames(1))
    assert seen == [["state1"], ["state2"]]


def test_make_oracle_and_registry(tmp_path):
    torch.manual_seed(0)
    path = create_model("hrnet", size="tiny").save(tmp_path / "h.pt")
    ens = make_oracle([("hrnet", str(path)), ("unet", None, {"size": "tiny"}), "mean-shape"], tta=["flip"])
    assert ens.scheme == "wflw98" and len(ens.members) == 3
    out = ens.predict(torch.rand(1, 3, 256, 256), [None], _frames(1))
    assert out.landmarks_numpy().shape == (1, 98, 2) and np.isfinite(out.landmarks_numpy()).all()
    assert ens.config()["variants"] == ["identity", "flip"]
    reg = create_model("oracle-ensemble", members=f"hrnet={path},mean-shape", tta="flip,shift:4")
    assert isinstance(reg, OracleEnsemble) and len(reg.variants) == 6 and reg.name == "oracle-ensemble"
    with pytest.raises(ValueError, match="disagree on the landmark scheme"):
        make_oracle([("unet", None, {"size": "tiny"}), ("unet", None, {"size": "tiny", "num_landmarks": 68})])
    with pytest.raises(ValueError, match="at least one member"):
        OracleEnsemble([])
    with pytest.raises(ValueError, match="pass flip_index"):
        OracleEnsemble([BlobModel()], tta=["flip"]).predict(torch.zeros(1, 3, 256, 256), [None], _frames(1))


def test_flip_permutation_of_the_scheme_is_used_by_default():
    # a wflw98 member that predicts the (mirror-symmetric) template face for any image: the flipped vote,
    # mirrored back and relabelled with the scheme's permutation, must coincide with it
    template = np.asarray(__import__("wflwv.schemes", fromlist=["template_shape"]).template_shape("wflw98"))
    pts = template * 255  # symmetric about pixel 127.5

    class Fixed(LandmarkModel):
        scheme = "wflw98"

        def predict(self, images, states, frames):
            return ModelOutput(np.broadcast_to(pts, (len(frames), 98, 2)).copy(), [None] * len(frames))

    ens = OracleEnsemble([Fixed()], tta=["flip"])
    out = ens.predict(torch.zeros(1, 3, 256, 256), [None], _frames(1))
    assert np.abs(out.landmarks_numpy()[0] - pts).max() < 0.05
    assert out.stats["ensemble_var"][0] < 1e-12
    assert get_scheme("wflw98").flip != tuple(range(98))
