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
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prometheus_client
from pythonjsonlogger.json import JsonFormatter
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler import sops
from reconciler.errors import ReconcilerError
from reconciler.git.store import GitTree, follow, open_repository
from reconciler.kube.client import KubeClient
from reconciler.kube.lease import LeaderElection
from reconciler.load.loader import load_state
from reconciler.model.names import MANAGED_BY
from reconciler.reconcile import (
    SYSTEM_NAMESPACE,
    Result,
    apply_environment,
    ensure_system_namespace,
)

log = logging.getLogger("reconciler.daemon")
MAX_BACKOFF = 300.0
_WRITES = ("created", "modified", "moved", "deleted")


def json_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                       rename_fields={"asctime": "time", "levelname": "level"}))
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class Metrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        labels = ["environment"]
        self.reconciles = prometheus_client.Counter(
            "reconciler_reconcile_total", "Reconcile passes", [*labels, "result"],
            registry=self.registry)
        self.duration = prometheus_client.Histogram(
            "reconciler_reconcile_duration_seconds", "Duration of a reconcile pass", labels,
            registry=self.registry)
        self.errors = prometheus_client.Counter(
            "reconciler_errors_total", "Failed reconcile passes", labels, registry=self.registry)
        self.applied = prometheus_client.Counter(
            "reconciler_objects_applied_total", "Objects created or configured", labels,
            registry=self.registry)
        self.pruned = prometheus_client.Counter(
            "reconciler_objects_pruned_total", "Objects deleted because they left the render",
            labels, registry=self.registry)
        self.drifted = prometheus_client.Counter(
            "reconciler_objects_drifted_total", "Objects changed in the cluster and healed",
            labels, registry=self.registry)
        self.last_commit = prometheus_client.Gauge(
            "reconciler_last_applied_commit_info", "The state commit last applied (value 1)",
            [*labels, "commit"], registry=self.registry)
        self.leader = prometheus_client.Gauge(
            "reconciler_leader", "1 while this replica holds the lease", registry=self.registry)


