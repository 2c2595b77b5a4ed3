"""`reconciler run` keeps a cluster in step with the state repo: it applies on start, applies a
new commit when the webhook fires (or, for a local repo, when its refs change), heals drift,
records status, serves probes and metrics, elects one leader among replicas, backs off on
errors and stops cleanly on SIGTERM.

Every daemon here waits an hour between passes unless the test is about the interval, so a
change picked up in time can only have come from the trigger under test. Each test has its
own environment (so its own namespaces and status) and its own Lease."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pygit2
import pytest
from kubernetes.client import ApiClient

from reconciler.daemon.loop import Daemon
from reconciler.errors import ReconcilerError
from reconciler.git.store import clone_bare
from reconciler.kube.client import KubeClient
from reconciler.load.loader import load_cluster
from reconciler.load.readers import WorkTree
from reconciler.reconcile import SYSTEM_NAMESPACE

from conftest import (
    SECRET,
    LiveEnv,
    Running,
    clone,
    commit_all,
    commit_and_push,
    edit,
    status_of,
    wait_for,
)

HOUR = 3600.0


@pytest.fixture
def daemons() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(repo: Path, live: LiveEnv, api_client: ApiClient, interval: float = HOUR,
              identity: str = "replica", secret: bytes | Path = SECRET,
              wait_timeout: float = 60, age_key: Path | None = None) -> Running:
        daemon = Daemon(repo, "nonprod-eu", KubeClient(api_client), age_key or live.age_key,
                        interval=interval, identity=identity, wait_timeout=wait_timeout,
                        lease_name=f"lease-{live.name}", webhook_secret=secret)
        running.append(Running(daemon))
        return running[-1]

    yield start
    for each in running:
        each.stop()


@pytest.fixture
def committed(live: LiveEnv) -> LiveEnv:
    commit_all(live.repo, "rename development for this test")
    return live


def commit_of(repo: Path) -> str:
    return str(pygit2.Repository(str(repo)).head.target)


def applied(api_client: ApiClient, live: LiveEnv, commit: str, what: str,
            timeout: float = 120) -> None:
    wait_for(lambda: status_of(api_client, live.name).get("commit") == commit, what,
             timeout=timeout)


def scale_catalog(repo: Path, replicas: int) -> None:
    edit(repo, "projects/shop/components/catalog/component.yaml",
         "resources: {cpu: 100m", f"replicas: {replicas}\nresources: {{cpu: 100m")


def lease_holder(api_client: ApiClient, live: LiveEnv) -> Callable[[], str]:
    """Who holds the test's Lease now, as the API server says."""
    coordination = kubernetes.client.CoordinationV1Api(api_client)

    def holder() -> str:
        try:
            return str(coordination.read_namespaced_lease(
                f"lease-{live.name}", SYSTEM_NAMESPACE).spec.holder_identity or "")
        except kubernetes.client.ApiException:
            return ""

    return holder


def remote_and_follower(live: LiveEnv, tmp_path: Path) -> tuple[Path, Path]:
    remote = tmp_path / "remote.git"
    pygit2.clone_repository(str(live.repo), str(remote), bare=True)
    follower = tmp_path / "follower.git"
    clone_bare(str(remote), follower)
    return remote, follower


def test_the_webhook_makes_the_daemon_fetch_and_apply_at_once(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running],
        tmp_path: Path) -> None:
    remote, follower = remote_and_follower(committed, tmp_path)
    running = daemons(follower, committed, api_client)
    applied(api_client, committed, commit_of(committed.repo), "the first commit applied")
    assert status_of(api_client, committed.name)["health"] == "Healthy"
    writer = clone(remote, tmp_path / "writer")
    scale_catalog(writer, 3)
    commit_and_push(writer, "scale catalog from elsewhere")
    assert running.hook() == 202
    applied(api_client, committed, commit_of(writer), "the pushed commit fetched and applied",
            timeout=60)
    assert kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(
        "catalog", committed.shop()).spec.replicas == 3
    assert running.get("/healthz")[0] == running.get("/readyz")[0] == 200
    metrics = running.get("/metrics")[1]
    assert (f'reconciler_last_applied_commit_info{{commit="{commit_of(writer)}",'
            f'environment="{committed.name}"}} 1.0') in metrics
    assert running.metric("reconciler_reconcile_total") >= 2
    assert running.metric("reconciler_leader") == 1


