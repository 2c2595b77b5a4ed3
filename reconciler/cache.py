"""A content-addressed cache of parsed state files and rendered releases, outside the repo.

Rendering a large state repo from scratch costs seconds; a one-file commit changes one file
and a release or two. Values are kept by a key that hashes everything they were made from
(file bytes, template context, the code and templates of this installation), so an entry is
either right or never found: nothing is ever invalidated, and deleting the folder is always
safe. Each cache is one pack file, replaced atomically, guarded by a magic header and a
checksum: a corrupt, truncated or foreign file is ignored and rewritten.

Where: ``$RECONCILER_CACHE_DIR``, else ``$XDG_CACHE_HOME/reconciler``, else
``~/.cache/reconciler``; ``RECONCILER_CACHE_DIR=off`` keeps the cache in memory only. A
folder that cannot be written also leaves the cache in memory only.
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler.resources import data_dir

_MAGIC = b"reconciler-cache 1\n"
MAX_PACK_BYTES = 256 * 1024 * 1024
"""Entries not used by the last run are kept only while the pack stays under this size."""
OFF = "off"


def cache_home() -> Path | None:
    """The cache folder, or None when caching on disk is off."""
    configured = os.environ.get("RECONCILER_CACHE_DIR")
    if configured is not None:
        return None if configured in ("", OFF) else Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "reconciler"


@functools.cache
def code_fingerprint() -> str:
    """Changes whenever this installation's code, templates or schemas change."""
    digest = hashlib.sha256()
    roots = [Path(__file__).resolve().parent, data_dir("templates"), data_dir("schemas")]
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")):
                    continue
                stat = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def key_of(*parts: bytes | str) -> str:
    """A cache key from what a value was made from."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class Cache:
    """One pack of marshal-encoded values by key, loaded lazily, saved when it grew.

    Values must be plain data (dicts, lists, tuples, str, bytes, numbers, None, bools).
    """

    def __init__(self, name: str, folder: Path | None = None) -> None:
        self.path = (folder / f"{name}.pack") if folder is not None else None
        self._entries: dict[str, bytes] | None = None
        self._used: dict[str, bytes] = {}
        self._added = 0
        self.hits = 0
        self.misses = 0

    @classmethod
    def at_home(cls, name: str) -> Cache:
        return cls(name, cache_home())

    @classmethod
    def restored(cls, name: str, exported: bytes | None) -> Cache:
        """An in-memory cache holding what ``export`` gave (empty if nothing or garbage)."""
        cache = cls(name)
        try:
            entries = marshal.loads(zlib.decompress(exported)) if exported else {}
        except (zlib.error, EOFError, ValueError, TypeError):
            entries = {}
        cache._entries = {k: v for k, v in entries.items()
                          if isinstance(k, str) and isinstance(v, bytes)} \
            if isinstance(entries, dict) else {}
        return cache

    def export(self) -> bytes:
        """What was asked for or added, compressed: what the next run needs, to hand to
        another process (``restored``)."""
        return zlib.compress(marshal.dumps(self._used), 1)

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or None."""
        encoded = self._used.get(key)
        if encoded is None:
            encoded = self._load().get(key)
            if encoded is None:
                self.misses += 1
                return None
            self._used[key] = encoded
        try:
            value = marshal.loads(encoded)
        except (EOFError, ValueError, TypeError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        try:
            encoded = marshal.dumps(value)
        except ValueError:
            return  # not plain data: not cached
        if self._used.get(key) != encoded:
            self._used[key] = encoded
            self._added += 1

    def save(self) -> None:
        """Write the pack if anything was added: this run's entries first, then the older
        ones while the pack stays under ``MAX_PACK_BYTES``. Failures leave it in memory."""
        if not self._added or self.path is None:
            return
        entries = dict(self._used)
        size = sum(len(k) + len(v) for k, v in entries.items())
        for key, encoded in self._load().items():
            if key not in entries:
                size += len(key) + len(encoded)
                if size > MAX_PACK_BYTES:
                    break
                entries[key] = encoded
        payload = marshal.dumps(entries)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".pack-")
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            return
        self._entries = entries
        self._added = 0

    def _load(self) -> dict[str, bytes]:
        if self._entries is None:
            self._entries = dict(_read_pack(self.path)) if self.path is not None else {}
        return self._entries


def _read_pack(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        content = path.read_bytes()
    except OSError:
        return
    header = len(_MAGIC) + 32
    if not content.startswith(_MAGIC) or len(content) < header:
        return
    payload = content[header:]
    if hashlib.sha256(payload).digest() != content[len(_MAGIC):header]:
        return
    try:
        entries = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return
    if not isinstance(entries, dict):
        return
    for key, value in entries.items():
        if isinstance(key, str) and isinstance(value, bytes):
            yield key, value
