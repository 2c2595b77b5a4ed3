"""`reconciler run` keeps a cluster in step with the state repo: it applies on start, applies a
new commit when the webhook fires, heals drift, records status, serves probes and metrics,
elects one leader among replicas, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pygit2
import pytest
from kubernetes.client import ApiClient

from reconciler import sops
from reconciler.daemon.loop import Daemon
from reconciler.git.store import clone_bare
from reconciler.kube.client import KubeClient
from reconciler.reconcile import SYSTEM_NAMESPACE

from conftest import LiveEnv, clone, commit_all, commit_and_push, edit, wait_for


def keys_of(live: LiveEnv) -> Callable[[], list[Any]]:
    """The daemon's age keys: the one the example's development secrets are encrypted to."""
    return lambda: sops.identities(live.age_key)


def start(live: LiveEnv, api_client: ApiClient, identity: str, interval: float = 60,
          cluster: str = "nonprod-eu") -> tuple[Daemon, threading.Thread]:
    daemon = Daemon(live.repo, cluster, KubeClient(api_client), keys_of(live), interval=interval,
                    identity=identity, wait_timeout=60)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return daemon, thread


@pytest.fixture
def committed(live: LiveEnv) -> LiveEnv:
    commit_all(live.repo, "rename development for this test")
    return live


@pytest.fixture
def daemons() -> Iterator[list[tuple[Daemon, threading.Thread]]]:
    running: list[tuple[Daemon, threading.Thread]] = []
    yield running
    for daemon, thread in running:
        daemon.stop()
        thread.join(timeout=30)


def status_of(api: ApiClient, environment: str) -> dict[str, str]:
    try:
        return kubernetes.client.CoreV1Api(api).read_namespaced_config_map(
            f"status-{environment}", SYSTEM_NAMESPACE).data or {}
    except kubernetes.client.ApiException:
        return {}


def test_the_daemon_applies_new_commits_when_the_webhook_fires(
        committed: LiveEnv, api_client: ApiClient, daemons: list[Any]) -> None:
    daemon, thread = start(committed, api_client, "replica-a")
    daemons.append((daemon, thread))
    server = daemon.serve("127.0.0.1:0")
    port = server.server_address[1]
    first = commit_of(committed.repo)
    wait_for(lambda: status_of(api_client, committed.name).get("commit") == first,
             "the first commit applied", timeout=120)
    assert status_of(api_client, committed.name)["health"] == "Healthy"
    apps = kubernetes.client.AppsV1Api(api_client)
    assert apps.read_namespaced_deployment("checkout", committed.shop()).status.available_replicas
    edit(committed.repo, "projects/shop/components/catalog/component.yaml",
         "resources: {cpu: 100m", "replicas: 2\nresources: {cpu: 100m")
    second = commit_all(committed.repo, "scale catalog")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/git", data=b"{}",
                                     method="POST")
    assert urllib.request.urlopen(request).status == 202
    wait_for(lambda: status_of(api_client, committed.name).get("commit") == second,
             "the new commit applied", timeout=60)
    assert apps.read_namespaced_deployment("catalog", committed.shop()).spec.replicas == 2
    for path, expected in (("/healthz", 200), ("/readyz", 200)):
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").status == expected
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    commit_metric = (f'reconciler_last_applied_commit_info{{commit="{second}",'
                     f'environment="{committed.name}"}} 1.0')
    assert commit_metric in metrics
    assert "reconciler_reconcile_total" in metrics and "reconciler_leader 1.0" in metrics
    server.shutdown()


def commit_of(repo: Path) -> str:
    return str(pygit2.Repository(str(repo)).head.target)


def test_the_daemon_heals_drift_every_interval(committed: LiveEnv, api_client: ApiClient,
                                               daemons: list[Any]) -> None:
    daemon, thread = start(committed, api_client, "healer", interval=2)
    daemons.append((daemon, thread))
    wait_for(lambda: status_of(api_client, committed.name).get("commit") == commit_of(
        committed.repo), "the first apply", timeout=120)
    apps = kubernetes.client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment("catalog", committed.shop(), {"spec": {"replicas": 4}},
                                     field_manager="kubectl-edit")
    wait_for(lambda: apps.read_namespaced_deployment("catalog", committed.shop()).spec.replicas
             == 1, "drift healed", timeout=60)
    assert daemon.metrics.drifted.labels(committed.name)._value.get() >= 1


def test_two_replicas_elect_one_leader(committed: LiveEnv, api_client: ApiClient,
                                       daemons: list[Any]) -> None:
    first = start(committed, api_client, "replica-1", cluster="nonprod-eu")
    second = start(committed, api_client, "replica-2", cluster="nonprod-eu")
    daemons.extend([first, second])
    wait_for(lambda: first[0].ready.is_set() and second[0].ready.is_set(), "both running")
    time.sleep(3)
    leaders = [d for d, _ in (first, second) if d.is_leader]
    assert len(leaders) == 1
    lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(
        "reconciler-nonprod-eu", SYSTEM_NAMESPACE)
    assert lease.spec.holder_identity == leaders[0].identity
    standby = next(d for d, _ in (first, second) if not d.is_leader)
    assert not standby.applied, "the standby never applies"
    leaders[0].stop()
    wait_for(lambda: standby.is_leader, "the standby takes over", timeout=30)


def test_run_stops_cleanly_on_sigterm(committed: LiveEnv, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "--repo", str(committed.repo), "run",
         "--cluster", "nonprod-eu", "--listen", "127.0.0.1:0", "--interval", "1",
         "--kubeconfig", str(committed.kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x",
             "SOPS_AGE_KEY_FILE": str(committed.age_key)})
    time.sleep(5)
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    lines = [line for line in err.splitlines() if line.startswith("{")]
    assert any('"message": "stopped"' in line for line in lines), err


def test_the_daemon_backs_off_exponentially_on_errors(committed: LiveEnv,
                                                       api_client: ApiClient) -> None:
    edit(committed.repo, "clusters/prod-eu.yaml", "name: prod-eu", "name: Broken")
    commit_all(committed.repo, "break the state")
    daemon = Daemon(committed.repo, "nonprod-eu", KubeClient(api_client), keys_of(committed),
                    interval=60, lease_name=f"backoff-{committed.name}")
    delays = [daemon.step() for _ in range(4)]
    assert delays == [2.0, 4.0, 8.0, 16.0]
    assert daemon.failures == 4 and not daemon.applied


def test_the_daemon_follows_a_remote(committed: LiveEnv, api_client: ApiClient,
                                     daemons: list[Any], tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    pygit2.clone_repository(str(committed.repo), str(remote), bare=True)
    follower = tmp_path / "follower.git"
    clone_bare(str(remote), follower)
    daemon = Daemon(follower, "nonprod-eu", KubeClient(api_client), keys_of(committed), interval=60,
                    lease_name=f"remote-{committed.name}")
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    daemons.append((daemon, thread))
    first = commit_of(committed.repo)
    wait_for(lambda: status_of(api_client, committed.name).get("commit") == first,
             "the first commit applied", timeout=120)
    writer = clone(remote, tmp_path / "writer")
    edit(writer, "projects/shop/components/catalog/component.yaml",
         "resources: {cpu: 100m", "replicas: 3\nresources: {cpu: 100m")
    commit_and_push(writer, "scale catalog from elsewhere")
    pushed = commit_of(writer)
    server = daemon.serve("127.0.0.1:0")
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/hooks/git",
                                     data=b"{}", method="POST")
    assert urllib.request.urlopen(request).status == 202
    wait_for(lambda: status_of(api_client, committed.name).get("commit") == pushed,
             "the pushed commit fetched and applied", timeout=60)
    assert kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(
        "catalog", committed.shop()).spec.replicas == 3
    server.shutdown()
