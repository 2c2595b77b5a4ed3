"""Verification records in the state repo's remote, under a ref namespace the tool owns
(``refs/reconciler/verifications/<cluster>``), never on a branch: branch protection and the
promotion history stay clean, and publishing needs push rights to that ref only.

Each cluster's ref has one writer (its leader) and holds commits whose tree has one small
file per (environment, component). A write is made on the fetched tip and pushed without
force; when the ref moved (an old leader's last write), it is fetched and made again, so no
record is lost.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pygit2

from reconciler.errors import ReconcilerError
from reconciler.git.push import MovedRemote, file_lock, push
from reconciler.git.store import open_repository, tree_with
from reconciler.model.paths import VERIFICATIONS_REFS, verification_ref

_REFSPEC = f"+{VERIFICATIONS_REFS}*:{VERIFICATIONS_REFS}*"
_SIGNATURE = ("reconciler", "reconciler@localhost")


def _origin(repository: pygit2.Repository) -> pygit2.Remote | None:
    return repository.remotes["origin"] if "origin" in [r.name for r in repository.remotes] \
        else None


def _fetch(remote: pygit2.Remote) -> None:
    try:
        remote.fetch([_REFSPEC])
    except pygit2.GitError as exc:
        raise ReconcilerError(f"cannot fetch verification records from origin "
                              f"({remote.url}): {exc}") from None


def publish(path: Path, cluster: str, files: Mapping[str, bytes], message: str,
            attempts: int = 8) -> bool:
    """Write ``files`` into ``cluster``'s records and push them; False when nothing changed.
    Without an origin the ref is written in the repository itself."""
    repository = open_repository(path)
    ref = verification_ref(cluster)
    remote = _origin(repository)
    with file_lock(Path(repository.path) / "reconciler-verifications.lock"):
        for attempt in range(1, attempts + 1):
            if remote is not None:
                _fetch(remote)
            current = repository.references.get(ref)
            parent = repository[current.target].peel(pygit2.Commit) if current else None
            tree = tree_with(repository, parent.tree if parent else None, files)
            if parent is not None and tree == parent.tree.id:
                return False
            signature = pygit2.Signature(*_SIGNATURE)
            commit = repository.create_commit(None, signature, signature, message, tree,
                                              [parent.id] if parent else [])
            if remote is not None:
                try:
                    push(repository, remote, commit, ref, force=False)
                except MovedRemote:
                    time.sleep(random.uniform(0.05, 0.2) * attempt)
                    continue
            repository.references.create(ref, commit, force=True)
            return True
    raise ReconcilerError(f"gave up publishing verification records of {cluster}: the ref "
                          "kept moving")


def latest(path: Path, fetch: bool) -> dict[str, dict[str, bytes]]:
    """Each cluster's records now: cluster -> file path -> content (fetched first when
    ``fetch`` and the repository has an origin); none for a folder that is no repository."""
    try:
        repository = open_repository(path)
    except ReconcilerError:
        return {}
    remote = _origin(repository)
    if fetch and remote is not None:
        _fetch(remote)
    found: dict[str, dict[str, bytes]] = {}
    for name in repository.references:
        if name.startswith(VERIFICATIONS_REFS):
            commit = repository.references[name].peel(pygit2.Commit)
            found[name.removeprefix(VERIFICATIONS_REFS)] = dict(_files(repository, commit.tree))
    return found


def every_version(path: Path) -> dict[str, list[bytes]]:
    """Each cluster's records as they ever were (each distinct file content once), for the
    audit: a record overwritten by a newer release still proves the older one. Fetched from
    origin first, best effort: records only ever add, so stale ones can only prove less."""
    try:
        repository = open_repository(path)
    except ReconcilerError:
        return {}
    remote = _origin(repository)
    if remote is not None:
        with contextlib.suppress(ReconcilerError):
            _fetch(remote)
    found: dict[str, list[bytes]] = {}
    for name in repository.references:
        if not name.startswith(VERIFICATIONS_REFS):
            continue
        seen: set[pygit2.Oid] = set()
        contents = found.setdefault(name.removeprefix(VERIFICATIONS_REFS), [])
        tip = repository.references[name].peel(pygit2.Commit)
        for commit in repository.walk(tip.id, pygit2.enums.SortMode.TOPOLOGICAL):
            for blob_id, data in _blobs(repository, commit.tree):
                if blob_id not in seen:
                    seen.add(blob_id)
                    contents.append(data)
    return found


def _files(repository: pygit2.Repository, tree: pygit2.Tree, prefix: str = ""
           ) -> Iterator[tuple[str, bytes]]:
    for entry in tree:
        if entry.type_str == "tree":
            yield from _files(repository, repository[entry.id].peel(pygit2.Tree),
                              f"{prefix}{entry.name}/")
        else:
            yield f"{prefix}{entry.name}", repository[entry.id].peel(pygit2.Blob).data


def _blobs(repository: pygit2.Repository, tree: pygit2.Tree) -> Iterator[tuple[pygit2.Oid, bytes]]:
    for entry in tree:
        if entry.type_str == "tree":
            yield from _blobs(repository, repository[entry.id].peel(pygit2.Tree))
        else:
            yield entry.id, repository[entry.id].peel(pygit2.Blob).data
