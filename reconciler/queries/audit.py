"""The audit: replay every commit, oldest first, and prove the build-once-promote rule:
every digest released to an environment is a registered build at that commit and was
released in each earlier stage of the component's pipeline before; changes under
``environments/`` or ``builds/`` without the tool's trailers are reported as hand-made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reconciler.git.history import CommitInfo, Repository
from reconciler.load import parse
from reconciler.model import trailers
from reconciler.model.kinds import State
from reconciler.model.paths import (
    BUILDS_FOLDER,
    ENVIRONMENTS_FOLDER,
    ORGANIZATION_FILE,
    build_path,
    component_path,
    pipeline_path,
    project_path,
    release_path,
)
from reconciler.queries.history import yaml_mapping as _yaml


@dataclass(frozen=True)
class Finding:
    commit: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def audit(path: Path, environment: str | None = None, revision: str = "HEAD") -> list[Finding]:
    """Every violation of build-once-promote in the history, oldest first.

    The whole history is always replayed; ``environment`` only selects which findings are
    reported (releases into it, and hand-made changes to its folder).
    """
    repository = Repository(path)
    released: set[tuple[str, str, str, str]] = set()
    findings: list[Finding] = []
    for info in repository.commits(revision, newest_first=False):
        operation = info.trailers.get(trailers.OPERATION, "")
        for change, deleted in repository.changes(info, (ENVIRONMENTS_FOLDER, BUILDS_FOLDER)):
            parts = change.split("/")
            env = parts[1] if parts[0] == "environments" else None
            reported = environment is None or env == environment
            if not operation and reported:
                findings.append(Finding(info.id, change, "changed by hand: the commit has no "
                                        "reconciler trailers"))
            if deleted or env is None or len(parts) != 5 or parts[4] != "release.yaml":
                continue
            data = _yaml(repository.blob_at(info.id, change))
            if data is None:
                continue
            found = _check_release(repository, info, env, parts[2], parts[3], data, released,
                                   baseline=operation == trailers.INIT)
            if reported:
                findings.extend(found)
    return findings


def _check_release(repository: Repository, info: CommitInfo, environment: str, project: str,
                   component: str, data: dict[str, Any],
                   released: set[tuple[str, str, str, str]], baseline: bool) -> list[Finding]:
    path = release_path(environment, project, component)
    image, build_commit = str(data.get("image", "")), str(data.get("commit", ""))
    found = []
    build = _yaml(repository.blob_at(info.id, build_path(project, component, build_commit)))
    if build is None:
        found.append(Finding(info.id, path, f"released {image} from commit {build_commit[:12]}, "
                             "which is not a registered build"))
    elif build.get("image") != image:
        found.append(Finding(info.id, path, f"released {image}, but build {build_commit[:12]} "
                             f"is {build.get('image')}"))
    if not baseline:
        for stage in _earlier_stages(repository, info.id, environment, project, component):
            if (stage, project, component, image) not in released:
                found.append(Finding(info.id, path, f"released {image} to {environment} without "
                                     f"releasing it in {stage} first"))
    released.add((environment, project, component, image))
    return found


def _earlier_stages(repository: Repository, commit: str, environment: str, project: str,
                    component: str) -> list[str]:
    """The stages before ``environment`` in the component's pipeline at ``commit``, by the
    model's own rule for which pipeline a component uses."""
    documents = {path: _yaml(repository.blob_at(commit, path)) for path in (
        ORGANIZATION_FILE, project_path(project), component_path(project, component))}
    try:
        organization = parse.organization(documents[ORGANIZATION_FILE] or {})
        found = parse.component(project, documents[component_path(project, component)] or {},
                                "")
        projects = {}
        if documents[project_path(project)]:
            projects[project] = parse.project(documents[project_path(project)] or {}, "")
        name = State(organization, commit, projects=projects).component_pipeline(found)
        pipeline = parse.pipeline(_yaml(repository.blob_at(commit, pipeline_path(name))) or {}, "")
    except (KeyError, TypeError, AttributeError):
        return []  # not a valid state at that commit: nothing to compare with
    stages = list(pipeline.environments)
    return stages[:stages.index(environment)] if environment in stages else []
