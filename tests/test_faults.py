"""The daemon rides out faults: an API server that freezes or restarts, an etcd restart, a
Git remote that goes away, a replica killed mid-apply. In each, two replicas run
throughout, the leader is in the middle of a long health wait when the fault hits, and a
new commit lands during or after it. Afterwards the cluster has converged to the new commit,
nothing that should exist was deleted, and the API server's own audit log shows that the
replicas never wrote at once: the writer changed only when the Lease changed hands.

These tests have a control plane of their own, since they stop and restart its parts."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pygit2
import pytest
from kubernetes.client import ApiClient

from reconciler.daemon.loop import Daemon
from reconciler.git.store import clone_bare
from reconciler.kube.client import KubeClient
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.reconcile import SYSTEM_NAMESPACE, diff_environment
from reconciler.render.engine import render_environment

from conftest import (
    LiveEnv,
    Running,
    clone,
    commit_all,
    commit_and_push,
    controlplane_module,
    edit,
    wait_for,
)

HOUR = 3600.0
DRIFT_INTERVAL = 5.0
"""The replicas poll the remote this often, so they find new commits without a webhook."""


@dataclass
class Plane:
    """A control plane whose parts a test may freeze and restart."""

    module: Any
    state: Path
    kubeconfig: Path

    def pause(self, component: str) -> None:
        self.module.pause(self.state, component)

    def resume(self, component: str) -> None:
        self.module.resume(self.state, component)

    def restart(self, component: str) -> None:
        self.module.restart(self.state, component)

    def client(self, user_agent: str = "fault-test") -> ApiClient:
        api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        api.user_agent = user_agent
        return api

    def writes(self, since: datetime.datetime) -> list[dict[str, Any]]:
        """Every write a daemon replica made since then (the API server accepted it), in the
        order the API server received them, from its audit log. Left out: server-side dry
        runs, the Lease's own renewals, and the creation of the namespace the Lease lives in,
        which every replica ensures before it can run for leader."""
        events = []
        for line in (self.state / self.module.AUDIT_LOG).read_text().splitlines():
            event = json.loads(line)
            target = event.get("objectRef", {})
            if not event.get("userAgent", "").startswith("reconciler/") \
                    or "dryRun=" in event["requestURI"] \
                    or event.get("responseStatus", {}).get("code", 0) >= 300 \
                    or target.get("resource") == "leases" \
                    or (target.get("resource"), target.get("name")) == ("namespaces",
                                                                        SYSTEM_NAMESPACE):
                continue
            received = datetime.datetime.fromisoformat(
                event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if received >= since:
                events.append(event)
        return sorted(events, key=lambda e: str(e["requestReceivedTimestamp"]))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    module = controlplane_module()
    state = tmp_path_factory.mktemp("faulty-controlplane")
    kubeconfig = module.up(state, module.build())
    yield Plane(module, state, kubeconfig)
    module.down(state)


def identity_of(event: dict[str, Any]) -> str:
    return str(event["userAgent"]).rsplit("(", 1)[1].rstrip(")")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Scenario:
    """The example's development environment on the fault test's cluster, behind a bare
    remote, with a rollout that never finishes (so the leader is always in a health wait)."""

    def __init__(self, repo: Path, plane: Plane, demo_key: Path, tmp_path: Path) -> None:
        self.plane = plane
        self.tmp_path = tmp_path
        self.live = LiveEnv(repo, plane.kubeconfig, demo_key)
        self.lease = f"lease-{self.live.name}"
        self.admin = plane.client()
        edit(repo, f"environments/{self.live.name}/shop/checkout/config.yaml", "kind: Config",
             'kind: Config\nresources: {cpu: "500"}')  # unschedulable: never ready
        commit_all(repo, "a rollout that cannot finish")
        self.remote = tmp_path / "remote.git"
        pygit2.clone_repository(str(repo), str(self.remote), bare=True)
        self.writer = clone(self.remote, tmp_path / "writer")
        self.started = now()
        self.transitions_before = self.transitions()

    def follower(self, name: str) -> Path:
        """A replica's own clone of the remote, as each pod has."""
        path = self.tmp_path / f"follower-{name}.git"
        if not path.exists():
            clone_bare(str(self.remote), path)
        return path

    def replica(self, identity: str) -> Running:
        daemon = Daemon(self.follower(identity), "nonprod-eu",
                        KubeClient(self.plane.client()), self.live.age_key,
                        interval=DRIFT_INTERVAL, identity=identity, wait_timeout=HOUR,
                        lease_name=self.lease)
        return Running(daemon)

    def deployments(self) -> set[str]:
        apps = kubernetes.client.AppsV1Api(self.admin)
        return {d.metadata.name for d in apps.list_namespaced_deployment(self.live.shop()).items}

    def wait_until_applied(self) -> None:
        rendered = render_environment(load_state(WorkTree(self.writer)), self.live.name)
        wanted = {o["metadata"]["name"] for o in rendered.objects
                  if o["kind"] == "Deployment" and o["metadata"]["namespace"] == self.live.shop()}
        wait_for(lambda: self.deployments() == wanted,
                 "the leader applied every Deployment and is waiting for a rollout that "
                 "cannot finish", timeout=120)

    def holder(self) -> str:
        try:
            return str(kubernetes.client.CoordinationV1Api(self.admin).read_namespaced_lease(
                self.lease, SYSTEM_NAMESPACE).spec.holder_identity or "")
        except kubernetes.client.ApiException:
            return ""

    def transitions(self) -> int:
        try:
            return int(kubernetes.client.CoordinationV1Api(self.admin).read_namespaced_lease(
                self.lease, SYSTEM_NAMESPACE).spec.lease_transitions or 0)
        except kubernetes.client.ApiException:
            return 0

    def push_scale(self, replicas: int) -> None:
        edit(self.writer, "projects/shop/components/catalog/component.yaml",
             "resources: {cpu: 100m", f"replicas: {replicas}\nresources: {{cpu: 100m")
        commit_and_push(self.writer, f"scale catalog to {replicas}")

    def converged(self, replicas: int) -> bool:
        """The cluster matches the writer's commit: nothing to change, catalog scaled."""
        try:
            catalog = kubernetes.client.AppsV1Api(self.admin).read_namespaced_deployment(
                "catalog", self.live.shop())
            if catalog.spec.replicas != replicas:
                return False
            state = load_state(WorkTree(self.writer))
            return diff_environment(state, self.live.name, "nonprod-eu",
                                    KubeClient(self.admin), self.live.decrypt()) == []
        except (kubernetes.client.ApiException, OSError):
            return False

    def check_writes(self) -> None:
        """No deletes, and the writer changed only when the Lease changed hands."""
        writes = self.plane.writes(self.started)
        assert writes, "the replicas wrote"
        assert not [w for w in writes if w["verb"] == "delete"], "nothing was deleted"
        writers = [identity_of(w) for w in writes]
        handovers = sum(1 for a, b in itertools.pairwise(writers) if a != b)
        assert handovers <= self.transitions() - self.transitions_before, \
            f"writes interleaved between replicas: {writers}"


