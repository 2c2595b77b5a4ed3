"""Snapshots of a state repo to load from: a work tree on disk, or one with some files
changed (what a write would leave, validated before it is committed). A Git commit is the
third kind (``reconciler.git.store.GitTree``); all give the same paths and bytes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from reconciler.errors import ReconcilerError


class TreeReader(Protocol):
    """A snapshot of a state repo: a work tree or a Git commit."""

    @property
    def revision(self) -> str: ...

    def entries(self) -> Iterable[tuple[str, bool]]:
        """Every file as (posix path relative to the root, is a symbolic link)."""
        ...

    def read(self, path: str, limit: int) -> bytes:
        """The file's bytes, at most ``limit + 1`` of them."""
        ...


class WorkTree:
    """A state repo on disk; never follows a symbolic link out of it."""

    def __init__(self, root: Path, revision: str = "worktree") -> None:
        if not root.is_dir():
            raise ReconcilerError(f"state repo {root} is not a directory")
        self.root = root
        self._revision = revision

    @property
    def revision(self) -> str:
        return self._revision

    def entries(self) -> Iterable[tuple[str, bool]]:
        """Folder by folder from the root, each folder's entries by name (as os.walk, but
        one directory read per folder and no stat per file)."""
        pending = [""]
        root = str(self.root)
        while pending:
            prefix = pending.pop(0)
            with os.scandir(os.path.join(root, prefix) if prefix else root) as scan:
                found = sorted(scan, key=lambda entry: entry.name)
            folders = []
            for entry in found:
                if entry.is_dir(follow_symlinks=False):
                    if prefix or entry.name != ".git":
                        folders.append(prefix + entry.name + "/")
                elif entry.is_symlink() and entry.is_dir():
                    yield prefix + entry.name, True
            for entry in found:
                if not entry.is_dir():
                    yield prefix + entry.name, entry.is_symlink()
            pending[:0] = folders

    def read(self, path: str, limit: int) -> bytes:
        with open(os.path.join(self.root, path), "rb") as handle:
            return handle.read(limit + 1)



class Overlay:
    """A snapshot with some files replaced (bytes) or deleted (None): the state as a write
    would leave it, so the write can be validated in full before it is committed."""

    def __init__(self, base: TreeReader, changes: Mapping[str, bytes | None]) -> None:
        self.base = base
        self.changes = dict(changes)

    @property
    def revision(self) -> str:
        return self.base.revision

    def entries(self) -> Iterable[tuple[str, bool]]:
        for path, is_link in self.base.entries():
            if path not in self.changes:
                yield path, is_link
        for path, content in sorted(self.changes.items()):
            if content is not None:
                yield path, False

    def read(self, path: str, limit: int) -> bytes:
        if path in self.changes:
            content = self.changes[path]
            if content is None:
                raise FileNotFoundError(path)
            return content[: limit + 1]
        return self.base.read(path, limit)
