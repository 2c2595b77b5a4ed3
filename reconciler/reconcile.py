"""One reconcile pass for an (environment, cluster): render, apply, prune, wait for health.

The inventory of what was applied lives in the cluster (a ConfigMap per environment in
``reconciler-system``), so pruning only ever considers objects this tool applied there.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.cache import Cache
from reconciler.errors import ReconcilerError
from reconciler.kube import inventory
from reconciler.kube.client import KubeClient, connect
from reconciler.kube.health import CHECKS as HEALTH_CHECKS
from reconciler.kube.health import Health, health
from reconciler.kube.inventory import Inventory, ObjectRef
from reconciler.kube.manager import (
    APPLIED_ANNOTATION,
    FIELD_MANAGER,
    Change,
    ResourceManager,
    comparable,
)
from reconciler.kube.watch import LiveCache
from reconciler.load.verifications import line_records, publish_records, read_records
from reconciler.model.kinds import State
from reconciler.model.names import LABEL_PREFIX, MANAGED_BY
from reconciler.model.names import SYSTEM_NAMESPACE as SYSTEM_NAMESPACE
from reconciler.model.verification import Verification, observe
from reconciler.render.engine import MASK, Decrypt, Rendered, render_environment
from reconciler.render.workloads import VerificationTarget, workload_ref
from reconciler.yamlio import dump_manifests


@dataclass(frozen=True)
class Result:
    environment: str
    cluster: str
    revision: str
    changes: tuple[Change, ...]
    health: Mapping[ObjectRef, Health] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(c.action == "failed" for c in self.changes) or any(
            h.status != "Healthy" for h in self.health.values())


def _inventory_object(environment: str, cluster: str, refs: Inventory,
                      revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"inventory-{environment}", "namespace": SYSTEM_NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": MANAGED_BY,
                                f"{LABEL_PREFIX}/environment": environment}},
        "data": {"inventory": inventory.encode(refs), "cluster": cluster,
                 "revision": revision},
    }


def ensure_system_namespace(client: KubeClient) -> None:
    """The tool's own namespace (inventories, status, Lease): created once, never pruned."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}
    if client.get(ObjectRef.of(namespace)) is None:
        client.apply(namespace, FIELD_MANAGER, force=False, dry_run=False)


def read_inventory(client: KubeClient, environment: str) -> Inventory:
    live = client.get(ObjectRef("v1", "ConfigMap", SYSTEM_NAMESPACE, f"inventory-{environment}"))
    return inventory.decode((live or {}).get("data", {}).get("inventory"))


def apply_environment(state: State, environment: str, cluster: str, client: KubeClient, *,
                      decrypt: Decrypt, cache: Cache | None = None, **options: Any) -> Result:
    """Render ``environment`` for ``cluster`` and ``apply_rendered`` it; ``cache``: the
    render cache."""
    rendered = render_environment(state, environment, cluster=cluster, decrypt=decrypt,
                                  cache=cache, documents=False)
    return apply_rendered(environment, cluster, client, rendered, **options)


def apply_rendered(environment: str, cluster: str, client: KubeClient, rendered: Rendered, *,
                   prune: bool = True, allow_empty: bool = False, dry_run: bool = False,
                   wait: bool = False, timeout: float = 300, force_conflicts: bool = False,
                   cancelled: Callable[[], bool] = lambda: False,
                   live: LiveCache | None = None) -> Result:
    """Apply ``rendered`` (an environment's render for ``cluster``), prune what left it, and
    optionally wait for health. ``live``: read the live objects from this watch cache instead
    of listing them."""
    objects = list(rendered.objects)
    previous = read_inventory(client, environment)
    current = inventory.new(objects)
    stale = inventory.stale(previous, current) if prune else []
    if previous and (not objects or len(stale) == len(previous)) and not allow_empty:
        raise ReconcilerError(f"refusing to apply: the render of {environment} would delete "
                              f"all {len(previous)} objects applied before (an empty or broken "
                              "render?); use --allow-empty if that is what you want; nothing "
                              "was applied")
    manager = ResourceManager(client, force_conflicts=force_conflicts, live=live)
    if not dry_run:
        ensure_system_namespace(client)
    changes = manager.apply(objects, dry_run)
    if not any(c.action == "failed" for c in changes):
        changes += manager.delete(stale, dry_run)
        kept = frozenset(c.ref for c in changes if c.action in ("failed", "skipped")
                         and c.ref in previous and c.ref not in current)
        recorded = current | kept
    else:
        recorded = current | previous
    if not dry_run and recorded != previous:
        manager.apply([_inventory_object(environment, cluster, recorded, rendered.revision)],
                      dry_run)
    health: dict[ObjectRef, Health] = {}
    if wait and not dry_run:
        # Kinds without a check are Healthy once they exist, and they were just applied.
        watched = sorted((r for r in current if r.kind in HEALTH_CHECKS), key=inventory.apply_order)
        health = manager.wait(watched, timeout, cancelled, selector=_selector(environment))
    return Result(environment, cluster, rendered.revision, tuple(changes), health)


