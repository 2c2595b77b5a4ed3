"""Helpers shared by the benchmarks: the test control plane, measured child processes (wall
time and peak RSS of each), commits, request counts from the API server's audit log, and
waiting for the controllers to settle."""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RECONCILER = str(BIN / "reconciler")
UA_CLI = str(Path(__file__).resolve().parent / "ua_cli.py")
CLI_AGENT = "reconciler-bench-cli"
"""The User-Agent the benchmarks give the reconciler CLI (bench/ua_cli.py), so the audit log
tells its requests from the controllers' and kubectl's."""


def controlplane() -> Any:
    """testenv/controlplane.py as a module."""
    spec = importlib.util.spec_from_file_location("controlplane", ROOT / "testenv/controlplane.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kubectl(binaries: Path) -> str:
    """kubectl built with the control plane (same Kubernetes version)."""
    return str(binaries / "kubectl")


@dataclass
class Ran:
    started: float
    """time.time() at the start."""
    wall: float
    peak_mib: float
    returncode: int
    stdout: bytes
    stderr: str


def run_measured(command: list[str], env: dict[str, str] | None = None,
                 check: bool = True) -> Ran:
    """Run ``command``; its wall time and its own peak RSS (wait4's ru_maxrss)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started, start = time.time(), time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        ran = Ran(started, wall, usage.ru_maxrss / 1024, process.returncode, out.read(),
                  err.read().decode(errors="replace"))
    if check and ran.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}... exited {ran.returncode}:\n"
                         f"{ran.stderr[-3000:]}\n{ran.stdout[-2000:].decode(errors='replace')}")
    return ran


def commit_all(repo: Path, message: str) -> str:
    repository = pygit2.Repository(str(repo))
    repository.index.add_all()
    repository.index.write()
    signature = pygit2.Signature("Bench", "bench@example.com")
    return str(repository.create_commit("HEAD", signature, signature, message,
                                        repository.index.write_tree(), [repository.head.target]))


def summary(values: list[float], unit: str = "s", digits: int = 2) -> str:
    """'a / b / c (median m)'."""
    runs = " / ".join(f"{v:.{digits}f}" for v in values)
    return f"{runs} {unit} (median {statistics.median(values):.{digits}f})"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


# --- the audit log ---

def audit_offset(state: Path) -> int:
    log = state / "logs/audit.log"
    return log.stat().st_size if log.exists() else 0


def agent_of(user_agent: str) -> str:
    """A short client name: kubectl, the reconciler CLI or daemon, a controller, kwok."""
    if user_agent == CLI_AGENT:
        return "reconciler CLI"
    if user_agent.startswith("reconciler/"):
        return "reconciler daemon"
    name = user_agent.split("/", 1)[0]
    if name == "kube-controller-manager":
        return f"controller-manager/{user_agent.rsplit('/', 1)[-1]}"
    return name


def audit_events(state: Path, since: int) -> list[dict[str, Any]]:
    """The requests logged after byte ``since`` of the audit log, each once (by its audit
    id; a watch logs two stages)."""
    time.sleep(1.0)  # let the API server flush the last events
    seen: set[str] = set()
    events = []
    with open(state / "logs/audit.log", "rb") as log:
        log.seek(since)
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("auditID") in seen:
                continue
            seen.add(event.get("auditID"))
            events.append(event)
    return events


def verb_of(event: dict[str, Any]) -> str:
    """The verb, with server-side dry-runs told apart ('patch (dry-run)')."""
    verb = str(event.get("verb", ""))
    return f"{verb} (dry-run)" if "dryRun=All" in event.get("requestURI", "") else verb


def audit_counts(state: Path, since: int) -> collections.Counter[tuple[str, str]]:
    """Requests per (client, verb) logged after byte ``since`` of the audit log."""
    return collections.Counter((agent_of(e.get("userAgent", "")), verb_of(e))
                               for e in audit_events(state, since))


def epoch(timestamp: str) -> float:
    """An audit timestamp (RFC 3339, UTC, microseconds) as seconds since the epoch."""
    import datetime

    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def of_client(counts: collections.Counter[tuple[str, str]], client: str) -> dict[str, int]:
    return {verb: n for (who, verb), n in sorted(counts.items()) if who == client}


def verbs_text(by_verb: dict[str, int]) -> str:
    total = sum(by_verb.values())
    return f"{total} ({', '.join(f'{v} {n}' for v, n in by_verb.items())})" if total else "0"


# --- waiting for the controllers ---

def settle(api: Any, timeout: float = 900, quiet: float = 5.0) -> float:
    """Wait until the controllers are done with what was applied: every Deployment rolled out
    (observedGeneration == generation, updated == available == replicas), every ReplicaSet at
    its size, no pod terminating or pending, and the pod count unchanged for ``quiet``
    seconds. Returns the seconds waited."""
    import kubernetes

    apps = kubernetes.client.AppsV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    start = time.monotonic()
    stable_since, last = time.monotonic(), -1
    while time.monotonic() - start < timeout:
        busy = False
        for d in apps.list_deployment_for_all_namespaces().items:
            s, want = d.status, d.spec.replicas or 0
            if (s.observed_generation or 0) < d.metadata.generation or \
                    (s.updated_replicas or 0) != want or (s.available_replicas or 0) != want or \
                    (s.replicas or 0) != want:
                busy = True
                break
        if not busy:
            for rs in apps.list_replica_set_for_all_namespaces().items:
                if (rs.status.replicas or 0) != (rs.spec.replicas or 0):
                    busy = True
                    break
        pods = core.list_pod_for_all_namespaces().items
        if any(p.metadata.deletion_timestamp or p.status.phase == "Pending" for p in pods):
            busy = True
        if busy or len(pods) != last:
            stable_since, last = time.monotonic(), len(pods)
        elif time.monotonic() - stable_since >= quiet:
            return time.monotonic() - start
        time.sleep(1.0)
    raise SystemExit(f"the controllers did not settle in {timeout:.0f} s")


def api_servers() -> int:
    """kube-apiserver processes running on the machine (ours and any other session's)."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            count += stat.read_text().strip() == "kube-apiserver"
    return count


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 "?")
    return (f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}, "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}; now: load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, {api_servers()} kube-apiserver "
            "processes on the machine (a busy machine lengthens wall times)")
