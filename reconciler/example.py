"""Create new state repos: the bundled example, or a minimal skeleton to start from."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.gitstore import init_with_files
from reconciler.resources import data_dir

_SKELETON = {
    "organization.yaml": """\
apiVersion: reconciler/v1
kind: Organization
name: {name}
defaultPipeline: standard
groups:
  - name: platform
    roles: [admin, platform-engineer]
    members: ["@{name}/platform"]
""",
    "clusters/local.yaml": """\
apiVersion: reconciler/v1
kind: Cluster
name: local
""",
    "pipelines/standard.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
name: standard
stages:
  - environment: development
    promotion: auto
""",
    "environments/development/environment.yaml": """\
apiVersion: reconciler/v1
kind: Environment
name: development
clusters: [local]
""",
}


def init_state_repo(path: Path, example: bool) -> str:
    """Write a new state repo into ``path`` (absent or empty) and commit it; returns the commit."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ReconcilerError(f"{path} already exists and is not empty: nothing was written")
    path.mkdir(parents=True, exist_ok=True)
    if example:
        shutil.copytree(data_dir("example-state-repo"), path, dirs_exist_ok=True)
        message = "init: state repo from the bundled example"
    else:
        name = _organization_name(path)
        for relative, text in _SKELETON.items():
            target = path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.format(name=name))
        message = "init: new state repo"
    return init_with_files(path, message + "\n\nOperation: init\n")


def _organization_name(path: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", path.resolve().name.lower()).strip("-")[:63].strip("-")
    return name or "my-organization"
