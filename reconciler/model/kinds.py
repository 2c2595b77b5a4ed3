"""Frozen dataclasses for every kind of state file, and the whole state they form.

Pure data: no I/O. ``path`` is the file each object came from, for error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from reconciler.errors import Problem, ReconcilerError
from reconciler.model.names import major, major_order, split_ref

ComponentType = Literal["service", "web-app", "scheduled-task", "manual-task", "proxy"]
Visibility = Literal["project", "organization", "public"]
Scalar = str | int | float | bool

KIND_ORDER = (
    "CustomResourceDefinition", "Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy",
    "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "PersistentVolumeClaim",
    "Service", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob",
    "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "HTTPRoute",
)
"""Apply order: what others depend on first. Kinds not listed follow, by name."""

TASK_TYPES = ("scheduled-task", "manual-task")



@dataclass(frozen=True)
class Group:
    name: str
    roles: tuple[str, ...]
    members: tuple[str, ...]


@dataclass(frozen=True)
class Organization:
    name: str
    default_pipeline: str
    groups: tuple[Group, ...]
    path: str = "organization.yaml"


@dataclass(frozen=True)
class Cluster:
    name: str
    context: str
    labels: Mapping[str, str]
    path: str
    ingress_class: str | None = None
    """``ingressClassName`` of every Ingress rendered for this cluster (none: the default)."""
    ingress_namespace: str = "ingress-nginx"
    """Where the ingress controller runs: the only namespace that reaches public endpoints."""
    tls_secret: str | None = None
    """A TLS Secret (in each namespace) that every Ingress host is served with."""
    gateway: tuple[str, str] | None = None
    """(namespace, name) of a Gateway API Gateway: HTTPRoutes attach to it instead of
    Ingresses being rendered."""
    dns_namespace: str = "kube-system"
    dns_pod_labels: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    """Where cluster DNS runs: every pod may send DNS queries there, and nowhere else."""


@dataclass(frozen=True)
class Stage:
    environment: str
    promotion: Literal["auto", "manual"]
    requires_pull_request: bool
    approvers: tuple[str, ...]
    soak_time: str | None
    requires_verification: bool = False


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]
    path: str

    @property
    def environments(self) -> tuple[str, ...]:
        return tuple(stage.environment for stage in self.stages)

    def stage(self, environment: str) -> Stage | None:
        return next((s for s in self.stages if s.environment == environment), None)


@dataclass(frozen=True)
class Environment:
    name: str
    production: bool
    clusters: tuple[str, ...]
    secret_recipients: tuple[str, ...]
    path: str
    domain: str | None = None
    """The host of every public HTTP endpoint of the environment (none: no host)."""
    limit_range: Mapping[str, Mapping[str, str]] | None = None
    """A container LimitRange (``default``, ``defaultRequest``, ``min``, ``max``) per namespace."""
    resource_quota: Mapping[str, str] | None = None
    """A ResourceQuota's ``hard`` limits per namespace."""


@dataclass(frozen=True)
class Connection:
    """A dependency: ``service`` is ``project/component/endpoint`` or a third-party name."""

    name: str
    service: str
    version: str
    env: Mapping[str, str]
    path: str
    index: int

    @property
    def is_platform_service(self) -> bool:
        return "/" in self.service


@dataclass(frozen=True)
class Project:
    name: str
    pipelines: tuple[str, ...]
    connections: tuple[Connection, ...]
    path: str


@dataclass(frozen=True)
class Track:
    version: str
    branch: str | None = None
    image: str | None = None
    auto_deploy: bool = False

    @property
    def name(self) -> str:
        return self.branch or self.image or ""


@dataclass(frozen=True)
class Endpoint:
    name: str
    port: int
    type: str
    visibility: Visibility
    schema: str | None = None


@dataclass(frozen=True)
class Probe:
    path: str
    port: int


@dataclass(frozen=True)
class Configurable:
    name: str
    secret: bool = False
    required: bool = False
    default: Scalar | None = None


