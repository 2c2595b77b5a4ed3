"""`reconciler apply` and `diff` against a real API server: server-side apply, zero writes
when nothing changed, rolling updates, prune limited to the inventory, drift shown and
healed, and empty renders refused."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient

from reconciler.git.store import head_revision
from reconciler.kube.client import KubeClient, Unreachable
from reconciler.kube.inventory import ObjectRef
from reconciler.kube.manager import ApplyAborted, ResourceManager
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.reconcile import apply_environment

from conftest import LiveEnv, controlplane_module, edit, wait_for


def objects_in(api: ApiClient, namespace: str) -> dict[str, str]:
    """kind/name -> what changes when the tool writes an object it renders into a namespace:
    the resourceVersion, or for a Deployment (whose status the controllers keep updating)
    its generation, labels and annotations (but the revision annotation, which the
    Deployment controller adds in its own time)."""
    apps = kubernetes.client.AppsV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    found: dict[str, str] = {}
    for kind, items in (("Deployment", apps.list_namespaced_deployment(namespace).items),
                        ("Service", core.list_namespaced_service(namespace).items),
                        ("ConfigMap", core.list_namespaced_config_map(namespace).items)):
        for item in items:
            metadata = item.metadata
            if metadata.name == "kube-root-ca.crt":
                continue
            found[f"{kind}/{metadata.name}"] = (
                f"{metadata.generation} {sorted((metadata.labels or {}).items())} "
                f"{sorted(_ours(metadata.annotations))}" if kind == "Deployment"
                else metadata.resource_version)
    return found


def _ours(annotations: dict[str, str] | None) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (annotations or {}).items()
            if k != "deployment.kubernetes.io/revision"]


def test_apply_creates_the_environment_and_it_becomes_available(live: LiveEnv,
                                                                api_client: ApiClient) -> None:
    result = live.apply("--wait", "--timeout", "120")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "created" in result.stdout and "failed" not in result.stdout
    apps = kubernetes.client.AppsV1Api(api_client)
    checkout = apps.read_namespaced_deployment("checkout", live.shop())
    assert checkout.status.available_replicas == checkout.spec.replicas == 2
    managers = {m.manager for m in checkout.metadata.managed_fields}
    assert "reconciler" in managers
    assert kubernetes.client.BatchV1Api(api_client).read_namespaced_cron_job(
        "invoice-run", live.shop()).spec.schedule == "0 3 * * *"


MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "monitors.observability.acme.example"},
    "spec": {"group": "observability.acme.example", "scope": "Namespaced",
             "names": {"plural": "monitors", "singular": "monitor", "kind": "Monitor"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "required": ["intervalSeconds"], "properties": {
                         "intervalSeconds": {"type": "integer", "minimum": 1}}}}}}}]}}
MONITOR_TEMPLATE = """\
apiVersion: observability.acme.example/v1
kind: Monitor
metadata: {name: {{ component.name | tojson }}, namespace: {{ namespace | tojson }}}
spec: {intervalSeconds: INTERVAL}
"""


@pytest.fixture
def monitor_crd(api_client: ApiClient) -> str:
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    try:
        extensions.create_custom_resource_definition(MONITOR_CRD)
    except kubernetes.client.exceptions.ApiException as exc:
        assert exc.status == 409, exc.body
    wait_for(lambda: any(c.type == "Established" and c.status == "True" for c in (
        extensions.read_custom_resource_definition(MONITOR_CRD["metadata"]["name"])
        .status.conditions or [])), "the CRD established")
    return "monitors"


def test_custom_resources_from_templates_are_applied_and_checked_by_their_crd(
        live: LiveEnv, api_client: ApiClient, monitor_crd: str) -> None:
    template = live.repo / "templates/service/monitor.yaml.j2"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(MONITOR_TEMPLATE.replace("INTERVAL", "30"))
    result = live.apply()
    assert result.exit_code == 0, result.stdout + result.stderr
    custom = kubernetes.client.CustomObjectsApi(api_client)
    monitor = custom.get_namespaced_custom_object("observability.acme.example", "v1",
                                                  live.shop(), monitor_crd, "checkout")
    assert monitor["spec"] == {"intervalSeconds": 30}
    template.write_text(MONITOR_TEMPLATE.replace("INTERVAL", "0"))
    refused = live.apply()
    assert refused.exit_code == 1
    assert "spec.intervalSeconds: Invalid value: 0" in refused.stdout + refused.stderr
    monitor = custom.get_namespaced_custom_object("observability.acme.example", "v1",
                                                  live.shop(), monitor_crd, "checkout")
    assert monitor["spec"] == {"intervalSeconds": 30}, "nothing was written"


def test_a_second_apply_makes_no_writes(live: LiveEnv, api_client: ApiClient) -> None:
    assert live.apply("--wait").exit_code == 0
    before = objects_in(api_client, live.shop())
    head = head_revision(live.repo)
    state = load_state(WorkTree(live.repo, f"{head}-dirty"))  # as the CLI reads this work tree
    client = KubeClient(api_client)
    result = apply_environment(state, live.name, "nonprod-eu", client, decrypt=live.decrypt())
    assert {c.action for c in result.changes} == {"unchanged"}
    assert client.writes == 0
    assert objects_in(api_client, live.shop()) == before


def test_a_config_change_rolls_the_deployment_without_losing_ready_pods(
        live: LiveEnv, api_client: ApiClient) -> None:
    assert live.apply("--wait").exit_code == 0
    apps = kubernetes.client.AppsV1Api(api_client)
    read = lambda: apps.read_namespaced_deployment("checkout", live.shop())  # noqa: E731
    old_template = read().spec.template.spec.containers[0].env_from
    edit(live.repo, f"environments/{live.name}/shop/checkout/config.yaml", "LOG_LEVEL: debug",
         "LOG_LEVEL: trace")
    lowest: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            status = read().status
            lowest.append(status.available_replicas or 0)
            done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = live.apply("--wait", "--timeout", "120")
    finally:
        done.set()
        watcher.join()
    assert result.exit_code == 0, result.stdout + result.stderr
    assert any(line.split()[1:4] == ["configured", "Deployment", live.shop()]
               for line in result.stdout.splitlines()[1:]), result.stdout
    deployment = read()
    assert deployment.spec.template.spec.containers[0].env_from != old_template
    assert deployment.status.updated_replicas == deployment.status.available_replicas == 2
    assert min(lowest) >= 2, "never fewer ready pods than replicas during the rollout"


def test_prune_removes_what_left_the_render_and_nothing_else(live: LiveEnv,
                                                             api_client: ApiClient) -> None:
    assert live.apply().exit_code == 0
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_config_map(live.shop(), {"metadata": {"name": "hand-made"}})
    core.create_namespaced_config_map(live.shop(), {"metadata": {
        "name": "looks-like-ours", "labels": {"app.kubernetes.io/managed-by": "reconciler"}}})
    (live.repo / f"environments/{live.name}/shop/storefront/release.yaml").unlink()
    result = live.apply()
    assert result.exit_code == 0, result.stdout + result.stderr
    deleted = [line.split()[2:5] for line in result.stdout.splitlines() if " deleted " in line]
    assert ["Deployment", live.shop(), "storefront"] in deleted
    assert ["Service", live.shop(), "storefront-web"] in deleted
    remaining = objects_in(api_client, live.shop())
    assert "Deployment/storefront" not in remaining and "Deployment/checkout" in remaining
    assert "ConfigMap/hand-made" in remaining and "ConfigMap/looks-like-ours" in remaining


def test_drift_is_shown_by_diff_and_healed_by_apply(live: LiveEnv,
                                                    api_client: ApiClient) -> None:
    assert live.apply().exit_code == 0
    assert live.run("diff", "--env", live.name).exit_code == 0
    apps = kubernetes.client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment("catalog", live.shop(), {"spec": {"replicas": 5}},
                                     field_manager="kubectl-edit")
    diff = live.run("diff", "--env", live.name)
    assert diff.exit_code == 1
    assert f"live Deployment {live.shop()}/catalog" in diff.stdout
    assert "-  replicas: 5" in diff.stdout and "+  replicas: 1" in diff.stdout
    conflict = live.apply()
    assert conflict.exit_code == 1, "another manager owns the field: reported, not forced"
    assert any(line.split()[1:5] == ["failed", "Deployment", live.shop(), "catalog"]
               and "conflict" in line for line in conflict.stdout.splitlines()), conflict.stdout
    assert apps.read_namespaced_deployment("catalog", live.shop()).spec.replicas == 5
    healed = live.apply("--force-conflicts")
    assert healed.exit_code == 0, healed.stdout
    assert apps.read_namespaced_deployment("catalog", live.shop()).spec.replicas == 1


def test_an_empty_render_is_refused_unless_allowed(live: LiveEnv,
                                                   api_client: ApiClient) -> None:
    assert live.apply().exit_code == 0
    before = objects_in(api_client, live.shop())
    for release in (live.repo / f"environments/{live.name}").glob("*/*/release*.yaml"):
        release.unlink()
    refused = live.apply()
    assert refused.exit_code == 1
    assert any("would delete all" in e and "nothing was applied" in e for e in refused.errors)
    assert objects_in(api_client, live.shop()) == before
    allowed = live.apply("--allow-empty")
    assert allowed.exit_code == 0, allowed.stderr
    assert "Deployment/checkout" not in objects_in(api_client, live.shop())


def test_secrets_are_masked_in_diff_and_applied_decrypted(live: LiveEnv,
                                                          api_client: ApiClient) -> None:
    """The example's development environment has a secret; the live env holds its key."""
    value = b"demo-payment-key-not-for-production"
    diff = live.run("diff", "--env", live.name)
    assert value.decode() not in diff.stdout
    assert base64.b64encode(value).decode() not in diff.stdout
    assert "++++++++" in diff.stdout
    applied = live.apply()
    assert applied.exit_code == 0, applied.stderr
    secret = next(s for s in kubernetes.client.CoreV1Api(api_client).list_namespaced_secret(
        live.shop()).items if s.metadata.name.startswith("checkout-secrets-"))
    assert base64.b64decode(secret.data["PAYMENT_API_KEY"]) == value
    assert value.decode() not in applied.stdout + applied.stderr


