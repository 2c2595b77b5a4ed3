"""The writes of build-once-promote: build register, deploy, promote, rollback.

A promotion copies the digest released in the previous stage of the component's pipeline;
each is refused, with the reason, when the pipeline's rules say no.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Callable, Mapping

from reconciler.errors import InvalidState, ReconcilerError
from reconciler.git.store import GitTree, Write
from reconciler.load.verifications import Records, line_records
from reconciler.model import trailers
from reconciler.model.kinds import Build, Component, Pipeline, Release, Stage, State
from reconciler.model.names import major, major_order, split_ref
from reconciler.model.paths import build_path, pipeline_path, release_paths
from reconciler.model.verification import verdict
from reconciler.operations.common import (
    API_VERSION,
    Outcome,
    base_state,
    checked,
    commit_message,
    now_utc,
    parse_time,
    timestamp,
)
from reconciler.render.engine import release_ids
from reconciler.yamlio import MAX_FILE_BYTES, mapping_document


def _pipeline(state: State, component: Component) -> Pipeline:
    name = state.component_pipeline(component)
    found = state.pipelines.get(name)
    if found is None:  # only on a broken main: the pipeline's file does not load
        raise ReconcilerError(f"{component.ref}'s pipeline {name!r} does not load: fix "
                              f"{pipeline_path(name)} first")
    return found


def _release_document(component: Component, commit: str, image: str, version: str,
                      moment: datetime.datetime) -> bytes:
    return mapping_document({
        "apiVersion": API_VERSION, "kind": "Release", "component": component.ref,
        "commit": commit, "image": image, "version": version,
        "releasedAt": timestamp(moment)})


def _release_id(state: State, component: Component, environment: str, line: str) -> str:
    """The release id, when the state renders (on a broken main it may not: no id then)."""
    if state.problems:
        return ""
    return release_ids(state, environment).get((component.project, component.name, line), "")


def _release_trailers(state: State, component: Component, environment: str, build_commit: str,
                      image: str, version: str, from_environment: str = "") -> dict[str, str]:
    line = major(version)
    return {
        trailers.COMPONENT: component.ref,
        trailers.FROM_ENVIRONMENT: from_environment,
        trailers.TO_ENVIRONMENT: environment,
        trailers.IMAGE: image,
        trailers.SOURCE_COMMIT: build_commit,
        trailers.RELEASE: _release_id(state, component, environment, line),
        trailers.PIPELINE: state.component_pipeline(component),
        # The line, where it matters: while the environment runs several majors.
        trailers.VERSION: line if len(state.lines(environment, component.project,
                                                  component.name)) > 1 else "",
    }


def _line_changes(tree: GitTree, state: State, component: Component, environment: str,
                  line: str, document: bytes | None) -> dict[str, bytes | None]:
    """The file changes that set (or, with no ``document``, remove) the ``line`` release of a
    component in an environment: one ``release.yaml`` while one major runs there, one
    ``release-<major>.yaml`` per major while several do, so the other lines' files are
    renamed (content unchanged) when their number crosses one."""
    lines = state.lines(environment, component.project, component.name)
    after = sorted(set(lines) - {line} | ({line} if document is not None else set()),
                   key=major_order)
    paths = dict(zip(after, release_paths(environment, component.project, component.name,
                                          after), strict=True))
    changes: dict[str, bytes | None] = {}
    for found, release in lines.items():
        if paths.get(found) != release.path:
            changes[release.path] = None
    for found, path in paths.items():
        if found == line:
            changes[path] = document
        elif path != lines[found].path:
            changes[path] = tree.read(lines[found].path, MAX_FILE_BYTES)
    return changes


# --- build register ---

def build_register(ref: str, commit: str, image: str, track: str | None,
                   moment: datetime.datetime | None = None) -> Callable[[GitTree], Outcome]:
    """Record an immutable build; on an autoDeploy track whose pipeline starts with
    ``promotion: auto``, deploy it to the first stage in the same commit."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
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
            with_release = {**changes, **_line_changes(
                tree, state, component, first.environment, major(chosen.version),
                _release_document(component, commit, image, chosen.version, moment))}
            try:
                deployed = checked(tree, with_release, state.problems)
            except InvalidState as exc:
                notes.append(f"not deployed to {first.environment}: {exc.problems[0].message}")
            else:
                changes = with_release
        if deployed is None:
            after = checked(tree, changes, state.problems)
        else:
            after = deployed
            fields.update(_release_trailers(deployed, component, first.environment, commit,
                                            image, chosen.version))
            subject += f" and deploy to {first.environment}"
            notes.append(f"deployed to {first.environment} (autoDeploy)")
        fields = {trailers.OPERATION: "build-register", **fields}
        summary = "; ".join([f"registered build {commit[:12]} of {ref}", *notes])
        return Outcome(Write(commit_message(subject, fields), changes), summary, after.problems)

    return operation


