"""Read a state repo, from a work tree or a Git commit, into the model, and check it.

Loading never stops at the first problem: every file is parsed and schema-checked,
then references between files are checked, and all problems are raised together as
one ``InvalidState``. Both readers list the same paths and bytes, so a work tree and
the commit it was made from give identical results.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from reconciler.errors import InvalidState, Problem, ReconcilerError
from reconciler.load import schemas
from reconciler.model.kinds import (
    Build,
    Cluster,
    Component,
    Config,
    ConfigFile,
    Configurable,
    Connection,
    Endpoint,
    Environment,
    Group,
    Organization,
    Pipeline,
    Probe,
    Project,
    Release,
    Resources,
    SecretFile,
    Secrets,
    Stage,
    State,
    ThirdPartyService,
    Track,
)
from reconciler.model.names import major, namespace_name, service_name
from reconciler.model.paths import (
    ORGANIZATION_FILE,
    STATE_FOLDERS,
    TEMPLATES_FOLDER,
    classify,
    is_free_file,
    legacy_secrets,
)
from reconciler.yamlio import MAX_FILE_BYTES, Document, load_state_file

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")


class TreeReader(Protocol):
    """A snapshot of a state repo: a work tree or a Git commit."""

    @property
    def revision(self) -> str: ...

    def entries(self) -> Iterable[tuple[str, bool]]:
        """Every file as (posix path relative to the root, is a symbolic link)."""
        ...

    def read(self, path: str, limit: int) -> bytes:
        """The file's bytes, at most ``limit + 1`` of them."""
        ...


class WorkTree:
    """A state repo on disk; never follows a symbolic link out of it."""

    def __init__(self, root: Path, revision: str = "worktree") -> None:
        if not root.is_dir():
            raise ReconcilerError(f"state repo {root} is not a directory")
        self.root = root
        self._revision = revision

    @property
    def revision(self) -> str:
        return self._revision

    def entries(self) -> Iterable[tuple[str, bool]]:
        for folder, dirs, files in os.walk(self.root):
            relative = Path(folder).relative_to(self.root).as_posix()
            prefix = "" if relative == "." else relative + "/"
            if not prefix:
                dirs[:] = [d for d in dirs if d != ".git"]
            for name in sorted(dirs):
                if os.path.islink(os.path.join(folder, name)):
                    yield prefix + name, True
            for name in sorted(files):
                yield prefix + name, os.path.islink(os.path.join(folder, name))

    def read(self, path: str, limit: int) -> bytes:
        with open(self.root / path, "rb") as handle:
            return handle.read(limit + 1)


def load_state(reader: TreeReader) -> State:
    """The whole state at the reader's revision, or ``InvalidState`` listing every problem."""
    loader = _Loader(reader)
    return loader.load()


