"""``status``: the matrix of components x environments, each release's version, digest and
age, and (when given) its live health per cluster."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.errors import ReconcilerError
from reconciler.model.kinds import State
from reconciler.queries.history import age

HealthByCluster = Mapping[tuple[str, str, str], Mapping[str, str]]
"""(environment, project, component) -> cluster -> health status."""


@dataclass(frozen=True)
class StatusCell:
    component: str
    environment: str
    version: str
    image: str
    commit: str
    released_at: str
    age: str
    health: Mapping[str, str] = field(default_factory=dict)

    @property
    def short_digest(self) -> str:
        return self.image.split("@sha256:")[1][:7]

    def as_dict(self, live: bool) -> dict[str, object]:
        found: dict[str, object] = {
            "component": self.component, "environment": self.environment,
            "version": self.version, "image": self.image, "commit": self.commit,
            "releasedAt": self.released_at, "age": self.age}
        if live:
            found["health"] = dict(self.health)
        return found


def environment_order(state: State, only: str | None = None) -> list[str]:
    """Environments in pipeline order (the default pipeline's first), or just ``only``."""
    if only is not None:
        if only not in state.environments:
            raise ReconcilerError(f"unknown environment {only!r}")
        return [only]
    ordered: list[str] = []
    names = sorted(state.pipelines, key=lambda n: (n != state.organization.default_pipeline, n))
    for pipeline in [state.pipelines[n] for n in names]:
        for environment in pipeline.environments:
            if environment not in ordered:
                ordered.append(environment)
    return ordered + sorted(set(state.environments) - set(ordered))


def status(state: State, environments: list[str], now: datetime.datetime,
           health: HealthByCluster | None = None) -> list[StatusCell]:
    """One cell per release, components in name order, environments in the given order."""
    cells = []
    for project, name in sorted(state.components):
        for environment in environments:
            release = state.releases.get((environment, project, name))
            if release:
                cells.append(StatusCell(
                    f"{project}/{name}", environment, release.version, release.image,
                    release.commit, release.released_at, age(release.released_at, now),
                    (health or {}).get((environment, project, name), {})))
    return cells