class FreezingClient(KubeClient):
    """A real client whose API server is frozen (SIGSTOP) after a number of requests."""

    def __init__(self, api: ApiClient, apiserver_pid: int, after: int) -> None:
        super().__init__(api, timeout=3)
        self.apiserver_pid = apiserver_pid
        self.remaining = after

    def _call(self, action: Any) -> Any:
        self.remaining -= 1
        if self.remaining == 0:
            os.kill(self.apiserver_pid, signal.SIGSTOP)
        return super()._call(action)


@pytest.fixture
def own_control_plane(tmp_path: Path) -> Iterator[Path]:
    """A control plane of this test's own, which it may freeze."""
    controlplane = controlplane_module()
    state = tmp_path / "own"
    controlplane.up(state, controlplane.build(), nodes=1)
    yield state
    pids = json.loads((state / "pids.json").read_text())
    os.kill(pids["kube-apiserver"], signal.SIGCONT)
    controlplane.down(state)


def test_an_api_server_that_stops_mid_apply_is_a_clear_error_and_the_next_run_converges(
        repo: Path, own_control_plane: Path, demo_key: Path) -> None:
    kubeconfig = own_control_plane / "admin.kubeconfig"
    live = LiveEnv(repo, kubeconfig, demo_key)
    apiserver = json.loads((own_control_plane / "pids.json").read_text())["kube-apiserver"]
    state = load_state(WorkTree(repo))
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    api.configuration.retries = 0
    with pytest.raises(Unreachable) as stopped:
        apply_environment(state, live.name, "nonprod-eu", FreezingClient(api, apiserver, 40),
                          decrypt=live.decrypt())
    assert "cannot reach the API server at https://127.0.0.1:" in str(stopped.value)
    os.kill(apiserver, signal.SIGCONT)
    result = live.apply("--wait", "--timeout", "120")
    assert result.exit_code == 0, result.stdout + result.stderr
    as_the_cli_read_it = WorkTree(repo, f"{head_revision(repo)}-dirty")
    second = apply_environment(load_state(as_the_cli_read_it), live.name, "nonprod-eu",
                               KubeClient(api), decrypt=live.decrypt())
    assert not [c for c in second.changes if c.action in ("created", "configured", "failed")]


