"""Shared machinery of the baseline heatmap networks: size presets, the heatmap head, and the
:class:`HeatmapLandmarkModel` wrapper that turns a network into a harness model (architectures are registered in
:mod:`wflwv.models.archs`).

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wflwv.baselines.heatmaps import heatmap_readout
from wflwv.models.api import FrameInfo, LandmarkModel, ModelOutput, imagenet_normalise
from wflwv.models.archs import get_arch, make_config
from wflwv.models.checkpoints import (
    load_arch_checkpoint,
    load_state_dict_strict,
    make_checkpoint,
    resolve_default_weights,
    save_checkpoint,
    seeded_init,
)
from wflwv.schemes import SCHEMES, get_scheme

__all__ = [
    "SIZES",
    "apply_size_preset",
    "heatmap_head_outputs",
    "HeatmapLandmarkModel",
    "create_baseline_model",
    "baseline_factory",
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


# ------------------------------------------------------------------------------------------ net helpers
def heatmap_head_outputs(heatmaps: torch.Tensor) -> dict[str, torch.Tensor]:
    """The dict every baseline network returns: raw heatmaps and their unit-coordinate readout."""
    return {"heatmaps": heatmaps, "keypoints": heatmap_readout(heatmaps)}


# ---------------------------------------------------------------------------------------- harness model
def _default_scheme(num_landmarks: int) -> str | None:
    for s in SCHEMES.values():
        if s.num_points == num_landmarks:
            return s.name
    return None


def _check_scheme(scheme: str | None, num_landmarks: int) -> None:
    if scheme is None:
        return
    k = get_scheme(scheme).num_points
    if k != num_landmarks:
        raise ValueError(f"scheme {scheme!r} has {k} landmarks but the network predicts {num_landmarks}")


class HeatmapLandmarkModel(LandmarkModel):
    """A baseline heatmap network as a harness model (stateless; returns landmarks and heatmaps)."""

    stateful = False

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
        ck = make_checkpoint(self.arch, dataclasses.asdict(self.net_config), self.net.state_dict(), scheme=self.scheme)
        return save_checkpoint(path, ck)


def create_baseline_model(
    arch: str,
    weights: str | None = None,
    size: str | None = None,
    num_landmarks: int | None = None,
    scheme: str | None = None,
    overrides: dict[str, Any] | None = None,
    after_build: Callable[[nn.Module], None] | None = None,
    seed: int = 0,
) -> HeatmapLandmarkModel:
    """What the registered ``unet`` / ``hrnet`` / ``hrformer`` factories do.

    Without ``weights`` the network is built from ``size`` (default ``base``), ``num_landmarks`` (default 98)
    and the config ``overrides``, randomly initialised from ``seed`` (recorded in :meth:`~HeatmapLandmarkModel.config`,
    so two runs of one command give the same network). With ``weights`` everything comes from the checkpoint;
    passing ``size`` or overrides as well is an error, ``num_landmarks`` / ``scheme`` must then agree with it.
    ``after_build(net)`` runs on a freshly built (not checkpoint-loaded) network (e.g. to load a backbone).
    """
    overrides = dict(overrides or {})
    custom = size is not None or num_landmarks is not None or bool(overrides) or after_build is not None
    weights = resolve_default_weights(arch, weights, custom_architecture=custom)
    if weights is None:
        k = 98 if num_landmarks is None else int(num_landmarks)
        fields = [
            f.name for f in dataclasses.fields(get_arch(arch).config_cls) if f.name not in ("size", "num_landmarks")
        ]
        unknown = [key for key in overrides if key not in fields]
        if unknown:  # a factory argument it does not take: TypeError, as for any other model factory
            raise TypeError(f"{arch} has no field(s) {', '.join(unknown)}; configurable fields: {', '.join(fields)}")
        config = make_config(arch, size=size or "base", num_landmarks=k, **overrides)
        with seeded_init(seed):
            net = get_arch(arch).net_cls(config)
        if after_build is not None:
            after_build(net)
        _check_scheme(scheme, config.num_landmarks)
        if scheme is None:
            scheme = _default_scheme(config.num_landmarks)
        model = HeatmapLandmarkModel(arch, net, config, scheme, None)
        model.extra_config["seed"] = int(seed)
        return model

    if size is not None or overrides:
        given = (["size"] if size is not None else []) + sorted(overrides)
        raise ValueError(
            f"with weights={weights!r} the network configuration comes from the checkpoint; "
            f"do not also pass {', '.join(given)}"
        )
    _, config, state_dict, info = load_arch_checkpoint(weights, arch)
    ck_scheme = info.get("scheme")
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


def baseline_factory(arch: str, summary: str, size_note: str, fields: str) -> Callable[..., HeatmapLandmarkModel]:
    """The registered model factory of a heatmap architecture (``unet``, ``hrformer``): a function with the
    arguments every baseline takes, documented for ``wflwv models`` and ``help()``."""

    def factory(
        weights: str | None = None,
        size: str | None = None,
        num_landmarks: int | None = None,
        scheme: str | None = None,
        seed: int = 0,
        **overrides: Any,
    ) -> HeatmapLandmarkModel:
        return create_baseline_model(arch, weights, size, num_landmarks, scheme, overrides, seed=seed)

    factory.__name__ = factory.__qualname__ = f"{arch}_model"
    factory.__doc__ = f"""{summary} (sizes tiny/small/base/large; weights=PATH loads a toolkit checkpoint).

    Args:
        weights: toolkit checkpoint (``{{"arch": "{arch}", "config", "scheme", "state_dict"}}``); its config wins.
        size: preset (default ``base``{size_note}) when building from scratch.
        num_landmarks: K (default 98).
        scheme: landmark scheme (default: from K, ``wflw98`` / ``ibug68``).
        seed: random initialisation when building from scratch (recorded with the model's configuration).
        **overrides: any config field ({fields}).
    """
    return factory
