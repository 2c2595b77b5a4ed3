"""Pushing one commit to origin as ``git push`` would, and telling a remote that moved
(retry on the new tip) from a remote that refused (report its message once).

A Git server runs its ``pre-receive`` and ``update`` hooks and checks that a push fast-
forwards atomically. libgit2 pushing to a repository on this machine's disk does neither:
it skips the hooks and checks first, writes after. So for such a remote this module takes
an exclusive lock on it, pushes the objects to a quarantine ref, runs the hooks as Git
would, and only then moves the branch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pygit2

from reconciler.errors import ReconcilerError

_MOVED = ("non-fast-forward", "nonfastforward", "fastforward", "fetch first", "stale info",
          "not present locally", "failed to lock", "lock file")
"""What libgit2 or a server says when the branch moved under us: fetch and try again."""
_ZERO = "0" * 40
_HOOK_SECONDS = 60


class MovedRemote(Exception):
    """The remote's branch moved since we fetched."""


class _Callbacks(pygit2.RemoteCallbacks):
    def __init__(self) -> None:
        super().__init__()
        self.rejected: dict[str, str] = {}
        self.said: list[str] = []

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected[refname] = message

    def sideband_progress(self, string: str) -> None:
        self.said.extend(line for line in string.splitlines() if line.strip())


def push(repository: pygit2.Repository, remote: pygit2.Remote, commit: pygit2.Oid,
         target: str, force: bool) -> None:
    """Push ``commit`` to ``refs/heads/<target>`` of origin (or to ``target`` itself when it
    is a full ``refs/...`` name); ``MovedRemote`` when it moved, ``ReconcilerError`` with
    the remote's words when it refused."""
    pending = f"refs/reconciler/pending/{os.getpid()}-{uuid.uuid4().hex[:8]}"
    repository.references.create(pending, commit)
    destination = target if target.startswith("refs/") else f"refs/heads/{target}"
    try:
        local = _local_path(remote.url)
        with _locked(local):
            if local is not None:
                _run_hooks(repository, remote, local, pending, commit, destination)
            _push(remote, f"{'+' if force else ''}{pending}:{destination}")
    finally:
        repository.references.delete(pending)


def _push(remote: pygit2.Remote, refspec: str) -> None:
    callbacks = _Callbacks()
    try:
        remote.push([refspec], callbacks=callbacks)
    except pygit2.GitError as exc:
        if any(marker in str(exc).lower() for marker in _MOVED):
            raise MovedRemote from None
        raise ReconcilerError(f"cannot push to origin ({remote.url}): {exc}; nothing was "
                              "written") from None
    for message in callbacks.rejected.values():
        if any(marker in message.lower() for marker in _MOVED):
            raise MovedRemote
        said = "".join(f"\n  remote: {line}" for line in callbacks.said)
        raise ReconcilerError(f"origin refused the push: {message}; nothing was written{said}")


def _run_hooks(repository: pygit2.Repository, remote: pygit2.Remote, local: Path,
               pending: str, commit: pygit2.Oid, destination: str) -> None:
    """``pre-receive`` then ``update``, as ``git receive-pack`` runs them, with the objects
    already in the remote under a quarantine ref."""
    hooks = local / "hooks"
    runnable = [hook for hook in (hooks / "pre-receive", hooks / "update")
                if hook.is_file() and os.access(hook, os.X_OK)]
    if not runnable:
        return
    quarantine = f"refs/reconciler/incoming/{pending.rsplit('/', 1)[1]}"
    _push(remote, f"+{pending}:{quarantine}")
    receiving = pygit2.Repository(str(local))
    try:
        old = receiving.references.get(destination)
        before = str(old.target) if old is not None else _ZERO
        line = f"{before} {commit} {destination}\n"
        for hook in runnable:
            arguments = [str(hook)] + ([destination, before, str(commit)]
                                       if hook.name == "update" else [])
            try:
                done = subprocess.run(arguments, input=line if hook.name == "pre-receive" else "",
                                      capture_output=True, text=True, cwd=local,
                                      env={**os.environ, "GIT_DIR": str(local)},
                                      timeout=_HOOK_SECONDS)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ReconcilerError(f"origin's {hook.name} hook failed to run: {exc}; nothing "
                                      "was written") from None
            if done.returncode != 0:
                said = "".join(f"\n  remote: {text}" for text in
                               (done.stderr + done.stdout).splitlines() if text.strip())
                raise ReconcilerError(f"origin refused the push: {hook.name} hook declined; "
                                      f"nothing was written{said}")
    finally:
        with contextlib.suppress(KeyError, pygit2.GitError):
            receiving.references.delete(quarantine)


def _local_path(url: str | None) -> Path | None:
    """The remote's folder when it is a repository on this machine's disk."""
    if not url or ("://" in url and not url.startswith("file://")):
        return None
    path = Path(url.removeprefix("file://"))
    return path if path.is_dir() else None


@contextlib.contextmanager
def _locked(local: Path | None) -> Iterator[None]:
    """Serialise pushes to a remote on this machine's disk (see the module's docstring)."""
    if local is None:
        yield
        return
    with file_lock(local / "reconciler-push.lock"):
        yield


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (and threads) for as long as the block runs."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
