"""``config list``: a component's effective configuration, exactly as the pod gets it (the
resolver's own merge), with the layer each value comes from; secrets by name only."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.errors import ReconcilerError
from reconciler.model.kinds import State
from reconciler.resolve import configuration

SECRET_VALUE = "(secret)"


@dataclass(frozen=True)
class ConfigEntry:
    key: str
    value: str
    source: str


def effective_configuration(state: State, ref: str, environment: str | None) -> list[ConfigEntry]:
    component = state.component_named(ref)
    if environment is not None and environment not in state.environments:
        raise ReconcilerError(f"unknown environment {environment!r}")
    entries = {key: ConfigEntry(key, found.value, found.source)
               for key, found in configuration(state, component, environment).items()}
    secrets = state.secrets.get((environment, component.project, component.name)) \
        if environment else None
    for key in secrets.keys if secrets else ():
        entries[key] = ConfigEntry(key, SECRET_VALUE, f"{environment} secrets")
    return [entries[key] for key in sorted(entries)]
