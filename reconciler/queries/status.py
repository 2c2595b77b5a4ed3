"""``status``: the matrix of components x environments, each release's version, digest and
age, whether it is verified (recorded Healthy on every cluster of its environment), and
(when given) its live health per cluster."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.errors import ReconcilerError
from reconciler.load.verifications import Records, line_records
from reconciler.model.kinds import Release, State
from reconciler.model.verification import verdict
from reconciler.queries.history import age

HealthByCluster = Mapping[tuple[str, str, str, str], Mapping[str, str]]
"""(environment, project, component, major) -> cluster -> health status."""


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
    verification: Mapping[str, object] = field(default_factory=dict)

    @property
    def verification_mark(self) -> str:
        """✓ healthy on every cluster (for how long), ✗ degraded somewhere, … waiting."""
        if not self.verification:
            return ""
        if self.verification["verified"]:
            return f"✓ {self.verification['summary']}"
        clusters: Mapping[str, Mapping[str, str]] = self.verification["clusters"]  # type: ignore[assignment]
        degraded = sorted(name for name, seen in clusters.items()
                          if seen.get("health") == "Degraded")
        return f"✗ Degraded on {', '.join(degraded)}" if degraded else "… waiting"

    @property
    def short_digest(self) -> str:
        return self.image.split("@sha256:")[1][:7]

    def as_dict(self, live: bool) -> dict[str, object]:
        found: dict[str, object] = {
            "component": self.component, "environment": self.environment,
            "version": self.version, "image": self.image, "commit": self.commit,
            "releasedAt": self.released_at, "age": self.age}
        if self.verification:
            found["verification"] = dict(self.verification)
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
           health: HealthByCluster | None = None,
           records: Records | None = None) -> list[StatusCell]:
    """One cell per release line, components in name order, environments in the given
    order; with ``records`` (when there are any), whether each release is verified."""
    cells = []
    for project, name in sorted(state.components):
        for environment in environments:
            for release in state.lines(environment, project, name).values():
                cells.append(StatusCell(
                    f"{project}/{name}", environment, release.version, release.image,
                    release.commit, release.released_at, age(release.released_at, now),
                    (health or {}).get(release.key, {}),
                    _verification(state, release, records, now) if records else {}))
    return cells


def _verification(state: State, release: Release, records: Records,
                  now: datetime.datetime) -> dict[str, object]:
    line = state.line_suffix(*release.key[:3], release.major)
    by_cluster = line_records(records, release.environment, release.ref, line)
    clusters = state.environments[release.environment].clusters
    found = verdict(by_cluster, clusters, release.image)
    return {"verified": found.verified, "summary": found.summary(now),
            "clusters": {name: {"health": record.health, "since": record.since,
                                "firstHealthy": record.first_healthy,
                                "thisRelease": record.image == release.image}
                         for name, record in sorted(by_cluster.items())}}
