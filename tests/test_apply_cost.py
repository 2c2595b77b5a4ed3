"""What an apply costs on a real API server: a no-op reads each kind with one LIST and writes
nothing; a changed object costs at most a dry-run and a PATCH; and the shortcut that decides
"unchanged" without asking object by object still sees every drift another field manager
makes (kubectl scale, kubectl edit, kubectl label), an object deleted by hand, and a desired
change. The daemon reads live objects from a watch cache instead: then a no-op sends no LIST at
all, and the same drifts are seen as soon as their watch event arrives."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client import ApiClient

from reconciler.git.store import head_revision
from reconciler.kube.client import KubeClient
from reconciler.kube.manager import live_cache
from reconciler.kube.watch import LiveCache
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.reconcile import Result, apply_environment
from reconciler.render.engine import render_environment

from conftest import LiveEnv, controlplane_module, edit, wait_for

CLUSTER = "nonprod-eu"
BOOKKEEPING = 4
"""Requests of any apply besides its LISTs: discovery, the system namespace, the inventory
and the key of applied annotations."""


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    """kubectl, built with the test control plane."""
    return controlplane_module().build() / "kubectl"


def kubectl(binary: Path, live: LiveEnv, *args: str, editor: str = "") -> None:
    env = {**os.environ, **({"KUBE_EDITOR": editor} if editor else {})}
    done = subprocess.run([str(binary), "--kubeconfig", str(live.kubeconfig), "-n", live.shop(),
                           *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def apply(live: LiveEnv, api_client: ApiClient, force: bool = False,
          cache: LiveCache | None = None) -> tuple[Result, KubeClient]:
    """One apply of the live environment as the CLI makes it (or, with ``cache``, as the
    daemon does), through a client of its own."""
    head = head_revision(live.repo)
    state = load_state(WorkTree(live.repo, f"{head}-dirty"))
    client = KubeClient(api_client)
    result = apply_environment(state, live.name, CLUSTER, client, decrypt=live.decrypt(),
                               force_conflicts=force, live=cache)
    return result, client


@pytest.fixture
def watch_cache(api_client: ApiClient) -> Iterator[LiveCache]:
    cache = live_cache(KubeClient(api_client))
    yield cache
    cache.stop()


def until_seen(live: LiveEnv, api_client: ApiClient, cache: LiveCache,
               expected: dict[str, str]) -> Result:
    """Passes of the daemon's kind until one makes ``expected`` (the watch event of a drift
    arrives a moment after the drift)."""
    seen: list[Result] = []

    def applied_as_expected() -> bool:
        seen.append(apply(live, api_client, force=True, cache=cache)[0])
        return actions(seen[-1]) == expected

    wait_for(applied_as_expected, f"{expected} seen through the watch cache", timeout=30)
    return seen[-1]


def kinds(live: LiveEnv) -> int:
    head = head_revision(live.repo)
    state = load_state(WorkTree(live.repo, f"{head}-dirty"))
    rendered = render_environment(state, live.name, cluster=CLUSTER, decrypt=live.decrypt())
    return len({(o["apiVersion"], o["kind"]) for o in rendered.objects})


def actions(result: Result) -> dict[str, str]:
    """``Kind/name`` -> action, for what was not unchanged."""
    return {f"{c.ref.kind}/{c.ref.name}": c.action for c in result.changes
            if c.action != "unchanged"}


def test_a_no_op_apply_lists_each_kind_once_and_writes_nothing(
        live: LiveEnv, api_client: ApiClient) -> None:
    assert live.apply().exit_code == 0
    result, client = apply(live, api_client)
    assert {c.action for c in result.changes} == {"unchanged"}
    assert len(result.changes) > 3 * kinds(live), "more objects than kinds: the bound means it"
    assert client.writes == 0
    assert client.requests <= kinds(live) + BOOKKEEPING


def test_a_desired_change_costs_a_dry_run_and_a_patch_per_changed_object(
        live: LiveEnv, api_client: ApiClient) -> None:
    assert live.apply().exit_code == 0
    edit(live.repo, f"environments/{live.name}/shop/checkout/config.yaml", "LOG_LEVEL: debug",
         "LOG_LEVEL: trace")
    result, client = apply(live, api_client)
    changed = actions(result)
    assert changed and set(changed.values()) <= {"created", "configured", "deleted"}, changed
    assert "Deployment/checkout" in changed, "the new config rolls the Deployment"
    assert not [n for n in changed if n.startswith("Deployment/") and n != "Deployment/checkout"]
    writes = sum(1 for c in result.changes if c.action in ("created", "configured", "deleted"))
    assert client.writes == writes + 1, "each change once, and the inventory"
    inventory = 3  # its LIST, dry-run and PATCH
    assert client.requests <= kinds(live) + BOOKKEEPING + 2 * writes + inventory, changed
    again, client = apply(live, api_client)
    assert {c.action for c in again.changes} == {"unchanged"} and client.writes == 0


@pytest.mark.parametrize("drift", ["kubectl scale", "kubectl edit", "kubectl label"])
def test_drift_by_another_field_manager_is_seen_and_healed(
        drift: str, live: LiveEnv, api_client: ApiClient, kubectl_bin: Path) -> None:
    assert live.apply().exit_code == 0
    apps = kubernetes.client.AppsV1Api(api_client)
    if drift == "kubectl scale":
        kubectl(kubectl_bin, live, "scale", "deployment/catalog", "--replicas=3")
    elif drift == "kubectl edit":
        editor = (f"{sys.executable} -c \"import sys; p = sys.argv[1]; t = open(p).read(); "
                  "open(p, 'w').write(t.replace('\\n  replicas: 1\\n', '\\n  replicas: 3\\n', 1))\"")
        kubectl(kubectl_bin, live, "edit", "deployment/catalog", editor=editor)
    else:
        kubectl(kubectl_bin, live, "label", "deployment/catalog", "--overwrite",
                "app.kubernetes.io/part-of=elsewhere")
    drifted = apps.read_namespaced_deployment("catalog", live.shop())
    assert drifted.spec.replicas == 3 or drifted.metadata.labels[
        "app.kubernetes.io/part-of"] == "elsewhere"

    result, client = apply(live, api_client, force=True)
    assert actions(result) == {"Deployment/catalog": "configured"}
    assert client.writes == 1
    healed = apps.read_namespaced_deployment("catalog", live.shop())
    assert healed.spec.replicas == 1
    assert healed.metadata.labels["app.kubernetes.io/part-of"] == "shop"
    again, client = apply(live, api_client)
    assert {c.action for c in again.changes} == {"unchanged"} and client.writes == 0


def test_a_field_no_one_renders_is_left_alone_without_a_write(
        live: LiveEnv, api_client: ApiClient, kubectl_bin: Path) -> None:
    assert live.apply().exit_code == 0
    kubectl(kubectl_bin, live, "annotate", "deployment/catalog", "team.example/owner=payments")
    result, client = apply(live, api_client)
    assert {c.action for c in result.changes} == {"unchanged"} and client.writes == 0
    catalog = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(
        "catalog", live.shop())
    assert catalog.metadata.annotations["team.example/owner"] == "payments"


def test_an_object_deleted_by_hand_is_created_again(live: LiveEnv, api_client: ApiClient,
                                                    kubectl_bin: Path) -> None:
    assert live.apply().exit_code == 0
    kubectl(kubectl_bin, live, "delete", "service", "catalog-api", "--wait=true")
    result, client = apply(live, api_client)
    assert actions(result) == {"Service/catalog-api": "created"}
    assert client.writes == 1
    kubernetes.client.CoreV1Api(api_client).read_namespaced_service("catalog-api", live.shop())


def test_an_object_that_lost_our_labels_is_configured_not_created(
        live: LiveEnv, api_client: ApiClient, kubectl_bin: Path) -> None:
    assert live.apply().exit_code == 0
    kubectl(kubectl_bin, live, "label", "service/catalog-api", "app.kubernetes.io/managed-by-")
    result, _ = apply(live, api_client, force=True)
    assert actions(result) == {"Service/catalog-api": "configured"}
    service = kubernetes.client.CoreV1Api(api_client).read_namespaced_service(
        "catalog-api", live.shop())
    assert service.metadata.labels["app.kubernetes.io/managed-by"] == "reconciler"


def test_with_the_watch_cache_a_no_op_sends_no_list_and_writes_nothing(
        live: LiveEnv, api_client: ApiClient, watch_cache: LiveCache) -> None:
    assert live.apply().exit_code == 0
    first, _ = apply(live, api_client, cache=watch_cache)
    assert {c.action for c in first.changes} == {"unchanged"}
    result, client = apply(live, api_client, cache=watch_cache)
    assert {c.action for c in result.changes} == {"unchanged"}
    assert client.writes == 0
    assert client.requests <= BOOKKEEPING, "no LIST: every kind is read from the watches"


@pytest.mark.parametrize("drift", ["kubectl scale", "kubectl label", "kubectl delete"])
def test_with_the_watch_cache_drift_is_still_seen_and_healed(
        drift: str, live: LiveEnv, api_client: ApiClient, kubectl_bin: Path,
        watch_cache: LiveCache) -> None:
    assert live.apply().exit_code == 0
    apply(live, api_client, cache=watch_cache)
    apps = kubernetes.client.AppsV1Api(api_client)
    if drift == "kubectl scale":
        kubectl(kubectl_bin, live, "scale", "deployment/catalog", "--replicas=3")
        expected = {"Deployment/catalog": "configured"}
    elif drift == "kubectl label":
        kubectl(kubectl_bin, live, "label", "deployment/catalog", "--overwrite",
                "app.kubernetes.io/part-of=elsewhere")
        expected = {"Deployment/catalog": "configured"}
    else:
        kubectl(kubectl_bin, live, "delete", "service", "catalog-api", "--wait=true")
        expected = {"Service/catalog-api": "created"}
    until_seen(live, api_client, watch_cache, expected)
    healed = apps.read_namespaced_deployment("catalog", live.shop())
    assert healed.spec.replicas == 1
    assert healed.metadata.labels["app.kubernetes.io/part-of"] == "shop"
    kubernetes.client.CoreV1Api(api_client).read_namespaced_service("catalog-api", live.shop())
