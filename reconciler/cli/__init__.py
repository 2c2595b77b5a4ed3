"""The ``reconciler`` command: a thin click layer that parses, calls the library, formats,
and maps expected errors to exit codes. Each module adds the commands of one area."""

from __future__ import annotations

from reconciler.cli import clusters, config, marketplace, releases, repo, secrets, tasks, views
from reconciler.cli.base import cli

__all__ = ["cli", "clusters", "config", "main", "marketplace", "releases", "repo", "secrets",
           "tasks", "views"]


def main() -> None:
    cli(prog_name="reconciler")
