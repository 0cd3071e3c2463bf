"""``key=value`` settings: the one parser behind ``--model-arg``, ``--set``, ``--aug``, ``--train-opt`` and the
parameters of ``--filter``, and the construction of configuration dataclasses from such settings.

Two readings of a value:

* untyped (:func:`parse_scalar`): ``true``/``false``/``none`` and Python literals (``2``, ``0.5``, ``[1, 2]``,
  ``'text'``); anything else stays a string. Used where the receiver's types are not known (model factories).
* typed (:func:`parse_value`): converted to a dataclass field's annotation (bool, int, float, str, ``X | None``,
  ``Literal``, tuples and lists, nested dataclasses as JSON). Used by :func:`make_config` / :func:`apply_overrides`.

Every error is a ``ValueError`` naming the key and what was expected.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "split_assignment",
    "parse_scalar",
    "parse_assignments",
    "parse_value",
    "make_config",
    "apply_overrides",
    "config_from_dict",
]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"none", "null", "~"}


def split_assignment(item: str, what: str = "setting") -> tuple[str, str]:
    """``"key=value"`` -> ``(key, raw value)``; the key keeps its spelling (callers normalise ``-`` if they wish).

    Raises:
        ValueError: no ``=``, or an empty key.
    """
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"{what} {item!r} must look like key=value")
    key, _, raw = item.partition("=")
    if not key.strip():
        raise ValueError(f"{what} {item!r} has an empty key")
    return key.strip(), raw.strip()


def parse_scalar(raw: str) -> Any:
    """Untyped reading of a value: booleans, ``none``, Python literals (numbers, lists, quoted strings), else the text."""
    low = raw.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in _NONE:
        return None
    value = _literal(raw)
    return value if isinstance(value, (int, float, list, tuple, str)) else raw


def parse_assignments(items: Iterable[str], what: str = "setting") -> dict[str, Any]:
    """Parse ``key=value`` strings with :func:`parse_scalar`; ``-`` in keys becomes ``_`` (``rwr-iters=2``).

    Raises:
        ValueError: malformed item or a key that is not a valid Python name.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, raw = split_assignment(item, what)
        key = key.replace("-", "_")
        if not key.isidentifier():
            raise ValueError(f"{what} {item!r}: {key!r} is not a valid argument name")
        out[key] = parse_scalar(raw)
    return out


