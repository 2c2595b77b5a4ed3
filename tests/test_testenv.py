"""The test control plane is a real Kubernetes: server-side apply with a field manager,
dry-run, managed fields, RBAC, Deployments that become Available on simulated nodes, Jobs
that complete, and `scripts/testenv up` / `down` by hand."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient

from conftest import ROOT, client_as, wait_for

MANAGER = "reconciler-test"
IMAGE = "registry.example/app@sha256:" + "a" * 64


def deployment(namespace: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": IMAGE}]}}},
    }


def test_server_side_applied_deployment_becomes_available_on_simulated_nodes(
        api_client: ApiClient, namespace: str) -> None:
    deployments = DynamicClient(api_client).resources.get(api_version="apps/v1",
                                                          kind="Deployment")
    applied = deployments.server_side_apply(body=deployment(namespace, 2), namespace=namespace,
                                            field_manager=MANAGER)
    assert applied.spec.replicas == 2
    read = lambda: deployments.get(name="web", namespace=namespace)  # noqa: E731
    wait_for(lambda: (read().status.availableReplicas or 0) == 2, "the Deployment to be Available")
    available = next(c for c in read().status.conditions if c.type == "Available")
    assert available.status == "True"
    pods = kubernetes.client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name.startswith("kwok-node-")
        assert pod.status.phase == "Running"
        assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def test_managed_fields_show_the_field_manager(api_client: ApiClient, namespace: str) -> None:
    deployments = DynamicClient(api_client).resources.get(api_version="apps/v1",
                                                          kind="Deployment")
    applied = deployments.server_side_apply(body=deployment(namespace, 1), namespace=namespace,
                                            field_manager=MANAGER)
    managed = applied.to_dict()["metadata"]["managedFields"]
    entries = [m for m in managed if m["manager"] == MANAGER]
    assert len(entries) == 1
    assert entries[0]["operation"] == "Apply"
    assert "f:replicas" in entries[0]["fieldsV1"]["f:spec"]


def test_server_side_dry_run_returns_the_merged_object_without_storing_it(
        api_client: ApiClient, namespace: str) -> None:
    resources = DynamicClient(api_client).resources
    deployments = resources.get(api_version="apps/v1", kind="Deployment")
    deployments.server_side_apply(body=deployment(namespace, 1), namespace=namespace,
                                  field_manager=MANAGER)
    change = deployment(namespace, 3)
    dry = deployments.server_side_apply(body=change, namespace=namespace, field_manager=MANAGER,
                                        dry_run="All")
    assert dry.spec.replicas == 3
    assert dry.spec.strategy.type == "RollingUpdate", "merged with the defaults the server set"
    assert deployments.get(name="web", namespace=namespace).spec.replicas == 1
    config_maps = resources.get(api_version="v1", kind="ConfigMap")
    new = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "only-a-dream", "namespace": namespace}, "data": {"a": "b"}}
    assert config_maps.server_side_apply(body=new, namespace=namespace, field_manager=MANAGER,
                                         dry_run="All").data.a == "b"
    with pytest.raises(kubernetes.dynamic.exceptions.NotFoundError):
        config_maps.get(name="only-a-dream", namespace=namespace)


def test_a_job_completes(api_client: ApiClient, namespace: str) -> None:
    jobs = DynamicClient(api_client).resources.get(api_version="batch/v1", kind="Job")
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "once", "namespace": namespace},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "once", "image": IMAGE}]}}}}
    jobs.server_side_apply(body=job, namespace=namespace, field_manager=MANAGER)
    read = lambda: jobs.get(name="once", namespace=namespace)  # noqa: E731
    wait_for(lambda: (read().status.succeeded or 0) == 1, "the Job to complete")
    assert any(c.type == "Complete" and c.status == "True" for c in read().status.conditions)


def test_rbac_is_enforced(api_client: ApiClient, namespace: str, control_plane: Path) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    with client_as(api_client, "nobody", namespace) as unprivileged, pytest.raises(
            kubernetes.client.ApiException) as refused:
        kubernetes.client.CoreV1Api(unprivileged).list_namespaced_secret(namespace)
    assert refused.value.status == 403


def test_scripts_testenv_up_down_up(tmp_path: Path, control_plane: Path) -> None:
    """By hand: `up` prints the kubeconfig export last, `down` stops it all, `up` again works."""
    state = tmp_path / "by-hand"
    script = str(ROOT / "scripts/testenv")
    environment = {**os.environ}
    for attempt in range(2):
        started = subprocess.run([script, "up", "--state-dir", str(state), "--nodes", "1"],
                                 capture_output=True, text=True, env=environment, timeout=300)
        assert started.returncode == 0, started.stderr
        last = started.stdout.strip().splitlines()[-1]
        assert last.startswith("export KUBECONFIG="), last
        kubeconfig = last.split("=", 1)[1]
        with kubernetes.config.new_client_from_config(config_file=kubeconfig) as client:
            nodes = kubernetes.client.CoreV1Api(client).list_node().items
            assert [n.metadata.name for n in nodes] == ["kwok-node-0"], attempt
        pids = json.loads((state / "pids.json").read_text())
        stopped = subprocess.run([script, "down", "--state-dir", str(state)],
                                 capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert not state.exists()
        assert not [name for name, pid in pids.items() if running(pid)]


def running(pid: int) -> bool:
    """A live process, not one that is gone or a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status
