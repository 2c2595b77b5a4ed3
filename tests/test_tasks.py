"""Scheduled and manual tasks: `task run` starts an execution from the release in the
environment (only once the cluster runs it), `task executions` lists them with what started
them, what they ran and how they ended, the history outlives Kubernetes' Job cleanup, and
`task logs` reads an execution's pods' logs. Rendered CronJobs carry the defaults a task
needs.

On the test control plane KWOK plays the nodes: a Job's pods succeed as soon as they run,
and a pod that no node can take never runs, so a task with a deadline fails by it. KWOK's
nodes keep no container logs, so here `task logs` can only show its clear error."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from click.testing import CliRunner
from kubernetes.client import ApiClient

from reconciler.cli import cli
from reconciler.daemon.loop import Daemon
from reconciler.kube.client import KubeClient
from reconciler.kube.executions import (
    MAX_RECORDED,
    Execution,
    Record,
    decode,
    encode,
    merge,
    of_job,
    totals,
)
from reconciler.model.names import SYSTEM_NAMESPACE

from conftest import (
    IDENTITY,
    LiveEnv,
    Result,
    Run,
    Running,
    commit_all,
    edit,
    wait_for,
    write,
)

TIMEOUT = "120"


def rendered(run: Run, *args: str) -> list[dict[str, Any]]:
    result = run("-o", "json", "render", *args)
    assert result.exit_code == 0, result.stderr
    return list(json.loads(result.stdout)["items"])


def cronjob(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "CronJob" and o["metadata"]["name"] == name)


# --- What a task's CronJob carries ---


def test_a_task_cronjob_has_safe_defaults_and_every_execution_is_attributable(run: Run) -> None:
    objects = rendered(run, "--env", "production", "--project", "shop")
    for name in ("reindex", "invoice-run"):
        spec = cronjob(objects, name)["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] == 300
        assert spec["successfulJobsHistoryLimit"] == spec["failedJobsHistoryLimit"] == 3
        assert spec["jobTemplate"]["spec"]["backoffLimit"] == 2
        assert "activeDeadlineSeconds" not in spec["jobTemplate"]["spec"]
    job = cronjob(objects, "reindex")
    template = job["spec"]["jobTemplate"]["metadata"]
    release = job["metadata"]["annotations"]["reconciler.io/release"]
    assert template["labels"]["reconciler.io/release"] == release
    assert template["labels"]["app.kubernetes.io/name"] == "reindex"
    assert template["annotations"] == {
        "reconciler.io/release": release,
        "reconciler.io/image": job["metadata"]["annotations"]["reconciler.io/image"],
        "reconciler.io/commit": "447338933fd36648c255456a00ae6e4d3e3a799c"}
    assert "reconciler task run shop/reindex --env production" in (
        job["metadata"]["annotations"]["reconciler.io/run"])


def test_a_task_sets_its_concurrency_retries_and_deadlines(repo: Path, run: Run) -> None:
    edit(repo, "projects/shop/components/invoice-run/component.yaml", "schedule:",
         "concurrencyPolicy: Replace\nbackoffLimit: 0\nactiveDeadlineSeconds: 600\n"
         "startingDeadlineSeconds: 60\nschedule:")
    spec = cronjob(rendered(run, "--env", "production", "--project", "shop"),
                   "invoice-run")["spec"]
    assert (spec["concurrencyPolicy"], spec["startingDeadlineSeconds"]) == ("Replace", 60)
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 600


def test_only_tasks_have_task_settings_and_they_are_checked(repo: Path, run: Run) -> None:
    edit(repo, "projects/shop/components/catalog/component.yaml", "tracks:",
         "backoffLimit: 1\ntracks:")
    edit(repo, "projects/shop/components/reindex/component.yaml", "tracks:",
         "concurrencyPolicy: Sometimes\ntracks:")
    result = run("validate")
    assert result.exit_code == 1
    assert any("catalog/component.yaml" in e and "only tasks have" in e for e in result.errors)
    assert any("reindex/component.yaml" in e and "concurrency policy" in e
               for e in result.errors), result.errors


# --- The record: bounded, rotated by age, counting each execution once ---

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


def finished(index: int, ended: datetime.datetime, status: str = "succeeded") -> Execution:
    stamp = ended.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Execution(id=f"reindex-{index:010x}", job=f"reindex-{index}", trigger="schedule",
                     triggered_by="", start=stamp, end=stamp, status=status,  # type: ignore[arg-type]
                     reason="", release="r1", image="i", commit="c")


def test_the_record_keeps_30_days_and_counts_each_execution_once() -> None:
    old = finished(1, NOW - datetime.timedelta(days=31))
    recent = finished(2, NOW - datetime.timedelta(days=1), "failed")
    record, added = merge(Record(), [old, recent], NOW - datetime.timedelta(days=2))
    assert [e.id for e in added] == [old.id, recent.id]
    record, added = merge(decode(encode(record)), [recent, finished(3, NOW)], NOW)
    assert [e.id for e in added] == ["reindex-0000000003"]
    assert [e.id for e in record.executions] == ["reindex-0000000003", recent.id]
    assert totals(record, NOW) == {"succeeded": 1, "failed": 1}


def test_the_record_is_bounded_but_its_totals_count_everything() -> None:
    many = [finished(i, NOW - datetime.timedelta(minutes=i)) for i in range(MAX_RECORDED + 50)]
    record, _ = merge(Record(), many, NOW)
    assert len(record.executions) == MAX_RECORDED
    assert totals(record, NOW) == {"succeeded": MAX_RECORDED + 50, "failed": 0}
    record, added = merge(record, many[-10:], NOW)  # trimmed ones seen again: not new
    assert added == [] and totals(record, NOW)["succeeded"] == MAX_RECORDED + 50


def test_a_job_that_ran_out_of_time_says_so() -> None:
    job = {"metadata": {"uid": "0123abcd-ef45-6789-0000-000000000000", "name": "reindex-run-1",
                        "annotations": {"reconciler.io/trigger": "manual",
                                        "reconciler.io/triggered-by": "Dana"}},
           "spec": {"activeDeadlineSeconds": 5},
           "status": {"startTime": "2026-12-06T12:00:00Z", "conditions": [
               {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                "lastTransitionTime": "2026-12-06T12:00:05Z"}]}}
    pod = {"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                                      "reason": "Unschedulable",
                                      "message": "0/3 nodes are available"}]}}
    execution = of_job("reindex", job, [pod])
    assert (execution.id, execution.status, execution.duration) == (
        "reindex-0123abcdef", "failed", 5)
    assert execution.reason == ("deadline exceeded: ran longer than its activeDeadlineSeconds "
                                "(5 s); not scheduled: 0/3 nodes are available")
    assert (execution.trigger, execution.triggered_by) == ("manual", "Dana")


def test_a_job_that_used_up_its_retries_or_cannot_pull_its_image_says_so() -> None:
    job = {"metadata": {"uid": "ffff0000-0000-0000-0000-000000000000", "name": "invoice-run-1",
                        "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp":
                                        "2026-12-06T03:00:00Z"}},
           "spec": {"backoffLimit": 2},
           "status": {"startTime": "2026-12-06T03:00:01Z", "failed": 3, "conditions": [
               {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "lastTransitionTime": "2026-12-06T03:02:00Z"}]}}
    execution = of_job("invoice-run", job)
    assert (execution.trigger, execution.triggered_by, execution.status) == (
        "schedule", "", "failed")
    assert execution.reason == "backoff limit reached: 3 failed attempt(s), backoffLimit 2"
    running = {"metadata": {"uid": "eeee", "name": "invoice-run-2"}, "status": {}}
    pulling = {"status": {"containerStatuses": [{"state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}}
    execution = of_job("invoice-run", running, [pulling])
    assert (execution.status, execution.reason) == (
        "running", "image pull: ImagePullBackOff: Back-off pulling image")


# --- On the real control plane ---


def as_developer(live: LiveEnv, *args: str) -> Result:
    """The CLI as a developer with a Git identity runs it against the test cluster."""
    runner = CliRunner(env={**IDENTITY, "SOPS_AGE_KEY_FILE": str(live.age_key)})
    result = runner.invoke(cli, ["--repo", str(live.repo), *args, "--kubeconfig",
                                 str(live.kubeconfig)], catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def executions_of(live: LiveEnv, ref: str) -> dict[str, Any]:
    result = as_developer(live, "task", "executions", ref, "--env", live.name, "-o", "json")
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def release_of(live: LiveEnv, name: str) -> str:
    result = CliRunner().invoke(cli, ["--repo", str(live.repo), "-o", "json", "render", "--env",
                                      live.name, "--project", "shop", "--component", name])
    objects = json.loads(result.stdout)["items"]
    return str(cronjob(objects, name)["metadata"]["annotations"]["reconciler.io/release"])


def test_a_manual_task_runs_on_demand_and_its_history_outlives_its_jobs(
        live: LiveEnv, api_client: ApiClient) -> None:
    refused = as_developer(live, "task", "run", "shop/reindex", "--env", live.name)
    assert refused.exit_code == 1
    assert refused.errors == [f"error: shop/reindex is not applied in cluster nonprod-eu yet "
                              f"(no CronJob {live.shop()}/reindex): apply {live.name} first"]
    assert live.apply().exit_code == 0
    first_release = release_of(live, "reindex")

    ran = as_developer(live, "task", "run", "shop/reindex", "--env", live.name, "--wait",
                       "--timeout", TIMEOUT)
    assert ran.exit_code == 0, ran.stderr
    succeeded = ran.stdout.split()[0]
    assert ran.stdout.strip() == f"{succeeded} succeeded"

    # A new release (new configuration), with a deadline, that no node can run: refused
    # until it is applied, then it fails by its deadline, and says why.
    write(live.repo, f"environments/{live.name}/shop/reindex/config.yaml",
          "kind: Config\nenv: {REINDEX_MODE: full}\n")
    edit(live.repo, "projects/shop/components/reindex/component.yaml", "tracks:",
         "activeDeadlineSeconds: 8\nresources: {cpu: '500', memory: 128Mi}\ntracks:")
    commit_all(live.repo, "reindex: full, with a deadline, and more CPU than any node has")
    stale = as_developer(live, "task", "run", "shop/reindex", "--env", live.name)
    assert stale.exit_code == 1
    assert f"is not applied in cluster nonprod-eu yet (it runs {first_release})" in stale.stderr
    assert live.apply().exit_code == 0
    second_release = release_of(live, "reindex")
    assert second_release != first_release
    started = as_developer(live, "task", "run", "shop/reindex", "--env", live.name)
    assert started.exit_code == 0, started.stderr
    first_failed = started.stdout.strip()
    # concurrencyPolicy Forbid (the default): not a second one while it runs.
    again = as_developer(live, "task", "run", "shop/reindex", "--env", live.name)
    assert again.errors == [f"error: shop/reindex is running in nonprod-eu ({first_failed}) and "
                            "its concurrencyPolicy is Forbid: wait for it to end"]
    wait_for(lambda: [e["status"] for e in executions_of(live, "shop/reindex")["executions"]
                      if e["id"] == first_failed] == ["failed"], "the first run to fail",
             timeout=120)
    ran = as_developer(live, "task", "run", "shop/reindex", "--env", live.name, "--wait",
                       "--timeout", TIMEOUT)
    assert ran.exit_code == 1
    failed = ran.stdout.split()[0]
    assert ran.errors == [f"error: execution {failed} failed: deadline exceeded: ran longer "
                          "than its activeDeadlineSeconds (8 s); not scheduled: " + ran.errors[0]
                          .split("not scheduled: ", 1)[1]]
    assert "Insufficient cpu" in ran.stderr

    listed = executions_of(live, "shop/reindex")
    dana = "Dana Developer <dana@acme.example>"
    assert [(e["id"], e["status"], e["release"], e["trigger"], e["by"])
            for e in listed["executions"]] == [
        (failed, "failed", second_release, "manual", dana),
        (first_failed, "failed", second_release, "manual", dana),
        (succeeded, "succeeded", first_release, "manual", dana)]
    newest = listed["executions"][0]
    assert newest["image"].startswith("registry.acme.example/shop/reindex@sha256:")
    release_file = yaml.safe_load((live.repo / f"environments/{live.name}/shop/reindex/"
                                                "release.yaml").read_text())
    assert (newest["commit"], newest["image"]) == (release_file["commit"], release_file["image"])
    assert newest["end"] >= newest["start"] and newest["duration"] >= 0
    assert listed["last30Days"] == {"succeeded": 1, "failed": 2}

    # KWOK's nodes serve no logs: the error says which pod and what the API server said.
    logs = as_developer(live, "task", "logs", succeeded, "--env", live.name)
    assert logs.exit_code == 1
    assert logs.errors[0].startswith(f"error: cannot read the log of pod {live.shop()}/reindex-run-")
    assert f"(container reindex) of execution {succeeded}: the API server's log endpoint " \
           "answered: " in logs.errors[0]

    batch = kubernetes.client.BatchV1Api(api_client)
    batch.delete_collection_namespaced_job(live.shop(), propagation_policy="Background")
    wait_for(lambda: not batch.list_namespaced_job(live.shop()).items, "the Jobs to go")
    after = executions_of(live, "shop/reindex")
    assert [(e["id"], e["status"], e["release"]) for e in after["executions"]] == [
        (failed, "failed", second_release), (first_failed, "failed", second_release),
        (succeeded, "succeeded", first_release)]
    assert after["executions"][0]["reason"] == newest["reason"]
    assert after["last30Days"] == {"succeeded": 1, "failed": 2}
    table = as_developer(live, "task", "executions", "shop/reindex", "--env", live.name)
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "TRIGGER", "BY"]
    assert table.stdout.splitlines()[-1] == "last 30 days: 1 succeeded, 2 failed"
    gone = as_developer(live, "task", "logs", succeeded)
    assert gone.errors == [f"error: execution {succeeded} is in the history, but Kubernetes "
                           "has deleted its Job and pods, and their logs with them"]


def test_task_run_is_refused_for_what_is_not_a_released_task(live: LiveEnv) -> None:
    cases = {("shop/catalog", live.name): "shop/catalog is a service, not a task "
                                          "(scheduled-task or manual-task)",
             ("shop/reindex", "staging"): "shop/reindex is not released in staging",
             ("shop/reindex", "nowhere"): "unknown environment 'nowhere'"}
    for (ref, environment), error in cases.items():
        result = as_developer(live, "task", "run", ref, "--env", environment)
        assert (result.exit_code, result.errors) == (1, [f"error: {error}"])


def test_a_scheduled_task_run_by_the_cronjob_controller_is_recorded_and_counted_by_the_daemon(
        live: LiveEnv, api_client: ApiClient) -> None:
    edit(live.repo, "projects/shop/components/invoice-run/component.yaml", '"0 3 * * *"',
         '"* * * * *"')
    # Staging shares the test cluster: elsewhere here, so it keeps its nightly runs.
    edit(live.repo, "environments/staging/environment.yaml", "clusters: [nonprod-eu]",
         "clusters: [prod-us]")
    commit_all(live.repo, "invoice-run every minute")
    release = release_of(live, "invoice-run")
    # The daemon applies the environment, then records tasks on every pass (one each 5 s).
    daemon = Running(Daemon(live.repo, "nonprod-eu", KubeClient(api_client), live.age_key,
                            interval=5, wait_timeout=60, lease_name=f"lease-{live.name}"))
    try:
        # The CronJob controller starts it at the next minute; the daemon counts it.
        counted = f'environment="{live.name}",result="succeeded",task="shop/invoice-run"'
        wait_for(lambda: daemon.metric("reconciler_task_executions_total", counted) >= 1,
                 "a scheduled execution counted by the daemon", timeout=180)
        assert daemon.metric("reconciler_task_last_success_timestamp_seconds",
                             f'environment="{live.name}",task="shop/invoice-run"') > 0
    finally:
        daemon.stop()
    core = kubernetes.client.CoreV1Api(api_client)
    record = core.read_namespaced_config_map(f"tasks.{live.name}.shop.invoice-run",
                                             SYSTEM_NAMESPACE).data
    execution = executions_of(live, "shop/invoice-run")["executions"][-1]
    assert execution["id"] in record["executions"]
    assert (execution["trigger"], execution["by"], execution["status"], execution["release"]) \
        == ("schedule", "", "succeeded", release)
