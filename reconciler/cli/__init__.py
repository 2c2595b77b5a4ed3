"""The ``reconciler`` command: a thin click layer that parses, calls the library, formats,
and maps expected errors to exit codes. Each module adds the commands of one area, and is
imported when one of its commands runs (``base.COMMAND_MODULES``)."""

from __future__ import annotations

from reconciler.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="reconciler")
