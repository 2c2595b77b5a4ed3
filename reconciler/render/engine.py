"""Desired releases -> plain Kubernetes objects, through sandboxed Jinja2 templates.

Built-in templates can be overridden file by file by the state repo's ``templates/``.
Whatever a template produces, the renderer itself sets the standard labels and the
tool's annotations, refuses objects outside the project's namespace, validates each
object against the Kubernetes OpenAPI schema, and sorts the result, so the same state
always gives the same bytes. The state commit is not put on objects (it is recorded once
per cluster, in the inventory and status), so an unrelated commit rewrites nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import marshal
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.cache import Cache, code_fingerprint, key_of
from reconciler.errors import InvalidState, Problem
from reconciler.model.kinds import (
    KIND_ORDER,
    TASK_TYPES,
    Cluster,
    Component,
    Probe,
    Secrets,
    State,
)
from reconciler.model.names import (
    LABEL_PREFIX,
    MAJOR_LABEL,
    MANAGED_BY,
    file_key,
    namespace_name,
    service_name,
)
from reconciler.render import k8sschema
from reconciler.render.templates import TemplateFailure, Templates
from reconciler.resolve import DesiredRelease, resolve_environment, url_port
from reconciler.yamlio import (
    ManifestError,
    dump_documents,
    dump_manifests,
    join_documents,
    load_manifests,
)

MASK = "++++++++"
"""Stands in for every secret value unless secrets are revealed."""

DEFAULT_ID = 10001
"""The UID and GID a container runs as unless its component says otherwise."""
PRE_STOP_SECONDS = 5
"""How long a pod keeps serving after it is told to stop, so endpoints drain first."""
TERMINATION_GRACE_SECONDS = 30
NAME_LABEL = "kubernetes.io/metadata.name"
"""The namespace label only the API server sets: policies select namespaces by it."""

Decrypt = Callable[[Secrets], Mapping[str, str]]
Object = dict[str, Any]

_KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}


def sort_key(obj: Mapping[str, Any]) -> tuple[int, str, str, str]:
    kind = obj.get("kind", "")
    metadata = obj.get("metadata", {})
    return (_KIND_RANK.get(kind, len(KIND_ORDER)), kind, metadata.get("namespace", ""),
            metadata.get("name", ""))


@dataclass(frozen=True)
class Rendered:
    """One environment's objects, sorted, each with its YAML document, and what they were
    rendered from."""

    environment: str
    revision: str
    objects: tuple[Object, ...]
    documents: tuple[str, ...]
    """Each object's YAML document (empty if the render was asked for objects only)."""
    units_rendered: int = 0
    """Template folders (a release's or a namespace's) rendered by Jinja this time."""
    units_cached: int = 0
    """Template folders whose objects came from the render cache."""

    def manifests(self) -> str:
        """The objects as one YAML stream."""
        if len(self.documents) != len(self.objects):
            return dump_manifests(self.objects)
        return join_documents(self.documents)

    def pack(self) -> PackedRender:
        """This render as a daemon keeps it between passes: a tenth of its objects' memory."""
        memo: dict[str, str] = {}
        objects = [_share_strings(obj, memo) for obj in self.objects]
        return PackedRender(replace(self, objects=(), documents=()),
                            zlib.compress(marshal.dumps(objects), 1))


@dataclass(frozen=True)
class PackedRender:
    """A render's objects marshalled and compressed, equal strings stored once (so they are
    shared again once unpacked)."""

    header: Rendered
    """The render without its objects and documents."""
    packed: bytes

    def unpack(self) -> Rendered:
        return replace(self.header, objects=tuple(marshal.loads(zlib.decompress(self.packed))))


def _share_strings(value: Any, memo: dict[str, str]) -> Any:
    if isinstance(value, str):
        return memo.setdefault(value, value)
    if isinstance(value, dict):
        return {memo.setdefault(k, k) if isinstance(k, str) else k: _share_strings(v, memo)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_share_strings(item, memo) for item in value]
    return value


