"""Tasks on demand and their history: start an execution, follow it, list executions, read
their logs, and keep the record that outlives Job cleanup.

An execution is started from the CronJob of the release *now* in the environment, rendered
from the state (never copied from the live CronJob, which may be stale), and only once the
cluster runs that release, so what runs is what Git says. Finished executions are merged
into a per-task record in ``reconciler-system`` by whoever looks: the daemon on its passes,
``task run --wait`` and ``task executions``.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.kube import executions
from reconciler.kube.client import KubeClient, KubeError
from reconciler.kube.executions import Execution, Record
from reconciler.kube.inventory import ObjectRef
from reconciler.model.kinds import TASK_TYPES, Component, Release, State
from reconciler.model.names import LABEL_PREFIX, MANAGED_BY, SYSTEM_NAMESPACE, namespace_name
from reconciler.render.engine import render_environment

_MAX_WRITE_ATTEMPTS = 4
POLL_SECONDS = 1.0


def task_release(state: State, environment: str, ref: str) -> tuple[Component, Release]:
    """The task ``ref`` and its release in ``environment``, or an error saying why not."""
    component = state.component_named(ref)
    if component.type not in TASK_TYPES:
        raise ReconcilerError(f"{ref} is a {component.type}, not a task (scheduled-task or "
                              "manual-task)")
    state.environment_named(environment)
    release = next((r for r in state.releases_in(environment)
                    if (r.project, r.component) == (component.project, component.name)), None)
    if release is None:
        raise ReconcilerError(f"{ref} is not released in {environment}")
    return component, release


def _selector(component: Component) -> str:
    return (f"app.kubernetes.io/name={component.name},"
            f"app.kubernetes.io/part-of={component.project}")


def record_name(environment: str, component: Component) -> str:
    """The record's ConfigMap: dots cannot be in names, so the parts never run together
    (at most 6 + 3 * 63 + 3 characters, within the 253 of a ConfigMap name)."""
    return f"tasks.{environment}.{component.project}.{component.name}"


def _record_ref(environment: str, component: Component) -> ObjectRef:
    return ObjectRef("v1", "ConfigMap", SYSTEM_NAMESPACE, record_name(environment, component))


def rendered_cronjob(state: State, environment: str, cluster: str,
                     component: Component) -> dict[str, Any]:
    """The task's CronJob as the state renders it now for ``cluster``."""
    rendered = render_environment(state, environment, project=component.project,
                                  component=component.name, cluster=cluster)
    found = next((o for o in rendered.objects if o.get("kind") == "CronJob"
                  and o["metadata"]["name"] == component.name), None)
    if found is None:
        raise ReconcilerError(f"{component.ref}'s templates render no CronJob "
                              f"{component.name!r} in {environment}")
    return found


def start(state: State, environment: str, cluster: str, client: KubeClient, ref: str,
          triggered_by: str) -> Execution:
    """Start one execution of ``ref`` in ``cluster`` from the release now in ``environment``;
    refused while the cluster does not run that release yet."""
    component, _ = task_release(state, environment, ref)
    cronjob = rendered_cronjob(state, environment, cluster, component)
    release = cronjob["metadata"]["annotations"][f"{LABEL_PREFIX}/release"]
    namespace = namespace_name(component.project, environment)
    live = client.get(ObjectRef.of(cronjob))
    if live is None:
        raise ReconcilerError(f"{ref} is not applied in cluster {cluster} yet (no CronJob "
                              f"{namespace}/{component.name}): apply {environment} first")
    live_release = ((live.get("metadata") or {}).get("annotations") or {}).get(
        f"{LABEL_PREFIX}/release", "")
    if live_release != release:
        raise ReconcilerError(
            f"release {release} of {ref} is not applied in cluster {cluster} yet (it runs "
            f"{live_release or 'an unknown release'}): apply {environment} first, or wait "
            "for the daemon")
    if cronjob["spec"].get("concurrencyPolicy", "Forbid") == "Forbid":
        running = [e.id for e in live_executions(client, environment, component, cluster)
                   if not e.finished]
        if running:
            raise ReconcilerError(f"{ref} is running in {cluster} ({', '.join(running)}) and its "
                                  "concurrencyPolicy is Forbid: wait for it to end")
    template = cronjob["spec"]["jobTemplate"]
    metadata = template.get("metadata") or {}
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": f"{component.name[:46]}-run-{secrets.token_hex(4)}",
            "namespace": namespace,
            "labels": dict(metadata.get("labels") or {}),
            "annotations": {**(metadata.get("annotations") or {}),
                            executions.TRIGGER: "manual",
                            executions.TRIGGERED_BY: triggered_by,
                            executions.INSTANTIATE: "manual"},
            # Owned by the CronJob as kubectl's `create job --from` does: its concurrency
            # policy and history limits count this run too.
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                 "name": component.name, "uid": live["metadata"]["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": template["spec"],
    }
    created = client.create(job)
    return executions.of_job(component.name, created, cluster=cluster)


