"""``wflwv models``: list the registered models."""

from __future__ import annotations

import click

from wflwv.models.registry import get_model_entry, list_models

__all__ = ["models"]


@click.command("models")
def models() -> None:
    """List the registered models with a one-line description."""
    names = list_models()
    width = max(len(n) for n in names) if names else 0
    for name in names:
        try:
            entry = get_model_entry(name)
            src = "" if entry.source == "builtin" else f"  [{entry.source}]"
            click.echo(f"{name:<{width}}  {entry.description}{src}")
        except Exception as exc:  # a broken plug-in is reported, the listing goes on
            click.echo(f"{name:<{width}}  (cannot be loaded: {exc})")
