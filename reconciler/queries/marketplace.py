"""The marketplace: what a team can connect to, read straight from the state repo.

Every endpoint of a component that has been released into its pipeline is one service
(``<component>-<endpoint>``), shown by API major line: ``v1`` is the newest ``v1.x``
released in any environment of the pipeline, so promoting a new minor updates its major's
entry. Third-party services (``marketplace/third-party/``) are listed beside them.
Project-visible services appear only to their own project (or to platform roles, with
``everything``). This module is the pure logic behind ``reconciler marketplace``: it
lists, filters, searches, describes a service (overview, API definition, the connection
snippet and the variables it injects) and exports the catalogue as Backstage entities.
Files (API definitions, overviews) are read through the state's reader, so a commit is
described exactly like a work tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.errors import ReconcilerError
from reconciler.load.readers import TreeReader
from reconciler.model.kinds import Component, Endpoint, Release, State, ThirdPartyService
from reconciler.model.names import major, major_order, service_name
from reconciler.resolve import CONNECTION_PARAMETERS, connection_parameters
from reconciler.yamlio import MAX_FILE_BYTES

ServiceType = Literal["internal", "third-party"]
INTERNAL: ServiceType = "internal"
THIRD_PARTY: ServiceType = "third-party"
SERVICE_TYPES = (INTERNAL, THIRD_PARTY)
VISIBILITIES = ("public", "organization", "project")
SEARCH_FIELDS = ("name", "label", "content", "all")
THIRD_PARTY_VISIBILITY = "organization"
"""Any project of the organisation may connect to a third-party service."""

BACKSTAGE_API_VERSION = "backstage.io/v1alpha1"
_BACKSTAGE_API_TYPES = {"REST": "openapi", "GraphQL": "graphql", "gRPC": "grpc",
                        "WS": "asyncapi", "TCP": "tcp"}
_BACKSTAGE_COMPONENT_TYPES = {"service": "service", "web-app": "website", "proxy": "service",
                              "scheduled-task": "job", "manual-task": "job"}
_TAG_INVALID = re.compile(r"[^a-z0-9:+#]+")


@dataclass(frozen=True)
class Line:
    """One API major of a service: its newest version and what runs where."""

    major: str
    version: str
    environments: Mapping[str, str] = field(default_factory=dict)
    """environment -> the version of this major released there, in pipeline order."""
    production: bool = False
    """Whether it runs in a production environment."""

    def as_dict(self) -> dict[str, Any]:
        return {"major": self.major, "version": self.version,
                "environments": dict(self.environments)}


@dataclass(frozen=True)
class Service:
    """One marketplace entry."""

    name: str
    """``<component>-<endpoint>``, or the third-party service's name."""
    ref: str
    """What a connection's ``service`` says: ``project/component/endpoint`` or the name."""
    type: ServiceType
    visibility: str
    protocol: str
    summary: str
    labels: tuple[str, ...]
    lines: tuple[Line, ...]
    component: Component | None = None
    endpoint: Endpoint | None = None
    third_party: ThirdPartyService | None = None

    @property
    def project(self) -> str | None:
        return self.component.project if self.component else None

    @property
    def folder(self) -> str:
        return self.component.path.rsplit("/", 1)[0] if self.component else ""

    @property
    def schema_path(self) -> str | None:
        """The API definition's path in the state repo."""
        if self.endpoint is None or not self.endpoint.schema:
            return None
        return f"{self.folder}/{self.endpoint.schema}"

    @property
    def overview_path(self) -> str | None:
        if self.component is None or not self.component.overview:
            return None
        return f"{self.folder}/{self.component.overview}"

    def line(self, version: str | None) -> Line:
        """The line of major ``version`` (``v1``, or ``v1.3``'s); without one, the newest."""
        if version is None:
            return self.lines[-1]
        wanted = major(version)
        for line in self.lines:
            if line.major == wanted:
                return line
        raise ReconcilerError(f"{self.name} has no {wanted} (it offers "
                              f"{', '.join(line.major for line in self.lines)})")

    def as_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "service": self.ref,
            "type": self.type,
            "visibility": self.visibility,
            "protocol": self.protocol,
            "versions": {line.major: line.version for line in self.lines},
            "labels": list(self.labels),
            "summary": self.summary,
        }