def follow(client: KubeClient, environment: str, component: Component, job: str,
           timeout: float | None = None,
           cancelled: Callable[[], bool] = lambda: False) -> Execution:
    """Wait for the Job ``job`` to finish; its execution as it ended (or as it is when
    ``timeout`` seconds have passed)."""
    namespace = namespace_name(component.project, environment)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        live = client.get(ObjectRef("batch/v1", "Job", namespace, job))
        if live is None:
            raise ReconcilerError(f"the Job {namespace}/{job} was deleted before it finished")
        # A Job that fails by its deadline takes its pods with it: what they last said
        # (not scheduled, image pull) is still why.
        seen = _pods_of(client, component, namespace, live) or seen
        execution = executions.of_job(component.name, live, seen)
        if execution.finished or cancelled() or (
                deadline is not None and time.monotonic() > deadline):
            return execution
        time.sleep(POLL_SECONDS)


def _pods_of(client: KubeClient, component: Component, namespace: str,
             job: Mapping[str, Any]) -> list[dict[str, Any]]:
    uid = job["metadata"]["uid"]
    return [p for p in client.list_objects("v1", "Pod", namespace, _selector(component))
            if (p.get("metadata") or {}).get("labels", {}).get(executions.CONTROLLER_UID) == uid]


def live_executions(client: KubeClient, environment: str, component: Component,
                    cluster: str) -> list[Execution]:
    """The executions whose Jobs are still in the cluster."""
    namespace = namespace_name(component.project, environment)
    jobs = client.list_objects("batch/v1", "Job", namespace, _selector(component))
    pods: dict[str, list[dict[str, Any]]] = {}
    if jobs:
        for pod in client.list_objects("v1", "Pod", namespace, _selector(component)):
            uid = ((pod.get("metadata") or {}).get("labels") or {}).get(executions.CONTROLLER_UID)
            pods.setdefault(str(uid), []).append(pod)
    return [executions.of_job(component.name, job, pods.get(job["metadata"]["uid"], []),
                              cluster=cluster) for job in jobs]


@dataclass(frozen=True)
class Recorded:
    """A task's executions in one cluster: the record after merging, what was new to it,
    and why it could not be written back (``""``: written or nothing to write)."""

    live: tuple[Execution, ...]
    record: Record
    added: tuple[Execution, ...]
    warning: str = ""


def read_record(client: KubeClient, environment: str, component: Component) -> Record:
    live = client.get(_record_ref(environment, component))
    return executions.decode((live or {}).get("data"))


def record(client: KubeClient, environment: str, component: Component, cluster: str,
           now: datetime.datetime, write: bool = True,
           known: Iterable[Execution] = ()) -> Recorded:
    """Merge the live finished executions into the task's record and write it back
    (optimistically: a concurrent writer's change is re-read and merged, never lost).
    ``known`` executions (followed to their end) replace what their Jobs say now."""
    followed = {e.id: e for e in known}
    live = [followed.get(e.id, e)
            for e in live_executions(client, environment, component, cluster)]
    ref = _record_ref(environment, component)
    return _merge_into_record(client, environment, component, cluster, now, live,
                              client.get(ref), write)


