"""Checkpoint files: safe loading (``torch.load(weights_only=True)`` + an explicit allow-list), atomic saving.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

__all__ = [
    "CheckpointError",
    "SAFE_GLOBALS",
    "load_checkpoint",
    "save_checkpoint",
    "load_state_dict_strict",
    "load_ldeq_checkpoint",
    "make_checkpoint",
]

#: globals allowed when unpickling a checkpoint (beyond torch's weights_only defaults)
SAFE_GLOBALS: tuple = (argparse.Namespace,)


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (not a checkpoint, unsafe content, wrong keys or shapes)."""


def _strip_module_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):  # saved from DataParallel / DDP
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    extra_safe_globals: Iterable[Any] = ()) -> dict[str, Any]:
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
                "if you trust the file.") from exc
        raise CheckpointError(
            f"{p} is not a readable torch checkpoint ({type(exc).__name__}: {msg[:200]}); "
            "expected a file written by torch.save") from exc
    if _is_state_dict(obj):
        return {"format": "state_dict", "state_dict": _strip_module_prefix(obj)}
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a checkpoint dict with a 'state_dict' entry")
    ck = dict(obj)
    if "state_dict" not in ck:
        raise CheckpointError(
            f"{p} has no 'state_dict' entry (keys: {', '.join(map(str, ck)) or 'none'}); expected "
            "{'arch', 'config', 'state_dict', ...} (wflwv) or {'args', 'state_dict'} (released LDEQ)")
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
            f"argparse 'args' (released LDEQ); keys: {', '.join(map(str, ck))}")
    return ck


def make_checkpoint(arch: str, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], *,
                    scheme: str, **extra: Any) -> dict[str, Any]:
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
    from wflwv.io import atomic_path

    p = Path(path)
    with atomic_path(p, suffix=".tmp") as tmp:
        with open(tmp, "wb") as fh:
            torch.save(dict(obj), fh)
        if verify:
            load_checkpoint(tmp)
    return p


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that lists what does not fit.

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches (first 20 of each).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
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
            f"{source} does not fit {type(module).__name__}: " + "; ".join(parts)
            + ". Check that the model configuration (widths, number of landmarks) matches the checkpoint.")
    module.load_state_dict(dict(state_dict), strict=True)


def load_ldeq_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"):
    """Read an LDEQ checkpoint (released or toolkit format).

    Returns:
        ``(config: LDEQConfig, state_dict, info)`` where ``info`` holds ``format``, ``path``, and for toolkit
        checkpoints every entry except ``state_dict`` (e.g. ``scheme``, ``epoch``), for released ones ``args``
        as a dict.
    Raises:
        FileNotFoundError / CheckpointError as :func:`load_checkpoint`; CheckpointError for a checkpoint of
        another architecture or a bare state dict (which carries no configuration).
    """
    from wflwv.models.ldeq import LDEQConfig

    ck = load_checkpoint(path, map_location=map_location)
    fmt = ck["format"]
    if fmt == "released":
        try:
            cfg = LDEQConfig.from_released_args(ck["args"])
        except ValueError as exc:
            raise CheckpointError(f"{path}: cannot build an LDEQ configuration from its args: {exc}") from exc
        info = {"format": fmt, "path": str(path), "args": dict(vars(ck["args"]))}
    elif fmt == "toolkit":
        if ck["arch"] != "ldeq":
            raise CheckpointError(f"{path} is a checkpoint of architecture {ck['arch']!r}, not 'ldeq'")
        if not isinstance(ck.get("config"), Mapping):
            raise CheckpointError(f"{path}: toolkit checkpoint lacks a 'config' dict")
        try:
            cfg = LDEQConfig.from_dict(ck["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid LDEQ config: {exc}") from exc
        info = {k: v for k, v in ck.items() if k != "state_dict"}
        info["path"] = str(path)
    else:
        raise CheckpointError(
            f"{path} is a bare state dict without a configuration; wrap it as "
            "{'arch': 'ldeq', 'config': LDEQConfig(...).to_dict(), 'scheme': ..., 'state_dict': ...}")
    return cfg, ck["state_dict"], info
