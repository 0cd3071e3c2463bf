"""The model registry: the one place that maps names to model factories.

Built-in models are a table of lazy ``"module:attribute"`` references (:data:`BUILTIN_MODELS`: the sanity models,
the ensemble, dlib's predictor, and every architecture of :mod:`wflwv.models.archs`); a module is imported only
when its model is asked for. Your own models register with :func:`register_model`; installed packages register
theirs through the ``wflwv.models`` entry-point group (``name = "pkg.module:factory"``), also imported on use.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from wflwv.models.api import LandmarkModel
from wflwv.models.archs import ARCHS, resolve_ref

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "get_model_entry",
    "check_model_name",
    "ModelEntry",
    "BUILTIN_MODELS",
    "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "wflwv.models"

#: built-in models that are not trainable architectures (those come from :data:`wflwv.models.archs.ARCHS`)
BUILTIN_MODELS: dict[str, str] = {
    "oracle": "wflwv.models.sanity:OracleModel",
    "mean-shape": "wflwv.models.sanity:MeanShapeModel",
    "perturbed-oracle": "wflwv.models.sanity:PerturbedOracleModel",
    "oracle-ensemble": "wflwv.baselines.ensemble:oracle_ensemble_model",
    "dlib68": "wflwv.baselines.dlib68:Dlib68Model",
    "faceapi68": "wflwv.baselines.faceapi:FaceApi68Model",
    "faceapi68-tiny": "wflwv.baselines.faceapi:faceapi68_tiny_model",
}


def _builtin_refs() -> dict[str, str]:
    refs = {name: spec.model for name, spec in ARCHS.items() if spec.model is not None}
    refs.update(BUILTIN_MODELS)
    return refs


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


def register_model(name: str | Callable | None = None, *, description: str | None = None, overwrite: bool = False):
    """Register a model class or factory function under a name.

    Usable bare (``@register_model``: the name is the class's ``name`` attribute or the function's name with
    ``_`` -> ``-``) or with a name (``@register_model("my-model")``). The description defaults to the first
    line of the docstring. Registering a taken name raises unless ``overwrite=True``.
    """

    def deco(obj: Callable) -> Callable:
        key = name if isinstance(name, str) else (getattr(obj, "name", "") or obj.__name__.replace("_", "-"))
        if not key or not isinstance(key, str):
            raise ValueError(f"cannot register {obj!r}: give it a name, e.g. @register_model('my-model')")
        owner = _REGISTRY[key].source if key in _REGISTRY else ("builtin" if key in _builtin_refs() else None)
        same = (key in _REGISTRY and _REGISTRY[key].factory is obj) or _is_builtin_object(key, obj)
        if owner is not None and not same and not overwrite:
            raise ValueError(
                f"a model named {key!r} is already registered (by {owner}); pick another name or pass overwrite=True"
            )
        module = getattr(obj, "__module__", "") or ""
        source = "builtin" if module.startswith("wflwv.") else module
        _REGISTRY[key] = ModelEntry(key, obj, description or _first_line(obj), source)
        return obj

    if callable(name) and not isinstance(name, str):
        obj, name = name, None
        return deco(obj)
    return deco


def _is_builtin_object(key: str, obj: Any) -> bool:
    ref = _builtin_refs().get(key)
    return ref is not None and f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}" == ref


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
    """Names of the registered models (built-ins and plug-ins), without importing any of them."""
    names = set(_REGISTRY) | set(_builtin_refs())
    if include_entry_points:
        names |= set(_entry_points())
    return sorted(names)


def check_model_name(name: str) -> str:
    """Return ``name`` if a model of that name exists (nothing is imported), else raise a KeyError that lists the
    models and suggests close names."""
    names = list_models()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(
        f"unknown model {name!r}.{hint} Available models: {', '.join(names) or '(none)'}. "
        "Register your own with @wflwv.register_model or the 'wflwv.models' entry-point group."
    )


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``, importing a built-in or entry-point plug-in if that is where it lives."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    builtins = _builtin_refs()
    if name in builtins:
        obj = resolve_ref(builtins[name], f"model {name!r}")
        _REGISTRY[name] = ModelEntry(name, obj, _first_line(obj), "builtin")
        return _REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        return _load_entry_point(eps[name])
    check_model_name(name)  # raises with suggestions
    raise AssertionError("unreachable")


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