def record_environment(client: KubeClient, environment: str, components: Iterable[Component],
                       cluster: str, now: datetime.datetime) -> list[tuple[Component, Recorded]]:
    """``record`` for every task of an environment at once, from one LIST of Jobs (and of
    their Pods, where there are Jobs) per project namespace and one LIST of the records, so a
    pass costs requests per project, not per task; only records that change are written."""
    tasks = list(components)
    by_namespace: dict[str, list[Component]] = {}
    for component in tasks:
        by_namespace.setdefault(namespace_name(component.project, environment), []).append(
            component)
    live: dict[tuple[str, str], list[Execution]] = {}
    for namespace, members in by_namespace.items():
        jobs = client.list_objects("batch/v1", "Job", namespace)
        pods: dict[str, list[dict[str, Any]]] = {}
        if jobs:
            for pod in client.list_objects("v1", "Pod", namespace, executions.CONTROLLER_UID):
                uid = ((pod.get("metadata") or {}).get("labels") or {}).get(
                    executions.CONTROLLER_UID)
                pods.setdefault(str(uid), []).append(pod)
        for component in members:
            wanted = {"app.kubernetes.io/name": component.name,
                      "app.kubernetes.io/part-of": component.project}
            live[(component.project, component.name)] = [
                executions.of_job(component.name, job, pods.get(job["metadata"]["uid"], []),
                                  cluster=cluster)
                for job in jobs
                if all(((job.get("metadata") or {}).get("labels") or {}).get(k) == v
                       for k, v in wanted.items())]
    records = {item["metadata"]["name"]: item for item in client.list_objects(
        "v1", "ConfigMap", SYSTEM_NAMESPACE, f"{LABEL_PREFIX}/environment={environment}")}
    return [(component, _merge_into_record(
        client, environment, component, cluster, now, live[(component.project, component.name)],
        records.get(record_name(environment, component))))
        for component in tasks]


def _merge_into_record(client: KubeClient, environment: str, component: Component,
                       cluster: str, now: datetime.datetime, live: list[Execution],
                       current: dict[str, Any] | None, write: bool = True) -> Recorded:
    ref = _record_ref(environment, component)
    for attempt in range(_MAX_WRITE_ATTEMPTS):
        if attempt:
            current = client.get(ref)
        merged, added = executions.merge(executions.decode((current or {}).get("data")),
                                         live, now)
        unchanged = (executions.encode(merged) == current.get("data") if current is not None
                     else not merged.executions and not merged.days)
        if not write or unchanged:
            return Recorded(tuple(live), merged, tuple(added))
        try:
            _write_record(client, ref, environment, component, merged, current)
        except KubeError as exc:
            if exc.status == 409:
                continue  # someone else wrote it meanwhile: merge into theirs
            return Recorded(tuple(live), merged, tuple(added),
                            f"the history of {component.ref} in {cluster} was not recorded: {exc}")
        return Recorded(tuple(live), merged, tuple(added))
    return Recorded(tuple(live), merged, tuple(added),
                    f"the history of {component.ref} in {cluster} was not recorded: it kept "
                    "changing")


def _write_record(client: KubeClient, ref: ObjectRef, environment: str, component: Component,
                  merged: Record, current: Mapping[str, Any] | None) -> None:
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ref.name, "namespace": ref.namespace,
                     "labels": {"app.kubernetes.io/managed-by": MANAGED_BY,
                                f"{LABEL_PREFIX}/environment": environment,
                                f"{LABEL_PREFIX}/project": component.project,
                                f"{LABEL_PREFIX}/component": component.name}},
        "data": executions.encode(merged),
    }
    if current is None:
        client.create(body)
    else:
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        client.replace(body)