@dataclass(frozen=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class Security:
    """What a component relaxes of the restricted defaults (PSS *restricted* still holds)."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    fs_group: int | None = None
    writable_paths: tuple[str, ...] = ()
    read_only_root_filesystem: bool = True
    add_capabilities: tuple[str, ...] = ()
    service_account_token: bool = False

    def relaxations(self) -> list[tuple[str, str]]:
        """(key, what it relaxes) for each setting that differs from the defaults."""
        found = []
        for key, value, what in (
                ("runAsUser", self.run_as_user, "runs as UID {} instead of 10001"),
                ("runAsGroup", self.run_as_group, "runs with GID {} instead of 10001"),
                ("fsGroup", self.fs_group, "volumes are owned by GID {} instead of 10001")):
            if value is not None:
                found.append((key, what.format(value)))
        if self.writable_paths:
            found.append(("writablePaths", "writable (emptyDir) at "
                          + ", ".join(self.writable_paths) + " besides /tmp"))
        if not self.read_only_root_filesystem:
            found.append(("readOnlyRootFilesystem", "the root filesystem is writable"))
        if self.add_capabilities:
            found.append(("capabilities", "adds the capabilities "
                          + ", ".join(self.add_capabilities)))
        if self.service_account_token:
            found.append(("serviceAccountToken", "mounts its ServiceAccount token (API access)"))
        return found


@dataclass(frozen=True)
class Component:
    project: str
    name: str
    type: ComponentType
    pipeline: str | None
    source_repository: str
    source_path: str
    tracks: tuple[Track, ...]
    replicas: int
    resources: Resources
    schedule: str | None
    endpoints: tuple[Endpoint, ...]
    readiness: Probe | None
    liveness: Probe | None
    configurables: tuple[Configurable, ...]
    connections: tuple[Connection, ...]
    summary: str
    labels: tuple[str, ...]
    overview: str | None
    path: str
    security: Security = Security()
    concurrency_policy: str = "Forbid"
    """A task's CronJob ``concurrencyPolicy``: Forbid (default), Allow or Replace."""
    backoff_limit: int = 2
    """Retries of a task's execution before it counts as failed."""
    active_deadline_seconds: int | None = None
    """How long a task's execution may run before it is stopped and counts as failed."""
    starting_deadline_seconds: int = 300
    """How late a scheduled run may still start (missed while the controller was down)."""

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.name}"

    def track(self, name: str) -> Track | None:
        return next((t for t in self.tracks if t.name == name), None)

    @property
    def majors(self) -> tuple[str, ...]:
        """The API majors of its tracks, in order (v1, v2)."""
        return tuple(sorted({major(t.version) for t in self.tracks}, key=major_order))


@dataclass(frozen=True)
class Build:
    project: str
    component: str
    commit: str
    track: str
    image: str
    built_at: str
    scan_status: str | None
    path: str


@dataclass(frozen=True)
class Release:
    environment: str
    project: str
    component: str
    commit: str
    image: str
    version: str
    released_at: str
    path: str

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.component}"

    @property
    def major(self) -> str:
        """Its API major line (``v1`` of ``v1.3``): an environment runs one release per line."""
        return major(self.version)

    @property
    def key(self) -> ReleaseKey:
        return (self.environment, self.project, self.component, self.major)


@dataclass(frozen=True)
class ConfigFile:
    path: str
    content: str


@dataclass(frozen=True)
class Config:
    env: Mapping[str, Scalar]
    files: tuple[ConfigFile, ...]
    replicas: int | None
    resources: Resources | None
    path: str


@dataclass(frozen=True)
class SecretFile:
    """One encrypted secret, a SOPS file of its own: the key is plain, the value ciphertext."""

    key: str
    ciphertext: str
    recipients: tuple[str, ...]
    path: str
    document: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Secrets:
    """One component's secrets in one environment: a SOPS file per key, so replacing one
    needs only the environment's public recipients."""

    files: Mapping[str, SecretFile]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.files))

    @property
    def encrypted(self) -> dict[str, str]:
        """Ciphertext per key: changes whenever any secret is written again."""
        return {key: self.files[key].ciphertext for key in self.keys}


@dataclass(frozen=True)
class ThirdPartyService:
    name: str
    version: str
    url: str
    summary: str
    labels: tuple[str, ...]
    path: str
    cidrs: tuple[str, ...] = ()
    """Where the service is, when known: egress to it is allowed only there."""


ComponentKey = tuple[str, str]
EnvComponentKey = tuple[str, str, str]
ReleaseKey = tuple[str, str, str, str]
"""(environment, project, component, API major): one release per major line."""


