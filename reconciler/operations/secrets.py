"""The secret writes: set, unset, rotate, migrate. One SOPS file per secret, so set and
unset need only the environment's public recipients; rotate and migrate decrypt."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler import sops
from reconciler.errors import Problem, ReconcilerError
from reconciler.git.store import GitTree, Write
from reconciler.load.readers import TreeReader
from reconciler.model import trailers
from reconciler.model.names import ENV_NAME
from reconciler.model.paths import (
    LEGACY_SECRETS_FILE,
    environment_path,
    legacy_secrets,
    secret_path,
)
from reconciler.operations.common import (
    Outcome,
    base_state,
    checked,
    commit_message,
)
from reconciler.yamlio import MAX_FILE_BYTES, dump_manifests, load_state_file


def _sealed(key: str, value: str, recipients: Sequence[str]) -> bytes:
    return dump_manifests([sops.encrypt({key: value}, recipients)]).encode()


def secret_set(ref: str, environment: str, key: str, value: str) -> Callable[[GitTree], Outcome]:
    """Write or replace one secret's file, encrypted to the environment's public recipients:
    no private key is needed, because no other secret shares the file."""

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
        target = state.environment_named(environment)
        if not ENV_NAME.fullmatch(key):
            raise ReconcilerError(f"{key!r} is not a secret name: use an environment variable "
                                  "name ([A-Za-z_][A-Za-z0-9_]*)")
        if any(c.name == key and not c.secret for c in component.configurables):
            raise ReconcilerError(f"{key} is a plain configurable of {ref}: use reconciler "
                                  "config set, or declare it secret: true first")
        path = secret_path(environment, component.project, component.name, key)
        changes: dict[str, bytes | None] = {
            path: _sealed(key, value, target.secret_recipients)}
        after = checked(tree, changes, state.problems)
        return _secret_write("set", ref, environment, key, changes, after.problems)

    return operation


def secret_unset(ref: str, environment: str, key: str) -> Callable[[GitTree], Outcome]:
    """Delete one secret's file."""

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
        state.environment_named(environment)
        found = state.secrets.get((environment, component.project, component.name))
        if found is None or key not in found.files:
            return Outcome(None, f"{key} is not a secret of {ref} in {environment}: "
                                 "nothing to do")
        changes: dict[str, bytes | None] = {found.files[key].path: None}
        after = checked(tree, changes, state.problems)
        return _secret_write("unset", ref, environment, key, changes, after.problems)

    return operation


def _secret_write(verb: str, ref: str, environment: str, key: str,
                  changes: dict[str, bytes | None], remaining: tuple[Problem, ...]) -> Outcome:
    fields = {trailers.OPERATION: f"secret-{verb}", trailers.COMPONENT: ref,
              trailers.ENVIRONMENT: environment, trailers.KEY: key}
    subject = f"secret {verb} {ref} {key} in {environment}"
    return Outcome(Write(commit_message(subject, fields), changes), subject, remaining)


def secret_rotate(environment: str, keys: Sequence[Any]) -> Callable[[GitTree], Outcome]:
    """Re-encrypt every secret of an environment to its current recipients, under new data
    keys, in one commit (needs a private key that decrypts them all)."""

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        target = state.environment_named(environment)
        found = [secret for key, component in sorted(state.secrets.items())
                 if key[0] == environment for secret in component.files.values()]
        if not found:
            return Outcome(None, f"{environment} has no secrets: nothing to do")
        changes: dict[str, bytes | None] = {
            secret.path: _sealed(secret.key, sops.decrypt_secret(secret, keys, environment),
                                 target.secret_recipients)
            for secret in found}
        after = checked(tree, changes, state.problems)
        fields = {trailers.OPERATION: "secret-rotate", trailers.ENVIRONMENT: environment,
                    trailers.RECIPIENTS: str(len(target.secret_recipients))}
        subject = f"secret rotate {environment}: {len(changes)} files"
        return Outcome(Write(commit_message(subject, fields), changes),
                       f"re-encrypted {len(changes)} secrets of {environment} to "
                       f"{len(target.secret_recipients)} recipients", after.problems)

    return operation


def secret_migrate(environment: str, keys: Sequence[Any]) -> Callable[[GitTree], Outcome]:
    """Split each old many-secret ``secrets.sops.yaml`` of an environment into one file per
    secret, encrypted to the environment's current recipients, in one commit (needs a
    private key that decrypts the old files)."""

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        legacy = {path: found for path, is_link in sorted(tree.entries()) if not is_link
                  and (found := legacy_secrets(path)) is not None and found[0] == environment}
        environment_file = environment_path(environment)
        if not any(path == environment_file for path, _ in tree.entries()):
            raise ReconcilerError(f"unknown environment {environment!r}")
        if not legacy:
            return Outcome(None, f"{environment} has no {LEGACY_SECRETS_FILE} to migrate: "
                                 "nothing to do")
        recipients = _secret_recipients(tree, environment_file)
        changes: dict[str, bytes | None] = {}
        for path, (_, project, component) in legacy.items():
            document = load_state_file(path, tree.read(path, MAX_FILE_BYTES)).data
            for key, value in sorted(sops.decrypt(document, keys, path, environment).items()):
                changes[secret_path(environment, project, component, key)] = _sealed(
                    key, value, recipients)
            changes[path] = None
        after = checked(tree, changes, state.problems)
        fields = {trailers.OPERATION: "secret-migrate", trailers.ENVIRONMENT: environment,
                    trailers.RECIPIENTS: str(len(recipients))}
        moved = len(changes) - len(legacy)
        subject = f"secret migrate {environment}: {moved} secrets, one file each"
        return Outcome(Write(commit_message(subject, fields), changes),
                       f"split {len(legacy)} {LEGACY_SECRETS_FILE} of {environment} into "
                       f"{moved} files under secrets/", after.problems)

    return operation


def _secret_recipients(tree: TreeReader, environment_file: str) -> tuple[str, ...]:
    """The recipients straight from environment.yaml: the state does not load while old
    secrets files are present (the state after the migration is validated in full)."""
    data = load_state_file(environment_file, tree.read(environment_file, MAX_FILE_BYTES)).data
    recipients = data.get("secretRecipients") if isinstance(data, Mapping) else None
    if not isinstance(recipients, list) or not recipients:
        raise ReconcilerError("no secretRecipients: add age public keys to the environment "
                              "first", environment_file)
    return tuple(str(r) for r in recipients)
