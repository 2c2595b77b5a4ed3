"""Where the built-in templates, schemas and example state repo are.

An installed wheel carries them in ``reconciler/_data``; a source checkout keeps them
beside the package. Everything else asks this module, so the two layouts never leak.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The directory of one kind of bundled data: templates, schemas, example-state-repo."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"bundled data '{name}' is missing from the installation")
