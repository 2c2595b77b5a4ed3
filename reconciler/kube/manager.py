"""Server-side apply of plain objects, returning a change set (as in Flux's ssa package).

Knows nothing of Git or templates. Per stage (CRDs and Namespaces first, then the rest in
kind order): every object is server-side dry-run applied, in parallel, and compared with
the live object; an invalid object aborts the batch before anything is written; only
objects that differ are applied, so a no-op reconcile costs no writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.errors import ReconcilerError
from reconciler.kube.client import KubeClient, KubeError
from reconciler.kube.health import Health, health
from reconciler.kube.inventory import ObjectRef, apply_order
from reconciler.model.names import LABEL_PREFIX, MANAGED_BY

FIELD_MANAGER = "reconciler"
PRUNE_ANNOTATION = f"{LABEL_PREFIX}/prune"
RECREATE_ANNOTATION = f"{LABEL_PREFIX}/recreate"
FIRST_KINDS = ("CustomResourceDefinition", "Namespace")
_VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp",
                      "uid", "selfLink")

Action = Literal["created", "configured", "unchanged", "deleted", "skipped", "failed"]


@dataclass(frozen=True)
class Change:
    ref: ObjectRef
    action: Action
    message: str = ""


class ApplyAborted(ReconcilerError):
    """The dry-run refused an object: nothing of its stage was written."""

    def __init__(self, changes: Sequence[Change]) -> None:
        failed = [c for c in changes if c.action == "failed"]
        super().__init__("; ".join(f"{c.ref}: {c.message}" for c in failed))
        self.changes = tuple(changes)


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object without what the server changes on every write (and without status)."""
    result = {k: v for k, v in obj.items() if k != "status"}
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items()
                if k not in _VOLATILE_METADATA}
    result["metadata"] = metadata
    return result


def _is_conflict(error: KubeError) -> bool:
    return error.status == 409


@dataclass
class _Preview:
    obj: Mapping[str, Any]
    live: dict[str, Any] | None = None
    merged: dict[str, Any] | None = None
    error: KubeError | None = None

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef.of(self.obj)

    @property
    def action(self) -> Action:
        if self.live is None:
            return "created"
        assert self.merged is not None
        return "unchanged" if comparable(self.merged) == comparable(self.live) else "configured"


