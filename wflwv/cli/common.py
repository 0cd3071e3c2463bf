"""What several commands share: ``key=value`` options, the demo dataset fallback, and turning library errors into
command-line errors."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from wflwv.config import parse_assignments
from wflwv.models.checkpoints import NO_WEIGHTS

__all__ = ["DEMO_HINT", "BATCH_VIDEOS", "parse_kv", "demo_data", "echo_err"]

DEMO_HINT = "no --data given: using the demo dataset (real faces, see `wflwv demo`)"


class _CountOrAuto(click.ParamType):
    """A positive integer, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        try:
            n = int(str(value))
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"{value!r} is neither a positive integer nor 'auto'", param, ctx)
        return n


#: the type of ``--batch-videos``
BATCH_VIDEOS = _CountOrAuto()


def echo_err(msg: str) -> None:
    """A progress or log message on standard error (results go to standard output)."""
    click.echo(msg, err=True)


def parse_kv(items: Iterable[str], what: str = "--model-arg") -> dict[str, Any]:
    """``key=value`` options -> dict (:func:`wflwv.config.parse_assignments`), as a click usage error when malformed.

    ``weights=none`` stays the string ``"none"`` (a randomly initialised network) instead of Python's None (which a
    model reads as "no weights given": the shipped ones).
    """
    items = list(items)
    try:
        out = parse_assignments(items, what)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (example: {what} jitter=2.0)", param_hint=what) from None
    if "weights" in out and out["weights"] is None:
        out["weights"] = NO_WEIGHTS
    return out


def demo_data() -> Path:
    """The demo dataset (fetched and built on first use)."""
    from wflwv.build.demo import DemoError, ensure_demo_dataset  # the build pipeline only when it is needed

    echo_err(f"{DEMO_HINT} (built in the cache on first use)")
    try:
        return ensure_demo_dataset(log=echo_err)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
