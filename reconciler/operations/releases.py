"""The writes of build-once-promote: build register, deploy, promote, rollback, config.

Each operation is a function of the state at the branch tip that either refuses with a
``ReconcilerError`` or returns one commit's worth of file changes with the trailers of
DESIGN §4. The resulting state is validated in full before anything is committed, and
``gitstore.transact`` re-runs the operation on a newer tip when the remote moved.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler import sops
from reconciler.errors import InvalidState, ReconcilerError
from reconciler.git.store import GitTree, Write
from reconciler.load.loader import load_state
from reconciler.load.readers import Overlay, TreeReader
from reconciler.model import trailers
from reconciler.model.kinds import Build, Component, Environment, Pipeline, Release, State
from reconciler.model.names import ENV_NAME
from reconciler.model.paths import (
    LEGACY_SECRETS_FILE,
    build_path,
    config_path,
    environment_path,
    legacy_secrets,
    release_path,
    secret_path,
)
from reconciler.render.engine import release_ids
from reconciler.yamlio import (
    MAX_FILE_BYTES,
    dump_manifests,
    edit_mapping,
    load_state_file,
    mapping_document,
)

API_VERSION = "reconciler/v1"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def commit_message(subject: str, fields: Mapping[str, str]) -> str:
    lines = [f"{key}: {value}" for key, value in fields.items() if value]
    return f"{subject}\n\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Outcome:
    """What an operation decided, for the command's output."""

    write: Write | None
    summary: str


def split_ref(ref: str) -> tuple[str, str]:
    project, _, component = ref.partition("/")
    if not project or not component or "/" in component:
        raise ReconcilerError(f"{ref!r} is not a component: use PROJECT/COMPONENT")
    return project, component


def _component(state: State, ref: str) -> Component:
    key = split_ref(ref)
    component = state.components.get(key)
    if component is None:
        raise ReconcilerError(f"unknown component {ref}")
    return component


def _pipeline(state: State, component: Component) -> Pipeline:
    return state.pipelines[state.component_pipeline(component)]


def _release_document(component: Component, commit: str, image: str, version: str,
                      moment: datetime.datetime) -> bytes:
    return mapping_document({
        "apiVersion": API_VERSION, "kind": "Release", "component": component.ref,
        "commit": commit, "image": image, "version": version,
        "releasedAt": timestamp(moment)})


def _checked(tree: TreeReader, changes: Mapping[str, bytes | None]) -> State:
    """The state after ``changes``; refuses (nothing written) if it would be invalid."""
    return load_state(Overlay(tree, changes))


def _release_trailers(state: State, component: Component, environment: str, build_commit: str,
                      image: str, from_environment: str = "") -> dict[str, str]:
    return {
        trailers.COMPONENT: component.ref,
        trailers.FROM_ENVIRONMENT: from_environment,
        trailers.TO_ENVIRONMENT: environment,
        trailers.IMAGE: image,
        trailers.SOURCE_COMMIT: build_commit,
        trailers.RELEASE: release_ids(state, environment).get((component.project, component.name), ""),
        trailers.PIPELINE: state.component_pipeline(component),
    }


# --- build register ---

