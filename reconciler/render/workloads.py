"""Which object's health is a release line's, and what its verification record needs.

Kept apart from the reconcile pass so a daemon can take these from the state in the process
that loads it (see ``reconciler.daemon.prepare``) and keep only them between passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.kube.inventory import ObjectRef
from reconciler.model.kinds import TASK_TYPES, Release, State
from reconciler.model.names import namespace_name, workload_name
from reconciler.render.engine import release_ids


def workload_ref(state: State, release: Release) -> ObjectRef:
    """The object whose health is a release line's: its Deployment, or a task's CronJob."""
    component = state.components[(release.project, release.component)]
    kind, api_version = (("CronJob", "batch/v1") if component.type in TASK_TYPES
                         else ("Deployment", "apps/v1"))
    line = state.line_suffix(*release.key[:3], release.major)
    return ObjectRef(api_version, kind, namespace_name(release.project, release.environment),
                     workload_name(component.name, line))


@dataclass(frozen=True)
class VerificationTarget:
    """What a verification record of one release line needs, taken from the state once: a
    daemon keeps these instead of the whole state between passes."""

    component: str
    line: str
    release: str
    image: str
    workload: ObjectRef


def verification_targets(state: State, environment: str) -> tuple[VerificationTarget, ...]:
    """One target per release line of ``environment``."""
    ids = release_ids(state, environment)
    return tuple(VerificationTarget(release.ref, state.line_suffix(*release.key[:3],
                                                                   release.major),
                                    ids.get(release.key[1:], ""), release.image,
                                    workload_ref(state, release))
                 for release in state.releases_in(environment))