def job(namespace: str, image: str, recreate: bool) -> dict[str, Any]:
    annotations = {"reconciler.io/recreate": "true"} if recreate else {}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "namespace": namespace, "annotations": annotations,
                         "labels": {"app.kubernetes.io/managed-by": "reconciler"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "migrate", "image": image}]}}}}


def test_an_immutable_field_change_recreates_only_objects_that_opt_in(
        api_client: ApiClient, namespace: str) -> None:
    manager = ResourceManager(KubeClient(api_client))
    first, second = (f"registry.example/migrate@sha256:{c * 64}" for c in "ab")
    assert manager.apply([job(namespace, first, recreate=False)])[0].action == "created"
    with pytest.raises(ApplyAborted) as refused:
        manager.apply([job(namespace, second, recreate=False)])
    assert "immutable" in str(refused.value)
    batch = kubernetes.client.BatchV1Api(api_client)

    def image() -> str:
        return str(batch.read_namespaced_job("migrate", namespace).spec.template.spec
                   .containers[0].image)

    assert image() == first, "nothing was written"
    changes = manager.apply([job(namespace, second, recreate=True)])
    assert changes[0].action == "configured" and "recreated" in changes[0].message
    assert image() == second


def test_status_live_adds_health_from_the_cluster(live: LiveEnv) -> None:
    assert live.apply("--wait").exit_code == 0
    result = live.run("status", "--env", live.name, "--live", "-o", "json")
    assert result.exit_code == 0, result.stderr
    cells = {c["component"]: c for c in json.loads(result.stdout)}
    assert cells["shop/checkout"]["health"] == {"nonprod-eu": "Healthy"}
    assert cells["shop/reindex"]["health"] == {"nonprod-eu": "Healthy"}
    table = live.run("status", "--env", live.name, "--live")
    assert "Healthy" in table.stdout


