"""``secret list``: each secret of a component in an environment, when and by whom its file
last changed, and whether it is encrypted to exactly the environment's recipients. Never a
value: nothing here decrypts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.git.history import CommitInfo, Repository
from reconciler.model.kinds import State


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