def build_register(ref: str, commit: str, image: str, track: str | None,
                   moment: datetime.datetime | None = None) -> Callable[[GitTree], Outcome]:
    """Record an immutable build; on an autoDeploy track whose pipeline starts with
    ``promotion: auto``, deploy it to the first stage in the same commit."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        component = _component(state, ref)
        chosen = component.track(track) if track else component.tracks[0]
        if chosen is None:
            names = ", ".join(t.name for t in component.tracks)
            raise ReconcilerError(f"{track!r} is not a track of {ref} (tracks: {names})")
        path = build_path(component.project, component.name, commit)
        existing = state.builds.get((component.project, component.name, commit))
        if existing is not None and existing.image == image:
            return Outcome(None, f"build {commit[:12]} of {ref} is already registered with "
                                 "that image: nothing to do")
        changes: dict[str, bytes | None] = {path: mapping_document({
            "apiVersion": API_VERSION, "kind": "Build", "component": ref, "commit": commit,
            "track": chosen.name, "image": image, "builtAt": timestamp(moment)})}
        notes = []
        if existing is not None:
            notes.append(f"replaced the image of build {commit[:12]} (was "
                         f"{existing.image.split('@')[1][:19]}): repeatable builds keep the "
                         "newest")
        fields = {trailers.COMPONENT: ref, trailers.SOURCE_COMMIT: commit, trailers.IMAGE: image,
                    trailers.TRACK: chosen.name}
        first = _pipeline(state, component).stages[0]
        subject = f"build register {ref} {commit[:12]}"
        deployed: State | None = None
        if chosen.auto_deploy and first.promotion == "auto":
            with_release = {**changes, release_path(first.environment, component.project, component.name):
                            _release_document(component, commit, image, chosen.version, moment)}
            try:
                deployed = _checked(tree, with_release)
            except InvalidState as exc:
                notes.append(f"not deployed to {first.environment}: {exc.problems[0].message}")
            else:
                changes = with_release
        if deployed is None:
            _checked(tree, changes)
        else:
            fields.update(_release_trailers(deployed, component, first.environment, commit,
                                              image))
            subject += f" and deploy to {first.environment}"
            notes.append(f"deployed to {first.environment} (autoDeploy)")
        fields = {trailers.OPERATION: "build-register", **fields}
        summary = "; ".join([f"registered build {commit[:12]} of {ref}", *notes])
        return Outcome(Write(commit_message(subject, fields), changes), summary)

    return operation


# --- deploy, promote, rollback ---

def _newest_build(state: State, component: Component) -> Build:
    track = component.tracks[0]
    builds = [b for (p, c, _), b in state.builds.items()
              if (p, c) == (component.project, component.name) and b.track == track.name]
    if not builds:
        raise ReconcilerError(f"{component.ref} has no registered build on its default track "
                              f"{track.name!r}: run build register first")
    return max(builds, key=lambda b: (b.built_at, b.commit))


def _release_write(tree: GitTree, state: State, component: Component, environment: str,
                   build_commit: str, image: str, version: str, moment: datetime.datetime,
                   operation: str, subject: str, from_environment: str = "",
                   extra: Mapping[str, str] | None = None) -> Outcome:
    current = state.releases.get((environment, component.project, component.name))
    if current is not None and current.image == image and current.commit == build_commit:
        return Outcome(None, f"{environment} already runs {component.ref} "
                             f"{build_commit[:12]}: nothing to do")
    path = release_path(environment, component.project, component.name)
    changes: dict[str, bytes | None] = {
        path: _release_document(component, build_commit, image, version, moment)}
    after = _checked(tree, changes)
    fields = {trailers.OPERATION: operation, **_release_trailers(
        after, component, environment, build_commit, image, from_environment), **(extra or {})}
    summary = f"{subject} ({version}, {image.split('@')[1][:19]})"
    return Outcome(Write(commit_message(subject, fields), changes), summary)


def _version_of(component: Component, build: Build) -> str:
    track = component.track(build.track)
    if track is None:
        raise ReconcilerError(f"build {build.commit[:12]} is on {build.track!r}, which is no "
                              f"longer a track of {component.ref}")
    return track.version


def deploy(ref: str, commit: str | None = None,
           moment: datetime.datetime | None = None) -> Callable[[GitTree], Outcome]:
    """Deploy a build into the first environment of the component's pipeline."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        component = _component(state, ref)
        build = (_find_build(state, component, commit) if commit
                 else _newest_build(state, component))
        pipeline = _pipeline(state, component)
        environment = pipeline.stages[0].environment
        return _release_write(tree, state, component, environment, build.commit, build.image,
                              _version_of(component, build), moment, "deploy",
                              f"deploy {ref} to {environment}")

    return operation


def _find_build(state: State, component: Component, commit: str) -> Build:
    matches = [b for (p, c, sha), b in state.builds.items()
               if (p, c) == (component.project, component.name) and sha.startswith(commit)]
    if len(matches) != 1:
        what = "no registered build" if not matches else "several builds"
        raise ReconcilerError(f"{what} of {component.ref} for commit {commit}")
    return matches[0]


