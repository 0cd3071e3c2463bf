"""The model registry: the one place that maps names to model factories.

Built-in models register with :func:`register_model` when :mod:`wflwv.models` is imported. Third-party
packages register theirs through the ``wflwv.models`` entry-point group (``name = "pkg.module:factory"``);
an entry point is imported only when that model is asked for (or when ``wflwv models`` lists descriptions).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

from wflwv.models.api import LandmarkModel

__all__ = ["register_model", "create_model", "list_models", "get_model_entry", "ModelEntry", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "wflwv.models"


@dataclass
class ModelEntry:
    """A registered model: its factory (a class or function returning a :class:`LandmarkModel`)."""

    name: str
    factory: Callable[..., LandmarkModel]
    description: str
    source: str  # "builtin" or the distribution / module that provided it


_REGISTRY: dict[str, ModelEntry] = {}


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def register_model(
    name: str | Callable | None = None, *, description: str | None = None, overwrite: bool = False
):
    """Register a model class or factory function under a name.

    Usable bare (``@register_model``: the name is the class's ``name`` attribute or the function's name with
    ``_`` -> ``-``) or with a name (``@register_model("my-model")``). The description defaults to the first
    line of the docstring. Registering a taken name raises unless ``overwrite=True``.
    """

    def deco(obj: Callable) -> Callable:
        key = name if isinstance(name, str) else (getattr(obj, "name", "") or obj.__name__.replace("_", "-"))
        if not key or not isinstance(key, str):
            raise ValueError(f"cannot register {obj!r}: give it a name, e.g. @register_model('my-model')")
        if key in _REGISTRY and not overwrite and _REGISTRY[key].factory is not obj:
            raise ValueError(
                f"a model named {key!r} is already registered (by {_REGISTRY[key].source}); "
                "pick another name or pass overwrite=True"
            )
        module = getattr(obj, "__module__", "") or ""
        source = "builtin" if module.startswith("wflwv.") else module
        _REGISTRY[key] = ModelEntry(key, obj, description or _first_line(obj), source)
        return obj

    if callable(name) and not isinstance(name, str):
        obj, name = name, None
        return deco(obj)
    return deco


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(ep: metadata.EntryPoint) -> ModelEntry:
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plug-in must not take the toolkit down
        raise RuntimeError(
            f"model {ep.name!r} is declared by the entry point {ep.value!r} (group {ENTRY_POINT_GROUP!r}) "
            f"but could not be imported: {type(exc).__name__}: {exc}"
        ) from exc
    entry = _REGISTRY.get(ep.name)
    if entry is None or entry.factory is not obj:
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value.split(":")[0]
        entry = ModelEntry(ep.name, obj, _first_line(obj), dist)
        _REGISTRY[ep.name] = entry
    return entry


def list_models(include_entry_points: bool = True) -> list[str]:
    """Names of the registered models (built-ins and, without importing them, entry-point plug-ins)."""
    names = set(_REGISTRY)
    if include_entry_points:
        names |= set(_entry_points())
    return sorted(names)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``, importing an entry-point plug-in if that is where it lives."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        return _load_entry_point(eps[name])
    raise KeyError(
        f"unknown model {name!r}. Available models: {', '.join(list_models()) or '(none)'}. "
        "Register your own with @wflwv.register_model or the 'wflwv.models' entry-point group."
    )


def create_model(name: str, **kwargs: Any) -> LandmarkModel:
    """Create a registered model by name, passing keyword arguments to its factory.

    Raises:
        KeyError: for an unknown name (the message lists the available ones).
        TypeError: when the factory does not accept a keyword (the message lists the accepted ones).
    """
    entry = get_model_entry(name)
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        accepted = [p for p in sig.parameters if p != "self"]
        unknown = [k for k in kwargs if k not in sig.parameters]
        if unknown:
            raise TypeError(
                f"model {name!r} does not accept argument(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted) or '(none)'}"
            )
    model = entry.factory(**kwargs)
    if not hasattr(model, "predict"):
        raise TypeError(f"the factory of model {name!r} returned {type(model).__name__}, not a LandmarkModel")
    try:
        model.name = name
    except AttributeError:
        pass
    return model
