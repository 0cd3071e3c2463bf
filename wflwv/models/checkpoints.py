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
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from wflwv.io import atomic_path
from wflwv.models.archs import config_from_dict, get_arch

__all__ = [
    "CheckpointError",
    "SAFE_GLOBALS",
    "NO_WEIGHTS",
    "load_checkpoint",
    "save_checkpoint",
    "make_checkpoint",
    "load_state_dict_strict",
    "load_arch_checkpoint",
    "load_net",
    "resolve_default_weights",
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
        CheckpointError: not a torch checkpoint, needs globals outside the allow-list, or lacks a state dict.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p} (check the path; weights are not downloaded automatically)")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory, not a checkpoint file")
    allowed = list(SAFE_GLOBALS) + list(extra_safe_globals)
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with an explanation
        msg = str(exc)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        if m or "Weights only load failed" in msg:
            what = m.group(1) if m else "an object type outside the allow-list"
            raise CheckpointError(
                f"{p}: refusing to unpickle {what}: checkpoints may only contain tensors, plain Python types and "
                f"argparse.Namespace (allowed: {', '.join(g.__module__ + '.' + g.__qualname__ for g in allowed)}). "
                "Re-save the checkpoint with plain types (e.g. config as a dict), or pass extra_safe_globals=[...] "
                "if you trust the file."
            ) from exc
        raise CheckpointError(
            f"{p} is not a readable torch checkpoint ({type(exc).__name__}: {msg[:200]}); "
            "expected a file written by torch.save"
        ) from exc
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


_NOTICED: set[str] = set()


def _notice_shipped(arch: str, path: Path) -> None:
    """Say once per process and architecture that the shipped demo weights are used."""
    if arch in _NOTICED:
        return
    _NOTICED.add(arch)
    print(
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
