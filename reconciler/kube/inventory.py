"""What one (environment, cluster) applied: pure functions over object references.

Only what is in the inventory can be pruned, so an object the tool never applied is never
deleted, whatever its labels say.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model.kinds import KIND_ORDER


@dataclass(frozen=True, order=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def key(self) -> str:
        return f"{self.api_version}|{self.kind}|{self.namespace}|{self.name}"

    @classmethod
    def parse(cls, key: str) -> ObjectRef:
        api_version, kind, namespace, name = key.split("|")
        return cls(api_version, kind, namespace, name)

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        metadata = obj.get("metadata", {})
        return cls(str(obj.get("apiVersion", "")), str(obj.get("kind", "")),
                   str(metadata.get("namespace", "") or ""), str(metadata.get("name", "")))


Inventory = frozenset[ObjectRef]


def new(objects: Iterable[Mapping[str, Any]]) -> Inventory:
    return frozenset(ObjectRef.of(obj) for obj in objects)


def stale(previous: Inventory, current: Inventory) -> list[ObjectRef]:
    """What left the render, in delete order: the reverse of apply order.

    The same object under another API version (a group/kind/namespace/name match) is not
    stale: only its version changed."""
    kept = {(r.group, r.kind, r.namespace, r.name) for r in current}
    gone = [r for r in previous if (r.group, r.kind, r.namespace, r.name) not in kept]
    return sorted(gone, key=apply_order, reverse=True)


def apply_order(ref: ObjectRef) -> tuple[int, str, str, str]:
    rank = KIND_ORDER.index(ref.kind) if ref.kind in KIND_ORDER else len(KIND_ORDER)
    return (rank, ref.kind, ref.namespace, ref.name)


def encode(inventory: Inventory) -> str:
    return json.dumps(sorted(ref.key() for ref in inventory), indent=0)


def decode(text: str | None) -> Inventory:
    if not text:
        return frozenset()
    return frozenset(ObjectRef.parse(key) for key in json.loads(text))
