"""Git history as the log of releases: the tool's writes from commit trailers, and the
releases a component had in an environment from the history of its release file.

``events`` reads only commit messages (no diffs), so it stays fast on long histories.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reconciler.git.history import CommitInfo, Repository
from reconciler.model import trailers
from reconciler.model.kinds import Release
from reconciler.model.paths import release_path
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


def release_history(path: Path, environment: str, project: str, component: str,
                    revision: str = "HEAD") -> list[Release]:
    """Every release a component had in an environment, newest first, from the history of its
    release.yaml (tool writes and the initial state alike)."""
    repository = Repository(path)
    file = release_path(environment, project, component)
    found: list[Release] = []
    seen_blobs = set()
    for info in repository.commits(revision, newest_first=True):
        blob = repository.blob_id_at(info.id, file)
        if blob is None or blob in seen_blobs:
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
