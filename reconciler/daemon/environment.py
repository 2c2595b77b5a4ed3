"""One environment on one cluster, reconciled on a thread of its own.

Each environment is applied, waited for and backed off apart from the others (as an Argo CD
Application is), so a broken or slow environment never delays another: a rollout that takes
minutes to become healthy in `development` doesn't hold back a fix for `production` on the
same cluster. The daemon hands each worker the newest commit; the worker applies it when it
can, and a newer commit cancels its health wait.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler import tasks
from reconciler.daemon.memory import release_free_memory
from reconciler.daemon.metrics import Metrics, log
from reconciler.daemon.prepare import PreparedEnvironment
from reconciler.errors import ReconcilerError
from reconciler.kube.client import KubeClient, WriteRefused
from reconciler.kube.watch import LiveCache
from reconciler.model.kinds import Component
from reconciler.model.names import MANAGED_BY
from reconciler.reconcile import (
    SYSTEM_NAMESPACE,
    Result,
    apply_rendered,
    record_verifications,
)

MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class Offer:
    """What to apply: the environment rendered at a commit, or why it can't be."""

    commit: str
    prepared: PreparedEnvironment


class EnvironmentWorker:
    """Applies the newest offered commit of one environment, as the daemon's child process
    rendered it: at once when the commit is new, again as a drift check of the same objects
    an interval after its previous pass ended (or on any offer while its last health wait
    found something unhealthy or its records were not published), and after a failure only
    once its backoff ends (or the daemon offers something new)."""

    def __init__(self, environment: str, cluster: str, client: KubeClient,
                 metrics: Metrics, wait_timeout: float,
                 may_write: Callable[[], bool], repo: Path, interval: float,
                 live: LiveCache | None = None) -> None:
        self.repo = repo
        self.live = live
        self.interval = interval
        """A drift check runs this long after the end of the previous pass."""
        """The state repo: verification records are published through its origin."""
        self.environment = environment
        self.cluster = cluster
        self.client = client
        self.metrics = metrics
        self.wait_timeout = wait_timeout
        self.may_write = may_write
        """False once this replica stops leading or the daemon stops: no more writes."""
        self.applied = ""
        self.healthy = False
        """Whether the last health wait found everything Healthy and its records were
        published: until then every pass waits again and records, so a release that gets
        healthy late, or records refused once, are still published."""
        self.failures = 0
        self.retry_at = 0.0
        self.finished_at = 0.0
        self._offer: Offer | None = None
        self._counted = ""
        """The commit whose render the metrics counted."""
        self._attempted: PreparedEnvironment | None = None
        """What was last tried: after a failure it is tried again once its backoff ends (a
        render-less one not at all); what the daemon prepared anew is tried at once."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                         name=f"reconcile-{environment}")
        self._thread.start()

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def offer(self, offer: Offer) -> None:
        with self._lock:
            self._offer = offer
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._until_due() if self.may_write() else None)
            self._wake.clear()
            with self._lock:
                offer = self._offer
            if offer is None or self._stopping.is_set() or not self.may_write():
                continue
            if self.failing and offer.prepared is self._attempted and (
                    offer.prepared.rendered is None or time.monotonic() < self.retry_at):
                continue  # still backing off, or nothing to try until the daemon renders again
            if not self.failing and self.healthy and offer.commit == self.applied \
                    and time.monotonic() < self.finished_at + self.interval:
                continue  # applied, healthy, recorded: the next drift check is not due yet
            self._attempted = offer.prepared
            if offer.prepared.rendered is None:
                self._failed(offer.commit, offer.prepared.error, offer.prepared.problems)
                continue
            try:
                self._reconcile(offer)
            except WriteRefused as exc:
                self._attempted = None  # not a failure: the next leader (maybe this) applies
                log.warning("stopped writing", extra={"environment": self.environment,
                                                      "error": str(exc)})
            except ReconcilerError as exc:
                self._failed(offer.commit, str(exc))
            else:
                self.failures = 0
                self.finished_at = time.monotonic()
            finally:
                release_free_memory()

    def _until_due(self) -> float | None:
        """How long until the next pass is due without a new commit: a retry after a
        failure, else the next drift check of the applied commit (None: only a new offer)."""
        if self.failing:
            with self._lock:
                offer = self._offer
            if offer is not None and offer.prepared is self._attempted \
                    and offer.prepared.rendered is None:
                return None  # the daemon renders it again and offers it anew
            return max(0.0, self.retry_at - time.monotonic())
        if self.applied:
            return max(0.0, self.finished_at + self.interval - time.monotonic())
        return None

    def _superseded(self, commit: str) -> bool:
        """Stop waiting for ``commit``'s health: stopping, no longer leading, or a newer
        commit was offered."""
        if self._stopping.is_set() or not self.may_write():
            return True
        with self._lock:
            return self._offer is not None and self._offer.commit != commit

    def _reconcile(self, offer: Offer) -> None:
        started = time.monotonic()
        new_commit = self.applied != offer.commit
        prepared = offer.prepared
        assert prepared.rendered is not None
        rendered = prepared.rendered.unpack()
        if self._counted != offer.commit:
            self._counted = offer.commit
            units = self.metrics.render_units
            units.labels(self.environment, "templates").inc(rendered.units_rendered)
            units.labels(self.environment, "reused").inc(rendered.units_cached)
        result = apply_rendered(
            self.environment, self.cluster, self.client, rendered,
            wait=new_commit or not self.healthy, timeout=self.wait_timeout,
            force_conflicts=True, cancelled=lambda: self._superseded(offer.commit),
            live=self.live)
        del rendered
        self._observe(offer.commit, result, new_commit, time.monotonic() - started)
        if result.health and not self._superseded(offer.commit):
            self.healthy = self._verify(offer, result) and \
                all(h.status == "Healthy" for h in result.health.values())
        self._record_tasks(prepared.tasks)

    def _record_tasks(self, components: tuple[Component, ...]) -> None:
        """Record each task's finished executions before Kubernetes deletes their Jobs, and
        count them. A record that can't be written is logged; the pass carries on."""
        now = datetime.datetime.now(datetime.UTC)
        if not components:
            return
        try:
            recorded_all = tasks.record_environment(self.client, self.environment, components,
                                                    self.cluster, now)
        except WriteRefused:
            raise
        except ReconcilerError as exc:
            log.warning("cannot record task executions", extra={
                "environment": self.environment, "error": str(exc)})
            return
        for component, recorded in recorded_all:
            if recorded.warning:
                log.warning("cannot record task executions", extra={
                    "environment": self.environment, "task": component.ref,
                    "error": recorded.warning})
            for execution in recorded.added:
                self.metrics.task_executions.labels(self.environment, component.ref,
                                                    execution.status).inc()
                log.info("task execution recorded", extra={
                    "environment": self.environment, "task": component.ref,
                    "execution": execution.id, "status": execution.status,
                    "reason": execution.reason})
            succeeded = [e.end for e in recorded.record.executions if e.status == "succeeded"]
            if succeeded:
                ended = datetime.datetime.fromisoformat(max(succeeded).replace("Z", "+00:00"))
                self.metrics.task_last_success.labels(self.environment, component.ref).set(
                    ended.timestamp())

    def _verify(self, offer: Offer, result: Result) -> bool:
        """Publish what this cluster saw of each release's health: what promotions into a
        stage with requiresVerification check. Without push rights: logged, carried on."""
        if not self.may_write():
            return False  # one writer per cluster: the leader
        try:
            changed = record_verifications(self.repo, self.cluster, offer.prepared.targets,
                                           self.environment, offer.commit, result.health,
                                           datetime.datetime.now(datetime.UTC))
        except ReconcilerError as exc:
            self.metrics.verification_errors.labels(self.environment).inc()
            log.warning("cannot publish verification records",
                        extra={"environment": self.environment, "error": str(exc)})
            return False
        if changed:
            self.metrics.verifications.labels(self.environment).inc(len(changed))
            log.info("verification recorded", extra={
                "environment": self.environment,
                "records": {r.component + (f" {r.line}" if r.line else ""): r.health
                            for r in changed}})
        return True

    def _failed(self, commit: str, error: str, details: tuple[str, ...] = ()) -> None:
        """This environment failed: only it backs off; the others carry on."""
        self.failures += 1
        delay = min(MAX_BACKOFF, 2.0 ** self.failures)
        self.retry_at = time.monotonic() + delay
        self.metrics.errors.labels(self.environment).inc()
        self.metrics.reconciles.labels(self.environment, "error").inc()
        self._record(commit, None, error)
        log.error("reconcile failed", extra={"environment": self.environment, "commit": commit,
                                              "error": error, "problems": list(details or [error]),
                                              "retry_in": delay})

    def _observe(self, commit: str, result: Result, new_commit: bool, seconds: float) -> None:
        counts = _counts(result)
        written = counts.get("created", 0) + counts.get("configured", 0)
        environment = self.environment
        self.metrics.duration.labels(environment).observe(seconds)
        self.metrics.reconciles.labels(environment, "failed" if result.failed else "ok").inc()
        self.metrics.applied.labels(environment).inc(written)
        self.metrics.pruned.labels(environment).inc(counts.get("deleted", 0))
        if not new_commit:
            self.metrics.drifted.labels(environment).inc(counts.get("configured", 0))
        if new_commit:
            if self.applied:
                self.metrics.last_commit.remove(environment, self.applied)
            self.metrics.last_commit.labels(environment, commit).set(1)
        self.applied = commit
        if written or counts.get("deleted") or counts.get("failed") or new_commit:
            log.info("reconciled", extra={"environment": environment, "commit": commit,
                                          "changes": counts, "seconds": round(seconds, 3)})
            self._record(commit, result, "")

    def _record(self, commit: str, result: Result | None, error: str) -> None:
        """Per-environment status in the cluster: last applied commit, change set, health."""
        data = {"commit": commit, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "error": error}
        if result is not None:
            data["changes"] = ", ".join(f"{k}={v}" for k, v in sorted(_counts(result).items()))
            unhealthy = [f"{ref}: {h.status} {h.message}".strip()
                         for ref, h in sorted(result.health.items()) if h.status != "Healthy"]
            data["health"] = "Healthy" if not unhealthy else "\n".join(unhealthy)
        status = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"status-{self.environment}",
                               "namespace": SYSTEM_NAMESPACE,
                               "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
                  "data": data}
        try:
            self.client.apply(status, "reconciler-status", force=True, dry_run=False)
        except ReconcilerError as exc:
            log.warning("cannot record status", extra={"error": str(exc)})


def _counts(result: Result) -> dict[str, int]:
    """How many objects each action touched: created, configured, unchanged, deleted..."""
    counts: dict[str, int] = {}
    for change in result.changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return counts
