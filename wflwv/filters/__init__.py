"""Temporal filters for landmark trajectories ``(T, K, 2)`` in frame pixels.

Filters (see :data:`FILTERS`): ``ema``, ``sg`` (centred Savitzky-Golay, offline), ``sg-causal`` and
``one-euro``. Whole clips: :func:`apply_filter`; streaming: ``make_filter(...).online(fps)``; command-line
syntax: :func:`parse_filter_option`; a live model with a causal filter: :class:`FilteredModel`.
"""

from wflwv.filters.base import FilterError, OnlineFilter
from wflwv.filters.ema import EMAFilter, ema
from wflwv.filters.model import FilteredModel
from wflwv.filters.one_euro import OneEuroFilter, one_euro
from wflwv.filters.parse import FILTER_SYNTAX, parse_filter_option, parse_filter_options
from wflwv.filters.registry import (
    FILTERS,
    FilterSetting,
    FilterSpec,
    ParamSpec,
    apply_filter,
    get_filter_spec,
    make_filter,
)
from wflwv.filters.savgol import SGCausalFilter, savgol, savgol_causal

__all__ = [
    "FILTERS",
    "FILTER_SYNTAX",
    "EMAFilter",
    "FilterError",
    "FilterSetting",
    "FilterSpec",
    "FilteredModel",
    "OneEuroFilter",
    "OnlineFilter",
    "ParamSpec",
    "SGCausalFilter",
    "apply_filter",
    "ema",
    "get_filter_spec",
    "make_filter",
    "one_euro",
    "parse_filter_option",
    "parse_filter_options",
    "savgol",
    "savgol_causal",
]
