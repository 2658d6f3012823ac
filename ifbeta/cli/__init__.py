"""The ``ifbeta`` command line: ``main`` in ``main.py``, one module per sub-command, shared flags in ``common.py``."""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ifbeta`` script (imports the commands only when called)."""
    from ifbeta.cli.commands import main as run

    return run(argv)
