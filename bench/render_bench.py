"""Render benchmark: load a generated state repo and render all of its environments.

Usage: python bench/render_bench.py [--components N]   (prints wall times and peak memory)
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.render.engine import render_environment
from reconciler.yamlio import dump_manifests

from generate import ENVIRONMENTS, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--components", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate(root, args.components)
        start = time.perf_counter()
        state = load_state(WorkTree(root))
        loaded = time.perf_counter()
        objects = releases = 0
        text = 0
        for environment in ENVIRONMENTS:
            rendered = render_environment(state, environment)
            objects += len(rendered.objects)
            releases += len(state.releases_in(environment))
            rendered_at = time.perf_counter()
            text += len(dump_manifests(rendered.objects))
        done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"components: {args.components}, releases: {releases}, objects: {objects}")
    print(f"load + validate state: {loaded - start:.2f} s")
    print(f"render + validate objects + dump YAML ({text // 1024} KiB): {done - loaded:.2f} s")
    print(f"total: {done - start:.2f} s, peak RSS: {peak:.0f} MiB")
    del rendered_at


if __name__ == "__main__":
    main()
