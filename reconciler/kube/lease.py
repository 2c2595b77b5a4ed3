"""Leader election with a coordination.k8s.io Lease, so replicas never apply at once.

As client-go does it: the holder renews the Lease on its own clock (every retry period),
whatever else it is doing, and stops leading when it could not renew for the renew
deadline; a candidate takes it over only once it has seen the
same record, unchanged, for a whole duration, measured on its own monotonic clock, so clock
skew between nodes cannot cause two leaders. Every write carries the resourceVersion read,
so two candidates racing for an expired Lease cannot both win.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler.errors import ReconcilerError
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
                 duration_seconds: int = 15, renew_deadline: float = 10.0,
                 retry_period: float = 2.0) -> None:
        """As client-go: the Lease lasts ``duration_seconds``; the holder tries to renew
        every ``retry_period`` and stops leading (and writing) when it has not managed to
        for ``renew_deadline``, before anyone else may take the Lease over."""
        if not 0 < retry_period < renew_deadline < duration_seconds:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")
        self.client = client.with_timeout(renew_deadline / 2)
        """A renewal that hangs (an API server that stopped answering) gives up well before
        the renew deadline, so the next attempt comes in time."""
        self.ref = ObjectRef(API_VERSION, "Lease", namespace, name)
        self.identity = identity
        self.duration = duration_seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observed: tuple[Any, ...] = ()
        self._observed_at = 0.0
        self._renewed_at: float | None = None

    def leading(self) -> bool:
        """Whether this replica may act as leader now: it renewed the Lease less than the
        renew deadline ago, counted from when the renewal was sent, on this replica's own
        clock. Asked before each write, so a leader cut off from the API server (its
        renewals hanging) stops writing by itself before anyone else can take over."""
        renewed = self._renewed_at
        return renewed is not None and time.monotonic() - renewed < self.renew_deadline

    def run(self, stopping: threading.Event, changed: Callable[[bool], None]) -> None:
        """Acquire or renew every retry period until ``stopping``; ``changed`` is called
        with the new state whenever leadership is gained or lost."""
        leading = False
        while not stopping.is_set():
            # An API server that does not answer: leading only until the renew deadline.
            with contextlib.suppress(ReconcilerError):
                self.try_acquire_or_renew()
            now_leading = self.leading()
            if now_leading != leading:
                leading = now_leading
                changed(leading)
            stopping.wait(self.retry_period)
        if leading:
            self.release()
            changed(False)

    def try_acquire_or_renew(self) -> bool:
        """True while this candidate holds the Lease (acquired or renewed now)."""
        now = _now()
        sent = time.monotonic()
        try:
            live = self.client.get(self.ref)
            if live is None:
                self.client.create(self._lease(now, now, transitions=0))
                self._observe(("created", self.identity))
                self._renewed_at = sent
                return True
            spec: dict[str, Any] = live.get("spec") or {}
            holder = spec.get("holderIdentity")
            self._observe((holder, spec.get("renewTime"), spec.get("acquireTime")))
            duration = int(spec.get("leaseDurationSeconds") or self.duration)
            expired = not holder or time.monotonic() - self._observed_at > duration
            if holder != self.identity and not expired:
                self._renewed_at = None
                return False
            acquired = (now if holder != self.identity
                        else _parse(spec.get("acquireTime")) or now)
            transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
            lease = self._lease(acquired, now, transitions)
            lease["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            self.client.replace(lease)
            spec = lease["spec"]
            self._observe((self.identity, spec["renewTime"], spec["acquireTime"]))
            self._renewed_at = sent
            return True
        except KubeError as exc:
            if exc.status == 409:
                self._renewed_at = None
                return False
            raise

    def _observe(self, record: tuple[Any, ...]) -> None:
        """Expiry is timed from when this replica last saw the record change."""
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()

    def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        self._renewed_at = None
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