def promote(ref: str, environment: str, branch: bool,
            moment: datetime.datetime | None = None) -> Callable[[GitTree], Outcome]:
    """Copy the previous stage's release into ``environment``, the pipeline's next stage."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        component = _component(state, ref)
        pipeline = _pipeline(state, component)
        stages = pipeline.environments
        if environment not in state.environments:
            raise ReconcilerError(f"unknown environment {environment!r}")
        if environment not in stages:
            raise ReconcilerError(f"{environment} is not a stage of {ref}'s pipeline "
                                  f"{pipeline.name} ({' -> '.join(stages)})")
        index = stages.index(environment)
        if index == 0:
            raise ReconcilerError(f"{environment} is the first stage of {pipeline.name}: "
                                  f"use deploy, not promote")
        stage = pipeline.stages[index]
        previous = stages[index - 1]
        if stage.requires_pull_request and not branch:
            raise ReconcilerError(f"promotions into {environment} need a pull request: run "
                                  "again with --branch")
        source = state.releases.get((previous, component.project, component.name))
        if source is None:
            raise ReconcilerError(f"{ref} has no release in {previous}, the stage before "
                                  f"{environment}: promote it there first")
        if stage.soak_time:
            ready = parse_time(source.released_at) + parse_duration(stage.soak_time)
            if moment < ready:
                raise ReconcilerError(
                    f"{ref} must soak in {previous} for {stage.soak_time} before {environment}:"
                    f" released there {source.released_at}, promotable from {timestamp(ready)}")
        return _release_write(tree, state, component, environment, source.commit, source.image,
                              source.version, moment, "promote",
                              f"promote {ref} to {environment}", from_environment=previous)

    return operation


def rollback(ref: str, environment: str, history: list[Release], to: str | None,
             moment: datetime.datetime | None = None) -> Callable[[GitTree], Outcome]:
    """Release again a build that ``history`` (newest first) shows ran in ``environment``."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        component = _component(state, ref)
        current = state.releases.get((environment, component.project, component.name))
        if current is None:
            raise ReconcilerError(f"{ref} has no release in {environment} to roll back")
        earlier = [r for r in history if (r.commit, r.image) != (current.commit, current.image)]
        if to:
            earlier = [r for r in earlier if r.commit.startswith(to)
                       or r.image.split("@")[1].removeprefix("sha256:").startswith(to)]
        if not earlier:
            wanted = f" matching {to!r}" if to else ""
            raise ReconcilerError(f"no earlier release of {ref} in {environment}{wanted} in "
                                  "the history")
        target = earlier[0]
        return _release_write(tree, state, component, environment, target.commit, target.image,
                              target.version, moment, "rollback",
                              f"rollback {ref} in {environment} to {target.commit[:12]}",
                              extra={trailers.ROLLED_BACK_FROM: current.commit})

    return operation


_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> datetime.timedelta:
    return datetime.timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text)))


# --- config ---

_CONFIG_TEMPLATE = f"apiVersion: {API_VERSION}\nkind: Config\n"


def config_edit(ref: str, environment: str | None, key: str,
                value: str | None) -> Callable[[GitTree], Outcome]:
    """Set (``value``) or unset (None) one environment variable of a component's config."""

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        component = _component(state, ref)
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
        _checked(tree, changes)
        verb = "set" if value is not None else "unset"
        fields = {trailers.OPERATION: f"config-{verb}", trailers.COMPONENT: ref,
                    trailers.ENVIRONMENT: environment or "", trailers.KEY: key}
        subject = f"config {verb} {ref} {key}" + (f" in {environment}" if environment else "")
        return Outcome(Write(commit_message(subject, fields), changes), subject)

    return operation


def _env_of(content: bytes) -> dict[str, Any]:
    env = load_state_file("config.yaml", content).data.get("env") or {}
    return {k: str(v) for k, v in env.items()}


# --- codeowners ---

def codeowners_text(state: State) -> str:
    """CODEOWNERS: admins own everything; each stage's approvers own its environment folder."""
    groups = {g.name: g for g in state.organization.groups}
    admins = [m for g in state.organization.groups if "admin" in g.roles for m in g.members]
    lines = ["# Generated by `reconciler codeowners` from organization.yaml and pipelines/.",
             "# Do not edit by hand: change the groups or the pipelines' approvers instead.", ""]
    if admins:
        lines.append(f"* {' '.join(sorted(set(admins)))}")
    owners: dict[str, set[str]] = {}
    for pipeline in sorted(state.pipelines.values(), key=lambda p: p.name):
        for stage in pipeline.stages:
            for approver in stage.approvers:
                owners.setdefault(stage.environment, set()).update(groups[approver].members)
    for environment in sorted(owners):
        lines.append(f"/environments/{environment}/ {' '.join(sorted(owners[environment]))}")
    return "\n".join(lines) + "\n"


def codeowners() -> Callable[[GitTree], Outcome]:
    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        text = codeowners_text(state).encode()
        if "CODEOWNERS" in state.files and tree.read("CODEOWNERS", 1 << 20) == text:
            return Outcome(None, "CODEOWNERS is up to date: nothing to do")
        fields = {trailers.OPERATION: "codeowners"}
        return Outcome(Write(commit_message("codeowners: regenerate", fields),
                             {"CODEOWNERS": text}), "wrote CODEOWNERS")

    return operation


