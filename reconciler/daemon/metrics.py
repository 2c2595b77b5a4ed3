"""What the daemon tells its operators: JSON log lines and Prometheus metrics."""

from __future__ import annotations

import logging

import prometheus_client
from pythonjsonlogger.json import JsonFormatter

log = logging.getLogger("reconciler.daemon")


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
        self.verifications = prometheus_client.Counter(
            "reconciler_verifications_published_total",
            "Verification records published to the state repo's remote", labels,
            registry=self.registry)
        self.verification_errors = prometheus_client.Counter(
            "reconciler_verification_errors_total",
            "Verification records that could not be published (e.g. no push rights)", labels,
            registry=self.registry)
        self.task_executions = prometheus_client.Counter(
            "reconciler_task_executions_total",
            "Finished task executions this replica recorded, by result (succeeded, failed)",
            [*labels, "task", "result"], registry=self.registry)
        self.task_last_success = prometheus_client.Gauge(
            "reconciler_task_last_success_timestamp_seconds",
            "When the task's newest recorded successful execution ended (Unix time): alert "
            "on a task that stopped succeeding", [*labels, "task"], registry=self.registry)
        self.render_units = prometheus_client.Counter(
            "reconciler_render_units_total",
            "Template folders (a release's or a namespace's) a new commit rendered, by source: "
            "run through the templates, or reused unchanged from the previous render",
            [*labels, "source"], registry=self.registry)
        self.leader = prometheus_client.Gauge(
            "reconciler_leader", "1 while this replica holds the lease", registry=self.registry)
