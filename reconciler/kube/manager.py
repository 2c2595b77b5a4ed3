"""Server-side apply of plain objects, returning a change set (as in Flux's ssa package).

Knows nothing of Git or templates. Per stage (CRDs and Namespaces first, then the rest in
kind order) the live objects are read with one LIST per kind (label-selected, paged), not
object by object. Each object the tool applies carries an annotation recording a keyed hash
of what was applied and a hash of the fields this field manager owned right after: a live
object whose annotation matches the desired object and whose managedFields entry of ours is
still the one recorded is unchanged, decided without another request. Anything else (a
desired change, another manager that took a field from us, a hand-deleted object, an object
without the annotation) is server-side dry-run applied and compared with the live object, in
parallel; an invalid object aborts the stage before anything is written; only objects that
differ are applied, in parallel too. So a no-op reconcile costs a LIST per kind and no
writes, and a changed object at most a dry-run and a PATCH.

The hash is keyed (HMAC) with a random key kept in a Secret of the tool's namespace, so the
annotation on a Secret tells nothing about its values to someone who can read only metadata.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.errors import ReconcilerError
from reconciler.kube.client import KubeClient, KubeError
from reconciler.kube.health import Health, health
from reconciler.kube.inventory import ObjectRef, apply_order
from reconciler.kube.watch import LiveCache, Scope
from reconciler.model.names import LABEL_PREFIX, MANAGED_BY, SYSTEM_NAMESPACE

FIELD_MANAGER = "reconciler"
PRUNE_ANNOTATION = f"{LABEL_PREFIX}/prune"
RECREATE_ANNOTATION = f"{LABEL_PREFIX}/recreate"
APPLIED_ANNOTATION = f"{LABEL_PREFIX}/applied"
"""``<keyed hash of the applied object>.<hash of our managed fields after the apply>``."""
APPLY_KEY = ObjectRef("v1", "Secret", SYSTEM_NAMESPACE, "reconciler-apply-key")
_DIGEST_LENGTH = 24
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


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def desired_digest(obj: Mapping[str, Any], key: bytes) -> str:
    """The keyed hash of an object as the tool sends it (without its applied annotation)."""
    return hmac.new(key, _canonical(obj), hashlib.sha256).hexdigest()[:_DIGEST_LENGTH]


def fields_digest(live: Mapping[str, Any], field_manager: str) -> str:
    """The hash of the fields ``field_manager`` owns on ``live`` by apply ('' if none)."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == field_manager and entry.get("operation") == "Apply" \
                and not entry.get("subresource"):
            return hashlib.sha256(_canonical(entry.get("fieldsV1"))).hexdigest()[:_DIGEST_LENGTH]
    return ""


def applied_annotation(live: Mapping[str, Any]) -> str:
    return str(((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION, ""))


def _annotated(obj: Mapping[str, Any], value: str) -> dict[str, Any]:
    """``obj`` (not changed) with the applied annotation set to ``value``."""
    metadata = dict(obj.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), APPLIED_ANNOTATION: value}
    return {**obj, "metadata": metadata}


def is_fresh(live: Mapping[str, Any], digest: str, field_manager: str) -> bool:
    """Whether ``live`` is what an apply of the object whose digest is ``digest`` left, with
    every field it took still ours: then applying it again changes nothing."""
    fields = fields_digest(live, field_manager)
    return bool(fields) and applied_annotation(live) == f"{digest}.{fields}"


def list_scope(objects: Sequence[Mapping[str, Any]]) -> tuple[str | None, str]:
    """Where one LIST finds every object of a kind that the tool applied: their namespace if
    they share one (None: every namespace), and the labels they all carry, as a selector."""
    namespaces = {ObjectRef.of(o).namespace for o in objects}
    common: dict[str, str] | None = None
    for obj in objects:
        labels = {str(k): str(v) for k, v in
                  ((obj.get("metadata") or {}).get("labels") or {}).items()}
        common = labels if common is None else \
            {k: v for k, v in common.items() if labels.get(k) == v}
    selector = ",".join(f"{k}={v}" for k, v in sorted((common or {}).items()))
    return (namespaces.pop() if len(namespaces) == 1 else None), selector


@dataclass
class Observed:
    """What one LIST per kind told about a batch of desired objects."""

    fresh: set[ObjectRef] = field(default_factory=set)
    """Unchanged since the tool applied them (``is_fresh``)."""
    live: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)
    """The others that exist and were listed."""
    listed: set[tuple[str, str]] = field(default_factory=set)
    """(apiVersion, kind) listed: an object of these kinds in neither set was not found."""


