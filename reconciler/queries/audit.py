"""The audit: prove build-once-promote from what the files contain, commit by commit along
the first-parent line of the branch (the order changes reached it).

Every digest released into an environment must be a registered build with that digest at
that commit, released in each earlier stage of the component's pipeline (at that commit)
in an earlier commit, and, into a stage that requires a pull request, must have arrived by
one (a merge, a squash or a rebase of a pull request, not a direct push), and, into a stage
that requires verification, must have been recorded Healthy on every cluster of the
previous stage before its commit (where the repository has verification records; a
promotion that skipped verification is listed with its reason; a release that ran in that
environment before, a rollback, needs no new verification). Build records are
immutable. A commit of the tool must change only what its trailers say. How a change
arrived (tool commit, merge, squash with any message, rebase, careful hand edit) does not
matter otherwise: trailers attribute, they don't grant trust. Hand edits of platform files
are not findings; ``verbose`` lists them as notices.

The first commit (or ``since``) is the trusted baseline: a repo that adopted the tool
starts from whatever it held.

The proof is incremental: what it knows after a commit (releases so far, findings) is kept
in a cache keyed by that commit, outside the work tree and safe to delete, so a re-run after
one new commit costs about one commit's work.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from reconciler.cache import cache_home
from reconciler.errors import ReconcilerError
from reconciler.git.history import CommitInfo, Repository
from reconciler.load import parse
from reconciler.load.verifications import first_healthy_ever
from reconciler.model import trailers
from reconciler.model.kinds import Pipeline, State
from reconciler.model.paths import (
    ORGANIZATION_FILE,
    build_path,
    classify,
    component_path,
    config_path,
    environment_path,
    pipeline_path,
    project_path,
    secret_path,
)
from reconciler.queries.history import yaml_mapping

_PULL_REQUEST = re.compile(r"\(#\d+\)\s*$|^Merge pull request |^Merged PR \d+|^Merge branch '"
                           r"|^Squashed commit of the following:|^See merge request ", re.M)
"""What Git hosts and ``git merge --squash`` write when a pull request is merged."""


@dataclass(frozen=True)
class Finding:
    commit: str
    path: str
    message: str
    notice: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


Released = set[tuple[str, str, str, str]]
"""(environment, project, component, image) released at some commit so far."""


@dataclass(frozen=True)
class Obligation:
    """A release into a stage with requiresVerification: it must have been recorded Healthy
    on every cluster of the previous stage before its commit (unless skipped)."""

    commit: str
    path: str
    time: str
    previous: str
    component: str
    image: str
    clusters: tuple[str, ...]
    skipped: str


def audit(path: Path, environment: str | None = None, revision: str = "HEAD",
          since: str | None = None, verbose: bool = False,
          cache: Path | None = None) -> list[Finding]:
    """Every violation (and with ``verbose`` every hand edit, as a notice), oldest first.
    ``cache`` (default: the user's cache folder) keeps the proof's progress per commit."""
    repository = Repository(path)
    line = repository.first_parents(revision, since)
    line_order = {info.id: index for index, info in enumerate(line)}
    if not line:
        raise ReconcilerError(f"{path} has no commits to audit")
    tip = line[-1].id
    if repository.blob_id_at(tip, ORGANIZATION_FILE) is None:
        raise ReconcilerError(f"{path} is not a state repo: {ORGANIZATION_FILE} is missing at "
                              f"{revision}")
    if environment is not None and repository.blob_id_at(
            tip, environment_path(environment)) is None:
        raise ReconcilerError(f"unknown environment {environment!r}")
    store = _Cache(cache or default_cache(), line[0].id)
    start, released, findings, obligations = store.resume(line)
    if start == 0:
        for file, _ in repository.changed(None, line[0].id):
            _remember(repository, line[0].id, file, released)
    for parent, info in itertools.pairwise(line[start:]):
        changes = repository.changed(parent.id, info.id)
        findings.extend(_check_commit(repository, info, changes, released, obligations))
        for file, status in changes:
            if status != "deleted":
                _remember(repository, info.id, file, released)
    store.save(tip, released, findings, obligations)
    # Verification records live outside the branch and may arrive later: never cached.
    everything = sorted(findings + _verification_findings(path, obligations),
                        key=lambda f: line_order.get(f.commit, 0)) \
        if obligations else findings
    return [f for f in everything if (verbose or not f.notice)
            and (environment is None or _environment_of(f.path) == environment)]


def default_cache() -> Path:
    # With the cache off, a folder that can never be made: the proof runs from scratch.
    return (cache_home() or Path(os.devnull)) / "audit"


class _Cache:
    """The proof's progress after a commit: one JSON file per audited tip, per baseline."""

    VERSION = "2"

    def __init__(self, folder: Path, baseline: str) -> None:
        self.folder = folder / f"v{self.VERSION}-{baseline}"

    def resume(self, line: list[CommitInfo]
               ) -> tuple[int, Released, list[Finding], list[Obligation]]:
        """Where to carry on: the newest commit of ``line`` with saved progress."""
        for index in range(len(line) - 1, 0, -1):
            try:
                saved = json.loads((self.folder / f"{line[index].id}.json").read_text())
                released = {tuple(entry) for entry in saved["released"]}
                findings = [Finding(**entry) for entry in saved["findings"]]
                obligations = [Obligation(**{**entry, "clusters": tuple(entry["clusters"])})
                               for entry in saved["obligations"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            return index, released, findings, obligations
        return 0, set(), [], []

    def save(self, commit: str, released: Released, findings: list[Finding],
             obligations: list[Obligation]) -> None:
        """Keep the progress, best effort: an audit never fails for its cache."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            target = self.folder / f"{commit}.json"
            temporary = target.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps({
                "released": sorted(released), "findings": [f.as_dict() for f in findings],
                "obligations": [asdict(o) for o in obligations]}))
            temporary.replace(target)
            for old in sorted(self.folder.glob("*.json"), key=lambda f: f.stat().st_mtime)[:-8]:
                old.unlink(missing_ok=True)
        except OSError:
            pass


def _environment_of(file: str) -> str | None:
    kind, names = classify(file)
    return names[0] if kind in ("Release", "Config", "Secrets", "Environment") else None


def _remember(repository: Repository, commit: str, file: str, released: Released) -> None:
    kind, names = classify(file)
    if kind != "Release":
        return
    data = yaml_mapping(repository.blob_at(commit, file)) or {}
    released.add((names[0], names[1], names[2], str(data.get("image", ""))))


def _check_commit(repository: Repository, info: CommitInfo, changes: list[tuple[str, str]],
                  released: Released, obligations: list[Obligation]) -> list[Finding]:
    found: list[Finding] = []
    operation = info.trailers.get(trailers.OPERATION, "")
    merged = _by_pull_request(info)
    for file, status in changes:
        kind, names = classify(file)
        if kind == "Build" and status != "added":
            found.append(Finding(info.id, file, f"build record {status} after it was "
                                 "registered: builds are immutable"))
        elif kind == "Release" and status != "deleted":
            found.extend(_check_release(repository, info, file, names, released, merged,
                                        obligations))
    if operation and len(info.parents) == 1:
        allowed = _paths_of(info, [file for file, _ in changes])
        if allowed is not None:
            found.extend(Finding(info.id, file, f"the commit is a {operation} of "
                                 f"{info.trailers.get(trailers.COMPONENT) or 'the state'}, "
                                 "but also changes this file")
                         for file, _ in changes if file not in allowed)
    elif not merged and not operation:
        found.extend(Finding(info.id, file, "changed by hand", notice=True)
                     for file, _ in changes)
    return found


def _check_release(repository: Repository, info: CommitInfo, file: str,
                   names: tuple[str, ...], released: Released, merged: bool,
                   obligations: list[Obligation]) -> list[Finding]:
    environment, project, component = names[:3]
    data = yaml_mapping(repository.blob_at(info.id, file)) or {}
    image, source = str(data.get("image", "")), str(data.get("commit", ""))
    found = []
    build = yaml_mapping(repository.blob_at(info.id, build_path(project, component, source)))
    if build is None:
        found.append(Finding(info.id, file, f"released {image} from commit {source[:12]}, "
                             "which is not a registered build"))
    elif build.get("image") != image:
        found.append(Finding(info.id, file, f"released {image}, but build {source[:12]} is "
                             f"{build.get('image')}"))
    pipeline = _pipeline_at(repository, info.id, project, component)
    stages = list(pipeline.environments) if pipeline else []
    if environment in stages:
        for stage in stages[:stages.index(environment)]:
            if (stage, project, component, image) not in released:
                found.append(Finding(info.id, file, f"released {image} to {environment} "
                                     f"without releasing it in {stage} first"))
        assert pipeline is not None
        stage_rules = pipeline.stages[stages.index(environment)]
        if stage_rules.requires_pull_request and not merged:
            found.append(Finding(info.id, file, f"released into {environment}, which requires "
                                 "a pull request, without one (a direct push)"))
        index = stages.index(environment)
        rollback = (environment, project, component, image) in released
        if stage_rules.requires_verification and index > 0 and not rollback:
            previous = stages[index - 1]
            settings = yaml_mapping(repository.blob_at(info.id, environment_path(previous)))
            clusters = (settings or {}).get("clusters") or []
            obligations.append(Obligation(
                info.id, file, info.time, previous, f"{project}/{component}", image,
                tuple(str(c) for c in clusters),
                info.trailers.get(trailers.VERIFICATION_SKIPPED, "")))
    return found


def _verification_findings(path: Path, obligations: list[Obligation]) -> list[Finding]:
    """Each release into a stage with requiresVerification, held against the verification
    records (where the repository has any): verified on every cluster of the previous stage
    before its commit, or skipped, which is listed."""
    first_healthy = first_healthy_ever(path)
    found = []
    for duty in obligations:
        if duty.skipped:
            found.append(Finding(duty.commit, duty.path, f"promoted into {_environment_of(duty.path)}"
                                 f" with verification skipped: {duty.skipped}"))
            continue
        if not first_healthy:
            continue  # no records anywhere: nothing to hold it against
        for cluster in duty.clusters:
            since = first_healthy.get((cluster, duty.previous, duty.component, duty.image))
            if since is None or since > duty.time:
                when = f"first Healthy there at {since}" if since else "never recorded Healthy"
                found.append(Finding(duty.commit, duty.path, f"promoted {duty.image} at "
                                     f"{duty.time} before it was verified in {duty.previous} on "
                                     f"{cluster} ({when})"))
    return found


def _by_pull_request(info: CommitInfo) -> bool:
    """Reached the branch through a pull request: a merge commit, a squash (Git hosts and
    ``git merge --squash`` say so in the message), or a rebase of a ``--branch`` write."""
    return (len(info.parents) > 1 or bool(_PULL_REQUEST.search(info.message))
            or trailers.PULL_REQUEST_BRANCH in info.trailers)


def _paths_of(info: CommitInfo, changed: list[str]) -> set[str] | None:
    """The files a tool commit may change, by its own trailers (None: any). A release write
    may change every release file of its component in its environment: one line's file is
    renamed when another line joins it or leaves."""
    fields = info.trailers
    operation = fields.get(trailers.OPERATION, "")
    ref = fields.get(trailers.COMPONENT, "")
    project, _, component = ref.partition("/")
    environment = fields.get(trailers.TO_ENVIRONMENT) or fields.get(trailers.ENVIRONMENT, "")
    releases = {file for file in changed
                if classify(file)[0] == "Release"
                and classify(file)[1][:3] == (environment, project, component)}
    if operation in ("deploy", "promote", "rollback", "retire"):
        return releases
    if operation == "build-register":
        allowed = {build_path(project, component, fields.get(trailers.SOURCE_COMMIT, ""))}
        if fields.get(trailers.TO_ENVIRONMENT):
            allowed |= releases
        return allowed
    if operation in ("config-set", "config-unset"):
        return {config_path(project, component, environment or None)}
    if operation in ("secret-set", "secret-unset"):
        return {secret_path(environment, project, component, fields.get(trailers.KEY, ""))}
    if operation == "codeowners":
        return {"CODEOWNERS"}
    return None


_NAMES: dict[tuple[object, ...], str | None] = {}
_PIPELINES: dict[object, Pipeline | None] = {}
"""What decides a pipeline, by blob id: history repeats the same files again and again."""


def _pipeline_at(repository: Repository, commit: str, project: str,
                 component: str) -> Pipeline | None:
    """The component's pipeline at ``commit``, by the model's own rule for which pipeline a
    component uses; None where the files at that commit don't say."""
    paths = (ORGANIZATION_FILE, project_path(project), component_path(project, component))
    key = tuple(repository.blob_id_at(commit, path) for path in paths)
    if key not in _NAMES:
        _NAMES[key] = _pipeline_name(repository, commit, project, paths)
    name = _NAMES[key]
    if name is None:
        return None
    blob = repository.blob_id_at(commit, pipeline_path(name))
    if blob not in _PIPELINES:
        try:
            _PIPELINES[blob] = parse.pipeline(
                yaml_mapping(repository.blob_at(commit, pipeline_path(name))) or {}, "")
        except (KeyError, TypeError, AttributeError):
            _PIPELINES[blob] = None
    return _PIPELINES[blob]


def _pipeline_name(repository: Repository, commit: str, project: str,
                   paths: tuple[str, str, str]) -> str | None:
    organization_file, project_file, component_file = paths
    documents = {path: yaml_mapping(repository.blob_at(commit, path)) for path in paths}
    try:
        organization = parse.organization(documents[organization_file] or {})
        found = parse.component(project, documents[component_file] or {}, "")
        projects = {}
        if documents[project_file]:
            projects[project] = parse.project(documents[project_file] or {}, "")
        return State(organization, commit, projects=projects).component_pipeline(found)
    except (KeyError, TypeError, AttributeError):
        return None
