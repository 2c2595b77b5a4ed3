"""A watch cache of the objects the daemon applied, so a drift check asks the server nothing.

As client-go's informers: per scope (a kind, a namespace or all, a label selector) one LIST,
then a WATCH from the list's resourceVersion, kept by a thread of its own, listing again when
the server ends the watch with 410 Gone or the connection drops. Each object is kept small:
what decides "unchanged" (its applied annotation and the hash of our managed fields) as a
string, and the object itself as compressed JSON, opened only when it did change. A scope no
pass asked for in ``IDLE_SECONDS`` stops being watched.
"""

from __future__ import annotations

import json
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.kube.client import KubeClient, KubeError, Unreachable, Watch
from reconciler.kube.inventory import ObjectRef

WATCH_SECONDS = (240, 360)
"""How long one watch request lasts (the server ends it; a random length in this range, so
the watches of many kinds do not all list again at once)."""
SYNC_SECONDS = 60.0
"""How long a pass waits for a new scope's first LIST before listing itself."""
IDLE_SECONDS = 900.0
RETRY_SECONDS = (1.0, 30.0)


@dataclass(frozen=True)
class Scope:
    api_version: str
    kind: str
    namespace: str | None
    selector: str


@dataclass(frozen=True)
class Cached:
    """One live object as the cache keeps it."""

    summary: tuple[str, str]
    """(its applied annotation, the hash of the fields ``field_manager`` owns on it)."""
    packed: bytes

    def object(self) -> dict[str, Any]:
        found = json.loads(zlib.decompress(self.packed))
        return found if isinstance(found, dict) else {}


Summarize = Callable[[Mapping[str, Any]], tuple[str, str]]


class _Watcher:
    def __init__(self, client: KubeClient, scope: Scope, summarize: Summarize) -> None:
        self.client = client
        self.scope = scope
        self.summarize = summarize
        self.objects: dict[ObjectRef, Cached] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.answered = threading.Event()
        """Set once the first LIST succeeded or failed: a pass waits no longer."""
        self.stopping = threading.Event()
        self.used = time.monotonic()
        self.lists = 0
        self._watch: Watch | None = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"watch-{scope.kind}")
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.answered.set()  # a pass waiting for the first LIST lists itself
        watch = self._watch
        if watch is not None:
            watch.cancel()

    def snapshot(self) -> dict[ObjectRef, Cached]:
        with self.lock:
            return dict(self.objects)

    def _run(self) -> None:
        delay = RETRY_SECONDS[0]
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._follow(version)
                delay = RETRY_SECONDS[0]
            except (KubeError, Unreachable):
                self.synced.clear()
                self.answered.set()
                version = ""
                self.stopping.wait(delay)
                delay = min(RETRY_SECONDS[1], delay * 2)

    def _list(self) -> str:
        scope = self.scope
        objects: dict[ObjectRef, Cached] = {}
        version = ""
        for items, at in self.client.snapshot_pages(scope.api_version, scope.kind,
                                                    scope.namespace, scope.selector):
            version = at
            for item in items:
                objects[ObjectRef.of(item)] = self._cached(item)
        with self.lock:
            self.objects = objects
        self.lists += 1
        self.synced.set()
        self.answered.set()
        return version

    def _follow(self, version: str) -> str:
        """Apply a watch's events; the version to watch from next ('' to list again)."""
        scope = self.scope
        watch = self._watch = self.client.watch(
            scope.api_version, scope.kind, scope.namespace, scope.selector, version,
            random.randint(*WATCH_SECONDS))
        try:
            for event, _ in watch:
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    return ""  # 410 Gone, mostly: the version is too old to watch from
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK" or not isinstance(obj, dict):
                    continue
                obj.setdefault("apiVersion", scope.api_version)
                obj.setdefault("kind", scope.kind)
                ref = ObjectRef.of(obj)
                with self.lock:
                    if kind == "DELETED":
                        self.objects.pop(ref, None)
                    else:
                        self.objects[ref] = self._cached(obj)
        finally:
            self._watch = None
        return version

    def _cached(self, obj: Mapping[str, Any]) -> Cached:
        packed = zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)
        return Cached(self.summarize(obj), packed)


class LiveCache:
    """The watched scopes of one cluster: ``view`` answers from memory once a scope is
    synced."""

    def __init__(self, client: KubeClient, summarize: Summarize) -> None:
        self.client = client
        self.summarize = summarize
        self._watchers: dict[Scope, _Watcher] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def view(self, scope: Scope, wait: float = SYNC_SECONDS) -> dict[ObjectRef, Cached] | None:
        """The live objects of ``scope``, watching it from now on; None if it is not synced
        within ``wait`` seconds (the caller then lists)."""
        now = time.monotonic()
        with self._lock:
            if self._stopped:
                return None
            watcher = self._watchers.get(scope)
            if watcher is None:
                watcher = self._watchers[scope] = _Watcher(self.client, scope, self.summarize)
            watcher.used = now
            for other, idle in list(self._watchers.items()):
                if now - idle.used > IDLE_SECONDS:
                    idle.stop()
                    del self._watchers[other]
        watcher.answered.wait(wait)
        return watcher.snapshot() if watcher.synced.is_set() else None

    def lists(self) -> int:
        """LIST requests the watchers sent (a first sync, or a resync after a watch ended)."""
        with self._lock:
            return sum(w.lists for w in self._watchers.values())

    def stop(self) -> None:
        """End every watch; from now on ``view`` answers None."""
        with self._lock:
            self._stopped = True
            for watcher in self._watchers.values():
                watcher.stop()
            self._watchers.clear()