def test_a_new_commit_runs_the_templates_only_of_the_release_it_changed(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running],
        tmp_path: Path) -> None:
    remote, follower = remote_and_follower(committed, tmp_path)
    running = daemons(follower, committed, api_client)
    applied(api_client, committed, commit_of(committed.repo), "the first commit applied")
    label = f'environment="{committed.name}",source='
    first = running.metric("reconciler_render_units_total", label + '"templates"')
    assert first > 5 and running.metric("reconciler_render_units_total", label + '"reused"') == 0
    writer = clone(remote, tmp_path / "writer")
    scale_catalog(writer, 3)
    commit_and_push(writer, "scale catalog")
    assert running.hook() == 202
    applied(api_client, committed, commit_of(writer), "the one-component commit applied")
    assert running.metric("reconciler_render_units_total", label + '"templates"') == first + 4, \
        "catalog's two template folders (component/ and its type's) ran again, and checkout's, " \
        "whose decrypted secret is never kept; nothing else"
    assert running.metric("reconciler_render_units_total", label + '"reused"') == first - 4
    assert kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(
        "catalog", committed.shop()).spec.replicas == 3


def test_a_local_repo_is_applied_when_its_refs_change(committed: LiveEnv, api_client: ApiClient,
                                                      daemons: Callable[..., Running]) -> None:
    daemons(committed.repo, committed, api_client)
    applied(api_client, committed, commit_of(committed.repo), "the first commit applied")
    scale_catalog(committed.repo, 2)
    second = commit_all(committed.repo, "scale catalog")
    applied(api_client, committed, second, "the new commit applied", timeout=60)
    assert kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(
        "catalog", committed.shop()).spec.replicas == 2


def test_a_linked_worktree_is_followed_through_the_refs_it_shares(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running],
        tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    subprocess.run(["git", "-C", str(committed.repo), "worktree", "add", "-q", "-b", "linked",
                    str(linked)], check=True)
    daemons(linked, committed, api_client)
    applied(api_client, committed, commit_of(linked), "the first commit applied")
    scale_catalog(linked, 2)
    second = commit_all(linked, "scale catalog")
    applied(api_client, committed, second, "the new commit applied", timeout=60)


def test_the_daemon_heals_drift_every_interval(committed: LiveEnv, api_client: ApiClient,
                                               daemons: Callable[..., Running]) -> None:
    running = daemons(committed.repo, committed, api_client, interval=2)
    applied(api_client, committed, commit_of(committed.repo), "the first apply")
    apps = kubernetes.client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment("catalog", committed.shop(), {"spec": {"replicas": 4}},
                                     field_manager="kubectl-edit")
    wait_for(lambda: apps.read_namespaced_deployment("catalog", committed.shop()).spec.replicas
             == 1, "drift healed", timeout=60)
    wait_for(lambda: running.metric("reconciler_objects_drifted_total") >= 1,
             "the healed drift counted on /metrics")


def test_two_replicas_elect_one_leader_and_the_standby_takes_over(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running]) -> None:
    first = daemons(committed.repo, committed, api_client, identity="replica-1")
    second = daemons(committed.repo, committed, api_client, identity="replica-2")
    holder = lease_holder(api_client, committed)

    wait_for(lambda: holder() in ("replica-1", "replica-2"), "a leader")
    leader, standby = (first, second) if holder() == "replica-1" else (second, first)
    applied(api_client, committed, commit_of(committed.repo), "the leader applied")
    assert leader.metric("reconciler_leader") == 1
    assert standby.metric("reconciler_leader") == 0
    assert standby.metric("reconciler_reconcile_total") == 0, "the standby never applies"
    leader.stop()
    wait_for(lambda: holder() == standby.daemon.identity, "the standby takes over", timeout=30)
    wait_for(lambda: standby.metric("reconciler_reconcile_total") >= 1,
             "the new leader reconciles", timeout=60)


