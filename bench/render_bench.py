"""Render benchmark: `reconciler render --env production` of 1,000 releases through the CLI,
as users run it (one process per run: interpreter start, imports, load, render, YAML out).

A generated state repo (bench/generate.py: N components released in development, staging
and production) is committed to Git in a temporary folder. Measured, each --runs times, for
the work tree and for `--revision HEAD` (read from the commit with pygit2):

- cold: an empty cache (XDG_CACHE_HOME is a new empty folder for each run), so a render
  cache under $XDG_CACHE_HOME/reconciler, if the tool has one, cannot help;
- warm, one-file commit: the cache as a previous render left it, then a commit that changes
  one component's production config.yaml (a new DATABASE_URL), then the render;
- warm, nothing changed: the same commit rendered again.

Wall time and the process's own peak RSS (wait4). The output of the last warm render is
compared byte for byte with a cold render of the same commit. With --library, also the load
and the render+dump inside one process (no CLI), as the old benchmark did.

Usage: python bench/render_bench.py [--components 1000] [--runs 3] [--env production]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import RECONCILER, commit_all, machine, run_measured, summary

from reconciler.git.store import init_with_files

from generate import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--env", default="production")
    parser.add_argument("--library", action="store_true",
                        help="also time load and render inside one process")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="render-bench-"))
    try:
        repo = folder / "state"
        generate(repo, args.components)
        init_with_files(repo, "generated\n\nOperation: init\n")
        configs = sorted((repo / f"environments/{args.env}").glob("*/*/config.yaml"))
        changes = 0

        def render(cache: Path, revision: bool) -> tuple[float, float, bytes]:
            command = [RECONCILER, "--repo", str(repo)]
            if revision:
                command += ["--revision", "HEAD"]
            ran = run_measured([*command, "render", "--env", args.env],
                               env={"XDG_CACHE_HOME": str(cache)})
            return ran.wall, ran.peak_mib, ran.stdout

        def one_file_commit() -> None:
            nonlocal changes
            changes += 1
            config = configs[(changes * 37) % len(configs)]
            config.write_text(re.sub(r"'postgres://[^']*'", f"'postgres://db-{changes}/x'",
                                     config.read_text()))
            commit_all(repo, f"change {config.relative_to(repo)}")

        rows: list[tuple[str, list[float], list[float]]] = []
        identical = []
        size = 0
        for revision in (False, True):
            label = "`--revision HEAD`" if revision else "work tree"
            walls, peaks = [], []
            for _ in range(args.runs):
                wall, peak, out = render(Path(tempfile.mkdtemp(dir=folder)), revision)
                walls.append(wall)
                peaks.append(peak)
                size = len(out)
            rows.append((f"{label}, cold (empty cache)", walls, peaks))
            cache = Path(tempfile.mkdtemp(dir=folder))
            render(cache, revision)  # fills the cache, if there is one
            walls, peaks = [], []
            for _ in range(args.runs):
                one_file_commit()
                wall, peak, warm = render(cache, revision)
                walls.append(wall)
                peaks.append(peak)
            rows.append((f"{label}, warm, after a one-file commit", walls, peaks))
            walls, peaks = [], []
            for _ in range(args.runs):
                wall, peak, warm = render(cache, revision)
                walls.append(wall)
                peaks.append(peak)
            rows.append((f"{label}, warm, nothing changed", walls, peaks))
            identical.append(warm == render(Path(tempfile.mkdtemp(dir=folder)), revision)[2])

        releases = sum(1 for _ in (repo / f"environments/{args.env}").glob("*/*/release.yaml"))
        print(f"`reconciler render --env {args.env}`: {releases} releases, "
              f"{size / 1024 / 1024:.1f} MiB of YAML; {machine()}\n")
        print(f"| run | wall ({args.runs} runs) | peak RSS |")
        print("|---|---|---|")
        for label, walls, peaks in rows:
            print(f"| {label} | {summary(walls)} | {max(peaks):.0f} MiB |")
        print(f"\nwarm output byte-identical to a cold render of the same commit: "
              f"work tree {'yes' if identical[0] else 'NO'}, --revision HEAD "
              f"{'yes' if identical[1] else 'NO'}")
        if args.library:
            library(repo, args.env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def library(repo: Path, environment: str) -> None:
    from reconciler.load.loader import load_state
    from reconciler.load.readers import WorkTree
    from reconciler.render.engine import render_environment
    from reconciler.yamlio import dump_manifests

    start = time.perf_counter()
    state = load_state(WorkTree(repo))
    loaded = time.perf_counter()
    objects = render_environment(state, environment).objects
    rendered = time.perf_counter()
    dump_manifests(objects)
    done = time.perf_counter()
    print(f"\nin one process: load + validate the state {loaded - start:.2f} s, render "
          f"{len(objects)} objects {rendered - loaded:.2f} s, dump YAML {done - rendered:.2f} s")


if __name__ == "__main__":
    main()
