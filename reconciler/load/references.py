"""Reference checks across a loaded state: every name a file mentions exists, fits, and is
released where it must be. Every finding is reported; none stops the others."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from reconciler.model.kinds import (
    TASK_TYPES,
    Build,
    Component,
    Config,
    Connection,
    Environment,
    Pipeline,
    Project,
    Release,
    State,
)
from reconciler.model.names import (
    file_key,
    major,
    namespace_name,
    route_path,
    service_name,
    workload_name,
)

RENDERED_RESOURCES = frozenset({"cpu", "memory", "requests.cpu", "requests.memory",
                                "limits.memory"})
"""What every rendered container sets, so a ResourceQuota may limit it."""

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")

Report = Callable[[str, list[Any] | int, str], None]


class ReferenceChecker:
    """Reference checks across files; each finding goes to ``report``.

    ``broken`` holds (kind, path groups) of files that failed to parse or validate: they
    are not in ``state``, but a reference to them is not reported again.
    """

    def __init__(self, state: State, report: Report,
                 broken: frozenset[tuple[str, tuple[str, ...]]] = frozenset(),
                 notice: Report | None = None) -> None:
        self.state = state
        self.report = report
        self.broken = broken
        self.notice: Report = notice or (lambda path, where, message: None)
        """Warnings: what validate says without failing (relaxed defaults, missing probes)."""

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
        self._service_names()
        self._ingress_routes()
        for build in self.state.builds.values():
            self._build(build)
        for component_key, config in self.state.component_configs.items():
            self._component_config(component_key, config)
        for key, config in self.state.environment_configs.items():
            self._environment_folder(key, config.path)
            self._no_secret_in_config(key[1:], config)
            self._files(config, self.state.component_configs.get(key[1:]))
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
        self._quota(environment)

    def _quota(self, environment: Environment) -> None:
        """A quota on a resource makes the API server refuse every pod that does not set
        it: rendered containers set CPU and memory requests and a memory limit; anything
        else the quota names needs a default from the environment's limitRange."""
        limits = environment.limit_range or {}
        for key in environment.resource_quota or {}:
            kind, _, resource = key.rpartition(".")
            if resource not in ("cpu", "memory", "ephemeral-storage") or key in RENDERED_RESOURCES:
                continue
            field = "default" if kind == "limits" else "defaultRequest"
            if resource in limits.get(field, {}) or (
                    field == "defaultRequest" and resource in limits.get("default", {})):
                continue
            self.report(environment.path, ["resourceQuota", key],
                        f"resourceQuota {key} would refuse every pod: containers do not set "
                        f"it, so give limitRange.{field} a {resource}")

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
        self._workload_defaults(component)

    def _workload_defaults(self, component: Component) -> None:
        """What a component relaxes of the safe defaults, and what it leaves to them."""
        path = component.path
        for key, what in component.security.relaxations():
            self.notice(path, ["security", key], f"relaxes the restricted defaults: {what}")
        for index, writable in enumerate(component.security.writable_paths):
            if writable == "/tmp":
                self.report(path, ["security", "writablePaths", index],
                            "/tmp is always writable: leave it out")
        if component.type in TASK_TYPES:
            return
        if component.readiness is None:
            if component.endpoints:
                self.notice(path, 1, "has no readiness probe: it gets a TCP probe on port "
                            f"{component.endpoints[0].port}, ready as soon as the port accepts "
                            "connections (declare health.readiness for a real check)")
            else:
                self.notice(path, 1, "has no readiness probe and no endpoint: a rollout cannot "
                            "tell when a new pod is ready")
        elif component.readiness == component.liveness:
            self.notice(path, ["health", "liveness"], "liveness is the readiness endpoint: a "
                        "dependency that fails readiness restarts every pod; give liveness an "
                        "endpoint of its own")

    def _ingress_routes(self) -> None:
        """Environments sharing a cluster must not route the same host and path: the
        ingress controller would send one environment's traffic to the other."""
        state = self.state
        routes: dict[tuple[str, str, str], list[str]] = {}
        for release in state.releases.values():
            environment = state.environments.get(release.environment)
            component = state.components.get((release.project, release.component))
            if environment is None or component is None:
                continue
            for endpoint in component.endpoints:
                if endpoint.visibility != "public" or endpoint.type == "TCP":
                    continue
                line = state.line_suffix(*release.key[:3], release.major)
                route = route_path(release.project, workload_name(component.name, line),
                                   endpoint.name)
                for cluster in environment.clusters:
                    found = routes.setdefault((cluster, environment.domain or "", route), [])
                    if environment.name not in found:
                        found.append(environment.name)
        reported: set[tuple[str, str]] = set()
        for (cluster, host, route), environments in sorted(routes.items()):
            for name in sorted(environments):
                others = sorted(set(environments) - {name})
                if not others or (cluster, name) in reported:
                    continue
                reported.add((cluster, name))
                environment = state.environments[name]
                where = ["domain"] if environment.domain else 1
                shown = f"{host}{route}" if host else f"{route} (no host)"
                self.report(environment.path, where,
                            f"routes {shown} on cluster {cluster}, as environment "
                            f"{', '.join(others)} does there: give each environment of the "
                            "cluster its own `domain`")

    def _service_names(self) -> None:
        """Services of one project share a namespace: two endpoints of different components
        must not give the same name (``catalog`` + ``api-v2``, ``catalog-api`` + ``v2``)."""
        owners: dict[tuple[str, str], list[tuple[Component, int]]] = {}
        for component in self.state.components.values():
            for index, endpoint in enumerate(component.endpoints):
                name = service_name(component.name, endpoint.name)
                owners.setdefault((component.project, name), []).append((component, index))
        for (_, name), found in sorted(owners.items()):
            if len({component.name for component, _ in found}) < 2:
                continue
            for component, index in found:
                others = ", ".join(f"{c.ref} endpoint {c.endpoints[i].name!r}"
                                   for c, i in found if c is not component)
                self.report(component.path, ["endpoints", index, "name"],
                            f"Service {name!r} is also the Service of {others}: rename an "
                            "endpoint or a component")

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

    def _files(self, config: Config, underneath: Config | None = None) -> None:
        """Each file of a config is one ConfigMap key: two paths must not share one, in
        this file or against the component's config it is merged over (same path there
        is an override, not a clash)."""
        seen: dict[str, str] = {}
        for index, found in enumerate(config.files):
            where: list[Any] = ["files", index, "path"]
            key = file_key(found.path)
            if key in seen:
                clash = "is listed twice" if seen[key] == found.path else (
                    f"and {seen[key]!r} would both be stored as {key!r}: rename one")
                self.report(config.path, where, f"file {found.path!r} {clash}")
            seen.setdefault(key, found.path)
        if underneath is None:
            return
        overridden = {f.path for f in config.files}
        for found in underneath.files:
            key = file_key(found.path)
            if found.path in overridden or seen.get(key, found.path) == found.path:
                continue
            index = next(i for i, f in enumerate(config.files) if f.path == seen[key])
            self.report(config.path, ["files", index, "path"],
                        f"file {seen[key]!r} and {found.path!r} of {underneath.path} would "
                        f"both be stored as {key!r}: rename one")

    def _component_config(self, key: tuple[str, str], config: Config) -> None:
        if key not in self.state.components and not self._broken("Component", *key):
            self.report(config.path, 1, f"no component {key[0]}/{key[1]} for this config")
        for field in ("replicas", "resources"):
            if getattr(config, field) is not None:
                self.report(config.path, [field],
                            f"{field} may only be overridden in an environment's config")
        self._no_secret_in_config(key, config)
        self._files(config)

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
        majors = sorted({major(t.version) for t in component.tracks})
        if major(release.version) not in majors:
            self.report(release.path, ["version"], f"version {release.version} is not on a "
                        f"track of {component.ref} (tracks: "
                        f"{', '.join(t.version for t in component.tracks)})")
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
        else:
            track = component.track(build.track)
            assert track is not None
            if major(track.version) != release.major:
                self.report(release.path, ["version"], f"version {release.version} is not "
                            f"the major of build {build.commit[:12]}'s track {track.name!r} "
                            f"({track.version})")
        for connection in self._all_connections(component):
            self._connection_released(release, connection)
        self._required_configurables(release, component)

    def _connection_released(self, release: Release, connection: Connection) -> None:
        """A connection reaches the newest release of its major in the same environment."""
        if not connection.is_platform_service:
            return
        project, component, _ = connection.service.split("/")
        lines = self.state.lines(release.environment, project, component)
        if connection.version in lines:
            return
        if any(kind == "Release" and groups[:3] == (release.environment, project, component)
               for kind, groups in self.broken) or self._broken("Component", project, component):
            return
        if not lines:
            self.report(release.path, 1, f"connection {connection.name!r} needs "
                        f"{project}/{component}, which has no release in {release.environment}")
        else:
            runs = ", ".join(r.version for r in lines.values())
            self.report(release.path, 1, f"connection {connection.name!r} needs "
                        f"{project}/{component} {connection.version}, but {release.environment} "
                        f"runs {runs}")

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
