"""Parsing of the ``--filter`` command-line syntax into :class:`FilterSetting` lists.

Syntax: ``NAME`` or ``NAME:PARAM=VALUE[,PARAM=VALUE...]``; a value may be a sweep ``V1|V2|...``, and several
swept parameters give their cartesian product (the last parameter varies fastest)::

    one-euro:min_cutoff=1.0,beta=0.1   -> 1 setting
    ema:alpha=0.2|0.4|0.6|0.8          -> 4 settings
    sg:window=5|9,order=2|3            -> 4 settings
    ema                                -> 1 setting with the default parameters

Values are read as int (``5``) or float (``0.2``, ``1e-3``) and then checked against the filter's parameter
spec. Labels (``ema(alpha=0.2)``) are accepted too, so a setting's label parses back to the same setting.
``none`` is rejected: the unfiltered predictions are always evaluated, so there is nothing to ask for.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable

from wflwv.config import parse_scalar, split_assignment
from wflwv.filters.base import FilterError
from wflwv.filters.registry import FILTERS, FilterSetting, get_filter_spec

__all__ = ["parse_filter_option", "parse_filter_options", "FILTER_SYNTAX"]

FILTER_SYNTAX = (
    "NAME[:PARAM=VALUE[|VALUE...][,PARAM=VALUE...]], e.g. 'one-euro:min_cutoff=1.0,beta=0.1' or the sweep "
    "'ema:alpha=0.2|0.4|0.6|0.8'"
)

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_LABEL = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\((.*)\)$")


def _bad(text: str, why: str) -> FilterError:
    return FilterError(
        f"cannot parse filter option {text!r}: {why}. Expected {FILTER_SYNTAX}. Filters: {', '.join(FILTERS)}"
    )


def _number(raw: str, text: str, key: str) -> int | float:
    value = parse_scalar(raw)
    if isinstance(value, str) and raw.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity"):
        value = float(raw)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(text, f"value {raw!r} of {key!r} is not a number")
    if not math.isfinite(value):
        raise _bad(text, f"value {raw!r} of {key!r} must be a finite number")
    return value


def parse_filter_option(text: str) -> list[FilterSetting]:
    """Parse one ``--filter`` value into one or more validated settings (several for a sweep).

    Raises:
        FilterError: malformed text (the message gives the expected syntax with an example), unknown filter or
            parameter, or a value out of range (for a sweep, says which combination failed).
    """
    if not isinstance(text, str):
        raise FilterError(f"a filter option must be a string like {FILTER_SYNTAX}; got {text!r}")
    stripped = text.strip()
    if not stripped:
        raise _bad(text, "it is empty")
    label = _LABEL.match(stripped)
    if label:  # a label such as ema(alpha=0.2)
        name, rest = label.group(1), label.group(2).strip()
        has_params = bool(rest)
    else:
        name, sep, rest = stripped.partition(":")
        name, rest = name.strip(), rest.strip()
        if sep and not rest:
            raise _bad(text, "nothing follows ':' (leave out the ':' to use the default parameters)")
        has_params = bool(sep)
    if not name:
        raise _bad(text, "the filter name is missing")
    spec = get_filter_spec(name)  # unknown names / 'none' raise with the list of filters

    grid: dict[str, list[int | float]] = {}
    if has_params:
        for item in rest.split(","):
            item = item.strip()
            if not item:
                raise _bad(text, "empty parameter (two commas in a row or a trailing comma?)")
            try:
                key, values = split_assignment(item, "filter parameter")
            except ValueError:
                raise _bad(text, f"{item!r} is not PARAM=VALUE") from None
            if not _KEY.match(key):
                raise _bad(text, f"{key!r} is not a parameter name")
            norm = key.replace("-", "_")
            if norm in grid:
                raise _bad(text, f"parameter {key!r} given twice (use '|' to sweep several values)")
            if not values:
                raise _bad(text, f"parameter {key!r} has no value")
            parsed = []
            for raw in values.split("|"):
                raw = raw.strip()
                if not raw:
                    raise _bad(text, f"empty value in the sweep of {key!r}")
                parsed.append(_number(raw, text, key))
            grid[norm] = parsed

    keys = list(grid)
    settings: list[FilterSetting] = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        try:
            setting = FilterSetting(spec.name, params)
        except FilterError as exc:
            if any(len(v) > 1 for v in grid.values()):
                shown = ",".join(f"{k}={v}" for k, v in params.items())
                raise FilterError(f"in filter option {text!r}, combination {shown}: {exc}") from None
            raise
        if setting not in settings:
            settings.append(setting)
    return settings


def parse_filter_options(texts: Iterable[str] | str) -> list[FilterSetting]:
    """Parse several (repeated) ``--filter`` values; duplicates (same label) are kept once, in first order."""
    if isinstance(texts, str):
        texts = [texts]
    out: list[FilterSetting] = []
    for text in texts:
        for setting in parse_filter_option(text):
            if setting not in out:
                out.append(setting)
    return out