@pytest.fixture
def scenario(repo: Path, plane: Plane, demo_key: Path, tmp_path: Path) -> Iterator[Scenario]:
    made = Scenario(repo, plane, demo_key, tmp_path)
    yield made
    made.admin.close()


@pytest.fixture
def two_replicas(scenario: Scenario) -> Iterator[list[Running]]:
    replicas = [scenario.replica("replica-1"), scenario.replica("replica-2")]
    yield replicas
    for replica in replicas:
        replica.stop()


def test_an_api_server_frozen_mid_apply_longer_than_the_lease(
        scenario: Scenario, two_replicas: list[Running], plane: Plane) -> None:
    wait_for(lambda: bool(plane.writes(scenario.started)), "the leader starts applying",
             timeout=120)
    plane.pause("kube-apiserver")
    try:
        time.sleep(20)  # longer than the 15 s Lease: the leader's renew deadline passes
        scenario.push_scale(2)
    finally:
        plane.resume("kube-apiserver")
    wait_for(lambda: scenario.converged(2), "converged to the new commit", timeout=180)
    assert scenario.holder() in ("replica-1", "replica-2")
    scenario.check_writes()


def test_an_api_server_restarted(scenario: Scenario, two_replicas: list[Running],
                                 plane: Plane) -> None:
    scenario.wait_until_applied()
    plane.restart("kube-apiserver")
    scenario.push_scale(2)
    wait_for(lambda: scenario.converged(2), "converged to the new commit", timeout=180)
    scenario.check_writes()


def test_etcd_restarted(scenario: Scenario, two_replicas: list[Running], plane: Plane) -> None:
    scenario.wait_until_applied()
    plane.restart("etcd")
    scenario.push_scale(2)
    wait_for(lambda: scenario.converged(2), "converged to the new commit", timeout=180)
    scenario.check_writes()


def test_a_git_remote_unreachable_then_back(scenario: Scenario,
                                            two_replicas: list[Running]) -> None:
    scenario.wait_until_applied()
    before = scenario.deployments()
    away = scenario.remote.with_name("moved-away.git")
    scenario.remote.rename(away)
    try:
        wait_for(lambda: any("remote.git" in replica.get("/readyz")[1]
                             for replica in two_replicas),
                 "the leader reports the unreachable remote on /readyz", timeout=60)
        assert scenario.deployments() == before, "what runs is left as it is"
    finally:
        away.rename(scenario.remote)
    scenario.push_scale(2)
    wait_for(lambda: scenario.converged(2), "converged once the remote is back", timeout=120)
    wait_for(lambda: all(r.get("/readyz")[0] == 200 for r in two_replicas
                         if r.daemon.is_leader), "ready again")
    scenario.check_writes()


def daemon_process(scenario: Scenario, name: str) -> subprocess.Popen[str]:
    """`reconciler run` as a pod runs it, with its own clone of the remote (its health wait
    lasts 300 s, longer than the test)."""
    follower = scenario.follower(name)
    with open(scenario.tmp_path / f"{name}.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--repo", str(follower), "run",
             "--cluster", "nonprod-eu", "--listen", "127.0.0.1:0",
             "--interval", str(DRIFT_INTERVAL), "--kubeconfig", str(scenario.plane.kubeconfig)],
            stdout=subprocess.DEVNULL, stderr=log, text=True,
            env={**os.environ, "SOPS_AGE_KEY_FILE": str(scenario.live.age_key)})


def test_a_replica_killed_mid_apply_and_restarted(scenario: Scenario, plane: Plane) -> None:
    scenario.lease = "reconciler-nonprod-eu"  # the Lease `reconciler run` takes by default
    scenario.transitions_before = scenario.transitions()
    processes = {name: daemon_process(scenario, name) for name in ("pod-a", "pod-b")}
    try:
        wait_for(lambda: bool(plane.writes(scenario.started)), "the leader starts applying",
                 timeout=120)
        first_writer = identity_of(plane.writes(scenario.started)[0])
        victim = next(name for name, process in processes.items()
                      if first_writer.endswith(f"-{process.pid}"))
        processes[victim].send_signal(signal.SIGKILL)  # mid-apply: no chance to clean up
        processes[victim].wait()
        processes[victim] = daemon_process(scenario, victim)
        scenario.push_scale(2)
        wait_for(lambda: scenario.converged(2), "converged to the new commit", timeout=180)
        scenario.check_writes()
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