def unschedulable(namespace: str) -> dict[str, Any]:
    """A Deployment that never becomes available: no node matches its selector."""
    labels = {"app": "stuck"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "stuck", "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "nodeSelector": {"no-such-node": "true"},
                         "containers": [{"name": "stuck", "image": "registry.example/s@sha256:"
                                                                   + "c" * 64}]}}}}


def test_waiting_reports_per_object_health_at_the_timeout(api_client: ApiClient,
                                                          namespace: str) -> None:
    manager = ResourceManager(KubeClient(api_client))
    manager.apply([unschedulable(namespace)])
    stuck = ObjectRef("apps/v1", "Deployment", namespace, "stuck")
    started = time.monotonic()
    results = manager.wait([stuck], timeout=3, interval=0.5)
    assert 3 <= time.monotonic() - started < 15
    assert results[stuck].status == "Progressing"
    assert "available" in results[stuck].message or "updated" in results[stuck].message


def test_a_newer_commit_cancels_the_wait_for_an_older_one(api_client: ApiClient,
                                                          namespace: str) -> None:
    manager = ResourceManager(KubeClient(api_client))
    manager.apply([unschedulable(namespace)])
    newer_commit = threading.Event()
    threading.Timer(1.0, newer_commit.set).start()
    started = time.monotonic()
    results = manager.wait([ObjectRef("apps/v1", "Deployment", namespace, "stuck")],
                           timeout=120, cancelled=newer_commit.is_set, interval=0.2)
    assert time.monotonic() - started < 10, "did not wait out the timeout"
    assert [h.status for h in results.values()] == ["Progressing"]
