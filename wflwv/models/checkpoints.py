"""Checkpoint files: safe loading (``torch.load(weights_only=True)`` + an explicit allow-list), atomic saving,
rebuilding a registered architecture from a checkpoint, and the weights shipped with the package.

Two formats are recognised by :func:`load_checkpoint`:

* **toolkit** (what wflwv's training writes and every wflwv model can read)::

      {"arch": "ldeq" | "unet" | ..., "config": {...plain types...}, "scheme": "wflw98", "state_dict": {...},
       ...any other plain entries (epoch, metrics, optimizer state)...}

* **released** LDEQ checkpoints: ``{"args": argparse.Namespace(...), "state_dict": {...}}``.

A bare state dict (a mapping of names to tensors) is accepted too and reported as format ``"state_dict"``.
Only ``argparse.Namespace`` is allowed beyond what ``weights_only=True`` accepts by default (tensors, dicts,
lists, tuples, strings, numbers, ...); anything else (custom classes, numpy arrays) is refused with an error
that names the offending global.

Every error names the file and says what it is instead (:func:`inspect_file`: missing, empty, truncated, a NumPy
array, a safetensors file, a plain pickle, a text or HTML page, ...). torch's own messages are never passed on:
they suggest ``weights_only=False``, which would run whatever code the file holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import struct
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from wflwv.io import atomic_path
from wflwv.models.archs import config_from_dict, get_arch

__all__ = [
    "CheckpointError",
    "inspect_file",
    "torch_load",
    "SAFE_GLOBALS",
    "NO_WEIGHTS",
    "load_checkpoint",
    "save_checkpoint",
    "make_checkpoint",
    "load_state_dict_strict",
    "load_arch_checkpoint",
    "load_net",
    "resolve_default_weights",
    "seeded_init",
    "export_for_shipping",
]

#: the ``weights`` value that asks for a randomly initialised network instead of the shipped weights
NO_WEIGHTS = "none"

#: globals allowed when unpickling a checkpoint (beyond torch's weights_only defaults)
SAFE_GLOBALS: tuple = (argparse.Namespace,)


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (not a checkpoint, unsafe content, wrong keys or shapes)."""


def _strip_module_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):  # saved from DataParallel / DDP
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