def render_environment(
    state: State,
    environment: str,
    *,
    project: str | None = None,
    component: str | None = None,
    cluster: str | None = None,
    decrypt: Decrypt | None = None,
    cache: Cache | None = None,
    documents: bool = True,
) -> Rendered:
    """Every object of one environment, or ``InvalidState`` listing every problem.

    ``cache`` keeps each release's objects by a hash of everything they are rendered from
    (its template context, the repo's templates, this installation's code), so the next
    render runs templates only for what changed; the caller saves it. Releases rendered
    with decrypted secrets are never cached. ``documents`` False: objects only, no YAML
    (what a daemon applies; it then keeps less in memory).
    """
    releases = resolve_environment(state, environment, project, component)
    target = _cluster(state, environment, cluster)
    renderer = _Renderer(state, target, decrypt, cache)
    objects: list[Object] = []
    for namespace_project in sorted({r.project for r in releases}):
        objects.extend(renderer.namespace(environment, namespace_project))
    for desired in releases:
        objects.extend(renderer.release(desired))
    renderer.check_unique(objects)
    if renderer.problems:
        raise InvalidState(renderer.problems)
    objects.sort(key=sort_key)
    texts = renderer.documents_of(objects) if documents else renderer.cache_objects()
    return Rendered(environment, state.revision, tuple(objects), tuple(texts),
                    renderer.units_rendered, renderer.units_cached)


def _cluster(state: State, environment: str, name: str | None) -> Cluster | None:
    if name is None:
        return None
    members = state.environments[environment].clusters
    if name not in members:
        raise InvalidState([Problem("", 0, f"cluster {name!r} is not part of environment "
                                    f"{environment} (clusters: {', '.join(members)})")])
    return state.clusters[name]


def release_ids(state: State, environment: str) -> dict[tuple[str, str, str], str]:
    """The release id of every release line in ``environment``, by (project, component,
    major)."""
    templates = Templates(state.templates)
    return {
        (desired.project, desired.component.name, desired.release.major): release_id(
            desired, templates.fingerprint(("component", desired.component.type)))
        for desired in resolve_environment(state, environment)
    }


def release_id(desired: DesiredRelease, template_fingerprint: str) -> str:
    """Content hash of everything that makes a running release: any change, a new id."""
    digest = hashlib.sha256(f"{desired.config_hash}:{template_fingerprint}".encode())
    return digest.hexdigest()[:16]


