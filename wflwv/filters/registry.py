"""The filter registry (a plain dict), parameter specs with units and ranges, and bound filter settings.

``FILTERS`` maps a name to a :class:`FilterSpec`. A :class:`FilterSetting` is a filter name with validated
parameters (defaults filled in); it labels results (``.label``, ``.slug``) and applies the filter
(``.apply`` on a whole clip, ``.online`` for a streaming object).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wflwv.filters.base import FilterError, OnlineFilter, check_fps
from wflwv.filters.ema import EMAFilter, ema
from wflwv.filters.one_euro import OneEuroFilter, one_euro
from wflwv.filters.savgol import SGCausalFilter, _check_causal, _check_centred, savgol, savgol_causal

__all__ = [
    "ParamSpec",
    "FilterSpec",
    "FILTERS",
    "FILTER_ALIASES",
    "FilterSetting",
    "get_filter_spec",
    "make_filter",
    "apply_filter",
]


@dataclass(frozen=True)
class ParamSpec:
    """One filter parameter.

    Attributes:
        name: keyword name.
        kind: ``int`` or ``float``.
        default: value used when the parameter is not given.
        unit: unit of the value (e.g. ``"Hz"``, ``"frames"``, ``"1/pixel"``, ``""``).
        low, high: bounds of the valid range (``None`` = unbounded).
        low_open, high_open: whether the bound itself is excluded.
        help: one line saying what the parameter does.
    """

    name: str
    kind: type
    default: Any
    unit: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    help: str = ""

    @property
    def range_text(self) -> str:
        """The valid range in interval notation, e.g. ``(0, 1]``."""
        lo = "-inf" if self.low is None else format(self.low, "g")
        hi = "inf" if self.high is None else format(self.high, "g")
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        kind = "integer" if self.kind is int else "number"
        return f"{kind} in {left}{lo}, {hi}{right}"

    def check(self, value: Any, filter_name: str) -> int | float:
        """``value`` converted to :attr:`kind` after checking its type and range (raises :class:`FilterError`)."""
        where = f"{filter_name}: parameter {self.name!r}"
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise FilterError(f"{where} must be a {self.range_text}; got {value!r} ({type(value).__name__})")
        if not math.isfinite(float(value)):
            raise FilterError(f"{where} must be a finite {self.range_text}; got {value!r}")
        if self.kind is int:
            if float(value) != int(value):
                raise FilterError(f"{where} must be an integer ({self.range_text}); got {value!r}")
            value = int(value)
        else:
            value = float(value)
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            unit = f" {self.unit}" if self.unit else ""
            raise FilterError(f"{where} must be a {self.range_text}{unit}; got {value!r}")
        return value


@dataclass(frozen=True)
class FilterSpec:
    """A registered filter.

    Attributes:
        name: registry name (as written on the command line).
        description: one line.
        params: the parameters, in the order labels list them.
        causal: True if output frame t depends only on frames <= t (usable online / around a live model).
        offline: ``offline(x (T, K, 2), fps=..., timestamps=..., **params) -> (T, K, 2)``.
        online: ``online(fps=..., **params) -> OnlineFilter`` for causal filters, else None.
        check: optional cross-parameter check on the resolved parameters (raises :class:`FilterError`).
        behaviour: what the filter does to lag versus jitter (for help texts).
    """

    name: str
    description: str
    params: tuple[ParamSpec, ...]
    causal: bool
    offline: Callable[..., np.ndarray]
    online: Callable[..., OnlineFilter] | None = None
    check: Callable[[dict[str, Any]], None] | None = None
    behaviour: str = ""

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def describe_params(self) -> str:
        """One line per parameter: name, range, unit, default and help."""
        lines = []
        for p in self.params:
            unit = f" {p.unit}" if p.unit else ""
            lines.append(f"{p.name}: {p.range_text}{unit}, default {_fmt(p.default)} - {p.help}")
        return "\n".join(lines)

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validated parameters with defaults filled in, in :attr:`params` order.

        Raises:
            FilterError: for an unknown parameter (lists the accepted ones), a value of the wrong type or out of
                range (says the range), or an invalid combination.
        """
        given = {}
        for key, value in params.items():
            norm = str(key).strip().replace("-", "_")
            if norm not in self.param_names:
                hint = difflib.get_close_matches(norm, self.param_names, n=1)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise FilterError(
                    f"filter {self.name!r} has no parameter {key!r}{did}; accepted: {', '.join(self.param_names)}"
                )
            if norm in given:
                raise FilterError(f"filter {self.name!r}: parameter {norm!r} given twice")
            given[norm] = value
        out = {}
        for p in self.params:
            out[p.name] = p.check(given[p.name], self.name) if p.name in given else p.default
        if self.check is not None:
            self.check(out)
        return out