@dataclass
class Daemon:
    repo: Path
    cluster: str
    client: KubeClient
    decrypt_keys: Callable[[], Any]
    interval: float = 60.0
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    wait_timeout: float = 300.0
    metrics: Metrics = field(default_factory=Metrics)
    lease_name: str = ""

    def __post_init__(self) -> None:
        self.stopping = threading.Event()
        self.trigger = threading.Event()
        self.ready = threading.Event()
        self.is_leader = False
        self.applied: dict[str, str] = {}
        self.failures = 0
        self.election = LeaderElection(self.client, SYSTEM_NAMESPACE,
                                       self.lease_name or f"reconciler-{self.cluster}",
                                       self.identity)

    # --- the loop ---

    def run(self) -> None:
        ensure_system_namespace(self.client)
        observer = self._watch_local_repo()
        leadership = threading.Thread(target=self.election.run,
                                      args=(self.stopping, self._leadership_changed), daemon=True)
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
            leadership.join(timeout=self.election.duration)
            log.info("stopped", extra={"cluster": self.cluster})

    def stop(self) -> None:
        self.stopping.set()
        self.trigger.set()

    def _leadership_changed(self, leading: bool) -> None:
        """Called by the election's own thread: a new leader reconciles at once."""
        self.is_leader = leading
        self.metrics.leader.set(1 if leading else 0)
        log.info("leading" if leading else "standing by", extra={"cluster": self.cluster})
        self.ready.set()
        self.trigger.set()

    def step(self) -> float:
        """One pass if this replica leads; returns how long to wait before the next one."""
        if not self.is_leader:
            return self.interval
        try:
            commit = follow(self.repo)
            self.reconcile(commit)
            self.failures = 0
            self.ready.set()
            return self.interval
        except ReconcilerError as exc:
            self.failures += 1
            delay = min(MAX_BACKOFF, 2.0 ** self.failures)
            log.error("reconcile failed", extra={"error": str(exc), "retry_in": delay})
            return delay

    def reconcile(self, commit: str) -> None:
        state = load_state(GitTree(self.repo, commit))
        environments = sorted(name for name, env in state.environments.items()
                              if self.cluster in env.clusters)
        for environment in environments:
            started = time.monotonic()
            new_commit = self.applied.get(environment) != commit
            try:
                result = apply_environment(
                    state, environment, self.cluster, self.client,
                    decrypt=sops.decryptor(self.decrypt_keys, environment),
                    wait=new_commit, timeout=self.wait_timeout, force_conflicts=True,
                    cancelled=lambda: self._superseded(commit))
            except ReconcilerError as exc:
                self.metrics.errors.labels(environment).inc()
                self.metrics.reconciles.labels(environment, "error").inc()
                self._record(environment, commit, None, str(exc))
                raise
            self._observe(environment, commit, result, new_commit, time.monotonic() - started)

    def _superseded(self, commit: str) -> bool:
        """Stop waiting for ``commit``'s health: stopping, leadership lost, or a newer commit
        arrived (a trigger alone may be the webhook or watchdog of this very commit)."""
        if self.stopping.is_set() or not self.is_leader:
            return True
        if not self.trigger.is_set():
            return False
        try:
            return follow(self.repo) != commit
        except ReconcilerError:
            return False

    def _observe(self, environment: str, commit: str, result: Result, new_commit: bool,
                 seconds: float) -> None:
        counts: dict[str, int] = {}
        for change in result.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        written = counts.get("created", 0) + counts.get("configured", 0)
        self.metrics.duration.labels(environment).observe(seconds)
        self.metrics.reconciles.labels(environment, "failed" if result.failed else "ok").inc()
        self.metrics.applied.labels(environment).inc(written)
        self.metrics.pruned.labels(environment).inc(counts.get("deleted", 0))
        if not new_commit:
            self.metrics.drifted.labels(environment).inc(counts.get("configured", 0))
        if self.applied.get(environment) != commit:
            if environment in self.applied:
                self.metrics.last_commit.remove(environment, self.applied[environment])
            self.metrics.last_commit.labels(environment, commit).set(1)
        self.applied[environment] = commit
        if written or counts.get("deleted") or counts.get("failed") or new_commit:
            log.info("reconciled", extra={"environment": environment, "commit": commit,
                                          "changes": counts, "seconds": round(seconds, 3)})
            self._record(environment, commit, result, "")

    def _record(self, environment: str, commit: str, result: Result | None, error: str) -> None:
        """Per-environment status in the cluster: last applied commit, change set, health."""
        data = {"commit": commit, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "error": error}
        if result is not None:
            counts: dict[str, int] = {}
            for change in result.changes:
                counts[change.action] = counts.get(change.action, 0) + 1
            data["changes"] = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            unhealthy = [f"{ref}: {h.status} {h.message}".strip()
                         for ref, h in sorted(result.health.items()) if h.status != "Healthy"]
            data["health"] = "Healthy" if not unhealthy else "\n".join(unhealthy)
        status = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"status-{environment}", "namespace": SYSTEM_NAMESPACE,
                               "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
                  "data": data}
        try:
            self.client.apply(status, "reconciler-status", force=True, dry_run=False)
        except ReconcilerError as exc:
            log.warning("cannot record status", extra={"error": str(exc)})

    def _watch_local_repo(self) -> Any:
        """A repo without origin changes on disk: react to its ref updates at once."""
        git_dir = self.repo / ".git" if (self.repo / ".git").is_dir() else self.repo
        if "origin" in [r.name for r in open_repository(self.repo).remotes]:
            return None
        daemon = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in _WRITES:
                    return  # inotify also reports opens and reads, our own among them
                path = str(event.dest_path or event.src_path)
                if "refs" in path or path.endswith("HEAD"):
                    daemon.trigger.set()

        observer = Observer()
        observer.schedule(Handler(), str(git_dir), recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    # --- HTTP: probes, metrics, webhook ---

    def serve(self, address: str) -> http.server.ThreadingHTTPServer:
        host, _, port = address.rpartition(":")
        daemon = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._reply(200, b"ok\n")
                elif self.path == "/readyz":
                    ready = daemon.ready.is_set() and daemon.failures == 0
                    self._reply(200 if ready else 503, b"ok\n" if ready else b"not ready\n")
                elif self.path == "/metrics":
                    self._reply(200, prometheus_client.generate_latest(daemon.metrics.registry),
                                prometheus_client.CONTENT_TYPE_LATEST)
                else:
                    self._reply(404, b"not found\n")

            def do_POST(self) -> None:
                if self.path != "/hooks/git":
                    self._reply(404, b"not found\n")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(min(length, 1 << 20))
                daemon.trigger.set()
                self._reply(202, b"fetching\n")

            def _reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http", extra={"request": format % args})

        server = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server
