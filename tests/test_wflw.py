"""WFLW annotation reader/writer, subsets, file discovery and the cropping dataset."""

from __future__ import annotations

import numpy as np
import pytest

from wflwv.protocol.crop import crop_matrix, to_crop, warp_crop
from wflwv.protocol.wflw import (
    ATTRIBUTES,
    SUBSETS,
    WFLWFormatError,
    WFLWSample,
    find_annotation_file,
    find_images_dir,
    format_annotation_line,
    load_wflw,
    parse_annotation_line,
    read_annotations,
    select_subset,
    subset_mask,
    subset_masks,
    write_annotations,
)
from wflwv.schemes import WFLW98_TO_IBUG68
from wflwv.testing import make_synthetic_wflw
from wflwv.training.augment import AugmentConfig
from wflwv.training.data import WFLWStillDataset


def _random_samples(n: int, seed: int = 0) -> list[WFLWSample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lm = rng.uniform(0, 1000, size=(98, 2))
        lo, hi = lm.min(0), lm.max(0)
        box = np.round(np.concatenate([lo, hi]))  # WFLW boxes are integers
        flags = tuple(int(v) for v in rng.integers(0, 2, size=6))
        out.append(WFLWSample(lm, box, flags, f"{i}--Folder/img_{i}.jpg"))
    return out


def test_round_trip_writer_reader(tmp_path):
    samples = _random_samples(7)
    path = write_annotations(tmp_path / "list_98pt_rect_attr_test.txt", samples)
    back = read_annotations(path)
    assert len(back) == len(samples)
    for a, b in zip(samples, back):
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=5e-7, rtol=0)
        np.testing.assert_array_equal(b.box, a.box)
        assert b.attributes == a.attributes
        assert b.image_path == a.image_path
    # the text of one line: 196 + 4 + 6 + 1 fields, integral box written without decimals
    line = format_annotation_line(samples[0]).split()
    assert len(line) == 207 and line[-1] == samples[0].image_path
    assert all("." not in t for t in line[196:200])
    assert parse_annotation_line(" ".join(line)).attributes == samples[0].attributes


def test_reader_skips_blank_lines_and_names_bad_lines(tmp_path):
    good = format_annotation_line(_random_samples(1)[0])
    tokens = good.split()

    def write(lines):
        p = tmp_path / "ann.txt"
        p.write_text("\n".join(lines) + "\n")
        return p

    assert len(read_annotations(write([good, "", good]))) == 2

    with pytest.raises(WFLWFormatError, match=r"ann\.txt, line 3: expected 207 .* found 206"):
        read_annotations(write([good, "", " ".join(tokens[:-2] + tokens[-1:])]))
    bad = list(tokens)
    bad[5] = "abc"
    with pytest.raises(WFLWFormatError, match=r"line 2: field 6 \('abc'\) is not a number"):
        read_annotations(write([good, " ".join(bad)]))
    bad = list(tokens)
    bad[200 + 4] = "2"  # occlusion flag
    with pytest.raises(WFLWFormatError, match=r"line 1: attribute flag 'occlusion' .* must be 0 or 1"):
        read_annotations(write([" ".join(bad)]))
    bad = list(tokens)
    bad[10] = "nan"
    with pytest.raises(WFLWFormatError, match="not a finite number"):
        read_annotations(write([" ".join(bad)]))
    bad = list(tokens)
    bad[196], bad[198] = "500", "100"  # x_min > x_max
    with pytest.raises(WFLWFormatError, match="x_max < x_min"):
        read_annotations(write([" ".join(bad)]))
    with pytest.raises(WFLWFormatError, match="contain spaces"):
        read_annotations(write([good + " extra"]))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_annotations(tmp_path / "missing.txt")


