"""Health of live objects: pure functions on plain dicts, one per kind (as in gitops-engine).

Healthy: the object does what its spec asks. Progressing: not yet (a rollout, a running Job).
Degraded: it will not get there by itself (progress deadline exceeded, a failed Job).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["Healthy", "Progressing", "Degraded"]


@dataclass(frozen=True)
class Health:
    status: Status
    message: str = ""


HEALTHY = Health("Healthy")


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in obj.get("status", {}).get("conditions") or []}


def _observed(obj: Mapping[str, Any]) -> bool:
    generation = obj.get("metadata", {}).get("generation", 0)
    return bool(obj.get("status", {}).get("observedGeneration", 0) >= generation)


def deployment(obj: Mapping[str, Any]) -> Health:
    if not _observed(obj):
        return Health("Progressing", "waiting for the controller to observe the new spec")
    status = obj.get("status", {})
    progressing = _conditions(obj).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health("Degraded", f"rollout exceeded its progress deadline: "
                                  f"{progressing.get('message', '')}".strip())
    wanted = obj.get("spec", {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if updated < wanted:
        return Health("Progressing", f"{updated} of {wanted} replicas updated")
    if status.get("replicas", 0) > updated:
        return Health("Progressing", f"{status.get('replicas', 0) - updated} old replicas "
                                     "terminating")
    if status.get("availableReplicas", 0) < updated:
        return Health("Progressing", f"{status.get('availableReplicas', 0)} of {updated} "
                                     "updated replicas available")
    return HEALTHY


def stateful_set(obj: Mapping[str, Any]) -> Health:
    if not _observed(obj):
        return Health("Progressing", "waiting for the controller to observe the new spec")
    status = obj.get("status", {})
    wanted = obj.get("spec", {}).get("replicas", 1)
    if status.get("updateRevision") and status.get("currentRevision") != status["updateRevision"]:
        return Health("Progressing", f"{status.get('updatedReplicas', 0)} of {wanted} replicas "
                                     "updated")
    if status.get("readyReplicas", 0) < wanted:
        return Health("Progressing", f"{status.get('readyReplicas', 0)} of {wanted} ready")
    return HEALTHY


def daemon_set(obj: Mapping[str, Any]) -> Health:
    if not _observed(obj):
        return Health("Progressing", "waiting for the controller to observe the new spec")
    status = obj.get("status", {})
    desired = status.get("desiredNumberScheduled", 0)
    if status.get("updatedNumberScheduled", 0) < desired:
        return Health("Progressing", f"{status.get('updatedNumberScheduled', 0)} of {desired} "
                                     "nodes updated")
    if status.get("numberAvailable", 0) < desired:
        return Health("Progressing", f"{status.get('numberAvailable', 0)} of {desired} available")
    return HEALTHY


def job(obj: Mapping[str, Any]) -> Health:
    conditions = _conditions(obj)
    if conditions.get("Failed", {}).get("status") == "True":
        return Health("Degraded", conditions["Failed"].get("message", "the Job failed"))
    if conditions.get("Complete", {}).get("status") == "True":
        return HEALTHY
    if obj.get("spec", {}).get("suspend"):
        return Health("Healthy", "suspended")
    return Health("Progressing", "running")


def cron_job(obj: Mapping[str, Any]) -> Health:
    return Health("Healthy", "suspended" if obj.get("spec", {}).get("suspend") else "")


def service(obj: Mapping[str, Any]) -> Health:
    if obj.get("spec", {}).get("type") == "LoadBalancer" and not (
            obj.get("status", {}).get("loadBalancer", {}).get("ingress")):
        return Health("Progressing", "waiting for a load balancer address")
    return HEALTHY


CHECKS: dict[str, Callable[[Mapping[str, Any]], Health]] = {
    "Deployment": deployment,
    "StatefulSet": stateful_set,
    "DaemonSet": daemon_set,
    "Job": job,
    "CronJob": cron_job,
    "Service": service,
}


def health(obj: Mapping[str, Any]) -> Health:
    """The health of any live object; kinds without a check are Healthy once they exist."""
    check = CHECKS.get(str(obj.get("kind", "")))
    return check(obj) if check else HEALTHY