def test_the_daemon_backs_off_exponentially_on_errors(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running],
        caplog: pytest.LogCaptureFixture) -> None:
    edit(committed.repo, "clusters/prod-eu.yaml", "name: prod-eu", "name: Broken")
    commit_all(committed.repo, "break the state")
    with caplog.at_level(logging.ERROR, logger="reconciler.daemon"):
        running = daemons(committed.repo, committed, api_client)
        wait_for(lambda: len([r for r in caplog.records if hasattr(r, "retry_in")]) >= 3,
                 "three failed passes", timeout=60)
    delays = [r.retry_in for r in caplog.records if hasattr(r, "retry_in")][:3]
    assert delays == [2.0, 4.0, 8.0]
    status, body = running.get("/readyz")
    assert status == 503
    assert body.startswith("not ready: the state at ") and "clusters/prod-eu.yaml" in body
    assert running.metric("reconciler_reconcile_total") == 0
    assert status_of(api_client, committed.name) == {}, "nothing was applied"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_run_stops_cleanly_on_sigterm(committed: LiveEnv) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--repo", str(committed.repo), "run",
         "--cluster", "nonprod-eu", "--listen", f"127.0.0.1:{port}", "--interval", "1",
         "--kubeconfig", str(committed.kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x",
             "SOPS_AGE_KEY_FILE": str(committed.age_key)})

    def healthy() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as response:
                return int(response.status) == 200
        except OSError:
            return False

    wait_for(healthy, "the daemon serving /healthz")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    lines = [line for line in err.splitlines() if line.startswith("{")]
    assert any('"message": "stopped"' in line for line in lines), err


def test_the_webhook_needs_the_shared_secret(committed: LiveEnv, api_client: ApiClient,
                                             daemons: Callable[..., Running],
                                             tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    running = daemons(committed.repo, committed, api_client, secret=secret_file)
    assert running.hook() == 401, "no secret mounted yet: the webhook refuses"
    secret_file.write_bytes(SECRET + b"\n")
    assert running.hook(secret=b"wrong") == 401
    assert running.hook(headers={}) == 401
    assert running.hook(headers={"X-Gitlab-Token": "wrong"}) == 401
    assert running.hook(headers={"X-Gitlab-Token": SECRET.decode()}) == 202
    assert running.hook(headers={"Authorization": f"Bearer {SECRET.decode()}"}) == 202
    assert running.hook() == 202


def test_a_daemon_started_on_a_broken_tip_applies_once_it_is_fixed(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running]) -> None:
    edit(committed.repo, "pipelines/standard.yaml", "stages:", "owner: nobody\nstages:")
    commit_all(committed.repo, "break the state")
    running = daemons(committed.repo, committed, api_client)
    wait_for(lambda: "pipelines/standard.yaml" in running.get("/readyz")[1],
             "not ready, with the reason")
    assert running.get("/readyz")[0] == 503
    assert running.get("/healthz")[0] == 200, "alive all the same"
    edit(committed.repo, "pipelines/standard.yaml", "owner: nobody\n", "")
    fixed = commit_all(committed.repo, "fix the state")
    applied(api_client, committed, fixed, "the fixed commit applied")
    wait_for(lambda: running.get("/readyz")[0] == 200, "ready once applied")