# --- deploy, promote, rollback ---

def _newest_build(state: State, component: Component, version: str | None = None) -> Build:
    """The newest build of the default track, or of the first track of ``version``'s major."""
    track = component.tracks[0]
    if version is not None:
        found = next((t for t in component.tracks if major(t.version) == major(version)), None)
        if found is None:
            raise ReconcilerError(f"{component.ref} has no track of {major(version)} (tracks: "
                                  f"{', '.join(f'{t.name} {t.version}' for t in component.tracks)})")
        track = found
    builds = [b for (p, c, _), b in state.builds.items()
              if (p, c) == (component.project, component.name) and b.track == track.name]
    if not builds:
        which = "default track" if version is None else f"{major(version)} track"
        raise ReconcilerError(f"{component.ref} has no registered build on its {which} "
                              f"{track.name!r}: run build register first")
    return max(builds, key=lambda b: (b.built_at, b.commit))


def _release_write(tree: GitTree, state: State, component: Component, environment: str,
                   build_commit: str, image: str, version: str, moment: datetime.datetime,
                   operation: str, subject: str, from_environment: str = "",
                   extra: Mapping[str, str] | None = None) -> Outcome:
    line = major(version)
    current = state.lines(environment, component.project, component.name).get(line)
    if current is not None and current.image == image and current.commit == build_commit:
        return Outcome(None, f"{environment} already runs {component.ref} "
                             f"{build_commit[:12]}: nothing to do")
    changes = _line_changes(tree, state, component, environment, line,
                            _release_document(component, build_commit, image, version, moment))
    after = checked(tree, changes, state.problems)
    fields = {trailers.OPERATION: operation, **_release_trailers(
        after, component, environment, build_commit, image, version, from_environment),
        **(extra or {})}
    summary = f"{subject} ({version}, {image.split('@')[1][:19]})"
    return Outcome(Write(commit_message(subject, fields), changes), summary, after.problems)


def _version_of(component: Component, build: Build) -> str:
    track = component.track(build.track)
    if track is None:
        raise ReconcilerError(f"build {build.commit[:12]} is on {build.track!r}, which is no "
                              f"longer a track of {component.ref}")
    return track.version


def deploy(ref: str, commit: str | None = None,
           moment: datetime.datetime | None = None,
           version: str | None = None) -> Callable[[GitTree], Outcome]:
    """Deploy a build into the first environment of the component's pipeline, on the line of
    its track's major (beside the other majors running there)."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
        build = (_find_build(state, component, commit) if commit
                 else _newest_build(state, component, version))
        if version is not None and major(_version_of(component, build)) != major(version):
            raise ReconcilerError(f"build {build.commit[:12]} is on {build.track!r} "
                                  f"({_version_of(component, build)}), not {major(version)}")
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
            moment: datetime.datetime | None = None, verifications: Records | None = None,
            skip_verification: str | None = None,
            version: str | None = None) -> Callable[[GitTree], Outcome]:
    """Copy the previous stage's release into ``environment``, the pipeline's next stage.
    Into a stage with ``requiresVerification``, the release must be recorded Healthy on
    every cluster of the previous stage in ``verifications``, and ``soakTime`` counts from
    then; ``skip_verification`` (the reason) bypasses both and is recorded in a trailer."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
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
        _pull_request_rule(stage, environment, branch, "promotions")
        source = state.release_line(previous, component, version)
        if source is None:
            line = f" {major(version)}" if version else ""
            raise ReconcilerError(f"{ref} has no{line} release in {previous}, the stage before "
                                  f"{environment}: promote it there first")
        extra = _branch_trailer(ref, environment, "promote", branch)
        if stage.requires_verification and skip_verification:
            extra[trailers.VERIFICATION_SKIPPED] = skip_verification
        elif stage.requires_verification:
            _verified(state, component, stage, previous, source, verifications or {}, moment)
        elif stage.soak_time:
            ready = parse_time(source.released_at) + parse_duration(stage.soak_time)
            if moment < ready:
                raise ReconcilerError(
                    f"{ref} must soak in {previous} for {stage.soak_time} before {environment}:"
                    f" released there {source.released_at}, promotable from {timestamp(ready)}")
        return _release_write(tree, state, component, environment, source.commit, source.image,
                              source.version, moment, "promote",
                              f"promote {ref} to {environment}", from_environment=previous,
                              extra=extra)

    return operation


