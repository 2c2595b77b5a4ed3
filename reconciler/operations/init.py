"""Create new state repos: the bundled example, or a minimal skeleton to start from."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.git.store import init_with_files
from reconciler.model import trailers
from reconciler.model.paths import (
    ORGANIZATION_FILE,
    cluster_path,
    environment_path,
    pipeline_path,
    secret_path,
)
from reconciler.resources import data_dir
from reconciler.sops import encrypt, new_key
from reconciler.yamlio import dump_manifests

_DEMO_ENVIRONMENT = "development"
_DEMO_SECRETS = {("shop", "checkout"): {"PAYMENT_API_KEY": "demo-payment-key-not-for-production"}}

_SKELETON = {
    ORGANIZATION_FILE: """\
apiVersion: reconciler/v1
kind: Organization
name: {name}
defaultPipeline: standard
groups:
  - name: platform
    roles: [admin, platform-engineer]
    members: ["@{name}/platform"]
""",
    cluster_path("local"): """\
apiVersion: reconciler/v1
kind: Cluster
name: local
""",
    pipeline_path("standard"): """\
apiVersion: reconciler/v1
kind: Pipeline
name: standard
stages:
  - environment: development
    promotion: auto
""",
    environment_path(_DEMO_ENVIRONMENT): """\
apiVersion: reconciler/v1
kind: Environment
name: development
clusters: [local]
""",
}


def default_demo_key(path: Path) -> Path:
    """Where ``init --example`` keeps the example's private age key: beside the repo, never
    in it."""
    resolved = path.resolve()
    return resolved.parent / f"{resolved.name}-age-key.txt"


def init_state_repo(path: Path, example: bool, demo_key: Path | None = None) -> str:
    """Write a new state repo into ``path`` (absent or empty) and commit it; returns the commit.

    The example's secrets are encrypted to a new age key written to ``demo_key`` (default:
    ``default_demo_key``), so they decrypt without any private key in Git."""
    try:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ReconcilerError(f"{path} already exists and is not empty: nothing was written")
        key_file = demo_key or default_demo_key(path)
        if example and key_file.exists():
            raise ReconcilerError(f"{key_file} already exists: pass another --demo-key file; "
                                  "nothing was written")
        path.mkdir(parents=True, exist_ok=True)
        return _write(path, example, key_file)
    except OSError as exc:
        raise ReconcilerError(f"cannot create the state repo in {path}: "
                              f"{exc.strerror or exc}") from None


def _write(path: Path, example: bool, key_file: Path) -> str:
    if example:
        shutil.copytree(data_dir("example-state-repo"), path, dirs_exist_ok=True)
        _demo_secrets(path, key_file)
        message = "init: state repo from the bundled example"
    else:
        name = _organization_name(path)
        for relative, text in _SKELETON.items():
            target = path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.format(name=name))
        message = "init: new state repo"
    return init_with_files(path, f"{message}\n\n{trailers.OPERATION}: {trailers.INIT}\n")


def _demo_secrets(path: Path, key_file: Path) -> None:
    """Encrypt the example's secrets to a new age key, listed as the development
    environment's recipient, and keep the private key in ``key_file``."""
    identity, recipient = new_key()
    environment = path / environment_path(_DEMO_ENVIRONMENT)
    environment.write_text(environment.read_text() + f"secretRecipients: [{recipient}]\n")
    for (project, component), values in _DEMO_SECRETS.items():
        for key, value in values.items():
            target = path / secret_path(_DEMO_ENVIRONMENT, project, component, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(dump_manifests([encrypt({key: value}, [recipient])]))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"# demo key of the example state repo {path.resolve()}\n"
                     f"# public key: {recipient}\n{identity}\n")


def _organization_name(path: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", path.resolve().name.lower()).strip("-")[:63].strip("-")
    return name or "my-organization"