class _Renderer:
    def __init__(self, state: State, cluster: Cluster | None, decrypt: Decrypt | None,
                 cache: Cache | None) -> None:
        self.state = state
        self.cluster = cluster
        """The cluster rendered for; without one, the environment's first cluster's network
        settings apply."""
        self.decrypt = decrypt
        self.templates = Templates(state.templates)
        self.problems: list[Problem] = []
        self._namespaces: dict[str, list[str]] = {}
        self.cache = cache
        self.salt = key_of(code_fingerprint(), json.dumps(sorted(state.templates.items())))
        self.units_rendered = self.units_cached = 0
        self._cached_documents: dict[int, str] = {}
        """Documents of objects from the cache, by id() of the object (alive in the render)."""
        self._to_cache: list[tuple[str, list[Object]]] = []

    def cache_objects(self) -> list[str]:
        """Put newly rendered units into the cache without their documents."""
        if self.cache is not None:
            for key, unit in self._to_cache:
                self.cache.put(key, (unit, None))
        return []

    def documents_of(self, objects: list[Object]) -> list[str]:
        """Every object's YAML document; newly rendered units go into the cache."""
        cached = self._cached_documents
        missing = [obj for obj in objects if id(obj) not in cached]
        dumped = dict(zip(map(id, missing), dump_documents(missing), strict=True))
        if self.cache is not None:
            for key, unit in self._to_cache:
                self.cache.put(key, (unit, [dumped[id(obj)] for obj in unit]))
        return [cached[id(obj)] if id(obj) in cached else dumped[id(obj)] for obj in objects]

    def _unit_key(self, folder: str, context: Mapping[str, Any], namespace: str,
                  labels: Mapping[str, str], annotations: Mapping[str, str]) -> str | None:
        if self.cache is None or (self.decrypt is not None and context.get("secret")):
            return None  # decrypted values never leave memory
        try:
            # Version 2 has no back-references, so equal data in the same order always
            # encodes to the same bytes (a different order only misses the cache).
            encoded = marshal.dumps([folder, context, namespace, labels, annotations], 2)
        except ValueError:
            return None  # not plain data: not cached
        return key_of(self.salt, encoded)

    def _fingerprint(self, folders: tuple[str, ...]) -> str:
        """The templates' fingerprint, kept in the cache: finding what each template
        includes means parsing every one of them."""
        if self.cache is None:
            return self.templates.fingerprint(folders)
        key = key_of(self.salt, "fingerprint", *folders)
        found = self.cache.get(key)
        if not isinstance(found, str):
            found = self.templates.fingerprint(folders)
            self.cache.put(key, found)
        return found

    def namespace(self, environment: str, project: str) -> list[Object]:
        namespace = namespace_name(project, environment)
        labels = self._labels(environment, project, project)
        context = self._base_context(environment, project, namespace, labels)
        return self._render_folder("namespace", context, namespace, labels, {})

    def release(self, desired: DesiredRelease) -> list[Object]:
        component = desired.component
        folders = ("component", component.type)
        identity = release_id(desired, self._fingerprint(folders))
        environment = desired.environment.name
        line = desired.line
        workload = desired.workload
        labels = self._labels(environment, desired.project, component.name)
        labels["app.kubernetes.io/version"] = desired.release.version
        selector = {"app.kubernetes.io/name": component.name,
                    "app.kubernetes.io/part-of": desired.project}
        if line:
            labels[MAJOR_LABEL] = selector[MAJOR_LABEL] = line
        context = self._base_context(environment, desired.project, desired.namespace, labels)
        config_map = _named(workload + "-config", dict(desired.env))
        files = {file_key(f.path): f.content for f in desired.files}
        files_config_map = _named(workload + "-files", files)
        secret = self._secret(desired)
        security = component.security
        context.update(
            selector=selector,
            component={
                # Object names: a line's own while several majors run side by side.
                "name": workload, "type": component.type, "ref": component.ref,
                "line": line,
                "schedule": component.schedule,
                "concurrency_policy": component.concurrency_policy,
                "backoff_limit": component.backoff_limit,
                "active_deadline_seconds": component.active_deadline_seconds,
                "starting_deadline_seconds": component.starting_deadline_seconds,
                "endpoints": [
                    {"name": e.name, "port": e.port, "type": e.type, "visibility": e.visibility,
                     "service": service_name(component.name, e.name, line)}
                    for e in component.endpoints
                ],
            },
            release={"id": identity, "image": desired.release.image,
                     "version": desired.release.version, "commit": desired.release.commit},
            replicas=desired.replicas,
            config_map=config_map,
            files_config_map=files_config_map,
            secret=secret,
            pod_annotations={f"{LABEL_PREFIX}/release": identity},
            container=_container(desired, config_map, secret, files_config_map),
            volumes=_volumes(desired.component, files_config_map),
            service_account=workload,
            automount_token=security.service_account_token,
            pod_security_context={
                "runAsNonRoot": True,
                "runAsUser": security.run_as_user or DEFAULT_ID,
                "runAsGroup": security.run_as_group or DEFAULT_ID,
                "fsGroup": security.fs_group or DEFAULT_ID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            termination_grace_seconds=TERMINATION_GRACE_SECONDS,
            egress=self._egress(desired),
            environment_namespaces=self._environment_namespaces(environment),
            host=desired.environment.domain,
        )
        annotations = {
            f"{LABEL_PREFIX}/release": identity,
            f"{LABEL_PREFIX}/image": desired.release.image,
        }
        objects: list[Object] = []
        for folder in folders:
            objects.extend(self._render_folder(folder, context, desired.namespace, labels,
                                               annotations))
        return objects

    def _secret(self, desired: DesiredRelease) -> dict[str, Any] | None:
        secrets = desired.secrets
        if secrets is None or not secrets.encrypted:
            return None
        if self.decrypt is None:
            data = {key: MASK for key in secrets.keys}
        else:
            values = self.decrypt(secrets)
            data = {key: base64.b64encode(values[key].encode()).decode() for key in secrets.keys}
        name = f"{desired.workload}-secrets-{_short_hash(dict(secrets.encrypted))}"
        return {"name": name, "data": data}

    def _egress(self, desired: DesiredRelease) -> list[dict[str, Any]]:
        """NetworkPolicy egress rules: to each declared connection and nothing else (DNS is
        allowed for every pod by the namespace's own policy)."""
        project = self.state.projects.get(desired.project)
        rules: list[dict[str, Any]] = []
        for connection in (project.connections if project else ()) + desired.component.connections:
            if connection.is_platform_service:
                target_project, target, endpoint_name = connection.service.split("/")
                found = self.state.components.get((target_project, target))
                endpoint = next((e for e in found.endpoints if e.name == endpoint_name), None) \
                    if found else None
                if endpoint is None:
                    continue
                namespace = namespace_name(target_project, desired.environment.name)
                pods = {"app.kubernetes.io/name": target, "app.kubernetes.io/part-of": target_project}
                line = self.state.line_suffix(desired.environment.name, target_project, target,
                                              connection.version)
                if line:
                    pods[MAJOR_LABEL] = line
                rule: dict[str, Any] = {
                    "to": [{"namespaceSelector": {"matchLabels": {NAME_LABEL: namespace}},
                            "podSelector": {"matchLabels": pods}}],
                    "ports": [{"port": endpoint.port, "protocol": "TCP"}]}
            else:
                service = self.state.third_party.get(connection.service)
                if service is None:
                    continue
                rule = {"ports": [{"port": url_port(service.url), "protocol": "TCP"}]}
                if service.cidrs:
                    rule = {"to": [{"ipBlock": {"cidr": cidr}} for cidr in service.cidrs], **rule}
            if rule not in rules:
                rules.append(rule)
        return rules

    def _environment_namespaces(self, environment: str) -> list[str]:
        """The namespaces of every project released in ``environment``, by name."""
        if environment not in self._namespaces:
            self._namespaces[environment] = sorted({
                namespace_name(r.project, environment) for r in self.state.releases_in(environment)})
        return list(self._namespaces[environment])

    def _network(self, environment: str) -> dict[str, Any]:
        cluster = self.cluster
        if cluster is None:
            names = self.state.environments[environment].clusters
            cluster = next((self.state.clusters[n] for n in names if n in self.state.clusters),
                           None)
        if cluster is None:
            cluster = Cluster("", "", {}, "")
        return {"ingress_class": cluster.ingress_class,
                "ingress_namespace": cluster.ingress_namespace,
                "tls_secret": cluster.tls_secret,
                "gateway": ({"namespace": cluster.gateway[0], "name": cluster.gateway[1]}
                            if cluster.gateway else None),
                "dns_namespace": cluster.dns_namespace,
                "dns_pod_labels": dict(cluster.dns_pod_labels)}

    def _labels(self, environment: str, project: str, name: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/part-of": project,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            f"{LABEL_PREFIX}/environment": environment,
            f"{LABEL_PREFIX}/project": project,
        }

    def _base_context(self, environment: str, project: str, namespace: str,
                      labels: dict[str, str]) -> dict[str, Any]:
        env = self.state.environments[environment]
        cluster = ({"name": self.cluster.name, "labels": dict(self.cluster.labels)}
                   if self.cluster else None)
        return {
            "organization": self.state.organization.name,
            "environment": {"name": env.name, "production": env.production,
                            "domain": env.domain,
                            "limit_range": dict(env.limit_range) if env.limit_range else None,
                            "resource_quota": (dict(env.resource_quota) if env.resource_quota
                                               else None)},
            "cluster": cluster,
            "network": self._network(environment),
            "project": project,
            "namespace": namespace,
            "label_prefix": LABEL_PREFIX,
            "labels": labels,
        }

    def _render_folder(self, folder: str, context: Mapping[str, Any], namespace: str,
                       labels: Mapping[str, str], annotations: Mapping[str, str]) -> list[Object]:
        key = self._unit_key(folder, context, namespace, labels, annotations)
        hit = self.cache.get(key) if key is not None and self.cache is not None else None
        if key is not None and hit is not None:
            objects, documents = hit
            self.units_cached += 1
            if documents is not None:
                self._cached_documents.update(zip(map(id, objects), documents, strict=True))
            else:  # kept by a render without documents: kept again with them when dumped
                self._to_cache.append((key, objects))
            return list(objects)
        self.units_rendered += 1
        problems = len(self.problems)
        objects = self._render_templates(folder, context, namespace, labels, annotations)
        if key is not None and len(self.problems) == problems:
            self._to_cache.append((key, objects))
        return objects

    def _render_templates(self, folder: str, context: Mapping[str, Any], namespace: str,
                          labels: Mapping[str, str], annotations: Mapping[str, str],
                          ) -> list[Object]:
        objects: list[Object] = []
        for name in self.templates.names(folder):
            for obj in self._render_one(name, context):
                problem = _ownership_problem(obj, namespace)
                if problem:
                    self._report(name, 0, f"{_describe(obj)}: {problem}")
                    continue
                metadata = obj["metadata"]
                metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
                merged = {**(metadata.get("annotations") or {}), **annotations}
                if merged:
                    metadata["annotations"] = merged
                for message in k8sschema.problems(obj):
                    self._report(name, 0, f"{_describe(obj)} is not valid Kubernetes: {message}")
                objects.append(obj)
        return objects

    def _render_one(self, name: str, context: Mapping[str, Any]) -> list[Object]:
        try:
            text = self.templates.render(name, context)
        except TemplateFailure as exc:
            self.problems.append(Problem(exc.path, exc.line, exc.message))
            return []
        try:
            documents = load_manifests(text)
        except ManifestError as exc:
            self._report(name, 0, f"template output is not YAML: {_first_line(exc)}")
            return []
        objects = []
        for document in documents:
            if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
                self._report(name, 0, "template output must be Kubernetes objects "
                             "(mappings with metadata)")
                continue
            objects.append(document)
        return objects

    def _report(self, template: str, line: int, message: str) -> None:
        self.problems.append(Problem(self.templates.path_of(template), line, message))

    def check_unique(self, objects: list[Object]) -> None:
        seen: set[tuple[str, str, str, str]] = set()
        for obj in objects:
            key = (obj.get("apiVersion", ""), obj.get("kind", ""),
                   obj["metadata"].get("namespace", ""), obj["metadata"].get("name", ""))
            if key in seen:
                self.problems.append(Problem("", 0, f"{_describe(obj)} is rendered twice"))
            seen.add(key)


def _ownership_problem(obj: Object, namespace: str) -> str | None:
    metadata = obj["metadata"]
    if not isinstance(metadata.get("name"), str) or not metadata.get("name"):
        return "has no metadata.name"
    if obj.get("kind") == "Namespace":
        return None if metadata["name"] == namespace else (
            f"only namespace {namespace!r} may be rendered here")
    if metadata.get("namespace") != namespace:
        return f"must be in namespace {namespace!r}, not {metadata.get('namespace')!r}"
    return None


def _describe(obj: Object) -> str:
    metadata = obj.get("metadata") or {}
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{obj.get('kind', '?')} {where}{metadata.get('name', '?')}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _short_hash(content: object) -> str:
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:10]


