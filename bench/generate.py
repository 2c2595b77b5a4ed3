"""Generate a large, valid state repo for benchmarks: N components in 3 environments.

Usage: python bench/generate.py DIR [--components N]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

HEADER = "apiVersion: reconciler/v1\n"
ENVIRONMENTS = ("development", "staging", "production")
TYPES = ("service", "service", "web-app", "proxy", "scheduled-task", "manual-task")


def _hex(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + text)


def generate(root: Path, components: int, per_project: int = 50) -> None:
    _write(root, "organization.yaml", "kind: Organization\nname: bench\ndefaultPipeline: standard\n")
    _write(root, "clusters/bench.yaml", "kind: Cluster\nname: bench\n")
    stages = "".join(f"  - environment: {e}\n" for e in ENVIRONMENTS)
    _write(root, "pipelines/standard.yaml", f"kind: Pipeline\nname: standard\nstages:\n{stages}")
    for environment in ENVIRONMENTS:
        _write(root, f"environments/{environment}/environment.yaml",
               f"kind: Environment\nname: {environment}\nclusters: [bench]\n"
               f"domain: {environment}.bench.example\n")
    for index in range(components):
        project = f"p{index // per_project:03d}"
        name = f"c{index:04d}"
        kind = TYPES[index % len(TYPES)]
        if index % per_project == 0:
            _write(root, f"projects/{project}/project.yaml", f"kind: Project\nname: {project}\n")
        body = (f"kind: Component\nname: {name}\ntype: {kind}\n"
                f"source: {{repository: https://git.example/{project}}}\n"
                "tracks: [{branch: main, version: v1.0}]\n"
                "resources: {cpu: 100m, memory: 128Mi}\n"
                "configurables:\n  - {name: LOG_LEVEL, default: info}\n"
                "  - {name: DATABASE_URL, required: true}\n")
        if kind == "scheduled-task":
            body += 'schedule: "*/15 * * * *"\n'
        elif kind != "manual-task":
            visibility = ("project", "organization", "public")[index % 3]
            body += (f"endpoints:\n  - {{name: http, port: 8080, type: REST, "
                     f"visibility: {visibility}}}\n"
                     "health:\n  readiness: {path: /healthz, port: 8080}\n")
            if index % per_project:
                target = f"c{index - 1:04d}"
                if TYPES[(index - 1) % len(TYPES)] not in ("scheduled-task", "manual-task"):
                    body += (f"connections:\n  - {{name: upstream, service: {project}/{target}/http,"
                             " version: v1, env: {url: UPSTREAM_URL}}\n")
        _write(root, f"projects/{project}/components/{name}/component.yaml", body)
        _write(root, f"projects/{project}/components/{name}/config.yaml",
               "kind: Config\nenv: {LOG_FORMAT: json}\n")
        commit = _hex(f"{name}/commit", 40)
        image = f"registry.example/{project}/{name}@sha256:{_hex(name, 64)}"
        _write(root, f"builds/{project}/{name}/{commit}.yaml",
               f"kind: Build\ncomponent: {project}/{name}\ncommit: {commit}\ntrack: main\n"
               f"image: {image}\nbuiltAt: \"2026-11-20T10:00:00Z\"\n")
        for environment in ENVIRONMENTS:
            folder = f"environments/{environment}/{project}/{name}"
            _write(root, f"{folder}/release.yaml",
                   f"kind: Release\ncomponent: {project}/{name}\ncommit: {commit}\n"
                   f"image: {image}\nversion: v1.0\nreleasedAt: \"2026-11-21T08:00:00Z\"\n")
            _write(root, f"{folder}/config.yaml",
                   f"kind: Config\nenv: {{DATABASE_URL: 'postgres://db.{environment}/{name}'}}\n")


def generate_for_testenv(root: Path, components: int) -> None:
    """As ``generate``, with only development on the test control plane (cluster `bench`,
    kubeconfig context `testenv`); staging and production go to a cluster elsewhere."""
    generate(root, components)
    (root / "clusters/bench.yaml").write_text(f"{HEADER}kind: Cluster\nname: bench\n"
                                              "context: testenv\n")
    (root / "clusters/elsewhere.yaml").write_text(f"{HEADER}kind: Cluster\nname: elsewhere\n")
    for environment in ("staging", "production"):
        path = root / f"environments/{environment}/environment.yaml"
        path.write_text(path.read_text().replace("[bench]", "[elsewhere]"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--components", type=int, default=1000)
    args = parser.parse_args()
    generate(args.directory, args.components)


if __name__ == "__main__":
    main()
