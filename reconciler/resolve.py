"""Per environment: releases plus merged configuration and connections.

The result, a ``DesiredRelease`` per component released in the environment, is all a
template needs: no file, Git or template knowledge remains past this point.
Configuration merges lowest first: configurable defaults, the component's config, the
environment's config, then the connections' parameters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from reconciler.errors import ReconcilerError
from reconciler.model.kinds import (
    Component,
    ConfigFile,
    Connection,
    Environment,
    Release,
    Resources,
    Scalar,
    Secrets,
    State,
)
from reconciler.model.names import namespace_name, service_name, workload_name

CLUSTER_DOMAIN = "svc.cluster.local"
DEFAULT_RESOURCES = Resources(cpu="100m", memory="128Mi")
"""Requests (and, for memory, the limit) of a container whose component sets none."""
_SCHEMES = {"REST": "http", "GraphQL": "http", "WS": "ws", "gRPC": "grpc", "TCP": "tcp"}


@dataclass(frozen=True)
class DesiredRelease:
    """One component as it should run in one environment."""

    environment: Environment
    namespace: str
    release: Release
    component: Component
    env: Mapping[str, str]
    files: tuple[ConfigFile, ...]
    secrets: Secrets | None
    replicas: int
    resources: Resources
    config_hash: str
    line: str = ""
    """The major this release's objects and addresses carry while the environment runs
    several majors of the component side by side (``v1``); empty while it runs one."""

    @property
    def project(self) -> str:
        return self.component.project

    @property
    def workload(self) -> str:
        """The name of its workload and of the objects that are its own."""
        return workload_name(self.component.name, self.line)


def resolve_environment(state: State, environment: str, project: str | None = None,
                        component: str | None = None) -> list[DesiredRelease]:
    """Every release of ``environment`` (optionally one project or component), resolved."""
    found = state.environments.get(environment)
    if found is None:
        known = ", ".join(sorted(state.environments)) or "none"
        raise ReconcilerError(f"unknown environment {environment!r} (environments: {known})")
    if project is not None and project not in state.projects:
        raise ReconcilerError(f"unknown project {project!r}")
    if component is not None:
        if project is None:
            raise ReconcilerError("--component needs --project")
        if (project, component) not in state.components:
            raise ReconcilerError(f"unknown component {project}/{component}")
    return [
        _resolve(state, found, release)
        for release in state.releases_in(environment)
        if (project is None or release.project == project)
        and (component is None or release.component == component)
    ]


def _resolve(state: State, environment: Environment, release: Release) -> DesiredRelease:
    component = state.components[(release.project, release.component)]
    key = (environment.name, release.project, release.component)
    env = {name: value.value for name, value in configuration(state, component,
                                                              environment.name).items()}
    files: dict[str, ConfigFile] = {}
    replicas = component.replicas
    resources = _merge_resources(DEFAULT_RESOURCES, component.resources)
    for config in (state.component_configs.get(key[1:]), state.environment_configs.get(key)):
        if config is None:
            continue
        files.update((f.path, f) for f in config.files)
        replicas = config.replicas if config.replicas is not None else replicas
        resources = _merge_resources(resources, config.resources)
    secrets = state.secrets.get(key)
    ordered_files = tuple(files[p] for p in sorted(files))
    config_hash = _hash({
        "image": release.image,
        "env": env,
        "files": [[f.path, f.content] for f in ordered_files],
        "secrets": dict(secrets.encrypted) if secrets else {},
    })
    return DesiredRelease(
        environment=environment,
        namespace=namespace_name(release.project, environment.name),
        release=release,
        component=component,
        env=dict(sorted(env.items())),
        files=ordered_files,
        secrets=secrets,
        replicas=replicas,
        resources=resources,
        config_hash=config_hash,
        line=state.line_suffix(*key, release.major),
    )


@dataclass(frozen=True)
class ConfigValue:
    """One environment variable as the pod gets it, and the layer it comes from."""

    value: str
    source: str


def configuration(state: State, component: Component, environment: str | None
                  ) -> dict[str, ConfigValue]:
    """The environment variables of ``component`` (in ``environment``, or those common to all
    environments), merged lowest first: configurable defaults, the component's config, the
    environment's config, then the connections' parameters. Secrets are not included."""
    key = (component.project, component.name)
    layers = [("component", state.component_configs.get(key))]
    if environment is not None:
        layers.append((environment, state.environment_configs.get((environment, *key))))
    found = {c.name: ConfigValue(_text(c.default), "default") for c in component.configurables
             if c.default is not None and not c.secret}
    for source, config in layers:
        for name, value in (config.env.items() if config else ()):
            found[name] = ConfigValue(_text(value), source)
    project = state.projects.get(component.project)
    for connection in (project.connections if project else ()) + component.connections:
        if environment is None:
            continue
        for name, value in _connection_env(state, environment, connection).items():
            found[name] = ConfigValue(value, f"connection {connection.name}")
    return dict(sorted(found.items()))


def _merge_resources(base: Resources, override: Resources | None) -> Resources:
    if override is None:
        return base
    return Resources(override.cpu or base.cpu, override.memory or base.memory)


def _connection_env(state: State, environment: str, connection: Connection) -> dict[str, str]:
    if connection.is_platform_service:
        project, component_name, endpoint_name = connection.service.split("/")
        target = state.components[(project, component_name)]
        endpoint = next(e for e in target.endpoints if e.name == endpoint_name)
        line = state.line_suffix(environment, project, component_name, connection.version)
        host = (f"{service_name(target.name, endpoint.name, line)}."
                f"{namespace_name(project, environment)}")
        host = f"{host}.{CLUSTER_DOMAIN}"
        port = str(endpoint.port)
        url = f"{_SCHEMES[endpoint.type]}://{host}:{port}"
    else:
        service = state.third_party[connection.service]
        url = service.url
        host = urlsplit(url).hostname or ""
        port = str(url_port(url))
    values = {"url": url, "host": host, "port": port}
    return {variable: values[parameter] for parameter, variable in connection.env.items()}


def url_port(url: str) -> int:
    """The port an http(s) URL connects to."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _text(value: Scalar | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _hash(content: object) -> str:
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


CONNECTION_PARAMETERS = ("url", "host", "port")
"""What a connection can map to environment variables."""


def connection_parameters(state: State, environment: str, service: str, version: str
                          ) -> dict[str, str]:
    """``url``, ``host`` and ``port`` that a connection to ``service`` (``project/component/
    endpoint`` or a third-party name) at major ``version`` gets in ``environment``: what the
    marketplace shows a consumer before it declares the connection."""
    probe = Connection("marketplace", service, version,
                       {p: p for p in CONNECTION_PARAMETERS}, "", 0)
    return _connection_env(state, environment, probe)