class _Loader:
    def __init__(self, reader: TreeReader) -> None:
        self.reader = reader
        self.problems: list[Problem] = []
        self.documents: dict[str, Document] = {}
        self.broken: set[tuple[str, tuple[str, ...]]] = set()

    def problem(self, path: str, where: list[Any] | int, message: str) -> None:
        if isinstance(where, int):
            line = where
        else:
            document = self.documents.get(path)
            line = document.line_of(where) if document else 0
        self.problems.append(Problem(path, line, message))

    def load(self) -> State:
        files: set[str] = set()
        templates: dict[str, str] = {}
        typed: list[tuple[str, str, tuple[str, ...]]] = []
        for path, is_link in self.reader.entries():
            if is_link:
                if path.startswith((*STATE_FOLDERS, TEMPLATES_FOLDER)):
                    self.problem(path, 0, "symbolic links are not allowed in a state repo")
                continue
            files.add(path)
            if path.startswith(TEMPLATES_FOLDER):
                text = self._read_text(path)
                if text is not None:
                    templates[path.removeprefix(TEMPLATES_FOLDER)] = text
                continue
            kind, groups = classify(path)
            if kind:
                typed.append((path, kind, groups))
            elif legacy_secrets(path):
                self.problem(path, 0, "several secrets in one SOPS file are no longer read (each "
                             "secret is its own secrets/<KEY>.sops.yaml, so setting one needs "
                             "only public keys): split it with `reconciler secret migrate --env "
                             f"{path.split('/')[1]}`, which needs a key that decrypts it")
            elif path.startswith(STATE_FOLDERS) and not is_free_file(path):
                self.problem(path, 0, "unexpected file: not part of the state repo layout")
        valid: list[tuple[str, str, tuple[str, ...]]] = []
        broken = self.broken
        for path, kind, groups in typed:
            if self._parse(path, kind) is None:
                broken.add((kind, groups))
            else:
                valid.append((path, kind, groups))
        if ("Organization", ()) in broken:
            raise InvalidState(self.problems)
        if not any(kind == "Organization" for _, kind, _ in valid):
            self.problem(ORGANIZATION_FILE, 0, "missing: every state repo needs one")
            raise InvalidState(self.problems)
        state = self._build(valid, frozenset(files), templates)
        # References are checked even when some files are broken, so one run reports
        # every problem; names whose own file is broken count as existing.
        _Checker(state, self.problem, frozenset(broken)).check()
        if self.problems:
            raise InvalidState(self.problems)
        return state

    def _read_text(self, path: str) -> str | None:
        content = self.reader.read(path, MAX_FILE_BYTES)
        if len(content) > MAX_FILE_BYTES:
            self.problem(path, 0, f"file is larger than {MAX_FILE_BYTES // 1024} KiB")
            return None
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            self.problem(path, 0, "file is not valid UTF-8")
            return None

    def _parse(self, path: str, kind: str) -> Document | None:
        try:
            document = load_state_file(path, self.reader.read(path, MAX_FILE_BYTES))
        except ReconcilerError as exc:
            self.problems.extend(exc.problems)
            return None
        self.documents[path] = document
        kind_problem = schemas.expected_kind_problem(document, kind)
        if kind_problem:
            self.problems.append(kind_problem)
            return None
        found = schemas.validate(document, kind)
        self.problems.extend(found)
        return None if found else document

    def _build(
        self, valid: list[tuple[str, str, tuple[str, ...]]], files: frozenset[str],
        templates: dict[str, str],
    ) -> State:
        parts: dict[str, dict[Any, Any]] = {
            name: {} for name in ("clusters", "pipelines", "environments", "projects",
                                  "components", "builds", "releases", "component_configs",
                                  "environment_configs", "secrets", "third_party")
        }
        organization: Organization | None = None
        for path, kind, groups in valid:
            data = self.documents[path].data
            if kind == "Organization":
                organization = _organization(data)
            elif kind == "Cluster":
                self._same_name(path, data["name"], groups[0], "file name")
                parts["clusters"][groups[0]] = _cluster(data, path)
            elif kind == "Pipeline":
                self._same_name(path, data["name"], groups[0], "file name")
                parts["pipelines"][groups[0]] = _pipeline(data, path)
            elif kind == "Environment":
                self._same_name(path, data["name"], groups[0], "folder name")
                parts["environments"][groups[0]] = _environment(data, path)
            elif kind == "Project":
                self._same_name(path, data["name"], groups[0], "folder name")
                parts["projects"][groups[0]] = _project(data, path)
            elif kind == "Component":
                self._same_name(path, data["name"], groups[1], "folder name")
                parts["components"][groups] = _component(groups[0], data, path)
            elif kind == "Config" and len(groups) == 2:
                parts["component_configs"][groups] = _config(data, path)
            elif kind == "Config":
                parts["environment_configs"][groups] = _config(data, path)
            elif kind == "Build":
                self._same_name(path, data["component"], f"{groups[0]}/{groups[1]}", "folder")
                self._same_name(path, data["commit"], groups[2], "file name", "commit")
                parts["builds"][groups] = _build(groups, data, path)
            elif kind == "Release":
                self._same_name(path, data["component"], f"{groups[1]}/{groups[2]}", "folder",
                                "component")
                parts["releases"][groups] = _release(groups[0], data, path)
            elif kind == "Secrets":
                secret = self._secret_file(path, groups[3], data)
                if secret is None:
                    self.broken.add((kind, groups))
                else:
                    parts["secrets"].setdefault(groups[:3], {})[secret.key] = secret
            elif kind == "ThirdPartyService":
                self._same_name(path, data["name"], groups[0], "file name")
                parts["third_party"][groups[0]] = _third_party(data, path)
        assert organization is not None
        parts["secrets"] = {key: Secrets(files) for key, files in parts["secrets"].items()}
        return State(organization=organization, revision=self.reader.revision, files=files,
                     templates=templates, **parts)

    def _secret_file(self, path: str, key: str, data: Mapping[str, Any]) -> SecretFile | None:
        """One secret per file, named by its key: replacing it then never touches another."""
        found = sorted(data["data"])
        if found != [key]:
            held = ", ".join(found) or "nothing"
            self.problem(path, ["data"], f"holds {held}: a secrets file holds exactly one "
                         f"secret, the one its name says ({key})")
            return None
        recipients = tuple(str(entry.get("recipient", "")) for entry in data["sops"].get("age") or []
                           if isinstance(entry, Mapping))
        return SecretFile(key, data["data"][key], recipients, path, data)

    def _same_name(self, path: str, inside: str, outside: str, what: str,
                   key: str = "name") -> None:
        if inside != outside:
            where = "component" if key == "component" else key
            self.problem(path, [where], f"{key} {inside!r} does not match the {what} {outside!r}")