def _verified(state: State, component: Component, stage: Stage, previous: str,
              source: Release, verifications: Records, moment: datetime.datetime) -> None:
    """Refuse unless ``source`` is recorded Healthy on every cluster of ``previous`` (and,
    with a soak time, has been for that long on all of them)."""
    clusters = state.environment_named(previous).clusters
    line = state.line_suffix(*source.key[:3], source.major)
    found = verdict(line_records(verifications, previous, component.ref, line), clusters,
                    source.image)
    if not found.verified:
        raise ReconcilerError(
            f"{component.ref} is not verified in {previous}, which {stage.environment} "
            f"requires (Healthy on every cluster): {'; '.join(found.reasons)}; promote once "
            "it is, or use --skip-verification --reason TEXT in an emergency")
    if stage.soak_time and found.healthy_since is not None:
        ready = found.healthy_since + parse_duration(stage.soak_time)
        if moment < ready:
            raise ReconcilerError(
                f"{component.ref} must soak in {previous} for {stage.soak_time} before "
                f"{stage.environment}: {found.summary(moment)} of {stage.soak_time}, "
                f"promotable from {timestamp(ready)}")


def auto_promotions(state: State) -> list[tuple[str, str, str]]:
    """(component, environment, major) for each release line that a stage with ``promotion:
    auto`` (after the first) does not run yet while its previous stage does: what ``promote
    --auto`` tries, so a newer release in the previous stage supersedes an older one never
    promoted."""
    found = []
    for project, name in sorted(state.components):
        component = state.components[(project, name)]
        pipeline = state.pipelines.get(state.component_pipeline(component))
        if pipeline is None:
            continue
        for before, stage in itertools.pairwise(pipeline.stages):
            if stage.promotion != "auto":
                continue
            targets = state.lines(stage.environment, project, name)
            for line, source in state.lines(before.environment, project, name).items():
                current = targets.get(line)
                if current is None or (current.image, current.commit) != (source.image,
                                                                          source.commit):
                    found.append((component.ref, stage.environment, line))
    return found


def rollback(ref: str, environment: str, history: list[Release], to: str | None,
             branch: bool = False, moment: datetime.datetime | None = None,
             version: str | None = None) -> Callable[[GitTree], Outcome]:
    """Release again a build that ``history`` (newest first) shows ran in ``environment``
    on the same major line; into a stage that requires a pull request, only with
    ``branch``."""
    moment = moment or now_utc()

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
        stage = next((s for s in _pipeline(state, component).stages
                      if s.environment == environment), None)
        if stage is not None:
            _pull_request_rule(stage, environment, branch, "rollbacks")
        current = state.release_line(environment, component, version)
        if current is None:
            raise ReconcilerError(f"{ref} has no release in {environment} to roll back")
        earlier = [r for r in history if (r.commit, r.image) != (current.commit, current.image)
                   and r.major == current.major]
        if to:
            earlier = [r for r in earlier if r.commit.startswith(to)
                       or r.image.split("@")[1].removeprefix("sha256:").startswith(to)]
        if not earlier:
            wanted = f" matching {to!r}" if to else ""
            line = f" {current.major}" if version else ""
            raise ReconcilerError(f"no earlier{line} release of {ref} in "
                                  f"{environment}{wanted} in the history")
        target = earlier[0]
        return _release_write(tree, state, component, environment, target.commit, target.image,
                              target.version, moment, "rollback",
                              f"rollback {ref} in {environment} to {target.commit[:12]}",
                              extra={trailers.ROLLED_BACK_FROM: current.commit,
                                     **_branch_trailer(ref, environment, "rollback", branch)})

    return operation


