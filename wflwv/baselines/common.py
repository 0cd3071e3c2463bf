"""Shared machinery of the baseline heatmap networks: size presets, the architecture table, checkpoints and
the :class:`HeatmapLandmarkModel` wrapper that turns a network into a harness model.

Network contract (what :mod:`wflwv.training` relies on): ``net(images)`` with ``images`` a (N, 3, H, W)
ImageNet-normalised RGB tensor (256 x 256 for the benchmark; any multiple of 32 works) returns
``{"heatmaps": (N, K, H/4, W/4) raw regression output, "keypoints": (N, K, 2) unit crop coordinates}``,
keypoints read out of the heatmaps with :func:`wflwv.baselines.heatmaps.heatmap_readout`.

Checkpoint format: the toolkit format of :mod:`wflwv.models.checkpoints` (a plain dict, loadable with
``torch.load(path, map_location="cpu", weights_only=True)``; read and written through that module)::

    {"arch": "unet", "config": {...every config field...}, "scheme": "wflw98", "state_dict": {...}}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from wflwv.baselines.heatmaps import heatmap_readout
from wflwv.models.checkpoints import CheckpointError, load_checkpoint, load_state_dict_strict, save_checkpoint
from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput, imagenet_normalise

__all__ = [
    "SIZES",
    "ArchSpec",
    "register_arch",
    "get_arch",
    "list_archs",
    "make_config",
    "build_net",
    "apply_size_preset",
    "heatmap_head_outputs",
    "imagenet_normalise",
    "count_parameters",
    "make_baseline_checkpoint",
    "save_baseline_checkpoint",
    "load_baseline_checkpoint",
    "HeatmapLandmarkModel",
    "create_baseline_model",
]

#: Size presets every baseline architecture offers, smallest first. ``tiny`` is for CPU tests; ``large`` is in
#: the range of the paper's oracle members (about 2B parameters over 45 models).
SIZES = ("tiny", "small", "base", "large")


# ----------------------------------------------------------------------------------------------- configs
def apply_size_preset(config: Any, presets: dict[str, dict[str, Any]]) -> None:
    """Fill the fields of a config dataclass that are ``None`` from ``presets[config.size]`` (in place).

    Lists are turned into tuples (checkpoints may store either), and ``num_landmarks`` is checked.
    """
    if config.size not in presets:
        raise ValueError(
            f"unknown size {config.size!r} for {type(config).__name__}; choose one of {', '.join(presets)}"
        )
    for name, value in presets[config.size].items():
        if getattr(config, name) is None:
            setattr(config, name, value)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list):
            setattr(config, f.name, tuple(value))
    if not isinstance(config.num_landmarks, (int, np.integer)) or config.num_landmarks < 1:
        raise ValueError(f"num_landmarks must be a positive integer, got {config.num_landmarks!r}")


@dataclass(frozen=True)
class ArchSpec:
    """A baseline architecture: its name, config dataclass and network class (``net_cls(config)``)."""

    name: str
    config_cls: type
    net_cls: Callable[[Any], nn.Module]


_ARCHS: dict[str, ArchSpec] = {}


def register_arch(name: str, config_cls: type, net_cls: Callable[[Any], nn.Module]) -> None:
    """Record an architecture so that :func:`build_net` and checkpoints can find it by name."""
    _ARCHS[name] = ArchSpec(name, config_cls, net_cls)


def _ensure_archs_loaded() -> None:
    # the architecture modules register themselves on import
    import wflwv.baselines.hrformer  # noqa: F401
    import wflwv.baselines.hrnet  # noqa: F401
    import wflwv.baselines.unet  # noqa: F401


def list_archs() -> list[str]:
    """Names of the baseline architectures (``hrformer``, ``hrnet``, ``unet``)."""
    _ensure_archs_loaded()
    return sorted(_ARCHS)


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` registered under ``name``."""
    _ensure_archs_loaded()
    if name not in _ARCHS:
        raise KeyError(f"unknown baseline architecture {name!r}; available: {', '.join(sorted(_ARCHS))}")
    return _ARCHS[name]


def _config_field_names(config_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]


def make_config(arch: str, size: str = "base", num_landmarks: int = 98, **overrides: Any) -> Any:
    """Build the config dataclass of ``arch`` for a size preset, with field overrides.

    Raises:
        TypeError: for an override that is not a field of the config (the message lists the fields).
    """
    spec = get_arch(arch)
    names = _config_field_names(spec.config_cls)
    unknown = [k for k in overrides if k not in names or k in ("size", "num_landmarks")]
    if unknown:
        raise TypeError(
            f"{spec.config_cls.__name__} has no field(s) {', '.join(unknown)}; "
            f"configurable fields: {', '.join(n for n in names if n not in ('size', 'num_landmarks'))}"
        )
    return spec.config_cls(num_landmarks=num_landmarks, size=size, **overrides)