def services(state: State) -> list[Service]:
    """Every service of the organisation's marketplace, by name, regardless of visibility."""
    found = []
    for (_, _), component in sorted(state.components.items()):
        lines = _lines(state, component)
        if not lines:
            continue  # not yet released into its pipeline
        for endpoint in component.endpoints:
            found.append(Service(
                name=service_name(component.name, endpoint.name),
                ref=f"{component.ref}/{endpoint.name}",
                type=INTERNAL,
                visibility=endpoint.visibility,
                protocol=endpoint.type,
                summary=component.summary,
                labels=component.labels,
                lines=lines,
                component=component,
                endpoint=endpoint,
            ))
    for name, third in sorted(state.third_party.items()):
        found.append(Service(
            name=name, ref=name, type=THIRD_PARTY, visibility=THIRD_PARTY_VISIBILITY,
            protocol="", summary=third.summary, labels=third.labels,
            lines=(Line(major(third.version), third.version),), third_party=third))
    return sorted(found, key=lambda s: (s.name, s.ref))


def _lines(state: State, component: Component) -> tuple[Line, ...]:
    """Per major released in the component's pipeline: the newest version and where each
    version runs. No line at all until its first release."""
    pipeline = state.pipelines.get(state.component_pipeline(component))
    environments = pipeline.environments if pipeline else ()
    by_major: dict[str, list[Release]] = {}
    for environment in environments:
        for release in state.lines(environment, component.project, component.name).values():
            by_major.setdefault(release.major, []).append(release)
    lines = []
    for line_major in sorted(by_major, key=major_order):
        releases = by_major[line_major]
        newest = max(releases, key=lambda r: _version_order(r.version))
        lines.append(Line(
            major=line_major,
            version=newest.version,
            environments={r.environment: r.version for r in releases},
            production=any(_is_production(state, r.environment) for r in releases),
        ))
    return tuple(lines)


def _version_order(version: str) -> tuple[int, ...]:
    parts = version.removeprefix("v").split(".")
    return tuple(int(p) if p.isdigit() else -1 for p in parts)


def _is_production(state: State, environment: str) -> bool:
    found = state.environments.get(environment)
    return bool(found and found.production)


def is_visible(service: Service, project: str | None, everything: bool) -> bool:
    """Project-visible services only to their own project; everything to platform roles."""
    return everything or service.visibility != "project" or service.project == project


def catalogue(state: State, project: str | None = None, everything: bool = False
              ) -> list[Service]:
    """The services a member of ``project`` (or, with ``everything``, a platform role) sees."""
    if project is not None and project not in state.projects:
        raise ReconcilerError(f"unknown project {project!r}")
    return [s for s in services(state) if is_visible(s, project, everything)]


def filtered(found: Iterable[Service], service_type: str | None = None,
             visibility: str | None = None, label: str | None = None) -> list[Service]:
    """``list``'s filters: type (internal, third-party), visibility, a label (any case)."""
    return [s for s in found
            if (service_type is None or s.type == service_type)
            and (visibility is None or s.visibility == visibility)
            and (label is None or label.lower() in (lbl.lower() for lbl in s.labels))]


def search(state: State, reader: TreeReader, text: str, where: str = "all",
           project: str | None = None, everything: bool = False
           ) -> list[tuple[Service, tuple[str, ...]]]:
    """Services whose name, labels or content (summary, overview, API definition) contain
    ``text`` (any case), each with the fields that matched."""
    if where not in SEARCH_FIELDS:
        raise ReconcilerError(f"search in {where!r}: use one of {', '.join(SEARCH_FIELDS)}")
    needle = text.lower()
    found = []
    for service in catalogue(state, project, everything):
        fields: dict[str, list[str]] = {}
        if where in ("name", "all"):
            fields["name"] = [service.name, service.ref]
        if where in ("label", "all"):
            fields["label"] = list(service.labels)
        if where in ("content", "all"):
            fields["summary"] = [service.summary]
            fields["overview"] = [overview_text(reader, service) or ""]
            fields["definition"] = [definition_text(reader, service) or ""]
        matched = tuple(name for name, values in fields.items()
                        if any(needle in value.lower() for value in values))
        if matched:
            found.append((service, matched))
    return found