def test_a_broken_commit_between_two_good_ones_leaves_the_next_render_incremental(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running]) -> None:
    running = daemons(committed.repo, committed, api_client)
    applied(api_client, committed, commit_of(committed.repo), "the first commit applied")
    label = f'environment="{committed.name}",source='
    first = running.metric("reconciler_render_units_total", label + '"templates"')
    edit(committed.repo, "pipelines/standard.yaml", "stages:", "owner: nobody\nstages:")
    commit_all(committed.repo, "break the state")
    wait_for(lambda: "pipelines/standard.yaml" in running.get("/readyz")[1],
             "the broken commit reported")
    edit(committed.repo, "pipelines/standard.yaml", "owner: nobody\n", "")
    fixed = commit_all(committed.repo, "fix the state")
    applied(api_client, committed, fixed, "the fixed commit applied")
    assert running.metric("reconciler_render_units_total", label + '"templates"') == first + 2, \
        "only checkout's folders ran again (its decrypted secret is never kept): the caches " \
        "outlived the commit that did not load"
    assert running.metric("reconciler_render_units_total", label + '"reused"') == first - 2


def test_a_broken_environment_does_not_block_the_others(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running]) -> None:
    running = daemons(committed.repo, committed, api_client)
    applied(api_client, committed, commit_of(committed.repo), "the first commit applied")
    release = f"environments/{committed.name}/shop/catalog/release.yaml"
    image = next(line for line in (committed.repo / release).read_text().splitlines()
                 if line.startswith("image:"))
    edit(committed.repo, release, image,
         "image: registry.acme.example/shop/catalog@sha256:" + "f" * 64)
    edit(committed.repo, "environments/staging/shop/checkout/config.yaml", "env:",
         "env:\n  STAGING_ONLY: 'yes'")
    broken = commit_all(committed.repo, "break one environment, change another")
    wait_for(lambda: status_of(api_client, "staging").get("commit") == broken,
             "staging applied the new commit", timeout=120)
    wait_for(lambda: "digest differs" in status_of(api_client, committed.name).get("error", ""),
             "the broken environment reports its problem")
    assert status_of(api_client, committed.name)["commit"] == broken
    assert f"failing environments: {committed.name}" in running.get("/readyz")[1]


def test_a_slow_environment_does_not_delay_the_others(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running]) -> None:
    edit(committed.repo, f"environments/{committed.name}/shop/checkout/config.yaml",
         "kind: Config", 'kind: Config\nresources: {cpu: "500"}')  # unschedulable: never ready
    slow = commit_all(committed.repo, "a rollout that cannot finish, beside a healthy staging")
    assert committed.name < "staging", "the slow environment comes first in name order"
    daemons(committed.repo, committed, api_client, wait_timeout=HOUR)
    apps = kubernetes.client.AppsV1Api(api_client)
    wait_for(lambda: bool(apps.list_namespaced_deployment(committed.shop()).items),
             "the slow environment applied, and waiting for its rollout")
    wait_for(lambda: status_of(api_client, "staging").get("commit") == slow,
             "staging applied and healthy while the other environment still waits", timeout=60)
    assert status_of(api_client, "staging")["health"] == "Healthy"
    assert status_of(api_client, committed.name).get("commit") != slow, "still waiting"


def test_the_interval_is_honoured(committed: LiveEnv, api_client: ApiClient,
                                  daemons: Callable[..., Running]) -> None:
    running = daemons(committed.repo, committed, api_client, interval=12)
    applied(api_client, committed, commit_of(committed.repo), "the first apply")
    passes = f'environment="{committed.name}"'
    wait_for(lambda: running.metric("reconciler_reconcile_total", passes) > 0, "a pass counted")
    first = running.metric("reconciler_reconcile_total", passes)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert running.metric("reconciler_reconcile_total", passes) == first, \
            "no pass before the interval"
        time.sleep(0.5)
    wait_for(lambda: running.metric("reconciler_reconcile_total", passes) > first,
             "the next pass after the interval", timeout=30)


