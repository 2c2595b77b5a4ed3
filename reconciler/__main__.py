"""`python -m reconciler`: the same as the `reconciler` command."""

from __future__ import annotations

from reconciler.cli import main

main()
