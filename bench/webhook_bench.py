"""Commit -> live through the daemon's webhook, one component changed (300 components).

A generated state repo (bench/generate.py, --components N; development is the test control
plane's cluster `bench`) is committed to Git; `reconciler run` (a process of its own, as in a
pod) clones it (`--clone-from`, so it follows `origin` and reacts to the webhook, not to
file events), applies it once and waits for health. After the controllers settle, each of
--changes iterations commits a one-component change to the state repo (the component's
development DATABASE_URL, so its ConfigMap's content-hash name and the Deployment's pod
template change), POSTs `/hooks/git` signed with the shared secret (X-Hub-Signature-256),
and polls the Deployment every 50 ms until it is live: observedGeneration == generation,
updatedReplicas == availableReplicas == replicas == spec.replicas. Reported per change:
seconds from the POST until the Deployment's spec changed (the daemon applied it), until it
is rolled out on KWOK, and until the daemon recorded the commit in its status ConfigMap
(after its health wait); and the daemon's API requests for that commit, from the audit log
(the test control plane audits every request here). p50 and p90 over the changes.

Note the floor set by the rendered Deployment: `minReadySeconds: 5`, `maxSurge: 1`,
`maxUnavailable: 0`, so a rollout of R replicas takes at least R x 5 s however fast the
daemon is.

Usage: python bench/webhook_bench.py [--components 300] [--changes 10]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    agent_of,
    audit_events,
    audit_offset,
    commit_all,
    controlplane,
    machine,
    percentile,
    settle,
    verb_of,
)

from reconciler.git.store import init_with_files
from reconciler.reconcile import SYSTEM_NAMESPACE

from generate import TYPES, generate_for_testenv

SECRET = b"bench-webhook-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post_webhook(port: int) -> None:
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/git", data=body,
                                     method="POST",
                                     headers={"X-Hub-Signature-256": signature,
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 202, response.status


def live(deployment: Any) -> bool:
    s, want = deployment.status, deployment.spec.replicas or 0
    return ((s.observed_generation or 0) >= deployment.metadata.generation
            and (s.updated_replicas or 0) == want and (s.available_replicas or 0) == want
            and (s.replicas or 0) == want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=300)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--bin-dir", type=Path, help="the control plane's binaries (default: "
                        "testenv/build.sh's cache, built if missing)")
    args = parser.parse_args()
    plane = controlplane()
    binaries = args.bin_dir or plane.build()
    folder = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    process = None
    state_dir = folder / "plane"
    try:
        repo = folder / "state"
        generate_for_testenv(repo, args.components)
        head = init_with_files(repo, "generated\n\nOperation: init\n")
        kubeconfig = plane.up(state_dir, binaries, nodes=args.nodes, audit_all=True)
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
        (folder / "secret").write_bytes(SECRET)
        port = free_port()
        log = open(folder / "daemon.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--repo", str(folder / "daemon.git"), "run",
             "--cluster", "bench", "--interval", "3600", "--listen", f"127.0.0.1:{port}",
             "--webhook-secret-file", str(folder / "secret"), "--clone-from", str(repo),
             "--kubeconfig", str(kubeconfig)], stdout=subprocess.DEVNULL, stderr=log)

        def status_commit() -> str:
            try:
                data = core.read_namespaced_config_map("status-development",
                                                       SYSTEM_NAMESPACE).data or {}
                return str(data.get("commit", ""))
            except kubernetes.client.ApiException:
                return ""

        started = time.perf_counter()
        while status_commit() != str(head):
            if process.poll() is not None:
                raise SystemExit(f"the daemon exited: {(folder / 'daemon.log').read_text()}")
            if time.perf_counter() - started > 1800:
                raise SystemExit("the daemon did not apply the first commit in 30 min")
            time.sleep(0.5)
        first = time.perf_counter() - started
        settled = settle(api)
        print(f"{args.components} components; the daemon's first apply incl. health wait "
              f"{first:.0f} s; controllers settled {settled:.0f} s later", flush=True)

        deployments = [index for index in range(args.components)
                       if TYPES[index % len(TYPES)] in ("service", "web-app", "proxy")]
        rows = []
        resources: dict[str, int] = {}
        for change in range(1, args.changes + 1):
            index = deployments[(change * 7) % len(deployments)]
            project, name = f"p{index // 50:03d}", f"c{index:04d}"
            namespace = f"{project}-development"
            before = apps.read_namespaced_deployment(name, namespace)
            config = repo / f"environments/development/{project}/{name}/config.yaml"
            config.write_text(re.sub(r"'postgres://[^']*'", f"'postgres://db-{change}/{name}'",
                                     config.read_text()))
            new = commit_all(repo, f"bench: change {project}/{name}'s config")
            offset = audit_offset(state_dir)
            start = time.perf_counter()
            post_webhook(port)
            applied = rolled = recorded = None
            while rolled is None or recorded is None:
                now = time.perf_counter() - start
                if now > args.timeout:
                    raise SystemExit(f"change {change}: not live after {args.timeout:.0f} s")
                deployment = apps.read_namespaced_deployment(name, namespace)
                if applied is None and deployment.metadata.generation > before.metadata.generation:
                    applied = now
                if applied is not None and rolled is None and live(deployment):
                    rolled = time.perf_counter() - start
                if recorded is None and status_commit() == new:
                    recorded = time.perf_counter() - start
                time.sleep(0.05)
            requests: dict[str, int] = {}
            for event in audit_events(state_dir, offset):
                if agent_of(event.get("userAgent", "")) == "reconciler daemon":
                    verb = verb_of(event)
                    requests[verb] = requests.get(verb, 0) + 1
                    what = f"{verb} {(event.get('objectRef') or {}).get('resource', '')}"
                    resources[what] = resources.get(what, 0) + 1
            rows.append((f"{project}/{name}", applied, rolled, recorded, dict(sorted(requests.items())),
                         before.spec.replicas))
            print(f"  change {change} {project}/{name}: applied {applied:.2f} s, live "
                  f"{rolled:.2f} s, status {recorded:.2f} s, daemon requests {requests}",
                  flush=True)
            settle(api, quiet=1)

        print(f"\n{args.components} components, {args.changes} one-component commits, each "
              f"POSTed to the webhook; {machine()}\n")
        print("| change | component (replicas) | Deployment changed | rolled out (live) | "
              "status recorded | daemon requests |")
        print("|---|---|---|---|---|---|")
        for number, (component, applied, rolled, recorded, requests, replicas) in \
                enumerate(rows, 1):
            verbs = ", ".join(f"{v} {n}" for v, n in requests.items())
            print(f"| {number} | {component} ({replicas}) | {applied:.2f} s | {rolled:.2f} s | "
                  f"{recorded:.2f} s | {sum(requests.values())}: {verbs} |")
        print("\n| from the POST to | p50 | p90 |")
        print("|---|---|---|")
        for column, label in ((1, "the Deployment changed (daemon applied)"),
                              (2, "rolled out on KWOK (live)"),
                              (3, "the daemon's status recorded")):
            values = [row[column] for row in rows]
            print(f"| {label} | {percentile(values, 0.5):.2f} s | {percentile(values, 0.9):.2f} s |")
        top = sorted(resources.items(), key=lambda item: -item[1])[:12]
        print(f"\nthe daemon's requests over the {args.changes} commits, by verb and resource: "
              + ", ".join(f"{what} {n}" for what, n in top))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        plane.down(state_dir)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