def _named(prefix: str, data: dict[str, str]) -> dict[str, Any] | None:
    return {"name": f"{prefix}-{_short_hash(data)}", "data": data} if data else None


def _container(desired: DesiredRelease, config_map: Mapping[str, Any] | None,
               secret: Mapping[str, Any] | None,
               files_config_map: Mapping[str, Any] | None) -> dict[str, Any]:
    component = desired.component
    security = component.security
    container: dict[str, Any] = {"name": component.name, "image": desired.release.image}
    if component.endpoints:
        container["ports"] = [{"containerPort": e.port, "protocol": "TCP"}
                              for e in component.endpoints]
    env_from = []
    if config_map:
        env_from.append({"configMapRef": {"name": config_map["name"]}})
    if secret:
        env_from.append({"secretRef": {"name": secret["name"]}})
    if env_from:
        container["envFrom"] = env_from
    # The root filesystem is read-only: /tmp and each declared writable path are emptyDirs.
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    mounts.extend({"name": f"writable-{index}", "mountPath": path}
                  for index, path in enumerate(security.writable_paths))
    if files_config_map:
        mounts.extend(
            {"name": "files", "mountPath": f.path, "subPath": file_key(f.path),
             "readOnly": True}
            for f in desired.files
        )
    container["volumeMounts"] = mounts
    readiness = _probe(component.readiness)
    if readiness is None and component.type not in TASK_TYPES and component.endpoints:
        # No rollout is safe without one: ready once the first port accepts connections.
        readiness = {"tcpSocket": {"port": component.endpoints[0].port},
                     "periodSeconds": 5, "failureThreshold": 3}
    if readiness:
        container["readinessProbe"] = readiness
    liveness = _probe(component.liveness)
    if liveness:
        # Restarting is a last resort: liveness tolerates longer than readiness.
        container["livenessProbe"] = {**liveness, "periodSeconds": 10, "failureThreshold": 6}
    requests = {k: v for k, v in (("cpu", desired.resources.cpu),
                                  ("memory", desired.resources.memory)) if v}
    if requests:
        container["resources"] = {"requests": requests}
        if desired.resources.memory:
            container["resources"]["limits"] = {"memory": desired.resources.memory}
    if component.type not in TASK_TYPES:
        # Keep serving while endpoints are removed everywhere, then stop.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}}
    container["securityContext"] = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": security.read_only_root_filesystem,
        "capabilities": {"drop": ["ALL"], **({"add": list(security.add_capabilities)}
                                             if security.add_capabilities else {})},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return container


def _probe(probe: Probe | None) -> dict[str, Any] | None:
    if probe is None:
        return None
    return {"httpGet": {"path": probe.path, "port": probe.port},
            "periodSeconds": 10, "failureThreshold": 3}


def _volumes(component: Component,
             files_config_map: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    volumes.extend({"name": f"writable-{index}", "emptyDir": {}}
                   for index, _ in enumerate(component.security.writable_paths))
    if files_config_map:
        volumes.append({"name": "files", "configMap": {"name": files_config_map["name"]}})
    return volumes
