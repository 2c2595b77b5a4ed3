"""Executions of tasks: what a Job (and its pods) says about one run, and the bounded record
that keeps finished runs after Kubernetes deletes their Jobs.

Kubernetes keeps only a CronJob's last few Jobs (its history limits), so the history of a
task lives in a record of its own (a ConfigMap per task in ``reconciler-system``), merged
from the live Jobs by whoever looks (the daemon on its passes, ``task run --wait``,
``task executions``) and rotated by age. Pure functions on plain dicts, like ``health``:
reading and writing the record is the caller's job.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from reconciler.model.names import LABEL_PREFIX

Status = Literal["running", "succeeded", "failed"]

RETENTION = datetime.timedelta(days=30)
"""How long a finished execution stays in the record."""
MAX_RECORDED = 500
"""At most this many executions are kept in full (a ConfigMap holds 1 MiB); the daily
totals still count every one of the retention period."""

TRIGGER = f"{LABEL_PREFIX}/trigger"
TRIGGERED_BY = f"{LABEL_PREFIX}/triggered-by"
RELEASE = f"{LABEL_PREFIX}/release"
IMAGE = f"{LABEL_PREFIX}/image"
COMMIT = f"{LABEL_PREFIX}/commit"
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
"""Set by the CronJob controller on each Job it starts on schedule."""
INSTANTIATE = "cronjob.kubernetes.io/instantiate"
"""Set to ``manual`` by ``kubectl create job --from=cronjob/...``."""
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
"""The label the Job controller puts on each of a Job's pods: the Job's uid."""

_IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


@dataclass(frozen=True)
class Execution:
    """One run of a task: a Job, with who or what started it and what it ran."""

    id: str
    job: str
    trigger: str
    """``schedule`` (the CronJob controller) or ``manual``."""
    triggered_by: str
    start: str
    end: str
    status: Status
    reason: str
    """Why it failed (or what holds a running one up), in words."""
    release: str
    image: str
    commit: str
    cluster: str = ""

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def duration(self) -> int | None:
        """Seconds from start to end (to now, for a running one: None)."""
        if not self.start or not self.end:
            return None
        return int((_time(self.end) - _time(self.start)).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration"] = self.duration
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Execution:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def execution_id(component: str, job_uid: str) -> str:
    """Stable and unique: the component's name and the start of its Job's uid."""
    return f"{component}-{job_uid.replace('-', '')[:10]}"


def component_of(execution: str) -> str:
    """The component name an execution id starts with."""
    name, _, suffix = execution.rpartition("-")
    return name if name and len(suffix) == 10 else ""


def of_job(component: str, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = (),
           cluster: str = "") -> Execution:
    """What a live Job says about its execution; its pods say why one is held up."""
    metadata = job.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []
                  if c.get("status") == "True"}
    state: Status = "running"
    end = ""
    reasons: list[str] = []
    if "Failed" in conditions:
        state = "failed"
        failed = conditions["Failed"]
        end = str(failed.get("lastTransitionTime") or "")
        reasons.append(_failure(failed, job))
    elif "Complete" in conditions:
        state = "succeeded"
        end = str(status.get("completionTime") or conditions["Complete"].get(
            "lastTransitionTime") or "")
    if state != "succeeded":
        reasons.extend(r for r in _pod_problems(pods) if r not in reasons)
    if annotations.get(TRIGGER) == "manual" or annotations.get(INSTANTIATE) == "manual":
        trigger = "manual"
    elif SCHEDULED_AT in annotations:
        trigger = "schedule"
    else:
        trigger = "manual"
    return Execution(
        id=execution_id(component, str(metadata.get("uid", ""))),
        job=str(metadata.get("name", "")),
        trigger=trigger,
        triggered_by=str(annotations.get(TRIGGERED_BY, "")) if trigger == "manual" else "",
        start=str(status.get("startTime") or metadata.get("creationTimestamp") or ""),
        end=end,
        status=state,
        reason="; ".join(reasons),
        release=str(annotations.get(RELEASE) or labels.get(RELEASE) or ""),
        image=str(annotations.get(IMAGE, "")),
        commit=str(annotations.get(COMMIT, "")),
        cluster=cluster,
    )


def _failure(condition: Mapping[str, Any], job: Mapping[str, Any]) -> str:
    reason = str(condition.get("reason") or "")
    spec = job.get("spec") or {}
    if reason == "BackoffLimitExceeded":
        attempts = (job.get("status") or {}).get("failed", 0)
        return (f"backoff limit reached: {attempts} failed attempt(s), backoffLimit "
                f"{spec.get('backoffLimit', 6)}")
    if reason == "DeadlineExceeded":
        return (f"deadline exceeded: ran longer than its activeDeadlineSeconds "
                f"({spec.get('activeDeadlineSeconds')} s)")
    message = str(condition.get("message") or "")
    return f"{reason}: {message}" if message else reason or "failed"


def _pod_problems(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """What keeps a Job's pods from running: image pulls, scheduling."""
    found: list[str] = []
    for pod in pods:
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _IMAGE_PULL:
                found.append(f"image pull: {waiting.get('reason')}: "
                             f"{waiting.get('message', '')}".rstrip(": "))
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                found.append(f"not scheduled: {condition.get('message') or condition.get('reason')}")
    return list(dict.fromkeys(found))


