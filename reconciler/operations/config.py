"""config set and unset: one environment variable of a component's configuration, for all
environments or one, keeping the file's comments and order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.git.store import GitTree, Write
from reconciler.model import trailers
from reconciler.model.paths import config_path
from reconciler.operations.common import (
    API_VERSION,
    Outcome,
    base_state,
    checked,
    commit_message,
)
from reconciler.yamlio import edit_mapping, load_state_file

_CONFIG_TEMPLATE = f"apiVersion: {API_VERSION}\nkind: Config\n"


def config_edit(ref: str, environment: str | None, key: str,
                value: str | None) -> Callable[[GitTree], Outcome]:
    """Set (``value``) or unset (None) one environment variable of a component's config."""

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
        if environment is not None and environment not in state.environments:
            raise ReconcilerError(f"unknown environment {environment!r}")
        if any(c.name == key and c.secret for c in component.configurables):
            raise ReconcilerError(f"{key} is a secret configurable: use reconciler secret set, "
                                  "never plain config")
        path = config_path(component.project, component.name, environment)
        present = path in state.files
        content = tree.read(path, 1 << 20) if present else None
        where = environment or "all environments"
        if value is None:
            if content is None or key not in _env_of(content):
                return Outcome(None, f"{key} is not set for {ref} in {where}: nothing to do")
        elif content is not None and _env_of(content).get(key) == value:
            return Outcome(None, f"{key} is already {value!r} for {ref} in {where}")

        def edit(document: Any) -> None:
            env = document.get("env")
            if value is None:
                del env[key]
                if not env:
                    del document["env"]
            else:
                if env is None:
                    document["env"] = {}
                    env = document["env"]
                env[key] = value

        changes: dict[str, bytes | None] = {path: edit_mapping(content, _CONFIG_TEMPLATE, edit)}
        after = checked(tree, changes, state.problems)
        verb = "set" if value is not None else "unset"
        fields = {trailers.OPERATION: f"config-{verb}", trailers.COMPONENT: ref,
                    trailers.ENVIRONMENT: environment or "", trailers.KEY: key}
        subject = f"config {verb} {ref} {key}" + (f" in {environment}" if environment else "")
        return Outcome(Write(commit_message(subject, fields), changes), subject, after.problems)

    return operation


def _env_of(content: bytes) -> dict[str, Any]:
    env = load_state_file("config.yaml", content).data.get("env") or {}
    return {k: str(v) for k, v in env.items()}