class ResourceManager:
    def __init__(self, client: KubeClient, field_manager: str = FIELD_MANAGER,
                 force_conflicts: bool = False, concurrency: int = 4) -> None:
        self.client = client
        self.field_manager = field_manager
        self.force_conflicts = force_conflicts
        self.concurrency = concurrency

    def preview(self, objects: Sequence[Mapping[str, Any]],
                new_namespaces: frozenset[str] = frozenset()) -> list[_Preview]:
        """Live object and server-side dry-run result of each object, in parallel. An object in
        one of ``new_namespaces`` (not created yet, but about to be) previews as created."""

        def one(obj: Mapping[str, Any]) -> _Preview:
            preview = _Preview(obj)
            try:
                preview.live = self.client.get(preview.ref)
                preview.merged = self.client.apply(obj, self.field_manager,
                                                   self.force_conflicts, dry_run=True)
            except KubeError as exc:
                if exc.status == 404 and preview.ref.namespace in new_namespaces:
                    preview.live, preview.merged = None, dict(obj)
                else:
                    preview.error = exc
            return preview

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, objects))

    def apply(self, objects: Sequence[Mapping[str, Any]], dry_run: bool = False) -> list[Change]:
        ordered = sorted(objects, key=lambda o: apply_order(ObjectRef.of(o)))
        stages = [[o for o in ordered if o.get("kind") in FIRST_KINDS],
                  [o for o in ordered if o.get("kind") not in FIRST_KINDS]]
        changes: list[Change] = []
        new_namespaces: frozenset[str] = frozenset()
        for stage in stages:
            if not stage:
                continue
            previews = self.preview(stage, new_namespaces if dry_run else frozenset())
            new_namespaces = frozenset(p.ref.name for p in previews
                                       if p.ref.kind == "Namespace" and p.live is None)
            refused = [p for p in previews if p.error is not None and not self._recreatable(p)
                       and not _is_conflict(p.error)]
            if refused:
                changes += [Change(p.ref, "failed", str(p.error)) if p.error else
                            Change(p.ref, "skipped", "not applied: another object was refused")
                            for p in previews]
                raise ApplyAborted(changes)
            for preview in previews:
                changes.append(self._write(preview, dry_run))
        return changes

    def _recreatable(self, preview: _Preview) -> bool:
        annotations = (preview.obj.get("metadata") or {}).get("annotations") or {}
        return (preview.error is not None and preview.error.status == 422
                and "immutable" in str(preview.error) and preview.live is not None
                and str(annotations.get(RECREATE_ANNOTATION, "")).lower() == "true")

    def _write(self, preview: _Preview, dry_run: bool) -> Change:
        if preview.error is not None and _is_conflict(preview.error):
            return Change(preview.ref, "failed", f"{preview.error} (apply with force to take "
                                                 "the fields back)")
        if preview.error is not None:
            if dry_run:
                return Change(preview.ref, "configured", "would be recreated (immutable field)")
            self.client.delete(preview.ref)
            self._wait_gone(preview.ref)
            self.client.apply(preview.obj, self.field_manager, self.force_conflicts, False)
            return Change(preview.ref, "configured", "recreated: an immutable field changed")
        action = preview.action
        if action != "unchanged" and not dry_run:
            try:
                self.client.apply(preview.obj, self.field_manager, self.force_conflicts, False)
            except KubeError as exc:
                return Change(preview.ref, "failed", str(exc))
        return Change(preview.ref, action)

    def _wait_gone(self, ref: ObjectRef, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.client.get(ref) is not None:
            if time.monotonic() > deadline:
                raise ReconcilerError(f"{ref} was not deleted within {timeout:.0f} s")
            time.sleep(0.5)

    def delete(self, refs: Iterable[ObjectRef], dry_run: bool = False) -> list[Change]:
        """Prune: delete each object, only if it is labelled as ours and has not opted out."""
        changes = []
        for ref in refs:
            try:
                live = self.client.get(ref)
            except KubeError as exc:
                changes.append(Change(ref, "failed", str(exc)))
                continue
            if live is None:
                continue
            metadata = live.get("metadata") or {}
            labels = metadata.get("labels") or {}
            annotations = metadata.get("annotations") or {}
            if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
                changes.append(Change(ref, "skipped", "not pruned: not labelled as ours"))
            elif str(annotations.get(PRUNE_ANNOTATION, "")).lower() in ("disabled", "false"):
                changes.append(Change(ref, "skipped", "not pruned: opted out"))
            else:
                if not dry_run:
                    try:
                        self.client.delete(ref)
                    except KubeError as exc:
                        changes.append(Change(ref, "failed", str(exc)))
                        continue
                changes.append(Change(ref, "deleted"))
        return changes

    def wait(self, refs: Sequence[ObjectRef], timeout: float,
             cancelled: Callable[[], bool] = lambda: False,
             interval: float = 1.0) -> dict[ObjectRef, Health]:
        """Poll until every object is Healthy or Degraded, the timeout passes, or ``cancelled``
        says a newer state arrived; returns the last health of each."""
        deadline = time.monotonic() + timeout
        results: dict[ObjectRef, Health] = {}
        pending = list(refs)
        while True:
            for ref in list(pending):
                live = self.client.get(ref)
                results[ref] = health(live) if live else Health("Progressing", "not found yet")
                if results[ref].status != "Progressing":
                    pending.remove(ref)
            if not pending or time.monotonic() > deadline or cancelled():
                return results
            time.sleep(interval)