@dataclass(frozen=True)
class Listing:
    executions: tuple[Execution, ...]
    totals: Mapping[str, int]
    warnings: tuple[str, ...]


def list_executions(state: State, environment: str, ref: str,
                    clients: Mapping[str, KubeClient], now: datetime.datetime,
                    days: int = 30, limit: int | None = None) -> Listing:
    """A task's executions in each cluster of ``clients`` (live Jobs and the record, which
    this brings up to date), newest first, with the last 30 days' totals."""
    component, _ = task_release(state, environment, ref)
    found: list[Execution] = []
    totals = {"succeeded": 0, "failed": 0}
    warnings = []
    since = (now - datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for cluster, client in clients.items():
        recorded = record(client, environment, component, cluster, now)
        if recorded.warning:
            warnings.append(recorded.warning)
        listed = executions.history(recorded.live, recorded.record)
        found.extend(executions.with_cluster(listed, cluster))
        for key, value in executions.totals(recorded.record, now).items():
            totals[key] += value
    found = sorted((e for e in found if not e.start or e.start >= since),
                   key=lambda e: (e.start, e.id), reverse=True)
    return Listing(tuple(found[:limit] if limit else found), totals, tuple(warnings))


@dataclass(frozen=True)
class PodLog:
    pod: str
    container: str
    text: str


def logs(state: State, environments: Iterable[str], execution: str,
         clients: Callable[[str], KubeClient]) -> list[PodLog]:
    """The logs of every pod (every attempt) of ``execution``, from the API server's log
    endpoint; ``clients`` gives a client per cluster name."""
    name = executions.component_of(execution)
    if not name:
        raise ReconcilerError(f"{execution!r} is not an execution id (COMPONENT-<10 hex>, as "
                              "task run and task executions print)")
    unsearched: list[str] = []
    for environment in environments:
        for release in state.releases_in(environment):
            component = state.components.get((release.project, release.component))
            if component is None or component.name != name or component.type not in TASK_TYPES:
                continue
            namespace = namespace_name(component.project, environment)
            for cluster in state.environments[environment].clusters:
                try:
                    client = clients(cluster)
                    jobs = client.list_objects("batch/v1", "Job", namespace,
                                               _selector(component))
                    job = next((j for j in jobs if executions.execution_id(
                        name, j["metadata"]["uid"]) == execution), None)
                    recorded = job is None and any(
                        e.id == execution
                        for e in read_record(client, environment, component).executions)
                except ReconcilerError as exc:
                    unsearched.append(f"{cluster}: {exc}")
                    continue
                if job is not None:
                    return _logs_of(client, component, namespace, job, execution)
                if recorded:
                    raise ReconcilerError(
                        f"execution {execution} is in the history, but Kubernetes has deleted "
                        "its Job and pods, and their logs with them")
    where = f"; not searched: {'; '.join(unsearched)}" if unsearched else ""
    raise ReconcilerError(f"no execution {execution} (look it up with task executions){where}")


def _logs_of(client: KubeClient, component: Component, namespace: str,
             job: Mapping[str, Any], execution: str) -> list[PodLog]:
    pods = sorted(_pods_of(client, component, namespace, job),
                  key=lambda p: (p["metadata"].get("creationTimestamp") or "",
                                 p["metadata"]["name"]))
    if not pods:
        raise ReconcilerError(f"execution {execution} has no pods left (Job "
                              f"{namespace}/{job['metadata']['name']}), so no logs")
    found = []
    for pod in pods:
        for container in pod["spec"]["containers"]:
            try:
                text = client.pod_log(namespace, pod["metadata"]["name"], container["name"])
            except ReconcilerError as exc:
                raise ReconcilerError(
                    f"cannot read the log of pod {namespace}/{pod['metadata']['name']} "
                    f"(container {container['name']}) of execution {execution}: the API "
                    f"server's log endpoint answered: {exc}") from None
            found.append(PodLog(pod["metadata"]["name"], container["name"], text))
    return found
