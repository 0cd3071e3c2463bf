"""The oracle's sub-pixel test-time augmentation and its robust, spread-weighted combination of point votes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wflwv.baselines.ensemble import OracleEnsemble, jitter_variants, parse_tta, warp_images
from wflwv.baselines.robust import combine_members, hampel_weights, robust_location
from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput


def _frames(n):
    return [FrameInfo("v", i, n, 25.0, np.eye(3)[:2]) for i in range(n)]


# ------------------------------------------------------------------------------------------ robust combination
def test_equal_spreads_give_the_plain_mean():
    rng = np.random.default_rng(0)
    locs = rng.normal(size=(5, 7, 2))
    loc, w = combine_members(locs, np.full((5, 7), 0.3))
    assert np.allclose(loc, locs.mean(axis=0), atol=1e-12)
    assert np.allclose(w, 0.2)


def test_an_outlier_member_barely_moves_the_result():
    rng = np.random.default_rng(1)
    good = rng.normal(scale=0.2, size=(4, 10, 2)) + 50.0
    bad = good[:1] + 30.0  # one member 30 px away on every landmark
    spreads = np.full((5, 10), 0.05)
    loc, w = combine_members(np.concatenate([good, bad]), spreads)
    assert np.abs(loc - good.mean(axis=0)).max() < 1e-9  # rejected outright (beyond Hampel's c)
    assert np.all(w[4] == 0)
    # the plain mean would have moved by 6 px
    assert np.abs(np.concatenate([good, bad]).mean(axis=0) - good.mean(axis=0)).max() > 5
    # a moderately far member is down-weighted, not ignored, and moves the result by less than its share
    mid = good[:1] + np.array([1.5, 0.0])
    loc2, w2 = combine_members(np.concatenate([good, mid]), spreads)
    assert 0 < w2[4].mean() < w2[:4].mean()
    assert np.abs(loc2 - good.mean(axis=0))[..., 0].max() < 1.5 / 5


def test_weights_follow_the_spreads():
    locs = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[0.5, 0.2]]])  # three close members, one landmark
    spreads = np.array([[0.01], [0.04], [0.09]])
    loc, w = combine_members(locs, spreads, spread_floor=1e-6)
    inv = 1 / (spreads[:, 0] + 1e-6)
    assert np.allclose(w[:, 0], inv / inv.sum())
    assert w[0, 0] > w[1, 0] > w[2, 0]
    assert np.allclose(loc[0], (inv[:, None] * locs[:, 0]).sum(0) / inv.sum())


def test_hampel_weights_shape_and_checks():
    z = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 20.0])
    w = hampel_weights(z)
    assert np.allclose(w[:3], 1.0) and np.isclose(w[3], 2 / 3) and np.isclose(w[4], 0.5)
    assert np.isclose(w[5], 2 / 6 * 2 / 4) and w[6] == 0 and w[7] == 0
    assert np.all(np.diff(w) <= 0)
    with pytest.raises(ValueError, match="Hampel"):
        hampel_weights(z, 3, 2, 1)


def test_robust_location_ignores_a_wild_vote_and_reports_the_spread():
    rng = np.random.default_rng(2)
    votes = rng.normal(scale=0.1, size=(31, 3, 2)) + 10.0
    wild = votes.copy()
    wild[0] = 40.0
    loc, spread = robust_location(wild)
    assert np.abs(loc - votes[1:].mean(axis=0)).max() < 0.02
    assert np.all(spread < 0.03)  # ~0.01 = 0.1^2 per coordinate; the wild vote is not counted
    one, zero = robust_location(votes[:1])
    assert np.allclose(one, votes[0]) and np.all(zero == 0)
    with pytest.raises(ValueError, match="spreads"):
        combine_members(votes[:2], -np.ones((2, 3)))


# ------------------------------------------------------------------------------------------ sub-pixel TTA
def test_jitter_variants_are_deterministic_spread_and_undone_exactly():
    vs = jitter_variants(16, shift=0.5, scale=0.02, rotate=1.0, flip=True)
    assert [v.name for v in vs] == [v.name for v in jitter_variants(16, 0.5, 0.02, 1.0, True)]
    sx = np.array([v.shift[0] for v in vs])
    assert np.all(np.abs(sx) <= 0.5) and sx.std() > 0.2 and len(np.unique(np.round(sx, 6))) == 16
    assert all(abs(v.rotate) <= 1.0 and abs(np.log(v.scale)) <= 0.02 for v in vs)
    assert [v.flip for v in vs[:4]] == [False, True, False, True]
    # the matrix of a rotated, zoomed, shifted variant moves a point as its parts say
    v = parse_tta("rotate:90")[1]
    m = v.matrix()
    assert np.allclose(m[:2, :2] @ [1.0, 0.0], [0.0, 1.0])  # +90 deg: x axis -> y axis (clockwise on screen)
    assert np.allclose(m @ [127.5, 127.5, 1.0], [127.5, 127.5, 1.0])  # about the crop centre
    # warping an image by a variant and mapping a point by its matrix agree
    img = torch.zeros(1, 1, 256, 256)
    img[0, 0, 100, 60] = 1.0
    w = jitter_variants(5, shift=3.0, scale=0.1, rotate=10.0)[4]
    out = warp_images(img, w.matrix())
    ys, xs = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    mass = out[0, 0].sum()
    centre = np.array([(out[0, 0] * xs).sum() / mass, (out[0, 0] * ys).sum() / mass])
    assert np.allclose(centre, (w.matrix() @ [60.0, 100.0, 1.0])[:2], atol=0.05)


def test_parse_tta_jitter_and_rotate_syntax():
    names = [v.name for v in parse_tta("flip,rotate:2,jitter:3/shift=0.5/scale=0/rotate=0")]
    assert names[:4] == ["identity", "flip", "rotate(2)", "rotate(-2)"] and len(names) == 7
    assert all(v.scale == 1.0 and v.rotate == 0.0 for v in parse_tta("jitter:3/shift=0.5/scale=0/rotate=0")[1:])
    assert sum(v.flip for v in parse_tta("jitter:8/flip")) == 4
    for bad in ("jitter", "jitter:0", "jitter:4/speed=2", "rotate:x", "jitter:4/shift=-1"):
        with pytest.raises(ValueError, match="bad test-time augmentation"):
            parse_tta(bad)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'wobble'"):
        parse_tta("wobble")


class Staircase(LandmarkModel):
    """A point member quantised to whole pixels: a bright blob's centroid rounded, as dlib rounds its output."""

    scheme = None

    def predict(self, images, states, frames):
        img = images[:, 0].double()
        ys, xs = torch.meshgrid(
            torch.arange(256.0, dtype=torch.float64), torch.arange(256.0, dtype=torch.float64), indexing="ij"
        )
        mass = img.sum(dim=(1, 2))
        cx = (img * xs).sum(dim=(1, 2)) / mass
        cy = (img * ys).sum(dim=(1, 2)) / mass
        pts = torch.stack([cx, cy], dim=-1).round()[:, None].repeat(1, 2, 1)
        return ModelOutput(pts.numpy(), [None] * len(frames))