def _selector(environment: str) -> str:
    """The labels the renderer puts on every object of ``environment``."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_PREFIX}/environment={environment}"


def diff_environment(state: State, environment: str, cluster: str, client: KubeClient,
                     decrypt: Decrypt) -> list[str]:
    """A unified diff per object that would change: live -> server-side dry-run result of a
    forced apply (so fields another manager took over show as the drift they are). Secret
    values show as a mask, with only whether they changed."""
    rendered = render_environment(state, environment, cluster=cluster, decrypt=decrypt)
    manager = ResourceManager(client, force_conflicts=True)
    new_namespaces = frozenset(
        str(o["metadata"]["name"]) for o in rendered.objects if o.get("kind") == "Namespace"
        and client.get(ObjectRef.of(o)) is None)
    texts = []
    for preview in manager.preview(list(rendered.objects), new_namespaces,
                                   manager.key(create=False)):
        if preview.error is not None:
            texts.append(f"# {preview.ref}: {preview.error}\n")
            continue
        if preview.action == "unchanged":
            continue
        before = _masked(comparable(preview.live), None) if preview.live else {}
        assert preview.merged is not None
        after = _masked(comparable(preview.merged), preview.live)
        lines = difflib.unified_diff(
            dump_manifests([before]).splitlines(keepends=True) if before else [],
            dump_manifests([after]).splitlines(keepends=True),
            fromfile=f"live {preview.ref}", tofile=f"desired {preview.ref}")
        text = "".join(lines)
        texts.append(text or f"# {preview.ref}: only the tool's applied annotation changes\n")
    stale = inventory.stale(read_inventory(client, environment), inventory.new(rendered.objects))
    texts += [f"# {ref}: would be pruned\n" for ref in stale]
    return texts


def _masked(obj: dict[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """``obj`` as a diff shows it: without the tool's bookkeeping annotation, and Secret
    values masked."""
    annotations = dict((obj.get("metadata") or {}).get("annotations") or {})
    if APPLIED_ANNOTATION in annotations:
        del annotations[APPLIED_ANNOTATION]
        metadata = {k: v for k, v in obj["metadata"].items() if k != "annotations"}
        if annotations:
            metadata["annotations"] = annotations
        obj = {**obj, "metadata": metadata}
    if obj.get("kind") != "Secret":
        return obj
    live_data = (live or {}).get("data") or {}
    masked = dict(obj)
    masked["data"] = {k: MASK if live is None or live_data.get(k) == v else f"{MASK} (changed)"
                      for k, v in (obj.get("data") or {}).items()}
    masked.pop("stringData", None)
    return masked


def live_health(state: State, environment: str, client: KubeClient
                ) -> dict[tuple[str, str, str], Health]:
    """The live health of each release line's workload (Deployment or CronJob) in
    environment, by (project, component, major)."""
    found: dict[tuple[str, str, str], Health] = {}
    for release in state.releases_in(environment):
        live = client.get(workload_ref(state, release))
        found[(release.project, release.component, release.major)] = (
            health(live) if live else Health("Degraded", "not in the cluster"))
    return found


def record_verifications(repo: Path, cluster: str, targets: Iterable[VerificationTarget],
                         environment: str, commit: str, health: Mapping[ObjectRef, Health],
                         now: datetime.datetime) -> list[Verification]:
    """Record in the state repo's remote what ``cluster`` saw of each release line's health
    in ``environment`` after an apply with a health wait; returns the records that changed."""
    records = read_records(repo, fetch=True)
    changed: dict[tuple[str, str], Verification] = {}
    for target in targets:
        seen = health.get(target.workload)
        if seen is None:
            continue
        previous = line_records(records, environment, target.component, target.line).get(
            cluster)
        record = observe(previous, cluster=cluster, environment=environment,
                         component=target.component, release=target.release,
                         image=target.image, state_commit=commit, health=seen.status, now=now,
                         line=target.line)
        if record is not None:
            changed[(target.component, target.line)] = record
    if changed:
        publish_records(repo, cluster, {f"{ref}@{line}": r for (ref, line), r in changed.items()},
                        f"verify {environment} on {cluster}: "
                        + ", ".join(f"{ref}{' ' + line if line else ''} {r.health}"
                                    for (ref, line), r in sorted(changed.items())))
    return list(changed.values())


def clusters_of(state: State, environment: str, only: str | None = None) -> list[str]:
    """The clusters ``environment`` spans, or just ``only`` if it is one of them."""
    members = list(state.environment_named(environment).clusters)
    if only is None:
        return members
    if only not in members:
        raise ReconcilerError(f"cluster {only!r} is not part of environment {environment} "
                              f"(clusters: {', '.join(members)})")
    return [only]


def connect_cluster(state: State, cluster: str, kubeconfig: Path | None) -> KubeClient:
    """A client for one cluster, through its kubeconfig context."""
    return connect(state.clusters[cluster].context, kubeconfig)


def apply_clusters(state: State, environment: str, only: str | None,
                   kubeconfig: Path | None, **options: Any) -> list[Result]:
    """``apply_environment`` on each cluster of the environment, in order."""
    return [apply_environment(state, environment, name,
                              connect_cluster(state, name, kubeconfig), **options)
            for name in clusters_of(state, environment, only)]


def diff_clusters(state: State, environment: str, only: str | None, kubeconfig: Path | None,
                  decrypt: Decrypt) -> list[str]:
    """``diff_environment`` on each cluster of the environment, in order."""
    return [text for name in clusters_of(state, environment, only)
            for text in diff_environment(state, environment, name,
                                         connect_cluster(state, name, kubeconfig), decrypt)]


def live_health_by_cluster(state: State, environments: list[str], kubeconfig: Path | None
                           ) -> tuple[dict[tuple[str, str, str, str], dict[str, str]], list[str]]:
    """Each release line's live health per cluster, and a warning per cluster that can't be
    read."""
    found: dict[tuple[str, str, str, str], dict[str, str]] = {}
    warnings = []
    for environment in environments:
        for name in state.environments[environment].clusters:
            try:
                healths = live_health(state, environment,
                                      connect_cluster(state, name, kubeconfig))
            except ReconcilerError as exc:
                warnings.append(f"{name}: {exc}")
                continue
            for (project, component, line), health_of in healths.items():
                found.setdefault((environment, project, component, line),
                                 {})[name] = health_of.status
    return found, warnings
