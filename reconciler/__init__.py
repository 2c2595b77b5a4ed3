"""GitOps reconciler and manifest renderer: state repo -> model -> releases -> objects."""

from __future__ import annotations

__version__ = "0.1.0"
