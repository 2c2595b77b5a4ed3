"""Git through pygit2: read a state repo straight from a commit, and make commits.

The only module that imports pygit2, so the daemon can render from a commit without a
checkout and every write goes through one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pygit2

from reconciler.errors import ReconcilerError

_LINK_MODE = pygit2.enums.FileMode.LINK
_BLOB_MODES = (pygit2.enums.FileMode.BLOB, pygit2.enums.FileMode.BLOB_EXECUTABLE)


def open_repository(path: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError:
        raise ReconcilerError(f"{path} is not a Git repository") from None


class GitTree:
    """A state repo as one commit's tree; reads blobs without a checkout."""

    def __init__(self, repository_path: Path, revision: str) -> None:
        self.repository = open_repository(repository_path)
        try:
            commit = self.repository.revparse_single(revision).peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            raise ReconcilerError(f"unknown revision {revision!r} in {repository_path}") from None
        self.commit = commit
        self._revision = str(commit.id)

    @property
    def revision(self) -> str:
        return self._revision

    def entries(self) -> Iterable[tuple[str, bool]]:
        yield from _walk(self.repository, self.commit.tree, "")

    def read(self, path: str, limit: int) -> bytes:
        blob = self.repository[self.commit.tree[path].id].peel(pygit2.Blob)
        if blob.size > limit:
            return b"\0" * (limit + 1)
        data: bytes = blob.data
        return data


def _walk(repository: pygit2.Repository, tree: pygit2.Tree, prefix: str
          ) -> Iterator[tuple[str, bool]]:
    for entry in sorted(tree, key=lambda e: e.name or ""):
        path = prefix + (entry.name or "")
        if entry.filemode == pygit2.enums.FileMode.TREE:
            yield from _walk(repository, repository[entry.id].peel(pygit2.Tree), path + "/")
        elif entry.filemode == _LINK_MODE:
            yield path, True
        elif entry.filemode in _BLOB_MODES:
            yield path, False


def head_revision(path: Path) -> str | None:
    """The commit a work tree is at, or None when it is not a repository or has no commit."""
    try:
        repository = pygit2.Repository(str(path))
    except pygit2.GitError:
        return None
    if repository.head_is_unborn:
        return None
    return str(repository.head.target)


def is_dirty(path: Path) -> bool:
    repository = pygit2.Repository(str(path))
    status = repository.status(untracked_files="normal")
    return any(flags != pygit2.enums.FileStatus.IGNORED for flags in status.values())


def init_with_files(path: Path, message: str) -> str:
    """Make ``path`` a new repository whose first commit holds every file in it."""
    if (path / ".git").exists():
        raise ReconcilerError(f"{path} is already a Git repository")
    repository = pygit2.init_repository(str(path), initial_head="main")
    repository.index.add_all()
    repository.index.write()
    tree = repository.index.write_tree()
    signature = _signature(repository)
    commit = repository.create_commit("HEAD", signature, signature, message, tree, [])
    return str(commit)


def _signature(repository: pygit2.Repository) -> pygit2.Signature:
    try:
        return repository.default_signature
    except (KeyError, pygit2.GitError):
        return pygit2.Signature("reconciler", "reconciler@localhost")
