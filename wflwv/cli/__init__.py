"""The ``wflwv`` command line: one module per command. Commands are thin: they resolve names and options into
objects and call the library, which never imports click."""

from __future__ import annotations

import click

from wflwv import __version__
from wflwv.cli.bench import bench
from wflwv.cli.build import build
from wflwv.cli.demo import demo
from wflwv.cli.models import models
from wflwv.cli.report import report
from wflwv.cli.train import train

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wflwv")
def cli() -> None:
    """Measure and reduce landmark flicker in face video (NME / NMF on WFLW-V-style datasets)."""


for _command in (bench, models, report, train, build, demo):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="wflwv")


if __name__ == "__main__":
    main()
