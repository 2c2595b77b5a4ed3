"""History, audit and promotion benchmark.

Builds a state repo whose history holds N promotion commits (default 10,000: builds
registered, deployed and promoted through development -> staging -> production, with the
tool's trailers), then times `history`, `audit`, and one real promotion through a bare
remote on disk.

Usage: python bench/history_bench.py [--commits N]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pygit2

from reconciler.git.store import transact
from reconciler.operations.init import init_state_repo
from reconciler.operations.releases import commit_message, promote
from reconciler.queries.audit import audit
from reconciler.queries.history import events

COMPONENTS = [("shop", "checkout", "v1.2"), ("shop", "catalog", "v1.4"),
              ("identity", "auth", "v3.1")]
STAGES = ("development", "staging", "production")


def _hex(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def grow_history(path: Path, commits: int) -> None:
    """Append ``commits`` tool commits straight through pygit2 (the real CLI would take hours)."""
    repository = pygit2.Repository(str(path))
    signature = pygit2.Signature("Bench", "bench@example.com")
    parent = repository.head.target
    tree = repository.head.peel(pygit2.Commit).tree
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    made = 0
    build = 0
    while made < commits:
        project, component, version = COMPONENTS[build % len(COMPONENTS)]
        sha = _hex(f"{component}-{build}", 40)
        image = f"registry.acme.example/{project}/{component}@sha256:{_hex(str(build), 64)}"
        build_file = (f'apiVersion: reconciler/v1\nkind: Build\ncomponent: "{project}/{component}"'
                      f'\ncommit: "{sha}"\ntrack: "main"\nimage: "{image}"\n'
                      f'builtAt: "{moment:%Y-%m-%dT%H:%M:%SZ}"\n')
        steps = [("build-register", None, {f"builds/{project}/{component}/{sha}.yaml": build_file})]
        for index, stage in enumerate(STAGES):
            release = (f'apiVersion: reconciler/v1\nkind: Release\ncomponent: "{project}/'
                       f'{component}"\ncommit: "{sha}"\nimage: "{image}"\nversion: "{version}"\n'
                       f'releasedAt: "{moment:%Y-%m-%dT%H:%M:%SZ}"\n')
            operation = "deploy" if index == 0 else "promote"
            steps.append((operation, stage, {
                f"environments/{stage}/{project}/{component}/release.yaml": release}))
        for operation, stage, files in steps:
            if made >= commits:
                break
            index = repository.index
            index.read_tree(tree)
            for file, text in files.items():
                index.add(pygit2.IndexEntry(file, repository.create_blob(text.encode()),
                                            pygit2.enums.FileMode.BLOB))
            tree = repository[index.write_tree()].peel(pygit2.Tree)
            trailers = {"Operation": operation, "Component": f"{project}/{component}",
                        "From-Environment": STAGES[STAGES.index(stage) - 1]
                        if stage and stage != "development" else "",
                        "To-Environment": stage or "", "Image": image, "Source-Commit": sha,
                        "Pipeline": "standard",
                        # production requires a pull request: these arrive rebased from one
                        "Pull-Request-Branch": f"promote/{project}/{component}/{stage}"
                        if stage == "production" else ""}
            message = commit_message(f"{operation} {project}/{component}", trailers)
            moment += datetime.timedelta(minutes=1)
            when = pygit2.Signature("Bench", "bench@example.com", int(moment.timestamp()), 0)
            parent = repository.create_commit(None, when, when, message, tree.id, [parent])
            made += 1
        build += 1
    repository.references["refs/heads/main"].set_target(parent)
    repository.checkout_head(strategy=pygit2.enums.CheckoutStrategy.FORCE)
    del signature


def timed(label: str, action: object) -> object:
    start = time.perf_counter()
    result = action()  # type: ignore[operator]
    print(f"{label}: {time.perf_counter() - start:.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("GIT_AUTHOR_NAME", "Bench")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "bench@example.com")
    folder = Path(tempfile.mkdtemp())
    try:
        seed = folder / "seed"
        init_state_repo(seed, example=True)
        timed(f"generate {args.commits} promotion commits", lambda: grow_history(seed,
                                                                             args.commits))
        found = timed("history (all events, newest first)", lambda: list(events(seed)))
        print(f"  {len(found)} events")  # type: ignore[arg-type]
        timed("history shop/checkout --env production", lambda: list(
            events(seed, "shop/checkout", "production")))
        cache = folder / "audit-cache"
        findings = timed("audit, first run (replay every commit)",
                         lambda: audit(seed, cache=cache))
        print(f"  {len(findings)} findings")  # type: ignore[arg-type]
        timed("audit, re-run with nothing new", lambda: audit(seed, cache=cache))
        grow_history(seed, 1)
        again = timed("audit, re-run after one more commit", lambda: audit(seed, cache=cache))
        print(f"  {len(again)} findings")  # type: ignore[arg-type]
        remote = folder / "remote.git"
        pygit2.clone_repository(str(seed), str(remote), bare=True)
        work = folder / "work"
        pygit2.clone_repository(str(remote), str(work))
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
        durations = []
        for environment in ("staging", "production"):
            start = time.perf_counter()
            written = transact(work, lambda tree, env=environment: promote(  # type: ignore[misc]
                "shop/reindex" if env == "production" else "shop/storefront", env,
                True, later)(tree).write,
                target_branch=None if environment == "staging" else
                "promote/shop/reindex/production")
            durations.append(time.perf_counter() - start)
            assert written is not None or environment == "staging"
        print(f"one promotion through a bare remote (fetch, check, commit, push): "
              f"{min(durations):.2f} s (best of {len(durations)})")
    finally:
        shutil.rmtree(folder)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