# --- secrets ---

def _environment(state: State, environment: str) -> Environment:
    found = state.environments.get(environment)
    if found is None:
        raise ReconcilerError(f"unknown environment {environment!r}")
    return found


def _sealed(key: str, value: str, recipients: Sequence[str]) -> bytes:
    return dump_manifests([sops.encrypt({key: value}, recipients)]).encode()


def secret_set(ref: str, environment: str, key: str, value: str) -> Callable[[GitTree], Outcome]:
    """Write or replace one secret's file, encrypted to the environment's public recipients:
    no private key is needed, because no other secret shares the file."""

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        component = _component(state, ref)
        target = _environment(state, environment)
        if not ENV_NAME.fullmatch(key):
            raise ReconcilerError(f"{key!r} is not a secret name: use an environment variable "
                                  "name ([A-Za-z_][A-Za-z0-9_]*)")
        if any(c.name == key and not c.secret for c in component.configurables):
            raise ReconcilerError(f"{key} is a plain configurable of {ref}: use reconciler "
                                  "config set, or declare it secret: true first")
        path = secret_path(environment, component.project, component.name, key)
        changes: dict[str, bytes | None] = {
            path: _sealed(key, value, target.secret_recipients)}
        _checked(tree, changes)
        return _secret_write("set", ref, environment, key, changes)

    return operation


def secret_unset(ref: str, environment: str, key: str) -> Callable[[GitTree], Outcome]:
    """Delete one secret's file."""

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        component = _component(state, ref)
        _environment(state, environment)
        found = state.secrets.get((environment, component.project, component.name))
        if found is None or key not in found.files:
            return Outcome(None, f"{key} is not a secret of {ref} in {environment}: "
                                 "nothing to do")
        changes: dict[str, bytes | None] = {found.files[key].path: None}
        _checked(tree, changes)
        return _secret_write("unset", ref, environment, key, changes)

    return operation


def _secret_write(verb: str, ref: str, environment: str, key: str,
                  changes: dict[str, bytes | None]) -> Outcome:
    fields = {trailers.OPERATION: f"secret-{verb}", trailers.COMPONENT: ref,
              trailers.ENVIRONMENT: environment, trailers.KEY: key}
    subject = f"secret {verb} {ref} {key} in {environment}"
    return Outcome(Write(commit_message(subject, fields), changes), subject)


def secret_rotate(environment: str, keys: Sequence[Any]) -> Callable[[GitTree], Outcome]:
    """Re-encrypt every secret of an environment to its current recipients, under new data
    keys, in one commit (needs a private key that decrypts them all)."""

    def operation(tree: GitTree) -> Outcome:
        state = load_state(tree)
        target = _environment(state, environment)
        found = [secret for key, component in sorted(state.secrets.items())
                 if key[0] == environment for secret in component.files.values()]
        if not found:
            return Outcome(None, f"{environment} has no secrets: nothing to do")
        changes: dict[str, bytes | None] = {
            secret.path: _sealed(secret.key, sops.decrypt_secret(secret, keys, environment),
                                 target.secret_recipients)
            for secret in found}
        _checked(tree, changes)
        fields = {trailers.OPERATION: "secret-rotate", trailers.ENVIRONMENT: environment,
                    trailers.RECIPIENTS: str(len(target.secret_recipients))}
        subject = f"secret rotate {environment}: {len(changes)} files"
        return Outcome(Write(commit_message(subject, fields), changes),
                       f"re-encrypted {len(changes)} secrets of {environment} to "
                       f"{len(target.secret_recipients)} recipients")

    return operation


def secret_migrate(environment: str, keys: Sequence[Any]) -> Callable[[GitTree], Outcome]:
    """Split each old many-secret ``secrets.sops.yaml`` of an environment into one file per
    secret, encrypted to the environment's current recipients, in one commit (needs a
    private key that decrypts the old files)."""

    def operation(tree: GitTree) -> Outcome:
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
        _checked(tree, changes)
        fields = {trailers.OPERATION: "secret-migrate", trailers.ENVIRONMENT: environment,
                    trailers.RECIPIENTS: str(len(recipients))}
        moved = len(changes) - len(legacy)
        subject = f"secret migrate {environment}: {moved} secrets, one file each"
        return Outcome(Write(commit_message(subject, fields), changes),
                       f"split {len(legacy)} {LEGACY_SECRETS_FILE} of {environment} into "
                       f"{moved} files under secrets/")

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
