"""``python -m wflwv.cli``: the same as the ``wflwv`` command."""

from wflwv.cli import main

main()