def _blob(cx, cy):
    ys, xs = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 8.0**2))[None, None].repeat(1, 3, 1, 1)


@pytest.mark.parametrize("combine", ["mean", "robust", "heatmap"])
def test_jitter_makes_a_quantised_member_sub_pixel(combine):
    member = Staircase()
    xs = np.linspace(120.0, 121.0, 11)
    images = torch.cat([_blob(x, 128.0) for x in xs])
    plain = member.predict(images, [None] * 11, _frames(11)).landmarks_numpy()[:, 0, 0]
    ens = OracleEnsemble([member], tta="jitter:32/shift=1/scale=0/rotate=0", flip_index=[0, 1], combine=combine)
    out = ens.predict(images, [None] * 11, _frames(11)).landmarks_numpy()[:, 0, 0]
    assert np.abs(plain - xs).max() > 0.4  # whole pixels
    tol = 0.25 if combine == "heatmap" else 0.08
    assert np.abs(out - xs).max() < tol, (combine, out - xs)
    if combine == "robust":
        assert ens.last_member_weights.shape == (1, 11, 2)


def test_robust_ensemble_rejects_a_broken_member():
    class Off(Staircase):
        def predict(self, images, states, frames):
            out = super().predict(images, states, frames)
            return ModelOutput(out.landmarks_numpy() + 40.0, out.states)

    images = torch.cat([_blob(100.3, 90.7), _blob(140.6, 150.2)])
    members = [Staircase(), Staircase(), Staircase(), Off()]
    ens = OracleEnsemble(members, tta="jitter:16/scale=0/rotate=0", flip_index=[0, 1], combine="robust")
    out = ens.predict(images, [None] * 2, _frames(2)).landmarks_numpy()
    assert np.abs(out[:, 0] - [[100.3, 90.7], [140.6, 150.2]]).max() < 0.15
    assert np.all(ens.last_member_weights[3] == 0)
    assert ens.config()["combine"] == "robust"
    with pytest.raises(ValueError, match="unknown combination"):
        OracleEnsemble(members, combine="vote")


