"""What an idle daemon costs: RSS and CPU per minute with nothing new in Git.

For each size, a fresh control plane (scripts/testenv's binaries, enough KWOK nodes for the
pods, every request audited) and a generated state repo whose development environment
renders about that many objects (2,850 components: ~10,000 objects); `reconciler run` (a
process of its own, as in a pod) applies it, then sits idle for a measured window with
`--interval 60`, so each idle minute holds one drift check. Reported: the time to the first
apply recorded (incl. the health wait), RSS right after it, CPU seconds the daemon used per
idle minute (from /proc/PID/stat), RSS and peak RSS (VmRSS, VmHWM of /proc/PID/status) after
the idle window, the drift passes counted on its /metrics, and the daemon's API requests
during the idle window per verb (audit log).

Usage: python bench/daemon_bench.py [--components 300 2850] [--window 180] [--interval 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import agent_of, audit_events, audit_offset, controlplane, machine, verb_of

from reconciler.git.store import init_with_files
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.reconcile import SYSTEM_NAMESPACE
from reconciler.render.engine import render_environment

from generate import generate_for_testenv

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def memory_mib(pid: int) -> tuple[float, float, float]:
    """(RSS, peak RSS, the anonymous part of RSS: not mapped files) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            values[key] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"], values["RssAnon"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in "{ ")


def measure(components: int, window: float, interval: float, binaries: Path | None) -> None:
    plane = controlplane()
    folder = Path(tempfile.mkdtemp())
    process = None
    try:
        repo = folder / "state"
        generate_for_testenv(repo, components)
        head = init_with_files(repo, "generated\n\nOperation: init\n")
        objects = render_environment(load_state(WorkTree(repo, "bench")), "development").objects
        pods = sum(o["spec"].get("replicas", 1) for o in objects if o.get("kind") == "Deployment")
        nodes = max(2, pods // 500 + 2)
        kubeconfig = plane.up(folder / "plane", binaries or plane.build(), nodes=nodes, audit_all=True)
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        core = kubernetes.client.CoreV1Api(api)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--repo", str(repo), "run", "--cluster",
             "bench", "--interval", str(interval), "--listen", f"127.0.0.1:{port}",
             "--kubeconfig", str(kubeconfig)],
            stdout=subprocess.DEVNULL, stderr=open(folder / "daemon.log", "w"))  # noqa: SIM115
        started = time.perf_counter()
        while True:
            try:
                data = core.read_namespaced_config_map("status-development",
                                                       SYSTEM_NAMESPACE).data
                if data.get("commit") == str(head):
                    break
            except kubernetes.client.ApiException:
                pass
            if process.poll() is not None:
                raise SystemExit(f"the daemon exited: {(folder / 'daemon.log').read_text()}")
            time.sleep(1)
        applied = time.perf_counter() - started
        rss_applied, peak_applied, anon_applied = memory_mib(process.pid)
        print(f"{len(objects)} objects, {pods} pods on {nodes} nodes: first apply recorded "
              f"after {applied:.0f} s; RSS {rss_applied:.0f} MiB (peak {peak_applied:.0f}, "
              f"anonymous {anon_applied:.0f})",
              flush=True)
        offset = audit_offset(folder / "plane")
        cpu_before, passes_before = cpu_seconds(process.pid), metric(port, "reconciler_reconcile_total")
        time.sleep(window)
        cpu = cpu_seconds(process.pid) - cpu_before
        passes = metric(port, "reconciler_reconcile_total") - passes_before
        rss, peak, anon = memory_mib(process.pid)
        requests: dict[str, int] = {}
        resources: dict[str, int] = {}
        for event in audit_events(folder / "plane", offset):
            if agent_of(event.get("userAgent", "")) == "reconciler daemon":
                requests[verb_of(event)] = requests.get(verb_of(event), 0) + 1
                what = f"{verb_of(event)} {(event.get('objectRef') or {}).get('resource', '')}"
                resources[what] = resources.get(what, 0) + 1
        verbs = ", ".join(f"{v} {n}" for v, n in sorted(requests.items()))
        print(f"\n{machine()}\n\n| applied objects | first apply + health wait | RSS after it "
              f"(peak) | drift passes in {window:.0f} s idle | daemon CPU per idle minute | "
              "RSS after the idle window (peak) | daemon requests while idle |\n"
              "|---|---|---|---|---|---|---|\n"
              f"| {len(objects):,} ({components} components) | {applied:.0f} s | "
              f"{rss_applied:.0f} MiB ({peak_applied:.0f}) | {passes:.0f} | {cpu / (window / 60):.2f} s | "
              f"{rss:.0f} MiB ({peak:.0f}) | {sum(requests.values())}: {verbs} |\n\nRSS after the idle "
              f"window: {anon:.0f} MiB anonymous, {rss - anon:.0f} MiB mapped files (shared "
              "libraries, Git packs)", flush=True)
        top = sorted(resources.items(), key=lambda item: -item[1])[:12]
        print("\ndaemon requests while idle, by verb and resource: "
              + ", ".join(f"{what} {n}" for what, n in top), flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        plane.down(folder / "plane")
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, nargs="+", default=[300, 2850])
    parser.add_argument("--window", type=float, default=180,
                        help="seconds of idle time measured (3 drift checks at --interval 60)")
    parser.add_argument("--interval", type=float, default=60,
                        help="the daemon's --interval: seconds between drift checks")
    parser.add_argument("--bin-dir", type=Path, help="the control plane's binaries (default: "
                        "testenv/build.sh's cache, built if missing)")
    args = parser.parse_args()
    for components in args.components:
        measure(components, args.window, args.interval, args.bin_dir)


if __name__ == "__main__":
    main()
