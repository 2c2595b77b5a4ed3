"""Git history as the log of releases, in the order changes reached the branch (its
first-parent line): the tool's writes from their trailers, and every release change that
arrived otherwise (a merged, squashed or rebased pull request, a hand edit) from the files
themselves, with who promoted it and who merged it where Git knows.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.git.history import CommitInfo, Repository
from reconciler.model import trailers
from reconciler.model.kinds import Release
from reconciler.model.paths import classify, release_folder
from reconciler.yamlio import ManifestError, load_manifests

_TRAILER_LINE = re.compile(r"^\s*([A-Z][A-Za-z-]+): (.+)$", re.M)


@dataclass(frozen=True)
class Event:
    """One write of the tool, or one release change, from its commit."""

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
    merged_by: str = ""
    pull_request_branch: str = ""
    version: str = ""
    """The API major line a release write acted on, where the tool says or the file shows."""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _event(info: CommitInfo, fields: Mapping[str, str], author: str = "") -> Event | None:
    operation = fields.get(trailers.OPERATION)
    if not operation:
        return None
    return Event(
        commit=info.id, time=info.time, author=author or info.author, operation=operation,
        subject=info.subject, component=fields.get(trailers.COMPONENT, ""),
        from_environment=fields.get(trailers.FROM_ENVIRONMENT, ""),
        to_environment=fields.get(trailers.TO_ENVIRONMENT, fields.get(trailers.ENVIRONMENT, "")),
        image=fields.get(trailers.IMAGE, ""), source_commit=fields.get(trailers.SOURCE_COMMIT, ""),
        release=fields.get(trailers.RELEASE, ""), pipeline=fields.get(trailers.PIPELINE, ""),
        key=fields.get(trailers.KEY, ""),
        pull_request_branch=fields.get(trailers.PULL_REQUEST_BRANCH, ""),
        version=fields.get(trailers.VERSION, ""))


def events(path: Path, component: str | None = None, environment: str | None = None,
           revision: str = "HEAD") -> Iterator[Event]:
    """The tool's writes and every release change on the first-parent line of ``revision``,
    newest first."""
    repository = Repository(path)
    for info in reversed(repository.first_parents(revision)):
        for event in _events_of(repository, info):
            if component and event.component != component:
                continue
            if environment and environment not in (event.to_environment,
                                                   event.from_environment):
                continue
            yield event


def _events_of(repository: Repository, info: CommitInfo) -> list[Event]:
    if len(info.parents) <= 1:
        own = _event(info, info.trailers)
        if own is not None:
            rebased = info.committer != info.author and trailers.PULL_REQUEST_BRANCH in \
                info.trailers
            return [replace(own, merged_by=info.committer if rebased else "")]
    if not info.parents:
        return []
    found = []
    changed = repository.changed(info.parents[0], info.id)
    # A line's file renamed (release.yaml <-> release-v1.yaml, content unchanged) when
    # another line joined or left is no release change.
    renamed = {repository.blob_id_at(info.parents[0], file) for file, status in changed
               if status == "deleted" and classify(file)[0] == "Release"}
    for file, status in changed:
        kind, names = classify(file)
        if kind != "Release" or status == "deleted":
            continue
        if status == "added" and repository.blob_id_at(info.id, file) in renamed:
            continue
        found.append(_release_event(repository, info, file, names))
    return found


def _release_event(repository: Repository, info: CommitInfo, file: str,
                   names: tuple[str, ...]) -> Event:
    """A release change that came without the tool's own commit: from a merged pull request
    (the promoter is the author of the tool's commit on its branch), a squash (whose message
    keeps the squashed commits' trailers, or only a title), or a hand edit."""
    environment, project, component = names[:3]
    ref = f"{project}/{component}"
    data = yaml_mapping(repository.blob_at(info.id, file)) or {}
    fields: Mapping[str, str] = {}
    promoter = info.author
    merged_by = ""
    if len(info.parents) > 1:
        merged_by = info.author
        for commit in repository.commits(info.parents[1], newest_first=True):
            if repository.is_ancestor(commit.id, info.parents[0]):
                break
            if (commit.trailers.get(trailers.COMPONENT) == ref
                    and commit.trailers.get(trailers.TO_ENVIRONMENT) == environment):
                fields, promoter = commit.trailers, commit.author
                break
    else:
        squashed = dict(_TRAILER_LINE.findall(info.message))
        if squashed.get(trailers.COMPONENT) == ref:
            fields = squashed
        if info.committer != info.author:
            merged_by = info.committer
    event = _event(info, fields, promoter) or Event(
        commit=info.id, time=info.time, author=promoter, operation="release",
        subject=info.subject, component=ref, from_environment="", to_environment=environment,
        image="", source_commit="", release="", pipeline="")
    return replace(event, component=ref, to_environment=environment,
                   image=str(data.get("image", event.image)),
                   source_commit=str(data.get("commit", event.source_commit)),
                   merged_by=merged_by, version=str(data.get("version", "")).split(".")[0])


def release_history(path: Path, environment: str, project: str, component: str,
                    revision: str = "HEAD") -> list[Release]:
    """Every release a component had in an environment (on any major line), newest first,
    from the history of its release files (tool writes and the initial state alike)."""
    repository = Repository(path)
    folder = release_folder(environment, project, component)
    found: list[Release] = []
    seen_blobs = set()
    for info in repository.commits(revision, newest_first=True):
        for name, blob in sorted(repository.blobs_in(info.id, folder).items()):
            file = f"{folder}/{name}"
            if blob in seen_blobs or classify(file)[0] != "Release":
                continue
            seen_blobs.add(blob)
            data = yaml_mapping(repository.blob_at(info.id, file))
            if not data or not isinstance(data.get("image"), str):
                continue
            release = Release(environment, project, component, str(data.get("commit", "")),
                              data["image"], str(data.get("version", "")),
                              str(data.get("releasedAt", "")), file)
            if all((r.commit, r.image) != (release.commit, release.image) for r in found):
                found.append(release)
    return found


def yaml_mapping(content: bytes | None) -> dict[str, Any] | None:
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