def test_fixed_member_weights_ignore_the_spreads_but_still_reject_outliers():
    locs = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[0.5, 0.0]], [[60.0, 0.0]]])
    spreads = np.array([[0.01], [1.0], [0.2], [0.01]])
    loc, w = combine_members(locs, spreads, min_scale=3.0, prior=np.ones(4))
    assert np.allclose(w[:3, 0], 1 / 3) and w[3, 0] == 0
    assert np.allclose(loc[0], [0.5, 0.0])
    with pytest.raises(ValueError, match="member weights"):
        combine_members(locs, spreads, prior=np.ones(3))


def test_ensemble_member_weight_options():
    members = [Staircase(), Staircase()]
    with pytest.raises(ValueError, match="member_weights"):
        OracleEnsemble(members, combine="robust", member_weights="loud")
    with pytest.raises(ValueError, match="2 non-negative numbers"):
        OracleEnsemble(members, combine="robust", member_weights=[1.0])
    ens = OracleEnsemble(members, tta="jitter:4", flip_index=[0, 1], combine="robust", member_weights=[3.0, 1.0])
    ens.predict(_blob(100.0, 100.0), [None], _frames(1))
    assert np.allclose(ens.last_member_weights[:, 0, 0], [0.75, 0.25])
    assert ens.config()["member_weights"] == [3.0, 1.0]


def test_the_default_oracle_is_well_formed():
    from wflwv.baselines.ensemble import COMBINE_MODES
    from wflwv.build.config import DEFAULT_COMBINE, DEFAULT_MEMBERS, DEFAULT_TTA, BuildConfig
    from wflwv.models.registry import list_models

    variants = parse_tta(DEFAULT_TTA)
    assert len(variants) == 17 and sum(v.flip for v in variants) == 8
    assert max(abs(v.shift[0]) for v in variants) <= 2.0 and max(abs(v.rotate) for v in variants) <= 2.0
    assert DEFAULT_COMBINE in COMBINE_MODES
    assert set(DEFAULT_MEMBERS) <= set(list_models())
    cfg = BuildConfig(out="x", local=["y"])
    assert (tuple(cfg.members), cfg.tta, cfg.combine) == (DEFAULT_MEMBERS, DEFAULT_TTA, DEFAULT_COMBINE)
    # the combination is part of what the labels depend on (a changed rule relabels)
    assert BuildConfig(out="x", local=["y"], combine="heatmap").label_key() != cfg.label_key()
