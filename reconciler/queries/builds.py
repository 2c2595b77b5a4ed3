"""``build list``: registered builds, newest first."""

from __future__ import annotations

from reconciler.errors import ReconcilerError
from reconciler.model.kinds import Build, State
from reconciler.model.names import split_ref


def builds(state: State, component: str | None = None) -> list[Build]:
    """Every build (or one component's), newest first."""
    key = split_ref(component) if component else None
    if key is not None and key not in state.components:
        raise ReconcilerError(f"unknown component {component}")
    return sorted((b for (p, c, _), b in state.builds.items() if key in (None, (p, c))),
                  key=lambda b: (b.built_at, b.commit), reverse=True)