def _organization(data: Mapping[str, Any]) -> Organization:
    groups = tuple(Group(g["name"], tuple(g["roles"]), tuple(g["members"]))
                   for g in data.get("groups", []))
    return Organization(data["name"], data["defaultPipeline"], groups)


def _cluster(data: Mapping[str, Any], path: str) -> Cluster:
    return Cluster(data["name"], data.get("context", data["name"]), dict(data.get("labels", {})),
                   path)


def _pipeline(data: Mapping[str, Any], path: str) -> Pipeline:
    stages = tuple(
        Stage(s["environment"], s.get("promotion", "manual"), s.get("requiresPullRequest", False),
              tuple(s.get("approvers", [])), s.get("soakTime"))
        for s in data["stages"]
    )
    return Pipeline(data["name"], stages, path)


def _environment(data: Mapping[str, Any], path: str) -> Environment:
    return Environment(data["name"], data.get("production", False), tuple(data["clusters"]),
                       tuple(data.get("secretRecipients", [])), path)


def _connections(data: Mapping[str, Any], path: str) -> tuple[Connection, ...]:
    return tuple(Connection(c["name"], c["service"], c["version"], dict(c["env"]), path, index)
                 for index, c in enumerate(data.get("connections", [])))


def _project(data: Mapping[str, Any], path: str) -> Project:
    return Project(data["name"], tuple(data.get("pipelines", [])), _connections(data, path), path)


def _resources(data: Mapping[str, Any] | None) -> Resources:
    data = data or {}
    return Resources(data.get("cpu"), data.get("memory"))


def _probe(data: Mapping[str, Any] | None) -> Probe | None:
    return Probe(data["path"], data["port"]) if data else None


def _component(project: str, data: Mapping[str, Any], path: str) -> Component:
    health = data.get("health", {})
    marketplace = data.get("marketplace", {})
    return Component(
        project=project,
        name=data["name"],
        type=data["type"],
        pipeline=data.get("pipeline"),
        source_repository=data["source"]["repository"],
        source_path=data["source"].get("path", ""),
        tracks=tuple(Track(t["version"], t.get("branch"), t.get("image"), t.get("autoDeploy", False))
                     for t in data["tracks"]),
        replicas=data.get("replicas", 1),
        resources=_resources(data.get("resources")),
        schedule=data.get("schedule"),
        endpoints=tuple(Endpoint(e["name"], e["port"], e["type"], e["visibility"], e.get("schema"))
                        for e in data.get("endpoints", [])),
        readiness=_probe(health.get("readiness")),
        liveness=_probe(health.get("liveness")),
        configurables=tuple(Configurable(c["name"], c.get("secret", False),
                                         c.get("required", False), c.get("default"))
                            for c in data.get("configurables", [])),
        connections=_connections(data, path),
        summary=marketplace.get("summary", ""),
        labels=tuple(marketplace.get("labels", [])),
        overview=marketplace.get("overview"),
        path=path,
    )


def _config(data: Mapping[str, Any], path: str) -> Config:
    resources = data.get("resources")
    return Config(dict(data.get("env", {})),
                  tuple(ConfigFile(f["path"], f["content"]) for f in data.get("files", [])),
                  data.get("replicas"), _resources(resources) if resources else None, path)


def _build(key: tuple[str, ...], data: Mapping[str, Any], path: str) -> Build:
    scan = data.get("scan")
    return Build(key[0], key[1], data["commit"], data["track"], data["image"], data["builtAt"],
                 scan["status"] if scan else None, path)


def _release(environment: str, data: Mapping[str, Any], path: str) -> Release:
    project, component = data["component"].split("/")
    return Release(environment, project, component, data["commit"], data["image"],
                   data["version"], data["releasedAt"], path)