def _fmt(value: Any) -> str:
    """Stable text of a parameter value: ints as ``5``, floats by their shortest round-trip repr (``0.2``)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _check_sg(params: dict[str, Any]) -> None:
    _check_centred(params["window"], params["order"])


def _check_sg_causal(params: dict[str, Any]) -> None:
    _check_causal(params["window"], params["order"])


FILTERS: dict[str, FilterSpec] = {
    "ema": FilterSpec(
        name="ema",
        description="exponential moving average y_t = alpha x_t + (1 - alpha) y_{t-1} (causal, per frame)",
        params=(
            ParamSpec(
                "alpha",
                float,
                0.5,
                "",
                0.0,
                1.0,
                low_open=True,
                help="weight of the new frame; smaller = smoother but more lag (1 = no filtering)",
            ),
        ),
        causal=True,
        offline=ema,
        online=lambda fps, **p: EMAFilter(fps=fps, **p),
        behaviour="lag on a ramp (1 - alpha) / alpha frames; white-noise variance scaled by alpha / (2 - alpha)",
    ),
    "sg": FilterSpec(
        name="sg",
        description="centred Savitzky-Golay: polynomial fit over a symmetric window (offline, zero lag)",
        params=(
            ParamSpec("window", int, 9, "frames", 1, None, help="odd window length"),
            ParamSpec("order", int, 2, "", 0, None, help="polynomial order, < window"),
        ),
        causal=False,
        offline=savgol,
        online=None,
        check=_check_sg,
        behaviour="no lag for motions that are polynomials of degree <= order; longer window = less jitter",
    ),
    "sg-causal": FilterSpec(
        name="sg-causal",
        description="causal Savitzky-Golay: polynomial fit over the last `window` frames, evaluated at the newest",
        params=(
            ParamSpec("window", int, 9, "frames", 1, None, help="number of frames fitted (current one included)"),
            ParamSpec("order", int, 1, "", 0, None, help="polynomial order, < window (1 or 2 recommended)"),
        ),
        causal=True,
        offline=savgol_causal,
        online=lambda fps, **p: SGCausalFilter(fps=fps, **p),
        check=_check_sg_causal,
        behaviour="no lag for polynomials of degree <= order, at the price of more residual jitter than sg",
    ),
    "one-euro": FilterSpec(
        name="one-euro",
        description="One Euro filter: low-pass whose cutoff rises with speed (causal, cutoffs in Hz)",
        params=(
            ParamSpec(
                "min_cutoff",
                float,
                1.0,
                "Hz",
                0.0,
                None,
                low_open=True,
                help="cutoff when still; lower = less jitter, more lag at low speed",
            ),
            ParamSpec(
                "beta",
                float,
                0.1,
                "1/pixel",
                0.0,
                None,
                help="extra cutoff (Hz) per pixel/s of speed; higher = less lag in fast motion",
            ),
            ParamSpec(
                "d_cutoff", float, 1.0, "Hz", 0.0, None, low_open=True, help="cutoff of the speed estimate's low-pass"
            ),
        ),
        causal=True,
        offline=one_euro,
        online=lambda fps, **p: OneEuroFilter(fps=fps, **p),
        behaviour="heavy smoothing when still, little lag when moving fast; same behaviour in seconds at any fps",
    ),
}


#: other names people use for the registered filters (alias -> registry name); labels use the registry name
FILTER_ALIASES: dict[str, str] = {
    "savgol": "sg",
    "savitzky-golay": "sg",
    "savgol-causal": "sg-causal",
    "savitzky-golay-causal": "sg-causal",
    "oneeuro": "one-euro",
    "1euro": "one-euro",
    "1-euro": "one-euro",
    "ewma": "ema",
}


def get_filter_spec(name: str | FilterSpec) -> FilterSpec:
    """The :class:`FilterSpec` for a name or an alias (:data:`FILTER_ALIASES`, e.g. ``savgol`` for ``sg``);
    ``_`` and ``-``, upper and lower case are interchangeable.

    Raises:
        FilterError: for an unknown name (lists the available filters).
    """
    if isinstance(name, FilterSpec):
        return name
    if not isinstance(name, str):
        raise FilterError(f"a filter name must be a string; got {name!r}")
    key = name.strip().lower().replace("_", "-")
    key = FILTER_ALIASES.get(key, key)
    if key in FILTERS:
        return FILTERS[key]
    if key in ("none", "raw", "unfiltered", "identity"):
        raise FilterError(
            f"{name!r} is not a filter: the unfiltered predictions are always evaluated, so leave it out. "
            f"Available filters: {', '.join(FILTERS)}"
        )
    hint = difflib.get_close_matches(key, list(FILTERS) + list(FILTER_ALIASES), n=1)
    if hint:
        target = FILTER_ALIASES.get(hint[0], hint[0])
        did = f" (did you mean {target!r}" + (f", also called {hint[0]!r}" if target != hint[0] else "") + "?)"
    else:
        did = ""
    by_target: dict[str, list[str]] = {}
    for alias, target in FILTER_ALIASES.items():
        by_target.setdefault(target, []).append(alias)
    aliases = "; ".join(f"{', '.join(names)} for {t}" for t, names in by_target.items())
    raise FilterError(
        f"unknown filter {name!r}{did}. Available filters: {', '.join(FILTERS)} (also accepted: {aliases})"
    )


_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, eq=False)
class FilterSetting:
    """A filter with validated parameters (defaults filled in), e.g. ``FilterSetting("ema", {"alpha": 0.2})``.

    Construction validates: an unknown filter or parameter, or a value out of range, raises
    :class:`FilterError`. Two settings are equal when they have the same :attr:`label`.

    Attributes:
        name: canonical filter name (a key of :data:`FILTERS`).
        params: every parameter of the filter, in the spec's order (ints as int, the rest as float).
    """

    name: str | FilterSpec
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = get_filter_spec(self.name)
        params = self.params if self.params is not None else {}
        if not isinstance(params, Mapping):
            raise FilterError(f"FilterSetting params must be a mapping name -> value; got {params!r}")
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "name", spec.name)
        object.__setattr__(self, "params", spec.resolve(params))

    @property
    def spec(self) -> FilterSpec:
        """The :class:`FilterSpec` this setting belongs to."""
        return self._spec  # type: ignore[attr-defined]

    @property
    def causal(self) -> bool:
        """True if the filter only uses past and current frames (can wrap a live model)."""
        return self.spec.causal

    @property
    def label(self) -> str:
        """Stable human-readable label with every parameter, e.g. ``ema(alpha=0.2)``."""
        inner = ",".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return f"{self.name}({inner})"

    @property
    def slug(self) -> str:
        """Filesystem-safe variant of :attr:`label`, e.g. ``ema_alpha-0.2`` (characters ``A-Za-z0-9._-``)."""
        parts = [self.name] + [f"{k}-{_fmt(v)}" for k, v in self.params.items()]
        return _SLUG_UNSAFE.sub("-", "_".join(parts))

    @property
    def option(self) -> str:
        """The command-line form, e.g. ``ema:alpha=0.2`` (``parse_filter_option`` reads it back)."""
        inner = ",".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return f"{self.name}:{inner}" if inner else self.name

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"FilterSetting({self.name!r}, {dict(self.params)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterSetting) and other.label == self.label

    def __hash__(self) -> int:
        return hash(self.label)

    def apply(self, landmarks, fps: float, timestamps=None) -> np.ndarray:
        """Filter a whole clip: ``landmarks (T, K, 2)`` in frame pixels -> ``(T, K, 2)`` float64.

        Args:
            landmarks: (T, K, 2) trajectory of one clip (the filter starts fresh at frame 0).
            fps: the clip's frame rate (frames per second).
            timestamps: optional (T,) frame times in seconds; used by filters with parameters in Hz.
        """
        fps = check_fps(fps)
        return self.spec.offline(landmarks, fps=fps, timestamps=timestamps, **self.params)

    def online(self, fps: float) -> OnlineFilter:
        """A fresh streaming filter (``step(x (K, 2)) -> (K, 2)``, ``reset()``) for one clip.

        Raises:
            FilterError: for a filter that needs future frames (``sg``).
        """
        if not self.causal or self.spec.online is None:
            causal = [n for n, s in FILTERS.items() if s.causal]
            raise FilterError(
                f"filter {self.name!r} is centred: it needs future frames, so it cannot run online or wrap a live "
                f"model. Use it as post-processing of saved predictions, or pick a causal filter: "
                f"{', '.join(causal)}"
            )
        return self.spec.online(fps=check_fps(fps), **self.params)


def make_filter(name: str, **params: Any) -> FilterSetting:
    """A validated :class:`FilterSetting` for ``name`` with ``params`` (defaults fill the rest).

    Raises:
        FilterError: unknown filter (lists the names), unknown parameter (lists the accepted ones), value out of
            range (says the range).
    """
    return FilterSetting(name, params)


def apply_filter(
    spec_or_name: str | FilterSpec | FilterSetting, landmarks, fps: float, *, timestamps=None, **params: Any
) -> np.ndarray:
    """Filter a whole clip.

    Args:
        spec_or_name: a filter name, a :class:`FilterSpec` or a :class:`FilterSetting` (keyword ``params``
            then override its parameters).
        landmarks: (T, K, 2) trajectory of one clip in frame pixels.
        fps: the clip's frame rate.
        timestamps: optional (T,) frame times in seconds (strictly increasing).
        **params: filter parameters.

    Returns:
        (T, K, 2) float64 filtered trajectory.
    """
    if isinstance(spec_or_name, FilterSetting):
        setting = FilterSetting(spec_or_name.name, {**spec_or_name.params, **params}) if params else spec_or_name
    else:
        setting = FilterSetting(spec_or_name, params)
    return setting.apply(landmarks, fps, timestamps=timestamps)
