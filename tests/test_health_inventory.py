"""Health is a pure function per kind; the inventory decides what may be pruned, and in
which order."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.kube import inventory
from reconciler.kube.health import health
from reconciler.kube.inventory import ObjectRef


def deployment(replicas: int = 2, generation: int = 2, observed: int = 2, **status: Any
               ) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"generation": generation},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, **status}}


@pytest.mark.parametrize(("obj", "expected"), [
    (deployment(updatedReplicas=2, replicas=2, availableReplicas=2), "Healthy"),
    (deployment(observed=1, updatedReplicas=2, replicas=2, availableReplicas=2), "Progressing"),
    (deployment(updatedReplicas=1, replicas=2, availableReplicas=2), "Progressing"),
    (deployment(updatedReplicas=2, replicas=3, availableReplicas=2), "Progressing"),
    (deployment(updatedReplicas=2, replicas=2, availableReplicas=1), "Progressing"),
    (deployment(updatedReplicas=1, replicas=2, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": "ReplicaSet has timed out progressing."}]), "Degraded"),
    ({"kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 3},
      "status": {"observedGeneration": 1, "readyReplicas": 3, "currentRevision": "a",
                 "updateRevision": "a"}}, "Healthy"),
    ({"kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 3},
      "status": {"observedGeneration": 1, "readyReplicas": 3, "currentRevision": "a",
                 "updateRevision": "b"}}, "Progressing"),
    ({"kind": "DaemonSet", "metadata": {"generation": 1}, "status": {
        "observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
        "numberAvailable": 1}}, "Progressing"),
    ({"kind": "DaemonSet", "metadata": {"generation": 1}, "status": {
        "observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
        "numberAvailable": 2}}, "Healthy"),
    ({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
     "Healthy"),
    ({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True",
                                                "message": "BackoffLimitExceeded"}]}},
     "Degraded"),
    ({"kind": "Job", "status": {"active": 1}}, "Progressing"),
    ({"kind": "CronJob", "spec": {"suspend": True}}, "Healthy"),
    ({"kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}}, "Progressing"),
    ({"kind": "Service", "spec": {"type": "ClusterIP"}}, "Healthy"),
    ({"kind": "ConfigMap"}, "Healthy"),
])
def test_health_per_kind(obj: dict[str, Any], expected: str) -> None:
    assert health(obj).status == expected


def test_degraded_deployment_says_why() -> None:
    found = health(deployment(updatedReplicas=1, replicas=2, conditions=[
        {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "timed out"}]))
    assert "progress deadline" in found.message and "timed out" in found.message


def ref(kind: str, name: str, namespace: str = "ns", api_version: str = "v1") -> ObjectRef:
    return ObjectRef(api_version, kind, namespace, name)


def test_stale_objects_are_deleted_in_reverse_apply_order() -> None:
    previous = frozenset({ref("Namespace", "ns", ""), ref("ConfigMap", "c"),
                          ref("Deployment", "d", api_version="apps/v1"), ref("Service", "s")})
    current = frozenset({ref("ConfigMap", "c")})
    assert [r.kind for r in inventory.stale(previous, current)] == [
        "Deployment", "Service", "Namespace"]


def test_a_new_api_version_of_the_same_object_is_not_stale() -> None:
    previous = frozenset({ref("Ingress", "i", api_version="networking.k8s.io/v1beta1")})
    current = frozenset({ref("Ingress", "i", api_version="networking.k8s.io/v1")})
    assert inventory.stale(previous, current) == []


def test_inventory_round_trips_through_its_configmap_text() -> None:
    refs = frozenset({ref("ConfigMap", "c"), ref("Namespace", "n", "")})
    assert inventory.decode(inventory.encode(refs)) == refs
    assert inventory.decode(None) == frozenset()
