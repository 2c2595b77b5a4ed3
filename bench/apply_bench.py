"""First and no-op apply of ~1,000 objects: `reconciler apply` (the CLI) vs `kubectl apply
--server-side --force-conflicts` of the same objects, side by side, with request counts.

A generated state repo (bench/generate.py, --components N, default 180: ~1,000 objects; its
development environment is the test control plane's cluster `bench`) is committed to Git.
Its development render (`reconciler render --env development`) is the file kubectl applies,
so both sides apply the same objects. Each side of each round gets a FRESH control plane (scripts/testenv's
binaries, auditing every request: testenv/controlplane.py's `audit_all`) and measures:

1. the first apply (one process: `reconciler apply --env development`, or kubectl);
2. then waits until the controllers have settled (every Deployment rolled out, ReplicaSets at
   size, no pod pending or terminating, the pod count unchanged for 5 s);
3. the no-op apply: the same command again, nothing changed.

The order alternates between rounds (ours first in odd rounds, kubectl first in even
ones). The reconciler CLI runs through bench/ua_cli.py with the user agent
`reconciler-bench-cli`; kubectl's is `kubectl/...`. Requests are counted from the API
server's audit log, per client and verb (server-side dry-runs apart), and "writes" are the
create/update/patch/delete requests that were not dry-runs. kubectl is the one built with
the control plane (same Kubernetes version). The CLI's phases come from the audit log's
timestamps: start-up + load + render before its first request, then the API phase.

Usage: python bench/apply_bench.py [--components 180] [--rounds 3] [--nodes 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    CLI_AGENT,
    RECONCILER,
    UA_CLI,
    WRITE_VERBS,
    agent_of,
    audit_events,
    audit_offset,
    controlplane,
    epoch,
    kubectl,
    machine,
    run_measured,
    settle,
    summary,
    verb_of,
)

from reconciler.git.store import init_with_files

from generate import generate_for_testenv

SIDES = {"ours": "reconciler CLI", "kubectl": "kubectl"}


def requests_of(events: list[dict[str, Any]], client: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        if agent_of(event.get("userAgent", "")) == client:
            verb = verb_of(event)
            counts[verb] = counts.get(verb, 0) + 1
    return dict(sorted(counts.items()))


def writes(by_verb: dict[str, int]) -> int:
    return sum(n for verb, n in by_verb.items() if verb in WRITE_VERBS)


def phases(events: list[dict[str, Any]], client: str, started: float, wall: float) -> str:
    """Seconds before the first request, between first and last, after the last; then, per
    class of request (reads, dry-runs, writes), when it ran (seconds from the process start)
    and how many were in flight on average (the sum of their durations over their span)."""
    mine = [(epoch(e["requestReceivedTimestamp"]) - started, epoch(e["stageTimestamp"]) - started,
             verb_of(e)) for e in events if agent_of(e.get("userAgent", "")) == client]
    if not mine:
        return ""
    first, last = min(m[0] for m in mine), max(m[1] for m in mine)
    text = f"{first:.1f} s to the first request, {last - first:.1f} s of requests, " \
           f"{wall - last:.1f} s after"
    classes = {"reads": ("get", "list"), "dry-runs": ("patch (dry-run)",),
               "writes": WRITE_VERBS}
    for name, verbs in classes.items():
        part = [m for m in mine if m[2] in verbs]
        if not part:
            continue
        begin, end = min(m[0] for m in part), max(m[1] for m in part)
        busy = sum(m[1] - m[0] for m in part)
        text += (f"; {len(part)} {name} from {begin:.1f} to {end:.1f} s "
                 f"({busy / max(end - begin, 1e-6):.1f} in flight)")
    return text


def measure(side: str, plane: Any, binaries: Path, folder: Path, repo: Path, manifests: Path,
            nodes: int, tag: str) -> dict[str, Any]:
    state = folder / f"plane-{tag}"
    kubeconfig = plane.up(state, binaries, nodes=nodes, audit_all=True)
    try:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        settle(api, quiet=2)
        if side == "ours":
            command = [sys.executable, UA_CLI, CLI_AGENT, "--repo", str(repo), "-o", "json",
                       "apply", "--env", "development", "--kubeconfig", str(kubeconfig)]
        else:
            command = [kubectl(binaries), "--kubeconfig", str(kubeconfig), "apply",
                       "--server-side", "--force-conflicts", "-f", str(manifests)]
        result: dict[str, Any] = {}
        for run in ("first", "noop"):
            offset = audit_offset(state)
            ran = run_measured(command)
            events = audit_events(state, offset)
            by_verb = requests_of(events, SIDES[side])
            result[run] = {"wall": ran.wall, "peak": ran.peak_mib, "requests": by_verb,
                           "writes": writes(by_verb),
                           "phases": phases(events, SIDES[side], ran.started, ran.wall)}
            if side == "ours":
                actions: dict[str, int] = {}
                for row in json.loads(ran.stdout):
                    actions[row["action"]] = actions.get(row["action"], 0) + 1
                result[run]["actions"] = actions
            if run == "first":
                result["settle"] = settle(api)
            print(f"  {tag} {run}: {ran.wall:.2f} s, {sum(by_verb.values())} requests "
                  f"{by_verb}, {result[run]['phases']} {result[run].get('actions', '')}",
                  flush=True)
        return result
    finally:
        plane.down(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=180,
                        help="180 components render ~1,000 objects in development")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--bin-dir", type=Path, help="the control plane's binaries (default: "
                        "testenv/build.sh's cache, built if missing)")
    args = parser.parse_args()
    plane = controlplane()
    binaries = args.bin_dir or plane.build()
    folder = Path(tempfile.mkdtemp(prefix="apply-bench-"))
    try:
        repo = folder / "state"
        generate_for_testenv(repo, args.components)
        init_with_files(repo, "generated\n\nOperation: init\n")
        manifests = folder / "development.yaml"
        rendered = run_measured([RECONCILER, "--repo", str(repo), "render", "--env",
                                 "development"]).stdout
        manifests.write_bytes(rendered)
        objects = rendered.count(b"\n---\n") + 1
        print(f"{args.components} components, {objects} objects in development", flush=True)
        results: dict[str, list[dict[str, Any]]] = {"ours": [], "kubectl": []}
        for round_ in range(1, args.rounds + 1):
            order = ("ours", "kubectl") if round_ % 2 else ("kubectl", "ours")
            for side in order:
                results[side].append(measure(side, plane, binaries, folder, repo, manifests,
                                             args.nodes, f"r{round_}-{side}"))
        report(results, objects, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(results: dict[str, list[dict[str, Any]]], objects: int, args: Any) -> None:
    print(f"\n{objects} objects, {args.rounds} rounds, a fresh control plane per side and "
          f"round, order alternated; {machine()}\n")
    print("| apply | reconciler CLI (wall, per round) | kubectl --server-side | "
          "ours / kubectl (median) |")
    print("|---|---|---|---|")
    for run, label in (("first", "first apply"), ("noop", "no-op apply")):
        ours = [r[run]["wall"] for r in results["ours"]]
        theirs = [r[run]["wall"] for r in results["kubectl"]]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(f"| {label} | {summary(ours)} | {summary(theirs)} | "
              f"{statistics.median(ours) / statistics.median(theirs):.2f}x (per round "
              f"{' / '.join(f'{r:.2f}' for r in ratios)}) |")
    print("\n| apply | client | requests (round 1) | writes per round | peak RSS |")
    print("|---|---|---|---|---|")
    for run, label in (("first", "first apply"), ("noop", "no-op apply")):
        for side in ("ours", "kubectl"):
            first = results[side][0][run]
            per_round = " / ".join(str(r[run]["writes"]) for r in results[side])
            verbs = ", ".join(f"{v} {n}" for v, n in first["requests"].items())
            print(f"| {label} | {SIDES[side]} | {sum(first['requests'].values())}: {verbs} | "
                  f"{per_round} | {max(r[run]['peak'] for r in results[side]):.0f} MiB |")
    print("\nreconciler CLI phases (from the audit timestamps, round 1): first apply: "
          f"{results['ours'][0]['first']['phases']}; no-op: {results['ours'][0]['noop']['phases']}")
    print(f"reconciler CLI change sets: first {results['ours'][0]['first'].get('actions')}; "
          f"no-op {results['ours'][0]['noop'].get('actions')}")
    print("controllers settled after the first apply in: "
          + ", ".join(f"{side} {summary([r['settle'] for r in results[side]], digits=0)}"
                      for side in ("ours", "kubectl")))


if __name__ == "__main__":
    main()