# --- The record of finished executions ---


@dataclass(frozen=True)
class Record:
    """Finished executions of one task in one cluster, newest first, and per-day totals
    (succeeded, failed) that outlive the executions trimmed to ``MAX_RECORDED``."""

    executions: tuple[Execution, ...] = ()
    days: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def merge(record: Record, observed: Iterable[Execution], now: datetime.datetime,
          retention: datetime.timedelta = RETENTION) -> tuple[Record, list[Execution]]:
    """The record with every finished execution of ``observed`` in it (once), rotated by
    age; and the executions that were new to it."""
    known = {e.id for e in record.executions}
    kept = list(record.executions)
    days = dict(record.days)
    full = len(kept) >= MAX_RECORDED
    oldest = min((_time(e.end) for e in kept if e.end), default=None)
    added = []
    for execution in observed:
        if not execution.finished or execution.id in known or not execution.end:
            continue
        if full and oldest is not None and _time(execution.end) < oldest:
            continue  # trimmed before: counted already
        known.add(execution.id)
        kept.append(execution)
        added.append(execution)
        day = execution.end[:10]
        succeeded, failed = days.get(day, (0, 0))
        days[day] = ((succeeded + 1, failed) if execution.status == "succeeded"
                     else (succeeded, failed + 1))
    return rotate(Record(tuple(kept), days), now, retention), added


def rotate(record: Record, now: datetime.datetime,
           retention: datetime.timedelta = RETENTION) -> Record:
    """Only what ended within ``retention``, at most ``MAX_RECORDED`` executions."""
    since = now - retention
    executions = sorted((e for e in record.executions if _time(e.end) >= since),
                        key=lambda e: (e.end, e.id), reverse=True)[:MAX_RECORDED]
    first_day = since.strftime("%Y-%m-%d")
    days = {day: counts for day, counts in record.days.items() if day >= first_day}
    return Record(tuple(executions), days)


def totals(record: Record, now: datetime.datetime,
           period: datetime.timedelta = RETENTION) -> dict[str, int]:
    """Succeeded and failed executions that ended in the last ``period`` (by day)."""
    first_day = (now - period).strftime("%Y-%m-%d")
    counted = [counts for day, counts in record.days.items() if day >= first_day]
    return {"succeeded": sum(c[0] for c in counted), "failed": sum(c[1] for c in counted)}


def history(live: Iterable[Execution], record: Record) -> list[Execution]:
    """Every execution, live Jobs and recorded ones, newest first. A recorded execution
    wins over its live Job: it was recorded when it ended, with what its pods said then."""
    found = {e.id: e for e in live}
    found.update((e.id, e) for e in record.executions)
    return sorted(found.values(), key=lambda e: (e.start, e.id), reverse=True)


def encode(record: Record) -> dict[str, str]:
    """The record as ConfigMap data."""
    return {"executions": json.dumps([e.to_dict() for e in record.executions],
                                     separators=(",", ":")),
            "days": json.dumps({d: list(c) for d, c in sorted(record.days.items())},
                               separators=(",", ":"))}


def decode(data: Mapping[str, str] | None) -> Record:
    """A record from ConfigMap data; anything unreadable counts as empty."""
    if not data:
        return Record()
    try:
        executions = tuple(Execution.from_dict(e) for e in json.loads(data.get("executions")
                                                                        or "[]"))
        days = {str(d): (int(c[0]), int(c[1]))
                for d, c in json.loads(data.get("days") or "{}").items()}
    except (TypeError, ValueError, KeyError, IndexError):
        return Record()
    return Record(executions, days)


def with_cluster(executions: Iterable[Execution], cluster: str) -> list[Execution]:
    return [replace(e, cluster=cluster) for e in executions]


def _time(text: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