def _third_party(data: Mapping[str, Any], path: str) -> ThirdPartyService:
    return ThirdPartyService(data["name"], data["version"], data["url"], data.get("summary", ""),
                             tuple(data.get("labels", [])), path)


Report = Callable[[str, list[Any] | int, str], None]


class _Checker:
    """Reference checks across files; each finding goes to ``report``.

    ``broken`` holds (kind, path groups) of files that failed to parse or validate: they
    are not in ``state``, but a reference to them is not reported again.
    """

    def __init__(self, state: State, report: Report,
                 broken: frozenset[tuple[str, tuple[str, ...]]] = frozenset()) -> None:
        self.state = state
        self.report = report
        self.broken = broken

    def _broken(self, kind: str, *key: str) -> bool:
        return (kind, key) in self.broken

    def check(self) -> None:
        self._organization()
        for pipeline in self.state.pipelines.values():
            self._pipeline(pipeline)
        for environment in self.state.environments.values():
            self._environment(environment)
        for project in self.state.projects.values():
            self._project(project)
        for component in self.state.components.values():
            self._component(component)
        for build in self.state.builds.values():
            self._build(build)
        for component_key, config in self.state.component_configs.items():
            self._component_config(component_key, config)
        for key, config in self.state.environment_configs.items():
            self._environment_folder(key, config.path)
            self._no_secret_in_config(key[1:], config)
        for key, secrets in self.state.secrets.items():
            for secret in secrets.files.values():
                self._environment_folder(key, secret.path)
        for release in self.state.releases.values():
            self._release(release)

    def _organization(self) -> None:
        organization = self.state.organization
        if (organization.default_pipeline not in self.state.pipelines
                and not self._broken("Pipeline", organization.default_pipeline)):
            self.report(organization.path, ["defaultPipeline"],
                        f"unknown pipeline {organization.default_pipeline!r}")
        for name, count in Counter(g.name for g in organization.groups).items():
            if count > 1:
                self.report(organization.path, ["groups"], f"group {name!r} is listed twice")

    def _pipeline(self, pipeline: Pipeline) -> None:
        groups = {g.name for g in self.state.organization.groups}
        seen: set[str] = set()
        for index, stage in enumerate(pipeline.stages):
            where: list[Any] = ["stages", index, "environment"]
            if (stage.environment not in self.state.environments
                    and not self._broken("Environment", stage.environment)):
                self.report(pipeline.path, where, f"unknown environment {stage.environment!r}")
            if stage.environment in seen:
                self.report(pipeline.path, where,
                            f"environment {stage.environment!r} appears more than once")
            seen.add(stage.environment)
            for approver in stage.approvers:
                if approver not in groups:
                    self.report(pipeline.path, ["stages", index, "approvers"],
                                f"unknown group {approver!r} (groups are in organization.yaml)")

    def _environment(self, environment: Environment) -> None:
        for index, cluster in enumerate(environment.clusters):
            if cluster not in self.state.clusters and not self._broken("Cluster", cluster):
                self.report(environment.path, ["clusters", index], f"unknown cluster {cluster!r}")

    def _project(self, project: Project) -> None:
        for index, pipeline in enumerate(project.pipelines):
            if pipeline not in self.state.pipelines and not self._broken("Pipeline", pipeline):
                self.report(project.path, ["pipelines", index], f"unknown pipeline {pipeline!r}")
        for connection in project.connections:
            self._connection(project.name, connection)

    def _component(self, component: Component) -> None:
        state = self.state
        path = component.path
        project_broken = self._broken("Project", component.project)
        if component.project not in state.projects and not project_broken:
            self.report(path, 1, f"project {component.project!r} has no project.yaml")
        allowed = state.project_pipelines(component.project)
        if component.pipeline and component.pipeline not in allowed and not project_broken:
            self.report(path, ["pipeline"], f"pipeline {component.pipeline!r} is not one of "
                        f"project {component.project}'s pipelines: {', '.join(allowed)}")
        self._unique(path, "tracks", [t.name for t in component.tracks], "track")
        self._unique(path, "endpoints", [e.name for e in component.endpoints], "endpoint")
        self._unique(path, "endpoints", [str(e.port) for e in component.endpoints], "port")
        self._unique(path, "configurables", [c.name for c in component.configurables],
                     "configurable")
        folder = path.rsplit("/", 1)[0]
        for index, endpoint in enumerate(component.endpoints):
            name = service_name(component.name, endpoint.name)
            if len(name) > 63 or not _DNS_1035.match(name):
                self.report(path, ["endpoints", index, "name"],
                            f"service name {name!r} must start with a letter and be at most "
                            "63 characters")
            if endpoint.schema and f"{folder}/{endpoint.schema}" not in state.files:
                self.report(path, ["endpoints", index, "schema"],
                            f"API contract {endpoint.schema!r} is not in {folder}/")
        if component.overview and f"{folder}/{component.overview}" not in state.files:
            self.report(path, ["marketplace", "overview"],
                        f"overview {component.overview!r} is not in {folder}/")
        for configurable in component.configurables:
            if configurable.secret and configurable.default is not None:
                index = component.configurables.index(configurable)
                self.report(path, ["configurables", index, "default"],
                            f"secret configurable {configurable.name} cannot have a default")
        for connection in component.connections:
            self._connection(component.project, connection)
        names = [v for c in self._all_connections(component) for v in c.env.values()]
        self._unique(path, "connections", names, "connection environment variable")

    def _unique(self, path: str, key: str, values: list[str], what: str) -> None:
        for value, count in Counter(values).items():
            if count > 1:
                self.report(path, [key], f"{what} {value!r} is listed more than once")

    def _all_connections(self, component: Component) -> tuple[Connection, ...]:
        project = self.state.projects.get(component.project)
        return (project.connections if project else ()) + component.connections

    def _connection(self, project: str, connection: Connection) -> None:
        where: list[Any] = ["connections", connection.index, "service"]
        if not connection.is_platform_service:
            service = self.state.third_party.get(connection.service)
            if service is None and self._broken("ThirdPartyService", connection.service):
                return
            if service is None:
                self.report(connection.path, where,
                            f"unknown service {connection.service!r}: not a third-party service "
                            "in marketplace/third-party/ (platform services are "
                            "<project>/<component>/<endpoint>)")
            elif service.version != connection.version:
                self.report(connection.path, ["connections", connection.index, "version"],
                            f"{connection.service} offers {service.version}, "
                            f"not {connection.version}")
            return
        target_project, target_component, endpoint_name = connection.service.split("/")
        target = self.state.components.get((target_project, target_component))
        if target is None and self._broken("Component", target_project, target_component):
            return
        if target is None:
            self.report(connection.path, where,
                        f"unknown component {target_project}/{target_component}")
            return
        endpoint = next((e for e in target.endpoints if e.name == endpoint_name), None)
        if endpoint is None:
            self.report(connection.path, where,
                        f"{target.ref} has no endpoint {endpoint_name!r}")
            return
        if endpoint.visibility == "project" and target_project != project:
            self.report(connection.path, where,
                        f"{connection.service} is visible only inside project {target_project}")
        if connection.version not in {major(t.version) for t in target.tracks}:
            self.report(connection.path, ["connections", connection.index, "version"],
                        f"{target.ref} has no {connection.version} track")

    def _build(self, build: Build) -> None:
        component = self.state.components.get((build.project, build.component))
        if component is None and self._broken("Component", build.project, build.component):
            return
        if component is None:
            self.report(build.path, ["component"],
                        f"unknown component {build.project}/{build.component}")
            return
        track = component.track(build.track)
        if track is None:
            names = ", ".join(t.name for t in component.tracks)
            self.report(build.path, ["track"],
                        f"{build.track!r} is not a track of {component.ref} (tracks: {names})")
        elif track.image and build.image.split("@")[0] != track.image:
            self.report(build.path, ["image"],
                        f"image is not from the track's repository {track.image}")

    def _component_config(self, key: tuple[str, str], config: Config) -> None:
        if key not in self.state.components and not self._broken("Component", *key):
            self.report(config.path, 1, f"no component {key[0]}/{key[1]} for this config")
        for field in ("replicas", "resources"):
            if getattr(config, field) is not None:
                self.report(config.path, [field],
                            f"{field} may only be overridden in an environment's config")
        self._no_secret_in_config(key, config)

    def _no_secret_in_config(self, key: tuple[str, ...], config: Config) -> None:
        component = self.state.components.get((key[0], key[1]))
        if component is None:
            return
        for configurable in component.configurables:
            if configurable.secret and configurable.name in config.env:
                self.report(config.path, ["env", configurable.name],
                            f"{configurable.name} is a secret: keep it encrypted in "
                            f"secrets/{configurable.name}.sops.yaml (reconciler secret set), "
                            "never in plain config")

    def _environment_folder(self, key: tuple[str, str, str], path: str) -> bool:
        environment, project, component = key
        if environment not in self.state.environments:
            if not self._broken("Environment", environment):
                self.report(path, 0, f"environment {environment!r} has no environment.yaml")
            return False
        if (project, component) not in self.state.components:
            if not self._broken("Component", project, component):
                self.report(path, 0, f"unknown component {project}/{component}")
            return False
        return True

    def _release(self, release: Release) -> None:
        state = self.state
        key = (release.environment, release.project, release.component)
        if not self._environment_folder(key, release.path):
            return
        component = state.components[(release.project, release.component)]
        pipeline_name = state.component_pipeline(component)
        pipeline = state.pipelines.get(pipeline_name)
        if (pipeline and release.environment not in pipeline.environments
                and not self._broken("Project", release.project)):
            self.report(release.path, 1, f"environment {release.environment!r} is not a stage "
                        f"of {component.ref}'s pipeline {pipeline_name!r}")
        namespace = namespace_name(release.project, release.environment)
        if len(namespace) > 63:
            self.report(release.path, 1, f"namespace {namespace!r} is longer than 63 characters")
        build = state.builds.get((release.project, release.component, release.commit))
        if build is None and self._broken("Build", release.project, release.component,
                                          release.commit):
            pass
        elif build is None:
            self.report(release.path, ["commit"],
                        f"no registered build of {component.ref} for commit {release.commit}")
        elif build.image != release.image:
            self.report(release.path, ["image"], f"digest differs from the registered build "
                        f"{build.path}: {build.image.split('@')[1]}")
        elif component.track(build.track) is None:
            self.report(release.path, ["commit"],
                        f"build {build.path} is on {build.track!r}, not a track of "
                        f"{component.ref}")
        for connection in self._all_connections(component):
            self._connection_released(release, connection)
        self._required_configurables(release, component)

    def _connection_released(self, release: Release, connection: Connection) -> None:
        if not connection.is_platform_service:
            return
        project, component, _ = connection.service.split("/")
        target = self.state.releases.get((release.environment, project, component))
        if target is None and (self._broken("Release", release.environment, project, component)
                               or self._broken("Component", project, component)):
            return
        if target is None:
            self.report(release.path, 1, f"connection {connection.name!r} needs "
                        f"{project}/{component}, which has no release in {release.environment}")
        elif major(target.version) != connection.version:
            self.report(release.path, 1, f"connection {connection.name!r} needs "
                        f"{project}/{component} {connection.version}, but {release.environment} "
                        f"runs {target.version}")

    def _required_configurables(self, release: Release, component: Component) -> None:
        key = (release.environment, release.project, release.component)
        if (self._broken("Config", *key) or self._broken("Config", *key[1:])
                or any(kind == "Secrets" and groups[:3] == key for kind, groups in self.broken)):
            return
        provided: set[str] = set()
        for config in (self.state.component_configs.get(key[1:]),
                       self.state.environment_configs.get(key)):
            if config:
                provided.update(config.env)
        secrets = self.state.secrets.get(key)
        secret_keys = set(secrets.encrypted) if secrets else set()
        missing = []
        for configurable in component.configurables:
            if not configurable.required or configurable.default is not None:
                continue
            if configurable.secret and configurable.name not in secret_keys:
                missing.append(f"{configurable.name} (secret)")
            elif not configurable.secret and configurable.name not in provided:
                missing.append(configurable.name)
        if missing:
            self.report(release.path, 1, f"{release.environment} lacks required configurables "
                        f"of {component.ref}: {', '.join(missing)}")


class Overlay:
    """A snapshot with some files replaced (bytes) or deleted (None): the state as a write
    would leave it, so the write can be validated in full before it is committed."""

    def __init__(self, base: TreeReader, changes: Mapping[str, bytes | None]) -> None:
        self.base = base
        self.changes = dict(changes)

    @property
    def revision(self) -> str:
        return self.base.revision

    def entries(self) -> Iterable[tuple[str, bool]]:
        for path, is_link in self.base.entries():
            if path not in self.changes:
                yield path, is_link
        for path, content in sorted(self.changes.items()):
            if content is not None:
                yield path, False

    def read(self, path: str, limit: int) -> bytes:
        if path in self.changes:
            content = self.changes[path]
            if content is None:
                raise FileNotFoundError(path)
            return content[: limit + 1]
        return self.base.read(path, limit)
