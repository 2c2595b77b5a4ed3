"""deploy/ runs the daemon in a cluster: its manifests are valid, they apply and become
Available, and the ServiceAccount's rights are enough for a real reconcile and no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient

from reconciler.kube.client import KubeClient, KubeError
from reconciler.kube.inventory import ObjectRef
from reconciler.kube.lease import LeaderElection
from reconciler.kube.manager import ResourceManager
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.reconcile import SYSTEM_NAMESPACE, apply_environment
from reconciler.render import k8sschema

from conftest import ROOT, LiveEnv, client_as, wait_for

MANIFESTS = ("namespace.yaml", "rbac.yaml", "deployment.yaml")


def manifests() -> list[dict[str, Any]]:
    return [document for name in MANIFESTS
            for document in yaml.safe_load_all((ROOT / "deploy" / name).read_text()) if document]


def test_manifests_are_valid_kubernetes() -> None:
    for document in manifests():
        assert k8sschema.problems(document) == [], document["metadata"]["name"]


def as_service_account(api_client: ApiClient) -> KubeClient:
    return KubeClient(client_as(api_client, "reconciler", SYSTEM_NAMESPACE))


def test_the_daemon_deploys_and_its_rights_are_enough_for_a_reconcile(
        live: LiveEnv, api_client: ApiClient) -> None:
    admin = KubeClient(api_client)
    changes = ResourceManager(admin).apply(manifests())
    assert not [c for c in changes if c.action == "failed"]
    apps = kubernetes.client.AppsV1Api(api_client)
    wait_for(lambda: (apps.read_namespaced_deployment("reconciler", SYSTEM_NAMESPACE)
                      .status.available_replicas or 0) == 2, "the daemon's Deployment")
    daemon = as_service_account(api_client)
    state = load_state(WorkTree(live.repo))
    result = apply_environment(state, live.name, "nonprod-eu", daemon, decrypt=live.decrypt(),
                               force_conflicts=True)
    assert not [c for c in result.changes if c.action == "failed"], result.changes
    (live.repo / f"environments/{live.name}/shop/storefront/release.yaml").unlink()
    pruned = apply_environment(load_state(WorkTree(live.repo)), live.name, "nonprod-eu", daemon,
                               decrypt=live.decrypt(), force_conflicts=True)
    assert {c.ref.name for c in pruned.changes if c.action == "deleted"} >= {"storefront"}
    election = LeaderElection(daemon, SYSTEM_NAMESPACE, f"reconciler-rbac-{live.name}", "pod-0")
    assert election.try_acquire_or_renew()
    assert election.try_acquire_or_renew(), "renewing needs update"


@pytest.mark.parametrize("ref", [ObjectRef("v1", "Pod", "kube-system", "anything"),
                                 ObjectRef("v1", "Node", "", "kwok-node-0"),
                                 ObjectRef("rbac.authorization.k8s.io/v1", "ClusterRole", "",
                                           "cluster-admin")])
def test_the_daemon_has_no_rights_beyond_what_it_renders(api_client: ApiClient, ref: ObjectRef,
                                                         control_plane: Path) -> None:
    ResourceManager(KubeClient(api_client)).apply(manifests()[:3])
    with pytest.raises(KubeError) as refused:
        as_service_account(api_client).get(ref)
    assert refused.value.status == 403