def build_net(arch: str, config: Any = None, **kwargs: Any) -> nn.Module:
    """Construct the network of ``arch`` from a config object (or from :func:`make_config` keyword arguments).

    Example: ``build_net("unet", UNetConfig(size="tiny", num_landmarks=98))`` or
    ``build_net("hrnet", size="base", num_landmarks=98)``.
    """
    spec = get_arch(arch)
    if config is None:
        config = make_config(arch, **kwargs)
    elif kwargs:
        raise TypeError("pass either a config object or keyword arguments to build_net, not both")
    elif isinstance(config, dict):
        config = config_from_dict(arch, config)
    if not isinstance(config, spec.config_cls):
        raise TypeError(f"arch {arch!r} needs a {spec.config_cls.__name__}, got {type(config).__name__}")
    return spec.net_cls(config)


def config_from_dict(arch: str, values: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from its :func:`dataclasses.asdict` form (as stored in checkpoints)."""
    spec = get_arch(arch)
    names = _config_field_names(spec.config_cls)
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(
            f"the {arch} config has unknown field(s) {', '.join(unknown)} (written by another version of the "
            f"toolkit?); known fields: {', '.join(names)}"
        )
    return spec.config_cls(**values)


# ------------------------------------------------------------------------------------------ net helpers
def heatmap_head_outputs(heatmaps: torch.Tensor) -> dict[str, torch.Tensor]:
    """The dict every baseline network returns: raw heatmaps and their unit-coordinate readout."""
    return {"heatmaps": heatmaps, "keypoints": heatmap_readout(heatmaps)}




def count_parameters(net: nn.Module) -> int:
    """Number of parameters (trainable or not) of a network."""
    return sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------------------------------ checkpoints
def make_baseline_checkpoint(arch: str, config: Any, state_dict: dict[str, torch.Tensor], scheme: str | None) -> dict:
    """The toolkit's checkpoint dict for a baseline network (tensors moved to the CPU)."""
    get_arch(arch)
    return {
        "arch": arch,
        "config": dataclasses.asdict(config),
        "scheme": scheme,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }


def save_baseline_checkpoint(path: str | Path, arch: str, net: nn.Module, config: Any, scheme: str | None) -> Path:
    """Write ``net``'s weights and ``config`` in the toolkit checkpoint format; returns the path."""
    return save_checkpoint(path, make_baseline_checkpoint(arch, config, net.state_dict(), scheme))


def load_baseline_checkpoint(path: str | Path, arch: str | None = None) -> tuple[str, Any, dict, str | None]:
    """Read a toolkit checkpoint of a baseline network.

    Args:
        path: the ``.pt`` file.
        arch: if given, the architecture the checkpoint must hold.
    Returns:
        ``(arch, config, state_dict, scheme)`` with ``config`` the rebuilt config dataclass.
    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError (a ValueError): the file is not a toolkit checkpoint, or holds another architecture.
    """
    ckpt = load_checkpoint(path)  # FileNotFoundError / CheckpointError (a ValueError) with a clear message
    if ckpt.get("format") != "toolkit" or not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(
            f"{path} is not a toolkit baseline checkpoint (format {ckpt.get('format')!r}): expected a dict with "
            f"'arch', 'config' (a dict), 'scheme' and 'state_dict', found keys {sorted(k for k in ckpt if k != 'format')}"
        )
    found = ckpt["arch"]
    if arch is not None and found != arch:
        raise CheckpointError(
            f"{path} holds a {found!r} network, not {arch!r}: load it with create_model({found!r}, weights=...)"
        )
    config = config_from_dict(found, dict(ckpt["config"]))
    return found, config, ckpt["state_dict"], ckpt.get("scheme")


# ---------------------------------------------------------------------------------------- harness model
def _default_scheme(num_landmarks: int) -> str | None:
    from wflwv.schemes import SCHEMES

    for s in SCHEMES.values():
        if s.num_points == num_landmarks:
            return s.name
    return None


def _check_scheme(scheme: str | None, num_landmarks: int) -> None:
    if scheme is None:
        return
    from wflwv.schemes import get_scheme

    k = get_scheme(scheme).num_points
    if k != num_landmarks:
        raise ValueError(f"scheme {scheme!r} has {k} landmarks but the network predicts {num_landmarks}")


class HeatmapLandmarkModel(LandmarkModel):
    """A baseline heatmap network as a harness model (stateless; returns landmarks and heatmaps)."""

    def __init__(self, arch: str, net: nn.Module, config: Any, scheme: str | None, weights: str | None = None):
        """
        Args:
            arch: architecture name (``unet``, ``hrnet``, ``hrformer``).
            net: the network (returns the heatmap dict of this module's docstring).
            config: its config dataclass.
            scheme: landmark scheme of the output (``wflw98`` / ``ibug68``), or ``None`` for a custom K.
            weights: where the weights came from (recorded in :meth:`config`).
        """
        self.arch = arch
        self.net = net
        self.net_config = config
        self.scheme = scheme
        self.weights = weights
        #: further provenance recorded by :meth:`config` (e.g. ``pretrained_backbone``)
        self.extra_config: dict[str, Any] = {}
        self.to("cpu")

    @property
    def num_landmarks(self) -> int:
        return int(self.net_config.num_landmarks)

    def predict(self, images: torch.Tensor, states: Sequence[Any], frames: Sequence[FrameInfo]) -> ModelOutput:
        """Landmarks (N, K, 2) in crop pixels and non-negative heatmaps (N, K, 64, 64) for (N, 3, 256, 256) crops."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        x = imagenet_normalise(images.to(self.device, torch.float32))
        with torch.no_grad():
            out = self.net(x)
        side = torch.tensor([images.shape[-1], images.shape[-2]], dtype=torch.float32, device=self.device)
        landmarks = out["keypoints"].float() * side
        return ModelOutput(
            landmarks=landmarks,
            states=[None] * images.shape[0],
            heatmaps=torch.clamp(out["heatmaps"].float(), min=0),
        )

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "config": dataclasses.asdict(self.net_config),
            "scheme": self.scheme,
            "weights": self.weights,
            **self.extra_config,
        }

    def save(self, path: str | Path) -> Path:
        """Write this model's network to a toolkit checkpoint (reload with ``create_model(arch, weights=path)``)."""
        return save_baseline_checkpoint(path, self.arch, self.net, self.net_config, self.scheme)


def create_baseline_model(
    arch: str,
    weights: str | None = None,
    size: str | None = None,
    num_landmarks: int | None = None,
    scheme: str | None = None,
    overrides: dict[str, Any] | None = None,
    after_build: Callable[[nn.Module], None] | None = None,
) -> HeatmapLandmarkModel:
    """What the registered ``unet`` / ``hrnet`` / ``hrformer`` factories do.

    Without ``weights`` the network is built from ``size`` (default ``base``), ``num_landmarks`` (default 98)
    and the config ``overrides``, randomly initialised. With ``weights`` everything comes from the checkpoint;
    passing ``size`` or overrides as well is an error, ``num_landmarks`` / ``scheme`` must then agree with it.
    ``after_build(net)`` runs on a freshly built (not checkpoint-loaded) network (e.g. to load a backbone).
    """
    from wflwv.models.shipped import resolve_default_weights

    overrides = dict(overrides or {})
    custom = size is not None or num_landmarks is not None or bool(overrides) or after_build is not None
    weights = resolve_default_weights(arch, weights, custom_architecture=custom)
    if weights is None:
        k = 98 if num_landmarks is None else int(num_landmarks)
        config = make_config(arch, size=size or "base", num_landmarks=k, **overrides)
        net = get_arch(arch).net_cls(config)
        if after_build is not None:
            after_build(net)
        _check_scheme(scheme, config.num_landmarks)
        if scheme is None:
            scheme = _default_scheme(config.num_landmarks)
        return HeatmapLandmarkModel(arch, net, config, scheme, None)

    if size is not None or overrides:
        given = (["size"] if size is not None else []) + sorted(overrides)
        raise ValueError(
            f"with weights={weights!r} the network configuration comes from the checkpoint; "
            f"do not also pass {', '.join(given)}"
        )
    _, config, state_dict, ck_scheme = load_baseline_checkpoint(weights, arch)
    if num_landmarks is not None and int(num_landmarks) != config.num_landmarks:
        raise ValueError(
            f"{weights} predicts {config.num_landmarks} landmarks but num_landmarks={num_landmarks} was asked for"
        )
    if scheme is not None and ck_scheme is not None and scheme != ck_scheme:
        raise ValueError(f"{weights} was trained for scheme {ck_scheme!r}, not {scheme!r}")
    net = get_arch(arch).net_cls(config)
    load_state_dict_strict(net, state_dict, source=str(weights))
    scheme = scheme or ck_scheme or _default_scheme(config.num_landmarks)
    _check_scheme(scheme, config.num_landmarks)
    return HeatmapLandmarkModel(arch, net, config, scheme, str(weights))