def retire(ref: str, environment: str, version: str, branch: bool = False
           ) -> Callable[[GitTree], Outcome]:
    """Stop running the ``version`` major line of a component in ``environment`` (its
    other lines keep running; with none left, the component leaves the environment).
    Refused while a release there still connects to that major, naming each."""

    def operation(tree: GitTree) -> Outcome:
        state = base_state(tree)
        component = state.component_named(ref)
        state.environment_named(environment)
        line = major(version)
        stage = _pipeline(state, component).stage(environment)
        if stage is not None:
            _pull_request_rule(stage, environment, branch, "retirements")
        lines = state.lines(environment, component.project, component.name)
        if line not in lines:
            runs = ", ".join(lines) or "nothing"
            raise ReconcilerError(f"{ref} runs {runs} in {environment}, not {line}: nothing "
                                  "to retire")
        users = consumers(state, environment, component, line)
        if users:
            raise ReconcilerError(f"{ref} {line} still has consumers in {environment}: "
                                  f"{', '.join(users)}; move them to another major (or "
                                  "remove the connections) first")
        changes = _line_changes(tree, state, component, environment, line, None)
        after = checked(tree, changes, state.problems)
        retired = lines[line]
        fields = {trailers.OPERATION: "retire", trailers.COMPONENT: ref,
                  trailers.TO_ENVIRONMENT: environment, trailers.VERSION: line,
                  trailers.IMAGE: retired.image, trailers.SOURCE_COMMIT: retired.commit,
                  trailers.PIPELINE: state.component_pipeline(component),
                  **_branch_trailer(ref, environment, "retire", branch)}
        left = [r.version for r in after.lines(environment, component.project,
                                               component.name).values()]
        summary = (f"retired {ref} {retired.version} in {environment}"
                   + (f" ({', '.join(left)} keeps running)" if left else
                      f" ({ref} no longer runs there)"))
        return Outcome(Write(commit_message(f"retire {ref} {line} in {environment}", fields),
                             changes), summary, after.problems)

    return operation


def consumers(state: State, environment: str, component: Component, line: str) -> list[str]:
    """The releases in ``environment`` whose connections reach ``component``'s ``line``
    major there: ``project/component (connection NAME)``."""
    found = []
    for release in state.releases_in(environment):
        user = state.components.get((release.project, release.component))
        if user is None:
            continue
        project = state.projects.get(user.project)
        for connection in (project.connections if project else ()) + user.connections:
            if not connection.is_platform_service or connection.version != line:
                continue
            target_project, target, _ = connection.service.split("/")
            if (target_project, target) == (component.project, component.name):
                entry = f"{user.ref} (connection {connection.name!r})"
                if entry not in found:
                    found.append(entry)
    return found


_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> datetime.timedelta:
    return datetime.timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text)))


def promotion_branch(ref: str, environment: str, operation: str = "promote") -> str:
    """The branch a promotion (or rollback) pull request is pushed to."""
    project, component = split_ref(ref)
    return f"{operation}/{project}/{component}/{environment}"


def _pull_request_rule(stage: Stage, environment: str, branch: bool, what: str) -> None:
    if stage.requires_pull_request and not branch:
        raise ReconcilerError(f"{what} into {environment} need a pull request: run again with "
                              "--branch")


def _branch_trailer(ref: str, environment: str, operation: str, branch: bool) -> dict[str, str]:
    if not branch:
        return {}
    return {trailers.PULL_REQUEST_BRANCH: promotion_branch(ref, environment, operation)}