@dataclass(frozen=True)
class State:
    """A whole state repo at one revision."""

    organization: Organization
    revision: str
    clusters: Mapping[str, Cluster] = field(default_factory=dict)
    pipelines: Mapping[str, Pipeline] = field(default_factory=dict)
    environments: Mapping[str, Environment] = field(default_factory=dict)
    projects: Mapping[str, Project] = field(default_factory=dict)
    components: Mapping[ComponentKey, Component] = field(default_factory=dict)
    builds: Mapping[tuple[str, str, str], Build] = field(default_factory=dict)
    releases: Mapping[ReleaseKey, Release] = field(default_factory=dict)
    component_configs: Mapping[ComponentKey, Config] = field(default_factory=dict)
    environment_configs: Mapping[EnvComponentKey, Config] = field(default_factory=dict)
    secrets: Mapping[EnvComponentKey, Secrets] = field(default_factory=dict)
    third_party: Mapping[str, ThirdPartyService] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)
    files: frozenset[str] = frozenset()
    problems: tuple[Problem, ...] = ()
    """What is wrong with it, when it was loaded leniently (a broken main being repaired)."""
    notices: tuple[Problem, ...] = ()
    """Warnings that do not make it invalid: relaxed defaults, a missing readiness probe."""

    def project_pipelines(self, project: str) -> tuple[str, ...]:
        found = self.projects.get(project)
        if found and found.pipelines:
            return found.pipelines
        return (self.organization.default_pipeline,)

    def component_named(self, ref: str) -> Component:
        """The component ``PROJECT/COMPONENT``, or an error naming it."""
        component = self.components.get(split_ref(ref))
        if component is None:
            raise ReconcilerError(f"unknown component {ref}")
        return component

    def environment_named(self, name: str) -> Environment:
        """The environment ``name``, or an error naming it."""
        found = self.environments.get(name)
        if found is None:
            raise ReconcilerError(f"unknown environment {name!r}")
        return found

    def component_pipeline(self, component: Component) -> str:
        return component.pipeline or self.project_pipelines(component.project)[0]

    @cached_property
    def _releases_by_environment(self) -> dict[str, tuple[Release, ...]]:
        """Each environment's releases in release order, sorted once (the state is frozen)."""
        found: dict[str, list[Release]] = {}
        for key, release in sorted(self.releases.items(), key=_release_order):
            found.setdefault(key[0], []).append(release)
        return {name: tuple(releases) for name, releases in found.items()}

    @cached_property
    def _lines(self) -> dict[tuple[str, str, str], dict[str, Release]]:
        found: dict[tuple[str, str, str], list[Release]] = {}
        for (environment, project, component, _), release in self.releases.items():
            found.setdefault((environment, project, component), []).append(release)
        return {key: {r.major: r for r in sorted(releases, key=lambda r: major_order(r.major))}
                for key, releases in found.items()}

    def releases_in(self, environment: str) -> list[Release]:
        return list(self._releases_by_environment.get(environment, ()))

    def lines(self, environment: str, project: str, component: str) -> dict[str, Release]:
        """The releases of a component in an environment, by API major, in major order."""
        return dict(self._lines.get((environment, project, component), {}))

    def line_suffix(self, environment: str, project: str, component: str, api_major: str) -> str:
        """What the objects and addresses of a release line carry: the major while the
        environment runs several majors of the component side by side (``catalog-v1``,
        ``catalog-api-v1``), nothing while it runs one (the plain names)."""
        return api_major if len(self.lines(environment, project, component)) > 1 else ""

    def release_line(self, environment: str, component: Component,
                     version: str | None = None) -> Release | None:
        """The release of ``component`` in ``environment`` on the line of ``version`` (a
        major, ``v1``); without one, its only line. Several lines and no ``version`` is an
        error naming them, as is a ``version`` it does not run there."""
        lines = self.lines(environment, component.project, component.name)
        if version is not None:
            wanted = major(version)
            if wanted not in lines and lines:
                raise ReconcilerError(f"{component.ref} runs {', '.join(lines)} in "
                                      f"{environment}, not {wanted}")
            return lines.get(wanted)
        if len(lines) > 1:
            raise ReconcilerError(f"{component.ref} runs {', '.join(lines)} side by side in "
                                  f"{environment}: choose one with --version")
        return next(iter(lines.values()), None)


def _release_order(item: tuple[ReleaseKey, Release]) -> tuple[str, str, str, tuple[int, str]]:
    environment, project, component, line = item[0]
    return (environment, project, component, major_order(line))
