"""Verification records: what a cluster saw of a release's health, and what a promotion
into a stage with ``requiresVerification`` needs of them.

A record is kept per (cluster, environment, component) by that cluster's leader: the
release and image it ran, its health, since when, and when it was first Healthy. Pure data
and pure rules: reading and writing the records is the Git layer's job.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

HEALTHY = "Healthy"
REFRESH = datetime.timedelta(hours=1)
"""An unchanged record's lastSeen is refreshed this often (not every pass)."""


@dataclass(frozen=True)
class Verification:
    cluster: str
    environment: str
    component: str
    """project/component"""
    release: str
    image: str
    state_commit: str
    health: str
    """Healthy, Progressing or Degraded"""
    since: str
    """When this health was first seen for this image (UTC, ISO 8601)."""
    first_healthy: str | None
    """When this image was first seen Healthy here; kept when it degrades later."""
    last_seen: str
    line: str = ""
    """The API major of the release line, while the environment runs several side by side."""

    def as_dict(self) -> dict[str, Any]:
        found = {"apiVersion": "reconciler/v1", "kind": "Verification",
                 "cluster": self.cluster, "environment": self.environment,
                 "component": self.component, "release": self.release, "image": self.image,
                 "stateCommit": self.state_commit, "health": self.health, "since": self.since,
                 "firstHealthy": self.first_healthy, "lastSeen": self.last_seen}
        if self.line:
            found["line"] = self.line
        return found

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Verification:
        return Verification(
            str(data["cluster"]), str(data["environment"]), str(data["component"]),
            str(data.get("release") or ""), str(data["image"]),
            str(data.get("stateCommit") or ""), str(data["health"]), str(data["since"]),
            str(data["firstHealthy"]) if data.get("firstHealthy") else None,
            str(data.get("lastSeen") or data["since"]), str(data.get("line") or ""))


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def observe(previous: Verification | None, *, cluster: str, environment: str, component: str,
            release: str, image: str, state_commit: str, health: str,
            now: datetime.datetime, line: str = "") -> Verification | None:
    """The record after seeing ``health`` now, or None when the stored one still holds."""
    stamp = _stamp(now)
    if previous is None or previous.image != image:
        return Verification(cluster, environment, component, release, image, state_commit,
                            health, stamp, stamp if health == HEALTHY else None, stamp, line)
    first = previous.first_healthy or (stamp if health == HEALTHY else None)
    # A record whose line changed (one line became several, or back) moves, history kept.
    if previous.health == health and previous.first_healthy == first \
            and previous.line == line and now - parse_stamp(previous.last_seen) < REFRESH:
        return None
    since = previous.since if previous.health == health else stamp
    return replace(previous, release=release or previous.release, state_commit=state_commit,
                   health=health, since=since, first_healthy=first, last_seen=stamp, line=line)


def _duration(delta: datetime.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


@dataclass(frozen=True)
class Verdict:
    """Whether a release is verified in an environment: healthy on every cluster of it."""

    verified: bool
    healthy_since: datetime.datetime | None
    """When it had been Healthy on all clusters (the latest first-healthy time)."""
    reasons: tuple[str, ...]
    """Per cluster that is not Healthy with this image: what it reports."""
    healthy_clusters: int
    clusters: int

    def summary(self, now: datetime.datetime) -> str:
        if self.verified and self.healthy_since is not None:
            return (f"healthy on {self.healthy_clusters}/{self.clusters} clusters for "
                    f"{_duration(now - self.healthy_since)}")
        return "; ".join(self.reasons)


def verdict(records: Mapping[str, Verification], clusters: tuple[str, ...] | list[str],
            image: str) -> Verdict:
    """The verdict on ``image`` from each cluster's record (``records`` by cluster)."""
    reasons = []
    firsts = []
    for cluster in clusters:
        record = records.get(cluster)
        if record is None:
            reasons.append(f"{cluster}: no verification record")
        elif record.image != image:
            reasons.append(f"{cluster}: still runs another image "
                           f"({record.image.rsplit('@', 1)[-1][:19]}), not this release yet")
        elif record.health != HEALTHY or record.first_healthy is None:
            reasons.append(f"{cluster}: {record.health} since {record.since}")
        else:
            firsts.append(parse_stamp(record.first_healthy))
    verified = not reasons
    return Verdict(verified, max(firsts) if verified and firsts else None, tuple(reasons),
                   len(firsts), len(clusters))