def find(state: State, name: str, project: str | None = None, everything: bool = False
         ) -> Service:
    """The service called ``name`` (``<component>-<endpoint>``, a third-party name, or
    ``project/component/endpoint``), or an error saying why it is not shown."""
    if project is not None and project not in state.projects:
        raise ReconcilerError(f"unknown project {project!r}")
    every = services(state)
    matches = [s for s in every if s.ref == name] or [s for s in every if s.name == name]
    if not matches:
        raise ReconcilerError(f"unknown service {name!r}: `reconciler marketplace list` "
                              "shows the services (a component's endpoint enters the "
                              "marketplace when it is first released)")
    visible = [s for s in matches if is_visible(s, project, everything)]
    if not visible:
        owner = matches[0].project
        raise ReconcilerError(f"service {name!r} is visible only to project {owner}: use "
                              f"--project {owner} (or --all, for platform roles)")
    if len(visible) > 1:
        raise ReconcilerError(f"service name {name!r} is ambiguous: "
                              f"{', '.join(s.ref for s in visible)}; name it as "
                              "PROJECT/COMPONENT/ENDPOINT")
    return visible[0]


def read_text(reader: TreeReader, path: str) -> str:
    """A file of the state repo as text (at most the loader's size limit)."""
    try:
        content = reader.read(path, MAX_FILE_BYTES)
    except (FileNotFoundError, KeyError) as exc:
        raise ReconcilerError(f"{path} is not in the state repo") from exc
    if len(content) > MAX_FILE_BYTES:
        raise ReconcilerError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return content.decode("utf-8", errors="replace")


def overview_text(reader: TreeReader, service: Service) -> str | None:
    path = service.overview_path
    return read_text(reader, path) if path else None


def definition_text(reader: TreeReader, service: Service) -> str | None:
    path = service.schema_path
    return read_text(reader, path) if path else None


def env_prefix(service: Service) -> str:
    """The suggested prefix of the variables a connection maps: ``CATALOG_API``."""
    return re.sub(r"[^A-Z0-9]+", "_", service.name.upper()).strip("_")


def connection_snippet(service: Service, line: Line) -> dict[str, Any]:
    """The ``connections:`` entry to paste into a component.yaml, with suggested names."""
    prefix = env_prefix(service)
    return {"connections": [{
        "name": service.name,
        "service": service.ref,
        "version": line.major,
        "env": {p: f"{prefix}_{p.upper()}" for p in CONNECTION_PARAMETERS},
    }]}


def injected(state: State, service: Service, line: Line) -> list[dict[str, Any]]:
    """The variables that snippet injects, per environment running the line (a third-party
    service's are the same everywhere)."""
    prefix = env_prefix(service)
    where = list(line.environments) or ["*"]
    return [{"environment": environment,
             "variables": {f"{prefix}_{p.upper()}": value for p, value in
                           connection_parameters(state, environment, service.ref,
                                                 line.major).items()}}
            for environment in where]


def documents(service: Service) -> list[dict[str, str]]:
    """Where to read more: the source, the definition, the overview, the declaring file."""
    found = []
    if service.component is not None:
        component = service.component
        source = component.source_repository
        if component.source_path:
            source += f" ({component.source_path})"
        found.append({"title": "source", "location": source})
        found.append({"title": "component", "location": component.path})
    if service.third_party is not None:
        found.append({"title": "service", "location": service.third_party.url})
        found.append({"title": "declaration", "location": service.third_party.path})
    if service.schema_path:
        found.append({"title": "API definition", "location": service.schema_path})
    if service.overview_path:
        found.append({"title": "overview", "location": service.overview_path})
    return found


def describe(state: State, reader: TreeReader, service: Service, version: str | None = None
             ) -> dict[str, Any]:
    """Everything ``show`` prints: summary, versions (one major with ``version``), overview,
    API definition, connection snippet, injected variables, related documents."""
    line = service.line(version)
    lines = [line] if version is not None else list(service.lines)
    definition = definition_text(reader, service)
    return {
        **service.as_row(),
        "versions": [entry.as_dict() for entry in lines],
        "overview": overview_text(reader, service),
        "definition": ({"path": service.schema_path, "text": definition}
                       if definition is not None else None),
        "connection": connection_snippet(service, line),
        "injects": injected(state, service, line),
        "documents": documents(service),
    }


# --- Backstage ---

