"""Git history as the audit log: the tool's writes from commit trailers, and the audit.

``events`` reads only commit messages (no diffs), so it stays fast on long histories.
``audit`` replays every commit, oldest first, and proves the build-once-promote rule:
every digest released to an environment is a registered build at that commit and was
released in each earlier stage of the component's pipeline before; changes under
``environments/`` or ``builds/`` without the tool's trailers are reported as hand-made.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reconciler.git.store import CommitInfo, Repository
from reconciler.model import trailers
from reconciler.model.kinds import Release, State
from reconciler.yamlio import ManifestError, load_manifests


@dataclass(frozen=True)
class Event:
    """One write of the tool, from its commit."""

    commit: str
    time: str
    author: str
    operation: str
    subject: str
    component: str
    from_environment: str
    to_environment: str
    image: str
    source_commit: str
    release: str
    pipeline: str
    key: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _event(info: CommitInfo) -> Event | None:
    fields = info.trailers
    operation = fields.get(trailers.OPERATION)
    if not operation:
        return None
    return Event(
        commit=info.id, time=info.time, author=info.author, operation=operation,
        subject=info.subject, component=fields.get(trailers.COMPONENT, ""),
        from_environment=fields.get(trailers.FROM_ENVIRONMENT, ""),
        to_environment=fields.get(trailers.TO_ENVIRONMENT, fields.get(trailers.ENVIRONMENT, "")),
        image=fields.get(trailers.IMAGE, ""), source_commit=fields.get(trailers.SOURCE_COMMIT, ""),
        release=fields.get(trailers.RELEASE, ""), pipeline=fields.get(trailers.PIPELINE, ""),
        key=fields.get(trailers.KEY, ""))


def events(path: Path, component: str | None = None, environment: str | None = None,
           revision: str = "HEAD") -> Iterator[Event]:
    """The tool's writes reachable from ``revision``, newest first."""
    for info in Repository(path).commits(revision, newest_first=True):
        event = _event(info)
        if event is None:
            continue
        if component and event.component != component:
            continue
        if environment and environment not in (event.to_environment, event.from_environment):
            continue
        yield event


def last_changes(path: Path, files: Iterable[str], revision: str = "HEAD"
                 ) -> dict[str, CommitInfo]:
    """The newest commit that changed each file (against its first parent), however it was
    written: by the tool, by hand, by sops or by merging a pull request."""
    repository = Repository(path)
    pending = set(files)
    found: dict[str, CommitInfo] = {}
    for info in repository.commits(revision, newest_first=True):
        if not pending:
            break
        for file in sorted(pending):
            blob = repository.blob_id_at(info.id, file)
            before = repository.blob_id_at(info.parents[0], file) if info.parents else None
            if blob != before:
                found[file] = info
                pending.discard(file)
    return found


@dataclass(frozen=True)
class SecretEntry:
    """One secret as ``secret list`` shows it: never its value."""

    key: str
    changed: str
    by: str
    recipients: tuple[str, ...]
    missing: tuple[str, ...]
    """Current recipients the file is not encrypted to (stale until `secret rotate`)."""
    extra: tuple[str, ...]
    """Recipients the file is still encrypted to that the environment no longer lists."""

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "changed": self.changed, "by": self.by,
                "recipients": list(self.recipients), "missing": list(self.missing),
                "extra": list(self.extra)}


def secret_entries(path: Path, state: State, project: str, component: str, environment: str,
                   revision: str = "HEAD") -> list[SecretEntry]:
    """The secrets of a component in an environment: when and by whom each last changed and
    whether its file is encrypted to exactly the environment's current recipients."""
    found = state.secrets.get((environment, project, component))
    if found is None:
        return []
    current = state.environments[environment].secret_recipients
    changes = last_changes(path, [f.path for f in found.files.values()], revision)
    entries = []
    for key in found.keys:
        secret = found.files[key]
        change = changes.get(secret.path)
        entries.append(SecretEntry(
            key, change.time if change else "", change.author if change else "",
            secret.recipients, tuple(r for r in current if r not in secret.recipients),
            tuple(r for r in secret.recipients if r not in current)))
    return entries


def release_history(path: Path, environment: str, project: str, component: str,
                    revision: str = "HEAD") -> list[Release]:
    """Every release a component had in an environment, newest first, from the history of its
    release.yaml (tool writes and the initial state alike)."""
    repository = Repository(path)
    release_path = f"environments/{environment}/{project}/{component}/release.yaml"
    found: list[Release] = []
    seen_blobs = set()
    for info in repository.commits(revision, newest_first=True):
        blob = repository.blob_id_at(info.id, release_path)
        if blob is None or blob in seen_blobs:
            continue
        seen_blobs.add(blob)
        data = _yaml(repository.blob_at(info.id, release_path))
        if not data or not isinstance(data.get("image"), str):
            continue
        release = Release(environment, project, component, str(data.get("commit", "")),
                          data["image"], str(data.get("version", "")),
                          str(data.get("releasedAt", "")), release_path)
        if all((r.commit, r.image) != (release.commit, release.image) for r in found):
            found.append(release)
    return found


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
        for change, deleted in repository.changes(info, ("environments/", "builds/")):
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
    path = f"environments/{environment}/{project}/{component}/release.yaml"
    image, build_commit = str(data.get("image", "")), str(data.get("commit", ""))
    found = []
    build = _yaml(repository.blob_at(info.id, f"builds/{project}/{component}/{build_commit}.yaml"))
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
    definition = _yaml(repository.blob_at(
        commit, f"projects/{project}/components/{component}/component.yaml")) or {}
    pipeline = definition.get("pipeline")
    if not pipeline:
        project_file = _yaml(repository.blob_at(commit, f"projects/{project}/project.yaml")) or {}
        pipelines = project_file.get("pipelines") or []
        organization = _yaml(repository.blob_at(commit, "organization.yaml")) or {}
        pipeline = pipelines[0] if pipelines else organization.get("defaultPipeline")
    stages = [s.get("environment") for s in
              (_yaml(repository.blob_at(commit, f"pipelines/{pipeline}.yaml")) or {}).get(
                  "stages", [])]
    return stages[:stages.index(environment)] if environment in stages else []


def _yaml(content: bytes | None) -> dict[str, Any] | None:
    if content is None:
        return None
    try:
        documents = load_manifests(content.decode("utf-8", errors="replace"))
    except ManifestError:
        return None
    return documents[0] if documents and isinstance(documents[0], dict) else None


def age(released_at: str, now: datetime.datetime) -> str:
    """A short human age: 45s, 12m, 3h, 5d."""
    try:
        moment = datetime.datetime.fromisoformat(released_at.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