#: the first bytes of a checkpoint in torch's legacy (non-zip) format: a pickled magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def inspect_file(path: str | os.PathLike) -> tuple[str, str]:
    """What a file holds, judged from its first bytes: ``(kind, description)``.

    Kinds: ``missing``, ``directory``, ``empty``, ``torch`` (a torch.save zip archive), ``torch-legacy`` (torch's
    older pickle format), ``truncated`` (a zip archive cut short), ``zip`` (another zip archive), ``npz``, ``npy``,
    ``safetensors``, ``pickle`` (a plain Python pickle), ``html``, ``text``, ``gzip``, ``tar``, ``unknown``.
    """
    p = Path(path)
    if not p.exists():
        return "missing", "the file does not exist"
    if p.is_dir():
        return "directory", "a directory, not a file"
    size = p.stat().st_size
    if size == 0:
        return "empty", "an empty file (0 bytes)"
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "truncated", (
                f"a truncated zip archive ({size} bytes, its end is missing: a copy or download that did not finish)"
            )
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch", "a torch checkpoint (zip archive)"
        if names and all(n.endswith(".npy") for n in names):
            return "npz", "a NumPy .npz archive"
        return "zip", f"a zip archive without a torch checkpoint in it (holds {', '.join(names[:3]) or 'nothing'})"
    if head.startswith(_LEGACY_MAGIC):
        return "torch-legacy", "a torch checkpoint in the older non-zip format"
    if head.startswith(b"\x93NUMPY"):
        return "npy", "a NumPy .npy array file"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{ ") and (n := struct.unpack("<Q", head[:8])[0]) < size:
        try:
            with open(p, "rb") as fh:
                fh.seek(8)
                json.loads(fh.read(n))
            return "safetensors", "a safetensors file"
        except (ValueError, OSError):
            pass
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle", "a plain Python pickle, not a torch checkpoint"
    if head.startswith(b"\x1f\x8b"):
        return "gzip", "a gzip-compressed file (unpack it first)"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar", "a tar archive (unpack it first)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        if re.match(r"\s*(<!doctype html|<html)", text, re.IGNORECASE):
            return "html", "an HTML page (a download that returned a web page instead of the file?)"
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return "text", f"a text file (it starts with {first!r})"
    return "unknown", f"a file of unrecognised content (first bytes {head[:8].hex(' ')})"


def torch_load(
    path: str | os.PathLike,
    *,
    what: str = "checkpoint",
    map_location: str | torch.device = "cpu",
    extra_safe_globals: Iterable[Any] = (),
) -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`SAFE_GLOBALS`, and errors that name the file and say
    what it is (never torch's own message, which suggests ``weights_only=False``).

    Args:
        what: what the file should be, for messages (e.g. ``"checkpoint"``, ``"timm HRNet ImageNet checkpoint"``).
    Raises:
        FileNotFoundError: no such file.
        CheckpointError: anything else: empty, truncated, not a torch file (says what it is), or a pickle that
            needs globals outside the allow-list (names them).
    """
    p = Path(path)
    kind, desc = inspect_file(p)
    expected = f"expected a {what} written by torch.save"
    if kind == "missing":
        raise FileNotFoundError(f"{what} not found: {p} (check the path; weights are not downloaded automatically)")
    if kind not in ("torch", "torch-legacy"):
        raise CheckpointError(f"{p} is not a readable torch checkpoint: it is {desc}; {expected}")
    allowed = list(SAFE_GLOBALS) + list(extra_safe_globals)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with an explanation of our own
        msg = str(exc)
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", msg)))
        if found or "Weights only load failed" in msg:
            what_needed = ", ".join(found) if found else "objects of a type outside the allow-list"
            names = ", ".join(g.__module__ + "." + g.__qualname__ for g in allowed)
            raise CheckpointError(
                f"{p}: refusing to load this {what}: unpickling it needs {what_needed}, outside the allow-list "
                f"(tensors, plain Python types and {names}); loading such a file can run arbitrary code. Re-save "
                "it with plain types only (e.g. the configuration as a dict, arrays as tensors)."
            ) from None
        if isinstance(exc, (EOFError, OSError)) or "EOF" in msg or "truncated" in msg.lower():
            raise CheckpointError(
                f"{p} is not a readable torch checkpoint: it is {desc}, truncated ({p.stat().st_size} bytes); {expected}"
            ) from None
        raise CheckpointError(
            f"{p} is not a readable torch checkpoint: it is {desc}, but damaged or written by an incompatible "
            f"version of torch ({type(exc).__name__}); {expected}"
        ) from None


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", extra_safe_globals: Iterable[Any] = ()
) -> dict[str, Any]:
    """Load a checkpoint safely and say which format it is.

    Args:
        path: the file.
        map_location: where tensors go (default CPU).
        extra_safe_globals: more classes to allow while unpickling (only if you trust them).
    Returns:
        the checkpoint dict with an added key ``"format"``: ``"toolkit"``, ``"released"`` or ``"state_dict"``
        (for a bare state dict the result is ``{"format": "state_dict", "state_dict": ...}``). A ``"module."``
        prefix on every key of the state dict is removed.
    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a torch checkpoint (says what it is), truncated, needs globals outside the allow-list,
            or lacks a state dict.
    """
    p = Path(path)
    obj = torch_load(p, map_location=map_location, extra_safe_globals=extra_safe_globals)
    if _is_state_dict(obj):
        return {"format": "state_dict", "state_dict": _strip_module_prefix(obj)}
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a checkpoint dict with a 'state_dict' entry")
    ck = dict(obj)
    if "state_dict" not in ck:
        raise CheckpointError(
            f"{p} has no 'state_dict' entry (keys: {', '.join(map(str, ck)) or 'none'}); expected "
            "{'arch', 'config', 'state_dict', ...} (wflwv) or {'args', 'state_dict'} (released LDEQ)"
        )
    if not _is_state_dict(ck["state_dict"]):
        raise CheckpointError(f"{p}: 'state_dict' is not a mapping of parameter names to tensors")
    ck["state_dict"] = _strip_module_prefix(ck["state_dict"])
    if "arch" in ck:
        ck["format"] = "toolkit"
    elif isinstance(ck.get("args"), argparse.Namespace):
        ck["format"] = "released"
    else:
        raise CheckpointError(
            f"{p}: cannot tell the checkpoint format: it has a state dict but neither 'arch' (wflwv) nor an "
            f"argparse 'args' (released LDEQ); keys: {', '.join(map(str, ck))}"
        )
    return ck


def make_checkpoint(
    arch: str, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], *, scheme: str, **extra: Any
) -> dict[str, Any]:
    """Assemble a toolkit checkpoint dict (tensors are detached and moved to CPU)."""
    return {
        "arch": str(arch),
        "config": dict(config),
        "scheme": str(scheme),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **extra,
    }


def save_checkpoint(path: str | os.PathLike, obj: Mapping[str, Any], *, verify: bool = True) -> Path:
    """Write a checkpoint atomically: temp file in the same directory, fsync, ``os.replace``.

    Args:
        path: destination (parent directories are created).
        obj: the checkpoint dict (normally from :func:`make_checkpoint`).
        verify: reload the temp file with ``weights_only=True`` before replacing, so a checkpoint that
            :func:`load_checkpoint` could not read is never written (e.g. one holding numpy arrays or objects).
    Returns:
        the path written.
    """
    p = Path(path)
    with atomic_path(p, suffix=".tmp") as tmp:
        with open(tmp, "wb") as fh:
            torch.save(dict(obj), fh)
        if verify:
            load_checkpoint(tmp)
    return p


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that lists what does not fit.

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches (first 20 of each).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:

        def fmt(items):
            return ", ".join(items[:20]) + (f" ... (+{len(items) - 20} more)" if len(items) > 20 else "")

        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {fmt(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {fmt(shapes)}")
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: "
            + "; ".join(parts)
            + ". Check that the model configuration (widths, number of landmarks) matches the checkpoint."
        )
    module.load_state_dict(dict(state_dict), strict=True)


def load_arch_checkpoint(path: str | os.PathLike, arch: str | None = None, *, map_location: str | torch.device = "cpu"):
    """Read a checkpoint of a registered architecture (toolkit format, or a released LDEQ checkpoint).

    Args:
        arch: if given, the architecture the checkpoint must hold.
    Returns:
        ``(arch, config, state_dict, info)``: the config dataclass rebuilt, and ``info`` with ``format``, ``path``,
        ``scheme`` and every other entry but the state dict (for released checkpoints ``args`` as a dict).
    Raises:
        FileNotFoundError / CheckpointError as :func:`load_checkpoint`; CheckpointError for a checkpoint of another
        architecture, a bare state dict (it carries no configuration) or an invalid configuration.
    """
    ck = load_checkpoint(path, map_location=map_location)
    fmt = ck["format"]
    if fmt == "released":
        found = "ldeq"
        if arch not in (None, found):
            raise CheckpointError(f"{path} is a released LDEQ checkpoint, not a {arch!r} one")
        try:
            config = get_arch(found).config_cls.from_released_args(ck["args"])
        except ValueError as exc:
            raise CheckpointError(f"{path}: cannot build an LDEQ configuration from its args: {exc}") from exc
        info = {"format": fmt, "path": str(path), "args": dict(vars(ck["args"])), "scheme": None}
        return found, config, ck["state_dict"], info
    if fmt != "toolkit":
        what = (
            f"{{'arch': {arch!r}, 'config': ..., 'scheme': ..., 'state_dict': ...}}" if arch else "a toolkit checkpoint"
        )
        raise CheckpointError(f"{path} is a bare state dict without a configuration; wrap it as {what}")
    found = ck["arch"]
    if arch is not None and found != arch:
        raise CheckpointError(
            f"{path} holds a {found!r} network, not {arch!r}: load it with create_model({found!r}, weights=...)"
        )
    if not isinstance(ck.get("config"), Mapping):
        raise CheckpointError(f"{path}: toolkit checkpoint lacks a 'config' dict")
    try:
        config = config_from_dict(found, dict(ck["config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid {found} config (written by another version of wflwv?): {exc}") from exc
    info = {k: v for k, v in ck.items() if k != "state_dict"}
    info["path"] = str(path)
    info.setdefault("scheme", None)
    return found, config, ck["state_dict"], info


def load_net(path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu"):
    """Rebuild the network of a checkpoint, load its weights strictly, move it to ``device`` in eval mode.

    Returns:
        ``(net, info)`` (``info`` as :func:`load_arch_checkpoint`).
    """
    found, config, state_dict, info = load_arch_checkpoint(path, arch)
    net = get_arch(found).net_cls(config)
    load_state_dict_strict(net, state_dict, source=str(path))
    return net.to(device).eval(), {**info, "arch": found}


def resolve_default_weights(arch: str, weights: str | os.PathLike | None, custom_architecture: bool) -> str | None:
    """What a model factory should load: the given path; the shipped file when none was given and the
    architecture is the default one; or None (random initialisation) for ``weights="none"`` or a custom
    architecture."""
    if weights is not None:
        return None if str(weights).lower() == NO_WEIGHTS else str(weights)
    if custom_architecture:
        return None
    path = get_arch(arch).shipped_weights()
    if path is None:
        return None
    _notice_shipped(arch, path)
    return str(path)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build a network inside this block for a random initialisation that depends on ``seed`` only: torch's CPU
    generator is seeded, and the caller's random state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


_NOTICED: set[str] = set()


def _notice_shipped(arch: str, path: Path) -> None:
    """Say once per process and architecture that the shipped demo weights are used."""
    if arch in _NOTICED or multiprocessing.parent_process() is not None:  # workers: the parent said it already
        return
    _NOTICED.add(arch)
    tqdm.write(  # clears and redraws any progress bar, so the notice gets a line of its own
        f"{arch}: no weights given, using the shipped demo weights {path.name} (iBUG-68, trained on the demo's still "
        f"images; see {path.parent / 'MODEL_CARD.md'}). Pass weights=PATH for your own, weights=none for random.",
        file=sys.stderr,
    )


def export_for_shipping(checkpoint: str | os.PathLike, arch: str, dest: str | os.PathLike | None = None) -> Path:
    """Write the slim copy of a `wflwv train` checkpoint that the package ships (no optimizer or RNG state).

    Keeps ``arch``, ``config``, ``scheme``, ``state_dict``, ``epoch``, ``step``, ``metrics`` and ``wflwv_version``.
    """
    ck = load_checkpoint(checkpoint)
    if ck.get("arch") != arch:
        raise CheckpointError(f"{checkpoint}: a checkpoint of {ck.get('arch')!r}, not {arch!r}")
    keep = {
        k: ck[k]
        for k in ("arch", "config", "scheme", "state_dict", "epoch", "step", "metrics", "wflwv_version")
        if k in ck
    }
    keep["state_dict"] = {k: v.detach().clone().contiguous() for k, v in keep["state_dict"].items()}
    target = get_arch(arch).weights
    if dest is None and target is None:
        raise CheckpointError(f"architecture {arch!r} has no shipped weights file; pass dest=PATH")
    return save_checkpoint(Path(dest) if dest else target, keep)