def backstage_entities(state: State, reader: TreeReader, project: str | None = None,
                       everything: bool = False) -> list[dict[str, Any]]:
    """Backstage catalog entities: an ``API`` per service and major (with its definition)
    and a ``Component`` per component, providing and consuming those APIs. Internal entities
    live in the Backstage namespace of their project; third-party ones in ``default``. Owners
    are the groups named after the project (third-party: after the organisation)."""
    shown = catalogue(state, project, everything)
    apis: dict[tuple[str, str], str] = {}
    entities = []
    for service in shown:
        definition = definition_text(reader, service)
        for line in service.lines:
            entity = _api_entity(state, service, line, definition)
            metadata = entity["metadata"]
            apis[(service.ref, line.major)] = f"api:{metadata['namespace']}/{metadata['name']}"
            entities.append(entity)
    for (_, _), component in sorted(state.components.items()):
        entities.append(_component_entity(state, component, apis))
    return entities


def _api_entity(state: State, service: Service, line: Line, definition: str | None
                ) -> dict[str, Any]:
    namespace = service.project or "default"
    owner = service.project or state.organization.name
    if service.third_party is not None:
        api_type: str = THIRD_PARTY  # no definition format known: Backstage shows text
        lifecycle = "production"
    else:
        api_type = _BACKSTAGE_API_TYPES.get(service.protocol, service.protocol.lower())
        lifecycle = "production" if line.production else "experimental"
    annotations = {
        "reconciler.io/service": service.ref,
        "reconciler.io/version": line.version,
        "reconciler.io/visibility": service.visibility,
    }
    if service.schema_path:
        annotations["reconciler.io/definition-path"] = service.schema_path
    return {
        "apiVersion": BACKSTAGE_API_VERSION,
        "kind": "API",
        "metadata": {
            "name": f"{service.name}-{line.major}",
            "namespace": namespace,
            "title": f"{service.name} {line.major}",
            **({"description": service.summary} if service.summary else {}),
            **_tags(service.labels),
            "annotations": annotations,
            **_links(service),
        },
        "spec": {
            "type": api_type,
            "lifecycle": lifecycle,
            "owner": f"group:default/{owner}",
            "definition": definition or _placeholder(service, line),
        },
    }


def _placeholder(service: Service, line: Line) -> str:
    where = (service.third_party.url if service.third_party is not None
             else f"{service.protocol} on port {service.endpoint.port if service.endpoint else ''}")
    return (f"# {service.ref} {line.version}: no API definition in the state repo "
            f"({where}).\n# Add `schema:` to the endpoint to publish one.\n")


def _component_entity(state: State, component: Component,
                      apis: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    lines = _lines(state, component)
    provides = [apis[(f"{component.ref}/{e.name}", line.major)]
                for e in component.endpoints for line in lines
                if (f"{component.ref}/{e.name}", line.major) in apis]
    project = state.projects.get(component.project)
    connections = (project.connections if project else ()) + component.connections
    consumes = sorted({apis[(c.service, major(c.version))] for c in connections
                       if (c.service, major(c.version)) in apis})
    spec: dict[str, Any] = {
        "type": _BACKSTAGE_COMPONENT_TYPES.get(component.type, component.type),
        "lifecycle": "production" if any(line.production for line in lines) else "experimental",
        "owner": f"group:default/{component.project}",
    }
    if provides:
        spec["providesApis"] = provides
    if consumes:
        spec["consumesApis"] = consumes
    annotations = {"reconciler.io/component": component.ref}
    if lines:
        annotations["reconciler.io/versions"] = ", ".join(
            f"{line.major}={line.version}" for line in lines)
    return {
        "apiVersion": BACKSTAGE_API_VERSION,
        "kind": "Component",
        "metadata": {
            "name": component.name,
            "namespace": component.project,
            **({"description": component.summary} if component.summary else {}),
            **_tags(component.labels),
            "annotations": annotations,
            "links": [{"url": component.source_repository, "title": "source"
                       + (f" ({component.source_path})" if component.source_path else "")}],
        },
        "spec": spec,
    }


def _tags(labels: Iterable[str]) -> dict[str, list[str]]:
    """Labels as Backstage tags (lowercase letters, digits, ``:+#`` and single dashes)."""
    tags = []
    for label in labels:
        tag = _TAG_INVALID.sub("-", label.lower()).strip("-")[:63].strip("-")
        if tag and tag not in tags:
            tags.append(tag)
    return {"tags": tags} if tags else {}


def _links(service: Service) -> dict[str, list[dict[str, str]]]:
    if service.third_party is not None:
        return {"links": [{"url": service.third_party.url, "title": service.name}]}
    if service.component is not None:
        return {"links": [{"url": service.component.source_repository, "title": "source"}]}
    return {}
