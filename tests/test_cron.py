"""Schedules are checked as the Kubernetes API server checks them, so what validate accepts
the cluster accepts, and what the cluster would refuse validate refuses first."""

from __future__ import annotations

import uuid

import kubernetes
import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from reconciler.load.cron import schedule_problem

SCHEDULES = [
    "0 3 * * *", "@daily", "@hourly", "@every 1h30m", "0 3 ? * MON-FRI", "*/15 9-17 1,15 jan-jun 0",
    "5/10 * * * *", "0 0 31 2 *", "59 23 31 12 6", "0-59/7 */2 * * sun,sat",
    "61 * * * *", "* * *", "0 3 * * * *", "every day", "0 3 L * *", "0 3 15W * *",
    "0 3 * * 1#2", "0 3 * * 7", "0 3 * * 5-1", "*/0 * * * *", "CRON_TZ=UTC 0 3 * * *",
    "TZ=Europe/Berlin 0 3 * * *", "@fortnightly", "@every soon", "1-2-3 * * * *",
    "1/2/3 * * * *", "-1 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * foo *",
]


def api_server_accepts(api_client: ApiClient, namespace: str, schedule: str) -> bool:
    body = {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": f"c-{uuid.uuid4().hex[:8]}", "namespace": namespace},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}
    try:
        kubernetes.client.BatchV1Api(api_client).create_namespaced_cron_job(
            namespace, body, dry_run="All")
    except ApiException as exc:
        assert exc.status == 422, exc.body
        return False
    return True


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_validate_agrees_with_the_api_server(api_client: ApiClient, namespace: str,
                                             schedule: str) -> None:
    accepted = schedule_problem(schedule) is None
    assert accepted == api_server_accepts(api_client, namespace, schedule), schedule_problem(
        schedule)
