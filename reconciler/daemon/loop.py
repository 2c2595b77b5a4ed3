"""`reconciler run`: keep one cluster in step with the state repo.

Follows the repo (fetch from origin, or a local repo's branch, with watchdog events and a
`POST /hooks/git` webhook to react at once), renders straight from the commit, applies every
environment that includes the cluster, prunes, waits for health (a newer commit cancels the
wait), records per-environment status in the cluster, and re-checks drift every interval,
healing it. Only the holder of a coordination.k8s.io Lease applies, so replicas can stand by.
Serves /healthz, /readyz and Prometheus /metrics, logs JSON lines, backs off on errors.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler import __version__
from reconciler.daemon.environment import MAX_BACKOFF, EnvironmentWorker, Offer
from reconciler.daemon.http import serve
from reconciler.daemon.memory import release_free_memory
from reconciler.daemon.metrics import Metrics, log
from reconciler.daemon.prepare import Prepared, prepare_in_child
from reconciler.errors import ReconcilerError
from reconciler.git.store import follow, open_repository
from reconciler.kube.client import KubeClient
from reconciler.kube.lease import LeaderElection
from reconciler.kube.manager import live_cache
from reconciler.reconcile import SYSTEM_NAMESPACE, ensure_system_namespace

_WRITES = ("created", "modified", "moved", "deleted")


@dataclass
class Daemon:
    repo: Path
    cluster: str
    client: KubeClient
    age_key_file: Path | None = None
    """Where the age keys of secrets are, besides $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE and
    ~/.config/sops/age/keys.txt (as sops finds them)."""
    interval: float = 180.0
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    wait_timeout: float = 300.0
    metrics: Metrics = field(default_factory=Metrics)
    lease_name: str = ""
    lease: tuple[int, float, float] = (15, 10.0, 2.0)
    """Lease duration, renew deadline and retry period, in seconds (client-go's defaults)."""
    webhook_secret: bytes | Path | None = None
    """Shared secret of POST /hooks/git, or a file holding it (read at each request, so a
    rotated or late-mounted Secret counts); without one the webhook refuses every request."""

    def webhook_key(self) -> bytes | None:
        if isinstance(self.webhook_secret, Path):
            try:
                return self.webhook_secret.read_bytes().strip() or None
            except OSError:
                return None
        return self.webhook_secret

    def __post_init__(self) -> None:
        # The API server's audit log then tells which replica sent each request.
        self.client.api.user_agent = f"reconciler/{__version__} ({self.identity})"
        self.stopping = threading.Event()
        self.trigger = threading.Event()
        self.ready = threading.Event()
        self.is_leader = False
        self.workers: dict[str, EnvironmentWorker] = {}
        self.seen_tip = ""
        self._prepared: Prepared | None = None
        """The last commit loaded and rendered: an unchanged tip is not loaded again."""
        self._caches: dict[str, bytes] = {}
        """The parse and render caches the last load left (kept when a load fails)."""
        self.failures = 0
        self.render_failures = 0
        """Steps in a row whose commit had an environment that could not be rendered."""
        self.problem = ""
        duration, renew_deadline, retry_period = self.lease
        self.election = LeaderElection(self.client, SYSTEM_NAMESPACE,
                                       self.lease_name or f"reconciler-{self.cluster}",
                                       self.identity, duration, renew_deadline, retry_period)
        self.writer = self.client.guarded(self._may_write)
        """Every write but the Lease's goes through this: none is sent unless leading."""
        self.live = live_cache(self.client)
        """Watches of the kinds applied: a drift check reads live objects from memory."""

    # --- the loop ---

    def run(self) -> None:
        observer = self._watch_local_repo()
        leadership = threading.Thread(target=self._lead, daemon=True)
        leadership.start()
        log.info("started", extra={"cluster": self.cluster, "identity": self.identity})
        try:
            while not self.stopping.is_set():
                delay = self.step()
                self.trigger.wait(delay)
                self.trigger.clear()
        finally:
            if observer is not None:
                observer.stop()
            self.stopping.set()
            self.live.stop()
            for worker in self.workers.values():
                worker.stop()
            for worker in self.workers.values():
                worker.join(timeout=self.election.duration)
            leadership.join(timeout=self.election.duration)
            log.info("stopped", extra={"cluster": self.cluster})

    def stop(self) -> None:
        self.stopping.set()
        self.trigger.set()

    def _lead(self) -> None:
        """The election, on its own thread: the Lease lives in the system namespace, which
        must exist first (an API server that is down is retried, never fatal)."""
        while not self.stopping.is_set():
            try:
                ensure_system_namespace(self.client)
                break
            except ReconcilerError as exc:
                self.problem = str(exc)
                log.error("cannot reach the cluster", extra={"error": str(exc)})
                self.ready.set()
                self.stopping.wait(self.election.retry_period)
        self.election.run(self.stopping, self._leadership_changed)

    def _leadership_changed(self, leading: bool) -> None:
        """Called by the election's own thread: a new leader reconciles at once."""
        self.is_leader = leading
        self.metrics.leader.set(1 if leading else 0)
        log.info("leading" if leading else "standing by", extra={"cluster": self.cluster})
        self.ready.set()
        self.trigger.set()

    def step(self) -> float:
        """If this replica leads: load the tip and offer it to every environment of the
        cluster; returns how long to wait before the next full pass (the interval).

        Nothing here ends the daemon: a commit that does not load, an unreachable remote or
        API server is reported (log, /readyz, metrics, status) and retried with backoff,
        and what was applied before stays in the cluster untouched. Each environment is
        then applied, waited for and backed off on its own worker."""
        if not self.is_leader:
            return self.interval
        try:
            commit = follow(self.repo)
            self.seen_tip = commit
            ensure_system_namespace(self.writer)
            prepared = self._prepare(commit)
        except ReconcilerError as exc:
            return self._failed("", str(exc))
        if prepared.problems:
            return self._failed(commit, f"the state at {commit[:12]} is invalid: "
                                f"{prepared.problems[0]}", list(prepared.problems))
        self.problem = ""
        self.failures = 0
        for environment, ready in prepared.environments.items():
            if environment not in self.workers:
                self.workers[environment] = EnvironmentWorker(
                    environment, self.cluster, self.writer, self.metrics,
                    self.wait_timeout, self._may_write, self.repo, self.interval, self.live)
            self.workers[environment].offer(Offer(commit, ready))
        self.ready.set()
        if prepared.failed:  # rendered again at the next step: on a backoff, not the interval
            self.render_failures += 1
            return min(self.interval, MAX_BACKOFF, 2.0 ** self.render_failures)
        self.render_failures = 0
        return self.interval

    def _prepare(self, commit: str) -> Prepared:
        """``commit`` loaded and rendered by a child process (see ``prepare``): the last
        one again if the tip did not move and it rendered, else made again, loading only the
        files that changed since the previous commit and rendering only the releases it
        changed."""
        previous = self._prepared
        if previous is not None and previous.commit == commit and not previous.failed:
            return previous
        self._prepared = None  # the previous commit's render is not kept beside the next
        del previous
        prepared = prepare_in_child(self.repo, commit, self.cluster, self.age_key_file,
                                    self._caches, cancelled=self.stopping.is_set)
        self._caches = prepared.caches
        self._prepared = prepared
        release_free_memory()
        return prepared

    def _may_write(self) -> bool:
        return self.election.leading() and not self.stopping.is_set()

    def _failed(self, commit: str, error: str, details: list[str] | None = None) -> float:
        """A whole pass failed (nothing to apply from): back off, keep what runs."""
        self.failures += 1
        self.problem = error
        delay = min(MAX_BACKOFF, 2.0 ** self.failures)
        self.metrics.errors.labels("").inc()
        log.error("reconcile failed", extra={"error": error, "problems": details or [error],
                                              "commit": commit, "retry_in": delay})
        self.ready.set()
        return delay

    def not_ready(self) -> str:
        """Why this replica is not ready ('' when it is): for /readyz."""
        if not self.ready.is_set():
            return "starting"
        if self.problem:
            return self.problem
        failing = sorted(name for name, worker in list(self.workers.items()) if worker.failing)
        return f"failing environments: {', '.join(failing)}" if failing else ""

    def tip_moved(self) -> bool:
        """Whether the followed branch is no longer at the commit the last pass loaded."""
        try:
            return follow(self.repo) != self.seen_tip
        except ReconcilerError:
            return True  # let a pass report it

    def _watch_local_repo(self) -> Any:
        """A repo without origin changes on disk: react to its ref updates at once."""
        repository = open_repository(self.repo)
        if "origin" in [r.name for r in repository.remotes]:
            return None
        git_dir = Path(repository.path)  # also right for a linked worktree or a .git file
        common = git_dir / (git_dir / "commondir").read_text().strip() \
            if (git_dir / "commondir").is_file() else git_dir
        daemon = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in _WRITES:
                    return  # inotify also reports opens and reads, our own among them
                path = str(event.dest_path or event.src_path)
                if ("refs" in path or path.endswith("HEAD")) and daemon.tip_moved():
                    daemon.trigger.set()  # not for the tool's own refs (verification records)

        # Only HEAD, packed-refs and refs/: every object the loader reads would be an event.
        observer = Observer()
        for folder in dict.fromkeys((git_dir.resolve(), common.resolve())):
            observer.schedule(Handler(), str(folder), recursive=False)
        if (common / "refs").is_dir():
            observer.schedule(Handler(), str(common / "refs"), recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    def serve(self, address: str, probes: bool = True,
              webhook: bool = True) -> http.server.ThreadingHTTPServer:
        """Serve /healthz, /readyz and /metrics (``probes``) and POST /hooks/git
        (``webhook``) on ``address``; the two can listen apart."""
        return serve(self, address, probes, webhook)