def test_writer_rejects_paths_with_whitespace_and_bad_samples():
    s = _random_samples(1)[0]
    s.image_path = "a folder/img.jpg"
    with pytest.raises(ValueError, match="whitespace"):
        format_annotation_line(s)
    with pytest.raises(ValueError, match="shape"):
        WFLWSample(np.zeros((70, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="0/1"):
        WFLWSample(np.zeros((98, 2)), np.zeros(4), (0, 0, 3, 0, 0, 0))


def test_subsets_follow_the_attribute_flags():
    samples = _random_samples(40, seed=3)
    masks = subset_masks(samples)
    assert tuple(masks) == SUBSETS
    assert masks["full"].all()
    for j, name in enumerate(ATTRIBUTES):
        expected = np.array([s.attributes[j] for s in samples], dtype=bool)
        np.testing.assert_array_equal(masks[name], expected)
        assert 0 < expected.sum() < len(samples)
        chosen = select_subset(samples, name)
        assert len(chosen) == expected.sum() and all(s.in_subset(name) for s in chosen)
    assert samples[0].flags == dict(zip(ATTRIBUTES, map(bool, samples[0].attributes)))
    with pytest.raises(ValueError, match="unknown WFLW subset 'largepose'"):
        subset_mask(samples, "largepose")


def test_annotation_and_image_discovery(tmp_path):
    samples = _random_samples(2)
    # the usual layout
    usual = tmp_path / "usual"
    ann = usual / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_train.txt"
    write_annotations(ann, samples)
    (usual / "WFLW_images" / "0--Folder").mkdir(parents=True)
    (usual / "WFLW_images" / samples[0].image_path).write_bytes(b"x")
    assert find_annotation_file(usual, "train") == ann
    assert find_images_dir(usual, samples) == usual / "WFLW_images"
    # everything directly in the folder
    flat = tmp_path / "flat"
    write_annotations(flat / "list_98pt_rect_attr_test.txt", samples)
    (flat / "0--Folder").mkdir()
    (flat / samples[0].image_path).write_bytes(b"x")
    got, images = load_wflw(flat, "test")
    assert len(got) == 2 and images == flat
    # nothing there: the message lists every place looked in
    with pytest.raises(FileNotFoundError) as err:
        find_annotation_file(flat, "train")
    msg = str(err.value)
    assert "list_98pt_rect_attr_train.txt" in msg
    assert str(flat / "WFLW_annotations" / "list_98pt_rect_attr_train_test") in msg and str(flat) in msg
    with pytest.raises(FileNotFoundError, match="WFLW_images"):
        find_images_dir(tmp_path / "usual", [WFLWSample(samples[0].landmarks, samples[0].box, image_path="no.jpg")])
    with pytest.raises(ValueError, match="unknown WFLW split"):
        find_annotation_file(usual, "val")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_wflw(tmp_path_factory.mktemp("wflw"), n_train=6, n_test=4, seed=5)


def test_dataset_crops_like_the_evaluation_protocol(synthetic):
    ds = WFLWStillDataset(synthetic, "test")
    assert len(ds) == 4 and set(ds.subset_masks()) == set(SUBSETS)
    item = ds[1]
    assert item["image"].shape == (3, 256, 256) and item["keypoints"].shape == (98, 2)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    s = ds.samples[1]
    m = crop_matrix(s.box)
    np.testing.assert_allclose(item["keypoints"].numpy(), to_crop(s.landmarks, m) / 256, atol=1e-6)
    bgr = warp_crop(ds.load_image(1), m)
    np.testing.assert_allclose(item["image"].numpy(), bgr[:, :, ::-1].transpose(2, 0, 1) / 255.0, atol=1e-6)
    # iBUG-68 targets are the mapped WFLW points
    ds68 = WFLWStillDataset(synthetic, "test", scheme="ibug68")
    np.testing.assert_allclose(ds68[1]["keypoints"].numpy(), item["keypoints"].numpy()[list(WFLW98_TO_IBUG68)])


def test_augmented_crops_keep_drawn_pupils_under_their_keypoints(synthetic):
    """The synthetic faces have dark pupil dots at landmarks 96 / 97: after augmentation they must still be there."""
    cfg = AugmentConfig.geometric_only(rotation_prob=1.0, flip_prob=0.5, scale_jitter=0.2, translate=0.05)
    ds = WFLWStillDataset(synthetic, "train", augment=cfg, seed=2)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            crop, pts, _ = ds.crop(i)
            gray = crop.astype(float).mean(axis=2)
            for k in (96, 97):
                x, y = np.round(pts[k]).astype(int)
                assert gray[y - 1 : y + 2, x - 1 : x + 2].min() < 80, (epoch, i, k)
            # pupil 96 is always the one on the image's left (flip relabels)
            assert pts[96, 0] < pts[97, 0]
    # augmentation is deterministic per (seed, epoch, index) and changes with the epoch
    ds.set_epoch(1)
    a, b = ds[3], ds[3]
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    ds.set_epoch(2)
    assert not np.allclose(ds[3]["keypoints"].numpy(), a["keypoints"].numpy())


def test_68_point_lines_round_trip_and_feed_an_ibug68_dataset(tmp_path):
    import cv2

    rng = np.random.default_rng(3)
    samples = []
    for i in range(3):
        lm = rng.uniform(20, 80, size=(68, 2))
        samples.append(WFLWSample(lm, np.concatenate([lm.min(0), lm.max(0)]), (0,) * 6, f"img_{i}.png"))
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), np.full((100, 100, 3), 128, np.uint8))
    path = write_annotations(tmp_path / "list_98pt_rect_attr_train.txt", samples)
    assert len(format_annotation_line(samples[0]).split()) == 136 + 4 + 6 + 1
    back = read_annotations(path)
    assert back[0].scheme.name == "ibug68"
    np.testing.assert_allclose(back[1].landmarks, samples[1].landmarks, atol=5e-7)
    ds = WFLWStillDataset(tmp_path, "train", scheme="ibug68")
    assert ds.landmarks(2).shape == (68, 2)
    with pytest.raises(ValueError, match="cannot convert ibug68"):
        WFLWStillDataset(tmp_path, "train", scheme="wflw98").landmarks(0)
    # one scheme per file
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(format_annotation_line(samples[0]) + "\n" + format_annotation_line(_random_samples(1)[0]) + "\n")
    with pytest.raises(WFLWFormatError, match="line 2: 98 landmarks where line 1 has 68"):
        read_annotations(mixed)
