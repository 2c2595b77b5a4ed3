"""Reading and writing verification records (``model.verification``) in their Git refs.

A record that does not parse is skipped with a warning rather than failing a promotion
check: such a cluster then simply has no record, which refuses what needs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.git import verifications as refs
from reconciler.model.names import split_ref
from reconciler.model.paths import verification_path
from reconciler.model.verification import Verification
from reconciler.yamlio import load_state_file, mapping_document

Records = dict[tuple[str, str, str], dict[str, Verification]]
"""(environment, project/component, line) -> cluster -> its record; the line is the API major
while the environment runs several side by side, else empty."""


def _parse(where: str, content: bytes) -> Verification | None:
    try:
        return Verification.from_dict(load_state_file(where, content).data)
    except (ReconcilerError, KeyError, TypeError, ValueError):
        return None


def read_records(repo: Path, fetch: bool = True) -> Records:
    """Every cluster's current records (fetched from origin first when ``fetch``)."""
    found: Records = {}
    for cluster, files in refs.latest(repo, fetch).items():
        for path, content in files.items():
            record = _parse(f"{cluster}:{path}", content)
            if record is not None and record.cluster == cluster:
                found.setdefault((record.environment, record.component, record.line),
                                 {})[cluster] = record
    return found


def line_records(records: Records, environment: str, component: str, line: str
                 ) -> dict[str, Verification]:
    """Each cluster's record of one release line. A line's record is its component's while
    it ran alone, so that one counts until the line has its own (a verdict still holds a
    record to its image)."""
    found = dict(records.get((environment, component, ""), {}))
    if line:
        found.update(records.get((environment, component, line), {}))
    return found


def first_healthy_ever(repo: Path) -> dict[tuple[str, str, str, str], str]:
    """(cluster, environment, project/component, image) -> the earliest time any version of
    its record says it was first Healthy: what the audit holds promotions against."""
    found: dict[tuple[str, str, str, str], str] = {}
    for cluster, contents in refs.every_version(repo).items():
        for content in contents:
            record = _parse(cluster, content)
            if record is None or record.first_healthy is None or record.cluster != cluster:
                continue
            key = (cluster, record.environment, record.component, record.image)
            if key not in found or record.first_healthy < found[key]:
                found[key] = record.first_healthy
    return found


def publish_records(repo: Path, cluster: str, records: Mapping[str, Verification],
                    message: str) -> bool:
    """Write records (by project/component) of one cluster; False when none changed."""
    files = {}
    for record in records.values():
        project, component = split_ref(record.component)
        files[verification_path(record.environment, project, component, record.line)] = \
            mapping_document(record.as_dict())
    return refs.publish(repo, cluster, files, message)
