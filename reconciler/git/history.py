"""Reading a state repo's history: commits (with their trailers), blobs at a commit, and
the paths a commit changed."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.errors import ReconcilerError
from reconciler.git.store import open_repository, resolve_commit


@dataclass(frozen=True)
class CommitInfo:
    id: str
    time: str
    author: str
    subject: str
    trailers: Mapping[str, str]
    parents: tuple[str, ...]
    committer: str = ""
    message: str = ""


def _info(commit: pygit2.Commit) -> CommitInfo:
    moment = datetime.datetime.fromtimestamp(commit.commit_time, datetime.UTC)
    return CommitInfo(
        id=str(commit.id), time=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        author=commit.author.name, subject=commit.message.split("\n", 1)[0],
        trailers=commit.message_trailers, parents=tuple(str(p) for p in commit.parent_ids),
        committer=commit.committer.name, message=commit.message)


class Repository:
    """Commits, blobs and changed paths of a state repo's history."""

    def __init__(self, path: Path) -> None:
        self.repository = open_repository(path)

    def _commit(self, revision: str) -> pygit2.Commit:
        return resolve_commit(self.repository, revision)

    def commits(self, revision: str, newest_first: bool) -> Iterator[CommitInfo]:
        if self.repository.head_is_unborn and revision == "HEAD":
            return
        order = pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME
        if not newest_first:
            order |= pygit2.enums.SortMode.REVERSE
        for commit in self.repository.walk(self._commit(revision).id, order):
            yield _info(commit)

    def first_parents(self, revision: str, since: str | None = None) -> list[CommitInfo]:
        """The first-parent line of ``revision``, oldest first: the order changes reached
        the branch. With ``since``, it starts there (``since`` must be on the line)."""
        if self.repository.head_is_unborn and revision == "HEAD":
            return []
        stop = str(self._commit(since).id) if since else None
        line = []
        commit: pygit2.Commit | None = self._commit(revision)
        while commit is not None:
            line.append(_info(commit))
            if str(commit.id) == stop:
                break
            commit = commit.parents[0] if commit.parents else None
        else:
            if stop is not None:
                raise ReconcilerError(f"{since} is not on the first-parent line of {revision}")
        return line[::-1]

    def info(self, revision: str) -> CommitInfo:
        return _info(self._commit(revision))

    def changed(self, old: str | None, new: str) -> list[tuple[str, str]]:
        """(path, "added" | "modified" | "deleted") for every file that differs from commit
        ``old`` (None: the empty tree) to commit ``new``."""
        new_tree = self._commit(new).tree
        diff = (self._commit(old).tree.diff_to_tree(new_tree) if old is not None
                else new_tree.diff_to_tree(swap=True))
        found = []
        for delta in diff.deltas:
            status = delta.status
            if status == pygit2.enums.DeltaStatus.ADDED:
                found.append((delta.new_file.path, "added"))
            elif status == pygit2.enums.DeltaStatus.DELETED:
                found.append((delta.old_file.path, "deleted"))
            else:
                found.append((delta.new_file.path, "modified"))
        return found

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return bool(self.repository.descendant_of(self._commit(descendant).id,
                                                  self._commit(ancestor).id)) or (
            str(self._commit(ancestor).id) == str(self._commit(descendant).id))

    def blob_id_at(self, commit: str, path: str) -> pygit2.Oid | None:
        return _blob_id(self._commit(commit).tree, path)

    def blob_at(self, commit: str, path: str) -> bytes | None:
        try:
            entry = self._commit(commit).tree[path]
        except KeyError:
            return None
        blob = self.repository[entry.id]
        return blob.data if isinstance(blob, pygit2.Blob) else None

    def blobs_in(self, commit: str, folder: str) -> dict[str, pygit2.Oid]:
        """The blob id of each file directly in ``folder`` at ``commit``, by file name."""
        found = _subtree(self._commit(commit).tree, folder.rstrip("/"))
        if found is None:
            return {}
        return {entry.name: entry.id for entry in found
                if entry.name is not None and entry.type_str == "blob"}

    def changes(self, info: CommitInfo, folders: Iterable[str]) -> list[tuple[str, bool]]:
        """(path, deleted) under ``folders`` that ``info`` changed against its first parent;
        for a merge, only those that match none of its other parents (its own edits)."""
        commit = self._commit(info.id)
        parents = [self._commit(p) for p in info.parents]
        changed: list[tuple[str, bool]] = []
        for folder in folders:
            name = folder.rstrip("/")
            new = _subtree(commit.tree, name)
            old = _subtree(parents[0].tree, name) if parents else None
            if new is None or (old is not None and old.id == new.id):
                continue
            diff = old.diff_to_tree(new) if old is not None else new.diff_to_tree(swap=True)
            for delta in diff.deltas:
                deleted = delta.status == pygit2.enums.DeltaStatus.DELETED
                path = f"{name}/{(delta.old_file if deleted else delta.new_file).path}"
                blob = None if deleted else delta.new_file.id
                if any(_blob_id(p.tree, path) == blob for p in parents[1:]):
                    continue
                changed.append((path, deleted))
        return changed


def _subtree(tree: pygit2.Tree, name: str) -> pygit2.Tree | None:
    try:
        entry = tree[name]
    except KeyError:
        return None
    return entry if isinstance(entry, pygit2.Tree) else None


def _blob_id(tree: pygit2.Tree, path: str) -> pygit2.Oid | None:
    try:
        return tree[path].id
    except KeyError:
        return None
