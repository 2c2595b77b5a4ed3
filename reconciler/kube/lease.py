"""Leader election with a coordination.k8s.io Lease, so replicas never apply at once.

The holder renews the Lease well within its duration; anyone may take it over once it has
not been renewed for a whole duration. Every write carries the resourceVersion read, so two
candidates racing for an expired Lease cannot both win.
"""

from __future__ import annotations

import datetime
from typing import Any

from reconciler.kube.client import KubeClient, KubeError
from reconciler.kube.inventory import ObjectRef

API_VERSION = "coordination.k8s.io/v1"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElection:
    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str,
                 duration_seconds: int = 15) -> None:
        self.client = client
        self.ref = ObjectRef(API_VERSION, "Lease", namespace, name)
        self.identity = identity
        self.duration = duration_seconds

    def try_acquire_or_renew(self) -> bool:
        """True while this candidate holds the Lease (acquired or renewed now)."""
        now = _now()
        try:
            live = self.client.get(self.ref)
            if live is None:
                self.client.create(self._lease(now, now, transitions=0))
                return True
            spec: dict[str, Any] = live.get("spec") or {}
            holder = spec.get("holderIdentity")
            renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
            duration = int(spec.get("leaseDurationSeconds") or self.duration)
            expired = renewed is None or now > renewed + datetime.timedelta(seconds=duration)
            if holder != self.identity and not expired:
                return False
            acquired = (now if holder != self.identity
                        else _parse(spec.get("acquireTime")) or now)
            transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
            lease = self._lease(acquired, now, transitions)
            lease["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            self.client.replace(lease)
            return True
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise

    def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        try:
            live = self.client.get(self.ref)
            if live and (live.get("spec") or {}).get("holderIdentity") == self.identity:
                lease = self._lease(_now(), _now() - datetime.timedelta(seconds=self.duration + 1),
                                    int((live.get("spec") or {}).get("leaseTransitions") or 0))
                lease["spec"]["holderIdentity"] = ""
                lease["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                self.client.replace(lease)
        except KubeError:
            pass

    def _lease(self, acquired: datetime.datetime, renewed: datetime.datetime,
               transitions: int) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": "Lease",
                "metadata": {"name": self.ref.name, "namespace": self.ref.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                         "acquireTime": _micro(acquired), "renewTime": _micro(renewed),
                         "leaseTransitions": transitions}}
