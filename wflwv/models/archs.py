"""The one architecture registry: name -> config dataclass, network class, harness model factory, default training
loss and shipped weights.

Built-in architectures are listed as ``"module:attribute"`` strings and imported only when used, so importing the
registry costs nothing and a missing optional dependency only matters to whoever asks for that architecture. The
model registry (:mod:`wflwv.models.registry`), training (:mod:`wflwv.training`), checkpoints
(:mod:`wflwv.models.checkpoints`) and the oracle all look architectures up here.

Contract of every architecture: ``net_cls(config)`` builds the network; the network takes ImageNet-normalised RGB
``(N, 3, S, S)`` and returns a dict with ``"keypoints"`` ``(N, K, 2)`` in [0, 1] crop units (and ``"heatmaps"``
``(N, K, h, w)`` for heatmap networks); the config dataclass has a ``num_landmarks`` field.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wflwv import config as _cfg

__all__ = [
    "ArchSpec",
    "Arch",
    "ARCHS",
    "WEIGHTS_DIR",
    "register_arch",
    "get_arch",
    "list_archs",
    "make_config",
    "config_from_dict",
    "build_net",
    "count_parameters",
    "resolve_ref",
]

#: where the package's shipped weights live
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture. Class and factory entries may be objects or lazy ``"module:attribute"`` strings.

    Attributes:
        name: registry key (``"ldeq"``, ``"unet"``...).
        config: the config dataclass.
        net: the network class, built as ``net(config)``.
        model: the harness model factory (``create_model(name, ...)`` calls it), or None.
        loss: the default training loss (``keypoint_mse``, ``heatmap_mse``, ``awing``).
        weights: file name in :data:`WEIGHTS_DIR` of the shipped default weights, or None.
    """

    name: str
    config: Any
    net: Any
    model: Any = None
    loss: str = "heatmap_mse"
    weights: str | None = None


@dataclass(frozen=True)
class Arch:
    """A resolved :class:`ArchSpec` (classes imported)."""

    name: str
    config_cls: type
    net_cls: Callable[[Any], Any]
    model: Callable[..., Any] | None
    loss: str
    weights: Path | None

    def shipped_weights(self) -> Path | None:
        """The shipped checkpoint file, if the package has one for this architecture."""
        return self.weights if self.weights is not None and self.weights.is_file() else None


ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            "ldeq",
            "wflwv.models.ldeq.config:LDEQConfig",
            "wflwv.models.ldeq.net:LDEQNet",
            "wflwv.models.ldeq.model:LDEQModel",
            loss="keypoint_mse",
            weights="ldeq-demo-ibug68.pt",
        ),
        ArchSpec(
            "unet",
            "wflwv.baselines.unet:UNetConfig",
            "wflwv.baselines.unet:UNetNet",
            "wflwv.baselines.unet:unet_model",
            weights="unet-demo-ibug68.pt",
        ),
        ArchSpec(
            "hrnet",
            "wflwv.baselines.hrnet:HRNetConfig",
            "wflwv.baselines.hrnet:HRNetNet",
            "wflwv.baselines.hrnet:hrnet_model",
        ),
        ArchSpec(
            "hrformer",
            "wflwv.baselines.hrformer:HRFormerConfig",
            "wflwv.baselines.hrformer:HRFormerNet",
            "wflwv.baselines.hrformer:hrformer_model",
        ),
    )
}


def resolve_ref(ref: Any, what: str) -> Any:
    """Import a ``"module:attribute"`` reference (objects pass through); ``what`` names it in errors."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{what} needs module {module_name}, which could not be imported ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{what}: module {module_name} has no attribute {attr}") from None


def register_arch(
    name: str,
    config: Any,
    net: Any,
    model: Any = None,
    *,
    loss: str = "heatmap_mse",
    weights: str | None = None,
    overwrite: bool = False,
) -> ArchSpec:
    """Add an architecture (plug-ins, tests). Taken names raise unless ``overwrite=True``."""
    if name in ARCHS and not overwrite:
        raise ValueError(
            f"an architecture named {name!r} is already registered; pick another name or pass overwrite=True"
        )
    ARCHS[name] = ArchSpec(name, config, net, model, loss, weights)
    return ARCHS[name]


def list_archs() -> list[str]:
    """Names of the registered architectures."""
    return sorted(ARCHS)


def get_arch(name: str) -> Arch:
    """Resolve architecture ``name`` (imports its module).

    Raises:
        ValueError: unknown name (the known ones are listed).
        ImportError: its module is missing or broken (the message says which).
        TypeError: its config is not a dataclass with a ``num_landmarks`` field.
    """
    try:
        spec = ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; available: {', '.join(list_archs())}") from None
    config_cls = resolve_ref(spec.config, f"architecture {name!r} (config class)")
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"architecture {name!r}: config class {config_cls!r} is not a dataclass")
    if "num_landmarks" not in {f.name for f in dataclasses.fields(config_cls)}:
        raise TypeError(f"architecture {name!r}: config class {config_cls.__name__} has no num_landmarks field")
    net_cls = resolve_ref(spec.net, f"architecture {name!r} (network class)")
    model = resolve_ref(spec.model, f"architecture {name!r} (model factory)") if spec.model is not None else None
    weights = WEIGHTS_DIR / spec.weights if spec.weights else None
    return Arch(name, config_cls, net_cls, model, spec.loss, weights)


def make_config(arch: str, overrides: Sequence[str] = (), **fields: Any) -> Any:
    """The config of ``arch`` from keyword ``fields`` (typed values) and ``"key=value"`` ``overrides`` (text).

    Both reach the constructor, so a config that fills fields from others (size presets) sees them.

    Raises:
        ValueError: unknown field (the valid ones are listed) or an invalid value.
    """
    cls = get_arch(arch).config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}"
        )
    return _cfg.make_config(cls, overrides, **fields)


def config_from_dict(arch: str, values: dict[str, Any]) -> Any:
    """Rebuild the config of ``arch`` from its :func:`dataclasses.asdict` form (as stored in checkpoints).

    A config class may define ``upgrade_dict(values) -> values`` to translate dicts written by older versions.
    """
    cls = get_arch(arch).config_cls
    upgrade = getattr(cls, "upgrade_dict", None)
    return _cfg.config_from_dict(cls, upgrade(dict(values)) if upgrade else dict(values))


def build_net(arch: str, config: Any = None, overrides: Sequence[str] = (), **fields: Any):
    """Build the network of ``arch``.

    Args:
        config: a config instance, a dict of its fields (e.g. a checkpoint's ``"config"``), or None to build one
            from ``fields`` / ``overrides`` with :func:`make_config`.
        overrides: ``"key=value"`` strings applied on top of a given ``config``.
    Returns:
        the network (its config is ``net.config`` for the built-in architectures).
    """
    spec = get_arch(arch)
    if config is None:
        config = make_config(arch, overrides, **fields)
    else:
        if fields:
            raise TypeError("pass either a config or keyword fields to build_net, not both")
        if isinstance(config, dict):
            config = config_from_dict(arch, config)
        elif not isinstance(config, spec.config_cls):
            raise TypeError(f"architecture {arch!r} expects a {spec.config_cls.__name__}, got {type(config).__name__}")
        config = _cfg.apply_overrides(config, overrides)
    return spec.net_cls(config)


def count_parameters(net) -> int:
    """Number of parameters (trainable or not) of a network."""
    return sum(p.numel() for p in net.parameters())