@dataclass
class _Preview:
    obj: Mapping[str, Any]
    live: dict[str, Any] | None = None
    merged: dict[str, Any] | None = None
    error: KubeError | None = None
    fresh: bool = False
    body: Mapping[str, Any] | None = None
    """What to send: the object with its applied annotation."""

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef.of(self.obj)

    decided: Action | None = None
    """The action, once the objects it was decided from were let go (``forget``)."""

    @property
    def action(self) -> Action:
        if self.decided is not None:
            return self.decided
        if self.fresh:
            return "unchanged"
        if self.live is None:
            return "created"
        assert self.merged is not None
        return "unchanged" if comparable(self.merged) == comparable(self.live) else "configured"

    def forget(self) -> None:
        """Decide now and drop the live and dry-run objects (an apply of thousands of
        objects then holds one at a time, not all of them, until its writes)."""
        if self.error is None:
            self.decided = self.action
            self.live = self.merged = None


def live_cache(client: KubeClient, field_manager: str = FIELD_MANAGER) -> LiveCache:
    """A watch cache that keeps what ``is_fresh`` needs of each object."""
    return LiveCache(client, lambda obj: (applied_annotation(obj),
                                          fields_digest(obj, field_manager)))


class ResourceManager:
    def __init__(self, client: KubeClient, field_manager: str = FIELD_MANAGER,
                 force_conflicts: bool = False, concurrency: int = 8,
                 live: LiveCache | None = None) -> None:
        self.client = client
        self.live = live
        """Where live objects are read from without a request, once their kind is synced
        (else one LIST per kind)."""
        self.field_manager = field_manager
        self.force_conflicts = force_conflicts
        self.concurrency = concurrency
        self._key: bytes | None = None
        self._key_read = False

    def key(self, create: bool) -> bytes | None:
        """The cluster's key of applied annotations, made on first use if ``create``; None
        where it can't be read or made (then every object is compared by a dry-run)."""
        if self._key is not None or (self._key_read and not create):
            return self._key
        self._key_read = True
        try:
            live = self.client.get(APPLY_KEY)
            if live is None and create:
                try:
                    live = self.client.create({
                        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": APPLY_KEY.name, "namespace": APPLY_KEY.namespace,
                                     "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
                        "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()}})
                except KubeError as exc:
                    if exc.status != 409:
                        raise
                    live = self.client.get(APPLY_KEY)  # made by another writer meanwhile
        except KubeError:
            return None
        try:
            self._key = base64.b64decode(((live or {}).get("data") or {}).get("key", ""),
                                         validate=True) or None
        except (binascii.Error, TypeError, ValueError):
            self._key = None
        return self._key

    def observe(self, objects: Sequence[Mapping[str, Any]],
                digests: Mapping[ObjectRef, str]) -> Observed:
        """One LIST per kind of ``objects`` (paged, label-selected): which are unchanged and
        the live state of the others. A kind that can't be listed is left out (its objects
        are then read one by one)."""
        observed = Observed()
        by_kind: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for obj in objects:
            by_kind.setdefault((str(obj.get("apiVersion")), str(obj.get("kind"))), []).append(obj)

        def one(kind: tuple[str, str]) -> Observed:
            found = Observed()
            wanted = {ObjectRef.of(o) for o in by_kind[kind]}
            namespace, selector = list_scope(by_kind[kind])
            view = self.live.view(Scope(*kind, namespace, selector)) if self.live else None
            if view is not None:
                for ref in wanted:
                    cached = view.get(ref)
                    if cached is None:
                        continue
                    annotation, fields = cached.summary
                    if ref in digests and fields and annotation == f"{digests[ref]}.{fields}":
                        found.fresh.add(ref)
                    else:
                        found.live[ref] = cached.object()
                found.listed.add(kind)
                return found
            try:
                for page in self.client.list_pages(*kind, namespace, selector):
                    for item in page:
                        ref = ObjectRef.of(item)
                        if ref not in wanted:
                            continue
                        if ref in digests and is_fresh(item, digests[ref], self.field_manager):
                            found.fresh.add(ref)
                        else:
                            found.live[ref] = item
            except KubeError:
                return Observed()
            found.listed.add(kind)
            return found

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for part in pool.map(one, by_kind):
                observed.fresh |= part.fresh
                observed.live.update(part.live)
                observed.listed |= part.listed
        return observed

    def preview(self, objects: Sequence[Mapping[str, Any]],
                new_namespaces: frozenset[str] = frozenset(),
                key: bytes | None = None, keep: bool = True) -> list[_Preview]:
        """Whether each object would change, from one LIST per kind and, for those not known
        unchanged, the live object and a server-side dry-run, in parallel. An object in one
        of ``new_namespaces`` (not created yet, but about to be) previews as created.
        Without ``key`` nothing is known unchanged and no applied annotation is set. Without
        ``keep``, each preview keeps only its decision, not the live and dry-run objects."""
        digests = {ObjectRef.of(o): desired_digest(o, key) for o in objects} if key else {}
        observed = self.observe(objects, digests)

        def one(obj: Mapping[str, Any]) -> _Preview:
            preview = _Preview(obj)
            ref = preview.ref
            if ref in observed.fresh:
                preview.fresh = True
                return preview
            digest = digests.get(ref)
            body = _annotated(obj, f"{digest}.") if digest else obj
            try:
                preview.live = observed.live.get(ref) if (ref.api_version, ref.kind) in \
                    observed.listed else self.client.get(ref)
                merged = self.client.apply(body, self.field_manager, self.force_conflicts,
                                           dry_run=True)
                if preview.live is None and (merged.get("metadata") or {}).get("resourceVersion"):
                    preview.live = self.client.get(ref)  # there, but no longer labelled as ours
                if digest:
                    value = f"{digest}.{fields_digest(merged, self.field_manager)}"
                    body, merged = _annotated(obj, value), _annotated(merged, value)
                preview.merged, preview.body = merged, body
            except KubeError as exc:
                preview.body = body
                if exc.status == 404 and ref.namespace in new_namespaces:
                    preview.live, preview.merged = None, dict(body)
                else:
                    preview.error = exc
            if not keep:
                preview.forget()
            return preview

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, objects))

    def apply(self, objects: Sequence[Mapping[str, Any]], dry_run: bool = False) -> list[Change]:
        ordered = sorted(objects, key=lambda o: apply_order(ObjectRef.of(o)))
        stages = [[o for o in ordered if o.get("kind") in FIRST_KINDS],
                  [o for o in ordered if o.get("kind") not in FIRST_KINDS]]
        changes: list[Change] = []
        new_namespaces: frozenset[str] = frozenset()
        key = self.key(create=not dry_run)
        for stage in stages:
            if not stage:
                continue
            previews = self.preview(stage, new_namespaces if dry_run else frozenset(), key,
                                    keep=False)
            new_namespaces = frozenset(p.ref.name for p in previews
                                       if p.ref.kind == "Namespace" and p.action == "created")
            refused = [p for p in previews if p.error is not None and not self._recreatable(p)
                       and not _is_conflict(p.error)]
            if refused:
                changes += [Change(p.ref, "failed", str(p.error)) if p.error else
                            Change(p.ref, "skipped", "not applied: another object was refused")
                            for p in previews]
                raise ApplyAborted(changes)
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                changes.extend(pool.map(lambda p: self._write(p, dry_run), previews))
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
            self.client.apply(preview.body or preview.obj, self.field_manager,
                              self.force_conflicts, False)
            return Change(preview.ref, "configured", "recreated: an immutable field changed")
        action = preview.action
        if action != "unchanged" and not dry_run:
            try:
                self.client.apply(preview.body or preview.obj, self.field_manager,
                                  self.force_conflicts, False)
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
             interval: float = 1.0, selector: str = "") -> dict[ObjectRef, Health]:
        """Poll until every object is Healthy or Degraded, the timeout passes, or ``cancelled``
        says a newer state arrived; returns the last health of each. Each poll reads a kind
        with one LIST (of the objects matching ``selector``) where several of it are pending,
        else object by object."""
        deadline = time.monotonic() + timeout
        results: dict[ObjectRef, Health] = {}
        pending = list(refs)
        while True:
            for ref, live in self._read(pending, selector).items():
                results[ref] = health(live) if live else Health("Progressing", "not found yet")
                if results[ref].status != "Progressing":
                    pending.remove(ref)
            if not pending or time.monotonic() > deadline or cancelled():
                return results
            time.sleep(interval)

    def _read(self, refs: Sequence[ObjectRef], selector: str) -> dict[ObjectRef, Any]:
        """The live object of each ref (None: not found)."""
        by_kind: dict[tuple[str, str], list[ObjectRef]] = {}
        for ref in refs:
            by_kind.setdefault((ref.api_version, ref.kind), []).append(ref)
        found: dict[ObjectRef, Any] = {}
        for kind, members in by_kind.items():
            if len(members) > 1:
                wanted = set(members)
                namespaces = {r.namespace for r in members}
                try:
                    for page in self.client.list_pages(
                            *kind, namespaces.pop() if len(namespaces) == 1 else None, selector):
                        found.update((ref, item) for item in page
                                     if (ref := ObjectRef.of(item)) in wanted)
                    found.update((ref, None) for ref in members if ref not in found)
                except KubeError:
                    pass
            found.update((ref, self.client.get(ref)) for ref in members if ref not in found)
        return found