def _split_items(text: str) -> list[str]:
    text = text.strip()
    if text[:1] in "([" and text[-1:] in ")]":
        text = text[1:-1]
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_value(text: str, tp: Any, key: str = "value") -> Any:
    """Convert command-line text to type ``tp`` (a resolved annotation).

    Handles bool (true/false/yes/no/1/0), int, float, str, ``X | None`` ("none"/"null"), ``Literal``,
    ``tuple[...]`` / ``list[...]`` (comma separated, brackets optional) and nested dataclasses (a JSON
    object). Anything else is read as a Python literal.

    Raises:
        ValueError: the text cannot be converted (the message names ``key`` and the expected type).
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    low = text.strip().lower()
    try:
        if tp is Any:
            return _literal(text)
        if origin in (typing.Union, types.UnionType):
            if type(None) in args and low in _NONE:
                return None
            errors = []
            for a in args:
                if a is type(None):
                    continue
                try:
                    return parse_value(text, a, key)
                except ValueError as exc:
                    errors.append(str(exc))
            raise ValueError("; ".join(errors))
        if origin is typing.Literal:
            for a in args:
                if str(a) == text.strip() or (isinstance(a, str) and a.lower() == low):
                    return a
            raise ValueError(f"must be one of {', '.join(map(str, args))}")
        if tp is bool:
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("must be true or false")
        if tp is int:
            for base in (10, 0):
                try:
                    return int(text, base)
                except ValueError:
                    pass
            v = float(text)  # "1e3"
            if not v.is_integer():
                raise ValueError("must be a whole number")
            return int(v)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        if origin in (tuple, list):
            items = _split_items(text)
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                if len(items) != len(args):
                    raise ValueError(f"needs {len(args)} comma-separated items, got {len(items)}")
                return tuple(parse_value(t, a, key) for t, a in zip(items, args))
            item_tp = args[0] if args else Any
            vals = [parse_value(t, item_tp, key) for t in items]
            return tuple(vals) if origin is tuple else vals
        if dataclasses.is_dataclass(tp):
            return config_from_dict(tp, json.loads(text))
        return _literal(text)
    except ValueError as exc:
        name = getattr(tp, "__name__", None) or str(tp)
        raise ValueError(f"cannot set {key}={text!r}: expected {name} ({exc})") from None


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def make_config(cls, overrides: Sequence[str] = (), **base):
    """Construct dataclass ``cls`` from keyword defaults ``base`` and ``"key=value"`` overrides.

    Unlike :func:`apply_overrides`, the values reach the constructor, so a ``__post_init__`` that fills
    fields from others (e.g. ``size=tiny`` presets) sees them. Dotted keys set fields of nested configs.

    Raises:
        ValueError: malformed override, unknown key (the valid keys are listed), unconvertible or invalid value.
    """
    types_ = _field_types(cls)
    kwargs = dict(base)
    nested = []
    for item in overrides:
        key, raw = split_assignment(item, "override")
        parts = key.split(".")
        if parts[0] not in types_:
            raise ValueError(f"unknown config key {key!r} for {cls.__name__}; valid keys: {', '.join(sorted(types_))}")
        if len(parts) == 1:
            kwargs[key] = parse_value(raw, types_[key], key)
        else:
            nested.append((parts, raw, key))
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid {cls.__name__} settings: {exc}") from exc
    for parts, raw, key in nested:
        config = _set_path(config, parts, raw, key)
    return config


def apply_overrides(config, overrides: Sequence[str]):
    """Return a copy of dataclass instance ``config`` with ``"key=value"`` overrides applied.

    The copy is made with :func:`dataclasses.replace`, which passes every current field to the constructor;
    to build a config whose ``__post_init__`` derives fields from others, use :func:`make_config`.

    Keys may be dotted for nested dataclass fields (``"solver.max_iters=5"``). Values are converted to the
    field's annotated type with :func:`parse_value`.

    Raises:
        ValueError: malformed override, unknown key (the valid keys are listed) or unconvertible value.
    """
    for item in overrides:
        key, raw = split_assignment(item, "override")
        config = _set_path(config, key.split("."), raw, key)
    return config


def _set_path(obj, parts: list[str], raw: str, full_key: str):
    types_ = _field_types(type(obj))
    name = parts[0]
    if name not in types_:
        valid = ", ".join(sorted(types_))
        raise ValueError(f"unknown config key {full_key!r} for {type(obj).__name__}; valid keys: {valid}")
    if len(parts) == 1:
        value = parse_value(raw, types_[name], full_key)
    else:
        child = getattr(obj, name)
        if not dataclasses.is_dataclass(child):
            raise ValueError(f"config key {full_key!r}: {name} is not a nested config, so it has no sub-keys")
        value = _set_path(child, parts[1:], raw, full_key)
    try:
        return dataclasses.replace(obj, **{name: value})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid value for {full_key}: {exc}") from exc


def config_from_dict(cls, data: dict):
    """Rebuild a config dataclass from ``dataclasses.asdict`` output (nested dataclasses, lists -> tuples).

    Raises:
        ValueError: ``data`` has keys ``cls`` does not know (e.g. a checkpoint from another version).
    """
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(types_))}"
        )
    kwargs = {k: _coerce(v, types_[k]) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(value, tp):
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            if a is not type(None):
                try:
                    return _coerce(value, a)
                except (TypeError, ValueError):
                    continue
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if args and not (len(args) == 2 and args[1] is Ellipsis) and len(args) == len(value):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return tuple(_coerce(v, item) for v in value)
    return value