def test_a_health_wait_longer_than_the_lease_keeps_one_leader(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running]) -> None:
    edit(committed.repo, f"environments/{committed.name}/shop/checkout/config.yaml",
         "kind: Config", 'kind: Config\nresources: {cpu: "500"}')  # unschedulable: never ready
    commit_all(committed.repo, "a rollout that cannot finish")
    first = daemons(committed.repo, committed, api_client, identity="replica-1")
    second = daemons(committed.repo, committed, api_client, identity="replica-2")
    holder = lease_holder(api_client, committed)

    wait_for(lambda: holder() in ("replica-1", "replica-2"), "a leader")
    leader, standby = (first, second) if holder() == "replica-1" else (second, first)
    apps = kubernetes.client.AppsV1Api(api_client)
    wait_for(lambda: bool(apps.list_namespaced_deployment(committed.shop()).items),
             "the leader applying, then waiting for a rollout that cannot finish")
    deadline = time.monotonic() + 25  # well past the 15 s Lease
    while time.monotonic() < deadline:
        assert holder() == leader.daemon.identity, "the Lease stays with the waiting leader"
        assert standby.metric("reconciler_leader") == 0
        assert standby.metric("reconciler_objects_applied_total") == 0, "only one writes"
        time.sleep(1)


def test_an_unknown_cluster_stops_the_daemon_at_once_naming_the_clusters(repo: Path) -> None:
    for name in ("nope", "../organization"):
        started = subprocess.run(
            [sys.executable, "-m", "reconciler", "--repo", str(repo), "run", "--cluster", name],
            capture_output=True, text=True, timeout=60)
        assert started.returncode == 1
        assert started.stderr.strip().splitlines()[-1] == (
            f"error: unknown cluster {name!r} (clusters: nonprod-eu, prod-eu, prod-us)")


def test_the_start_up_context_comes_from_the_cluster_file_alone(repo: Path) -> None:
    edit(repo, "clusters/prod-eu.yaml", "context: prod-eu", "context: eu-admin")
    edit(repo, "clusters/prod-us.yaml", "name: prod-us", "name: prod-usa")
    (repo / "clusters/nonprod-eu.yaml").unlink()
    (repo / "clusters/nonprod-eu.yaml").mkdir()
    (repo / "organization.yaml").unlink()
    tree = WorkTree(repo)
    cluster, problems = load_cluster(tree, "prod-eu")
    assert cluster is not None and cluster.context == "eu-admin" and not problems
    renamed, problems = load_cluster(tree, "prod-us")
    assert renamed is not None and renamed.context == "prod-us", "still the file's context"
    assert [p.message for p in problems] == ["name 'prod-usa' does not match the file name "
                                             "'prod-us'"]
    with pytest.raises(ReconcilerError, match=r"unknown cluster 'nonprod-eu' \(clusters: "
                                              r"prod-eu, prod-us\)"):
        load_cluster(tree, "nonprod-eu")


def test_an_age_key_mounted_after_start_is_used_without_a_new_commit(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running],
        tmp_path: Path) -> None:
    key = tmp_path / "age" / "keys.txt"  # as a Secret volume that is mounted late
    running = daemons(committed.repo, committed, api_client, age_key=key)
    wait_for(lambda: "cannot read the age key file" in
             status_of(api_client, committed.name).get("error", ""),
             "the environment fails for want of its key, and says so")
    assert running.get("/readyz")[0] == 503
    key.parent.mkdir()
    key.write_bytes(committed.age_key.read_bytes())
    wait_for(lambda: status_of(api_client, committed.name).get("health") == "Healthy",
             "the same commit rendered again with the key on a backoff (no webhook, no new "
             "commit, an hour's interval), and applied")
    assert status_of(api_client, committed.name)["commit"] == commit_of(committed.repo)
    assert status_of(api_client, committed.name)["error"] == ""


def test_a_load_that_cannot_start_is_reported_and_retried(
        committed: LiveEnv, api_client: ApiClient, daemons: Callable[..., Running],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new commit is loaded and rendered by a child interpreter (so the daemon keeps
    only the result); one that cannot start is an error like an unreadable commit."""
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    running = daemons(committed.repo, committed, api_client)
    wait_for(lambda: "cannot start a process to load" in running.get("/readyz")[1],
             "readyz says why nothing is applied")
    monkeypatch.undo()
    assert running.hook() == 202
    applied(api_client, committed, commit_of(committed.repo), "applied once the load starts")
    assert running.get("/readyz")[0] == 200
