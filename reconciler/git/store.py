"""Git through pygit2: read a state repo straight from a commit, and make commits.

With the rest of git/, the only code that imports pygit2, so the daemon can render from a
commit without a checkout and every write goes through one place.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.errors import ReconcilerError
from reconciler.git.push import MovedRemote, file_lock, push

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
        commit = resolve_commit(self.repository, revision, f" in {repository_path}")
        self.commit = commit
        self._revision = str(commit.id)
        self._blobs: dict[str, pygit2.Oid] = {}

    @property
    def revision(self) -> str:
        return self._revision

    def entries(self) -> Iterable[tuple[str, bool]]:
        for path, oid, is_link in _walk(self.repository, self.commit.tree, ""):
            self._blobs[path] = oid
            yield path, is_link

    def read(self, path: str, limit: int) -> bytes:
        oid = self._blobs.get(path) or self.commit.tree[path].id
        blob = self.repository[oid].peel(pygit2.Blob)
        if blob.size > limit:
            return b"\0" * (limit + 1)
        data: bytes = blob.data
        return data


def resolve_commit(repository: pygit2.Repository, revision: str, where: str = ""
                   ) -> pygit2.Commit:
    try:
        return repository.revparse_single(revision).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise ReconcilerError(f"unknown revision {revision!r}{where}") from None


def _walk(repository: pygit2.Repository, tree: pygit2.Tree, prefix: str
          ) -> Iterator[tuple[str, pygit2.Oid, bool]]:
    for entry in sorted(tree, key=lambda e: e.name or ""):
        path = prefix + (entry.name or "")
        if entry.filemode == pygit2.enums.FileMode.TREE:
            yield from _walk(repository, repository[entry.id].peel(pygit2.Tree), path + "/")
        elif entry.filemode == _LINK_MODE:
            yield path, entry.id, True
        elif entry.filemode in _BLOB_MODES:
            yield path, entry.id, False


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
    try:
        signature = author_signature(repository)
    except ReconcilerError:
        signature = pygit2.Signature("reconciler", "reconciler@localhost")
    commit = repository.create_commit("HEAD", signature, signature, message, tree, [])
    return str(commit)


# --- Writing: one commit per operation, on the newest tip, pushed with retries ---



@dataclass(frozen=True)
class Write:
    """What one operation changes: file contents (None deletes) and the commit message."""

    message: str
    changes: Mapping[str, bytes | None]


@dataclass(frozen=True)
class Written:
    commit: str
    branch: str
    pushed: bool
    warning: str = ""


Operation = Callable[[GitTree], Write | None]


def author_signature(repository: pygit2.Repository) -> pygit2.Signature:
    """Who writes: GIT_AUTHOR_NAME / GIT_AUTHOR_EMAIL (or EMAIL), else Git config."""
    name = os.environ.get("GIT_AUTHOR_NAME") or os.environ.get("GIT_COMMITTER_NAME")
    email = (os.environ.get("GIT_AUTHOR_EMAIL") or os.environ.get("GIT_COMMITTER_EMAIL")
             or os.environ.get("EMAIL"))
    config = repository.config
    if not name and "user.name" in config:
        name = config["user.name"]
    if not email and "user.email" in config:
        email = config["user.email"]
    if not name or not email:
        raise ReconcilerError("who is writing? Set git config user.name and user.email, or "
                              "GIT_AUTHOR_NAME and GIT_AUTHOR_EMAIL")
    return pygit2.Signature(name, email)


def author_identity(path: Path) -> str | None:
    """``Name <email>`` of whoever works in the repo at ``path`` (as ``author_signature``
    finds them), or None when nobody is configured."""
    try:
        signature = author_signature(open_repository(path))
    except ReconcilerError:
        return None
    return f"{signature.name} <{signature.email}>"


def main_branch(repository: pygit2.Repository) -> str:
    """The branch the state lives on: origin's default branch when the clone knows it
    (``main``, ``master``...), else the one HEAD points to (in a bare clone, the remote's
    default). A feature branch checked out locally does not change where writes go."""
    remote_head = repository.references.get("refs/remotes/origin/HEAD")
    if remote_head is not None and isinstance(remote_head.target, str):
        return remote_head.target.removeprefix("refs/remotes/origin/")
    if repository.head_is_detached:
        raise ReconcilerError("HEAD is detached: check out the state repo's branch (e.g. "
                              "git switch main); nothing was written")
    return str(repository.references["HEAD"].target).removeprefix("refs/heads/")


def transact(path: Path, operation: Operation, *, branch: str | None = None,
             target_branch: str | None = None, replace: bool = False,
             attempts: int = 8) -> Written | None:
    """Run ``operation`` on the newest tip of ``branch`` (default: origin's default branch)
    and commit what it returns.

    With an ``origin`` remote: fetch first, commit on the remote's tip, push; when the push
    is refused because the remote moved, fetch again and re-run the operation on the new
    tip (never a textual rebase), up to ``attempts`` times with jittered backoff. Returns
    None when the operation has nothing to do. ``target_branch`` (default ``branch``)
    receives the commit instead: a pull request's branch, tool-owned, which an unmerged,
    different commit holds only until ``replace`` says to overwrite it. Writes from one
    clone take turns.
    """
    repository = open_repository(path)
    with file_lock(Path(repository.path) / "reconciler-write.lock"):  # one writer per clone
        return _transact(repository, path, operation, branch or main_branch(repository),
                         target_branch, replace, attempts)


def _transact(repository: pygit2.Repository, path: Path, operation: Operation, branch: str,
              target_branch: str | None, replace: bool, attempts: int) -> Written | None:
    target = target_branch or branch
    remote = repository.remotes["origin"] if "origin" in [r.name for r in repository.remotes] \
        else None
    for attempt in range(1, attempts + 1):
        if remote is not None:
            _fetch(remote)
        base = _base(repository, branch, remote is not None)
        write = operation(GitTree(path, str(base)))
        if write is None:
            return None
        commit = _commit(repository, base, write)
        if remote is None:
            if not _update_work_tree(repository, target, commit):
                raise ReconcilerError("your work tree has uncommitted changes to the files this "
                                      "would write: commit or stash them; nothing was written")
            _move_local(repository, target, commit, base if target == branch else None)
            return Written(str(commit), target, False)
        if target != branch and not replace:
            _unmerged_pull_request(repository, branch, target, commit)
        try:
            push(repository, remote, commit, target, force=target != branch)
        except MovedRemote:
            time.sleep(random.uniform(0.05, 0.2) * attempt)
            continue
        repository.references.create(f"refs/remotes/origin/{target}", commit, force=True)
        warning = ""
        if _update_work_tree(repository, target, commit):
            repository.references.create(f"refs/heads/{target}", commit, force=True)
        else:
            warning = (f"pushed, but your work tree has uncommitted changes to the files this "
                       f"wrote, so it and local {target} were not updated: commit or stash "
                       "them, then git pull")
        return Written(str(commit), target, True, warning)
    raise ReconcilerError(f"gave up after {attempts} attempts: the remote's {target} kept "
                          "moving; nothing was written")


def _unmerged_pull_request(repository: pygit2.Repository, branch: str, target: str,
                           commit: pygit2.Oid) -> None:
    """Refuse to overwrite a pull request's branch that holds something else, unmerged."""
    existing = repository.references.get(f"refs/remotes/origin/{target}")
    main = repository.references.get(f"refs/remotes/origin/{branch}")
    if existing is None or main is None:
        return
    held = repository[existing.target].peel(pygit2.Commit)
    merged = held.id == main.target or repository.descendant_of(main.target, held.id)
    if merged or held.message == repository[commit].peel(pygit2.Commit).message:
        return  # merged, or the same write again (e.g. on a newer main)
    raise ReconcilerError(f"{target} already holds an unmerged pull request ({str(held.id)[:12]}"
                          f" {held.message.splitlines()[0]!r}): merge or close it first, or "
                          "pass --replace to overwrite it; nothing was written")




def _fetch(remote: pygit2.Remote) -> None:
    url = remote.url or ""
    if _is_local(url) and not Path(url.removeprefix("file://")).exists():
        raise ReconcilerError(f"cannot reach origin {url}: no such repository")
    try:
        remote.fetch()
    except pygit2.GitError as exc:
        raise ReconcilerError(f"cannot fetch from origin ({remote.url}): {exc}") from None


def _base(repository: pygit2.Repository, branch: str, has_remote: bool) -> pygit2.Oid:
    local = repository.references.get(f"refs/heads/{branch}")
    if not has_remote:
        if local is None:
            raise ReconcilerError(f"the state repo has no branch {branch!r}")
        return _oid(local.target)
    tracking = repository.references.get(f"refs/remotes/origin/{branch}")
    if tracking is None:
        raise ReconcilerError(f"origin has no branch {branch!r}")
    if local is not None and local.target != tracking.target:
        merge_base = repository.merge_base(local.target, tracking.target)
        if merge_base != local.target:
            raise ReconcilerError(f"local {branch} has commits that are not on origin: push or "
                                  "drop them first; nothing was written")
    return _oid(tracking.target)


def _oid(target: pygit2.Oid | str) -> pygit2.Oid:
    return target if isinstance(target, pygit2.Oid) else pygit2.Oid(hex=target)


def _commit(repository: pygit2.Repository, base: pygit2.Oid, write: Write) -> pygit2.Oid:
    parent = repository[base].peel(pygit2.Commit)
    tree = tree_with(repository, parent.tree, write.changes)
    signature = author_signature(repository)
    return repository.create_commit(None, signature, signature, write.message, tree, [base])


def tree_with(repository: pygit2.Repository, tree: pygit2.Tree | None,
           changes: Mapping[str, bytes | None]) -> pygit2.Oid:
    """A new tree: ``tree`` with ``changes`` (posix paths) written or deleted."""
    builder = repository.TreeBuilder(tree) if tree is not None else repository.TreeBuilder()
    here: dict[str, bytes | None] = {}
    below: dict[str, dict[str, bytes | None]] = {}
    for path, content in changes.items():
        head, _, rest = path.partition("/")
        if rest:
            below.setdefault(head, {})[rest] = content
        else:
            here[head] = content
    for name, content in here.items():
        if content is None:
            if builder.get(name) is not None:
                builder.remove(name)
        else:
            builder.insert(name, repository.create_blob(content), pygit2.enums.FileMode.BLOB)
    for name, subchanges in below.items():
        entry = builder.get(name)
        subtree = (repository[entry.id].peel(pygit2.Tree)
                   if entry is not None and entry.filemode == pygit2.enums.FileMode.TREE else None)
        new = tree_with(repository, subtree, subchanges)
        if len(repository[new].peel(pygit2.Tree)) == 0:
            if entry is not None:
                builder.remove(name)
        else:
            builder.insert(name, new, pygit2.enums.FileMode.TREE)
    return builder.write()


def _move_local(repository: pygit2.Repository, branch: str, commit: pygit2.Oid,
                expected: pygit2.Oid | None) -> None:
    name = f"refs/heads/{branch}"
    current = repository.references.get(name)
    if expected is not None and (current is None or current.target != expected):
        raise ReconcilerError(f"{branch} moved while writing; nothing was written")
    repository.references.create(name, commit, force=True)


def _update_work_tree(repository: pygit2.Repository, branch: str, commit: pygit2.Oid) -> bool:
    """Bring a checked-out ``branch``'s work tree to ``commit`` before the branch moves;
    False when uncommitted edits to the same files prevent it (nothing is touched then)."""
    if repository.is_bare or repository.head_is_detached or repository.head_is_unborn:
        return True
    if repository.head.name != f"refs/heads/{branch}":
        return True
    try:
        repository.checkout_tree(  # type: ignore[no-untyped-call]
            repository[commit].peel(pygit2.Tree), strategy=pygit2.enums.CheckoutStrategy.SAFE)
    except pygit2.GitError:
        return False
    return True


def _is_local(url: str) -> bool:
    """An absolute path on disk rather than a URL (``https://``, ``ssh://``, ``host:path``)."""
    return url.startswith(("file:///", "/"))


def follow(path: Path, branch: str | None = None) -> str:
    """The newest commit of ``branch`` (default: HEAD's branch): fetched from ``origin``
    when the repo has one."""
    repository = open_repository(path)
    branch = branch or main_branch(repository)
    if "origin" in [r.name for r in repository.remotes]:
        _fetch(repository.remotes["origin"])
        reference = repository.references.get(f"refs/remotes/origin/{branch}")
    else:
        reference = repository.references.get(f"refs/heads/{branch}")
    if reference is None:
        raise ReconcilerError(f"the state repo has no branch {branch!r}")
    return str(_oid(reference.target))


def clone_bare(url: str, path: Path) -> None:
    try:
        pygit2.clone_repository(url, str(path), bare=True)
    except pygit2.GitError as exc:
        raise ReconcilerError(f"cannot clone {url}: {exc}") from None
