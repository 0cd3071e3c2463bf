"""face-api's 68-point landmark nets in PyTorch: TF.js weight decoding, the network, node reference, harness model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wflwv.baselines.faceapi import (
    FACEAPI_FILES,
    FACEAPI_PACKAGE,
    MANIFESTS,
    FaceApi68Model,
    FaceApiError,
    FaceLandmark68Net,
    _tf_same_pad,
    build_faceapi_net,
    faceapi_postprocess,
    faceapi_preprocess,
    fetch_faceapi_weights,
    input_window,
    load_faceapi_net,
    read_tfjs_weights,
)

REFERENCE = Path(__file__).parent / "data" / "faceapi" / "reference.npz"


def _write_manifest(folder: Path, stem: str, weights: dict[str, np.ndarray], quantise: tuple[str, ...] = ()) -> Path:
    """A TF.js weights manifest + one shard; the weights named in ``quantise`` are stored as uint8 (scale, min)."""
    entries, chunks = [], []
    for name, value in weights.items():
        value = np.asarray(value, dtype=np.float32)
        entry = {"name": name, "shape": list(value.shape), "dtype": "float32"}
        if name in quantise:
            lo, hi = float(value.min()), float(value.max())
            scale = (hi - lo) / 255 or 1.0
            q = np.round((value - lo) / scale).astype(np.uint8)
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo}
            chunks.append(q.tobytes())
        else:
            chunks.append(value.astype("<f4").tobytes())
        entries.append(entry)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.bin").write_bytes(b"".join(chunks))
    manifest = folder / f"{stem}-weights_manifest.json"
    manifest.write_text(json.dumps([{"paths": [f"{stem}.bin"], "weights": entries}]))
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# TF.js manifest decoding


def test_manifest_float32_and_quantised_values(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    q = np.array([0, 1, 128, 255], dtype=np.uint8)
    half = np.array([1.5, -2.25, 65504.0], dtype=np.float16)
    u16 = np.array([0, 40000], dtype=np.uint16)
    entries = [
        {"name": "a", "shape": [2, 3], "dtype": "float32"},
        {
            "name": "b",
            "shape": [2, 2],
            "dtype": "float32",
            "quantization": {"dtype": "uint8", "scale": 0.01, "min": -0.5},
        },
        {"name": "c", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {
            "name": "d",
            "shape": [2],
            "dtype": "float32",
            "quantization": {"dtype": "uint16", "scale": 0.001, "min": 1.0},
        },
        {"name": "e", "shape": [], "dtype": "int32"},
    ]
    data = a.astype("<f4").tobytes() + q.tobytes() + half.astype("<f2").tobytes() + u16.astype("<u2").tobytes()
    data += np.array([-7], dtype="<i4").tobytes()
    # the group's bytes split over two shards, in the middle of a weight
    (tmp_path / "w1.bin").write_bytes(data[:10])
    (tmp_path / "w2.bin").write_bytes(data[10:])
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps([{"paths": ["w1.bin", "w2.bin"], "weights": entries}]))

    w = read_tfjs_weights(manifest)
    assert list(w) == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(w["a"], a)
    assert w["b"].dtype == np.float32 and w["b"].shape == (2, 2)
    np.testing.assert_array_equal(w["b"].ravel(), (q.astype(np.float64) * 0.01 - 0.5).astype(np.float32))
    np.testing.assert_array_equal(w["c"], half.astype(np.float32))
    np.testing.assert_allclose(w["d"], [1.0, 41.0], rtol=1e-6)
    assert w["e"].dtype == np.int32 and w["e"].shape == () and int(w["e"]) == -7

    # the model.json form holds the same list under "weightsManifest"
    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps({"modelTopology": {}, "weightsManifest": json.loads(manifest.read_text())}))
    np.testing.assert_array_equal(read_tfjs_weights(model_json)["b"], w["b"])


def _one_weight_manifest(tmp_path: Path, entry: dict, data: bytes) -> Path:
    (tmp_path / "s.bin").write_bytes(data)
    manifest = tmp_path / "bad-weights_manifest.json"
    manifest.write_text(json.dumps([{"paths": ["s.bin"], "weights": [entry]}]))
    return manifest


def test_manifest_errors_name_the_file(tmp_path):
    entry = {"name": "w", "shape": [4], "dtype": "float32"}
    # truncated shard
    m = _one_weight_manifest(tmp_path, entry, b"\0" * 12)
    with pytest.raises(FaceApiError, match=r"bad-weights_manifest\.json.*'w' needs bytes 0\.\.16.*hold only 12"):
        read_tfjs_weights(m)
    # bytes left over
    m = _one_weight_manifest(tmp_path, entry, b"\0" * 20)
    with pytest.raises(FaceApiError, match=r"bad-weights_manifest\.json.*hold 20 bytes but the weights use 16"):
        read_tfjs_weights(m)
    # unknown dtype
    m = _one_weight_manifest(tmp_path, dict(entry, dtype="float64"), b"\0" * 32)
    with pytest.raises(FaceApiError, match=r"bad-weights_manifest\.json.*unknown or unsupported dtype 'float64'"):
        read_tfjs_weights(m)
    # unknown quantisation dtype, and uint8 quantisation without its scale
    m = _one_weight_manifest(tmp_path, dict(entry, quantization={"dtype": "int4", "scale": 1, "min": 0}), b"\0" * 4)
    with pytest.raises(FaceApiError, match=r"bad-weights_manifest\.json.*unknown quantization dtype 'int4'"):
        read_tfjs_weights(m)
    m = _one_weight_manifest(tmp_path, dict(entry, quantization={"dtype": "uint8", "min": 0}), b"\0" * 4)
    with pytest.raises(FaceApiError, match=r"needs a finite number 'scale'"):
        read_tfjs_weights(m)
    # malformed shape
    m = _one_weight_manifest(tmp_path, dict(entry, shape=[2, -2]), b"")
    with pytest.raises(FaceApiError, match=r"'shape' must be a list of non-negative integers"):
        read_tfjs_weights(m)
    # missing shard, missing manifest, not JSON
    m = _one_weight_manifest(tmp_path, entry, b"\0" * 16)
    (tmp_path / "s.bin").unlink()
    with pytest.raises(FaceApiError, match=r"bad-weights_manifest\.json: weight shard .*s\.bin is missing"):
        read_tfjs_weights(m)
    with pytest.raises(FaceApiError, match=r"nothing\.json: weights manifest not found"):
        read_tfjs_weights(tmp_path / "nothing.json")
    m.write_text("[{")
    with pytest.raises(FaceApiError, match=r"bad-weights_manifest\.json: not a valid JSON"):
        read_tfjs_weights(m)


# ---------------------------------------------------------------------------------------------------------------
# the network


def test_tf_same_padding_is_asymmetric_for_stride_2():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    p = _tf_same_pad(x, 3, 2)  # TF: output 2, total padding 1, all of it after
    assert p.shape == (1, 1, 5, 5) and torch.equal(p[0, 0, :4, :4], x[0, 0]) and p[0, 0, 4].abs().sum() == 0
    assert _tf_same_pad(x, 3, 1).shape == (1, 1, 6, 6)  # stride 1: one on each side
    assert _tf_same_pad(torch.zeros(1, 1, 5, 5), 3, 2).shape == (1, 1, 7, 7)  # odd side: one on each side


@pytest.mark.parametrize("variant,params,blocks", [("full", 356840, 4), ("tiny", 77224, 3)])
def test_network_shapes_and_layout_round_trip(variant, params, blocks):
    net = build_faceapi_net(variant, seed=0)
    # one parameter per stored uint8 weight: the shards are 356840 and 77224 bytes
    assert (
        sum(p.numel() for p in net.parameters())
        == params
        == FACEAPI_FILES[MANIFESTS[variant].replace("-weights_manifest.json", ".bin")][0]
    )
    x = torch.rand(3, 3, 112, 112) * 255
    with torch.no_grad():
        out = net(x)
        assert out.shape == (3, 136) and torch.isfinite(out).all()
        # the TF-layout export loads back into an identical network
        state = net.tfjs_state()
        assert state["dense0/conv0/filters"].shape == (3, 3, 3, 32)
        assert state[f"dense{blocks - 1}/conv1/depthwise_filter"].shape[3] == 1
        assert state["fc/weights"].shape == (net.fc.in_features, 136)
        twin = FaceLandmark68Net(variant).load_tfjs(state).eval()
        assert torch.equal(twin(x), out)
        # each sample is computed independently of the others
        np.testing.assert_allclose(net(x[1:2]).numpy(), out[1:2].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="unknown face-api landmark variant"):
        FaceLandmark68Net("huge")


def test_load_tfjs_refuses_wrong_weights():
    state = build_faceapi_net("tiny", seed=1).tfjs_state()
    with pytest.raises(FaceApiError, match=r"src: not face-api's full landmark model: missing \['dense0/conv3/bias'"):
        FaceLandmark68Net("full").load_tfjs(state, "src")
    bad = dict(state)
    bad["fc/weights"] = bad["fc/weights"][:, :10]
    with pytest.raises(FaceApiError, match=r"src: weight 'fc/weights' has shape \[128, 10\]"):
        FaceLandmark68Net("tiny").load_tfjs(bad, "src")


def test_faceapi_pre_and_postprocess_on_a_non_square_box():
    img = np.random.default_rng(0).integers(0, 256, (30, 17, 3)).astype(np.uint8)
    x = faceapi_preprocess(img)
    assert x.shape == (1, 3, 112, 112) and x.dtype == torch.float32
    # 13 columns of padding: 6 before, 7 after (JavaScript rounds 6.5 up for the part after)
    padded = faceapi_preprocess(np.pad(img, ((0, 0), (6, 7), (0, 0))).astype(np.uint8))
    assert torch.equal(x, padded)
    # legacy resize: output pixel i samples input i * 30 / 112 (no half-pixel shift): pixel 0 is input pixel 0
    assert torch.equal(x[0, :, 0, 0], padded[0, :, 0, 0]) and x[0, 0, 0, 0] == 0  # the padding
    assert np.allclose(x[0, :, 0, 23].numpy(), img[0, 0], atol=0.6 * 255)  # column 23 samples padded column ~6.2
    # back-mapping: the padded square's relative (0.5, 0.5) is the image centre, its edges are the box's
    out = np.tile([0.5, 0.5], 68)
    np.testing.assert_allclose(faceapi_postprocess(out, 30, 17), np.tile([8.5, 15.0], (68, 1)))
    pad = (30 - 17) / 2 / 30
    edges = np.tile([pad, 0.0], 68)
    np.testing.assert_allclose(faceapi_postprocess(edges, 30, 17), np.zeros((68, 2)), atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# the harness model


def _random_weights_folder(folder: Path, variant: str, seed: int = 0) -> Path:
    stem = MANIFESTS[variant].replace("-weights_manifest.json", "")
    _write_manifest(folder, stem, build_faceapi_net(variant, seed=seed).tfjs_state())
    return folder


def test_harness_model_contract_and_coordinates(tmp_path):
    folder = _random_weights_folder(tmp_path / "w", "tiny")
    model = FaceApi68Model(weights=str(folder), variant="tiny")
    assert model.scheme == "ibug68"
    assert model.config() == {"weights": str(folder / MANIFESTS["tiny"]), "variant": "tiny"}
    imgs = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    out = model.predict(imgs, [None] * 3, [None] * 3)
    lm = out.landmarks_numpy()
    assert lm.shape == (3, 68, 2) and np.isfinite(lm).all() and out.states == [None] * 3 and out.stats == {}
    alone = model.predict(imgs[2:3], [None], [None]).landmarks_numpy()
    np.testing.assert_allclose(alone[0], lm[2], atol=1e-3)
    # the same crop twice gives the same numbers
    np.testing.assert_array_equal(model.predict(imgs, [None] * 3, [None] * 3).landmarks_numpy(), lm)

    # coordinates: an output of relative (0, 0) / (1, 1) / (0.5, 0.5) is the window's corners / centre
    with torch.no_grad():
        model.net.fc.weight.zero_()
        model.net.fc.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0] + [0.5] * 132))
    lm = model.predict(imgs[:1], [None], [None]).landmarks_numpy()[0]
    left, top, side = input_window("tiny")
    np.testing.assert_allclose(lm[0], [left - 0.5, top - 0.5], atol=1e-4)
    np.testing.assert_allclose(lm[1], [left + side - 0.5, top + side - 0.5], atol=1e-4)
    np.testing.assert_allclose(lm[2], [left - 0.5 + side / 2, top - 0.5 + side / 2], atol=1e-4)


def test_input_windows_lie_in_the_crop():
    for variant in ("full", "tiny"):
        left, top, side = input_window(variant)
        assert 0 <= left and 0 <= top and left + side <= 256 and top + side <= 256 and side > 180
        assert abs((left - 0.5 + side / 2) - 127.5) <= 0.5  # horizontally centred
        l2, t2, s2 = input_window(variant, 128)  # a smaller crop scales the window
        assert abs(s2 - side / 2) <= 0.5 and abs(l2 - left / 2) <= 1 and abs(t2 - top / 2) <= 1


def test_fetch_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FaceApiError, match=r"npm is not installed.*npm pack @vladmandic/face-api@1\.7\.15"):
        fetch_faceapi_weights(dest=tmp_path / "dest", log=lambda m: None)
    src = tmp_path / "copy" / "package" / "model"
    src.mkdir(parents=True)
    with pytest.raises(FaceApiError, match=r"no face_landmark_68_model-weights_manifest\.json found"):
        fetch_faceapi_weights(from_dir=tmp_path / "copy", dest=tmp_path / "dest")
    for name in FACEAPI_FILES:
        (src / name).write_bytes(b"not the weights")
    with pytest.raises(FaceApiError, match=r"15 bytes \(expected \d+\).*not the file of @vladmandic/face-api@1\.7\.15"):
        fetch_faceapi_weights(from_dir=tmp_path / "copy", dest=tmp_path / "dest")
    with pytest.raises(FaceApiError, match=r"not a folder"):
        fetch_faceapi_weights(from_dir=tmp_path / "nowhere", dest=tmp_path / "dest")


# ---------------------------------------------------------------------------------------------------------------
# against face-api itself (real weights, fetched with npm)


@pytest.fixture(scope="module")
def faceapi_weights(tmp_path_factory) -> Path:
    if shutil.which("npm") is None:
        pytest.skip(f"npm is not installed: cannot fetch {FACEAPI_PACKAGE}'s weights")
    cache = tmp_path_factory.mktemp("faceapi_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WFLWV_CACHE", str(cache))
        folder = fetch_faceapi_weights(log=lambda m: None)
    assert folder == cache / "faceapi"
    return folder


@pytest.mark.slow
def test_matches_faceapi_in_node(faceapi_weights, tmp_path):
    ref = np.load(REFERENCE)
    x = torch.from_numpy(ref["inputs"]).permute(0, 3, 1, 2).float()
    for variant in ("full", "tiny"):
        net = load_faceapi_net(variant, faceapi_weights)
        with torch.no_grad():
            out = net(x).numpy()
            extra = net(faceapi_preprocess(ref["extra"])).numpy()
        # raw outputs: relative coordinates of the 112 x 112 input
        assert np.abs(out - ref[variant]).max() < 1e-4, variant
        # a 151 x 98 box through face-api's pad-to-square, resize and back-mapping: image pixels
        points = faceapi_postprocess(extra[0], *ref["extra"].shape[:2])
        assert np.abs(points - ref[f"{variant}_extra"]).max() < 1e-3, variant
    # a manual copy of the files is taken as is
    again = fetch_faceapi_weights(from_dir=faceapi_weights, dest=tmp_path / "copy")
    assert sorted(p.name for p in again.iterdir()) == sorted(FACEAPI_FILES)


@pytest.mark.slow
def test_harness_model_on_a_real_face(faceapi_weights):
    ref = np.load(REFERENCE)
    faces = torch.from_numpy(ref["inputs"][:4]).permute(0, 3, 1, 2).float() / 255
    # the reference faces are 112 px crops of side 1.15 x the landmark box: scaled to 256 the box spans ~223 px,
    # about the protocol's 213
    crops = torch.nn.functional.interpolate(faces, size=(256, 256), mode="bilinear", align_corners=False)
    for variant in ("full", "tiny"):
        model = FaceApi68Model(weights=str(faceapi_weights), variant=variant)
        lm = model.predict(crops, [None] * 4, [None] * 4).landmarks_numpy()
        assert lm.shape == (4, 68, 2) and np.isfinite(lm).all()
        assert (lm > -0.5).all() and (lm < 255.5).all()
        # a face: eyes (36-47) above the nose tip (30) above the mouth (48-67) above the chin (8); left-right order
        assert (lm[:, 36:48, 1].mean(1) < lm[:, 30, 1]).all() and (lm[:, 30, 1] < lm[:, 48:68, 1].mean(1)).all()
        assert (lm[:, 48:68, 1].mean(1) < lm[:, 8, 1]).all()
        assert (
            (lm[:, 36, 0] < lm[:, 39, 0]).all()
            and (lm[:, 39, 0] < lm[:, 42, 0]).all()
            and (lm[:, 42, 0] < lm[:, 45, 0]).all()
        )
        # roughly centred: the face box spans most of the crop
        width = lm[:, :, 0].max(1) - lm[:, :, 0].min(1)
        assert (width > 150).all() and (width < 256).all()


def test_registered_with_random_weights_on_request():
    from wflwv.models import create_model, list_models

    assert "faceapi68" in list_models()
    a = create_model("faceapi68", weights="none", variant="tiny", seed=3)
    b = create_model("faceapi68", weights="none", variant="tiny", seed=3)
    assert a.config() == {"weights": None, "variant": "tiny", "seed": 3}
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
