"""The ``wflwv`` command line: one module per command. Commands are thin: they resolve names and options into
objects and call the library, which never imports click."""

from __future__ import annotations

import importlib

import click

from wflwv import __version__

__all__ = ["cli", "main"]

#: command name -> "module:attribute"; a command's module (and what it imports: torch, matplotlib, the build
#: pipeline...) is imported only when that command runs, so `wflwv bench` does not pay for `wflwv report`
COMMANDS = {
    "bench": "wflwv.cli.bench:bench",
    "models": "wflwv.cli.models:models",
    "report": "wflwv.cli.report:report",
    "train": "wflwv.cli.train:train",
    "build": "wflwv.cli.build:build",
    "demo": "wflwv.cli.demo:demo",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and name not in self.commands:
            module, _, attr = COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wflwv")
def cli() -> None:
    """Measure and reduce landmark flicker in face video (NME / NMF on WFLW-V-style datasets)."""


def main() -> None:
    cli(prog_name="wflwv")


if __name__ == "__main__":
    main()
