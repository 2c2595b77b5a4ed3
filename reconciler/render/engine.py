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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import InvalidState, Problem
from reconciler.model.kinds import KIND_ORDER, Cluster, Secrets, State
from reconciler.model.names import LABEL_PREFIX, MANAGED_BY, file_key, namespace_name, service_name
from reconciler.render import k8sschema
from reconciler.render.templates import TemplateFailure, Templates
from reconciler.resolve import DesiredRelease, resolve_environment
from reconciler.yamlio import ManifestError, load_manifests

MASK = "++++++++"
"""Stands in for every secret value unless secrets are revealed."""

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
    """One environment's objects, sorted, and what they were rendered from."""

    environment: str
    revision: str
    objects: tuple[Object, ...]


def render_environment(
    state: State,
    environment: str,
    *,
    project: str | None = None,
    component: str | None = None,
    cluster: str | None = None,
    decrypt: Decrypt | None = None,
) -> Rendered:
    """Every object of one environment, or ``InvalidState`` listing every problem."""
    releases = resolve_environment(state, environment, project, component)
    target = _cluster(state, environment, cluster)
    renderer = _Renderer(state, target, decrypt)
    objects: list[Object] = []
    for namespace_project in sorted({r.project for r in releases}):
        objects.extend(renderer.namespace(environment, namespace_project))
    for desired in releases:
        objects.extend(renderer.release(desired))
    renderer.check_unique(objects)
    if renderer.problems:
        raise InvalidState(renderer.problems)
    return Rendered(environment, state.revision, tuple(sorted(objects, key=sort_key)))


def _cluster(state: State, environment: str, name: str | None) -> Cluster | None:
    if name is None:
        return None
    members = state.environments[environment].clusters
    if name not in members:
        raise InvalidState([Problem("", 0, f"cluster {name!r} is not part of environment "
                                    f"{environment} (clusters: {', '.join(members)})")])
    return state.clusters[name]


def release_ids(state: State, environment: str) -> dict[tuple[str, str], str]:
    """The release id of every component released in ``environment``."""
    templates = Templates(state.templates)
    return {
        (desired.project, desired.component.name): release_id(
            desired, templates.fingerprint(("component", desired.component.type)))
        for desired in resolve_environment(state, environment)
    }


def release_id(desired: DesiredRelease, template_fingerprint: str) -> str:
    """Content hash of everything that makes a running release: any change, a new id."""
    digest = hashlib.sha256(f"{desired.config_hash}:{template_fingerprint}".encode())
    return digest.hexdigest()[:16]


class _Renderer:
    def __init__(self, state: State, cluster: Cluster | None, decrypt: Decrypt | None) -> None:
        self.state = state
        self.cluster = cluster
        self.decrypt = decrypt
        self.templates = Templates(state.templates)
        self.problems: list[Problem] = []

    def namespace(self, environment: str, project: str) -> list[Object]:
        namespace = namespace_name(project, environment)
        labels = self._labels(environment, project, project)
        context = self._base_context(environment, project, namespace, labels)
        return self._render_folder("namespace", context, namespace, labels, {})

    def release(self, desired: DesiredRelease) -> list[Object]:
        component = desired.component
        folders = ("component", component.type)
        identity = release_id(desired, self.templates.fingerprint(folders))
        environment = desired.environment.name
        labels = self._labels(environment, desired.project, component.name)
        labels["app.kubernetes.io/version"] = desired.release.version
        selector = {"app.kubernetes.io/name": component.name,
                    "app.kubernetes.io/part-of": desired.project}
        context = self._base_context(environment, desired.project, desired.namespace, labels)
        config_map = _named(component.name + "-config", dict(desired.env))
        files = {file_key(f.path): f.content for f in desired.files}
        files_config_map = _named(component.name + "-files", files)
        secret = self._secret(desired)
        context.update(
            selector=selector,
            component={
                "name": component.name, "type": component.type, "ref": component.ref,
                "schedule": component.schedule,
                "endpoints": [
                    {"name": e.name, "port": e.port, "type": e.type, "visibility": e.visibility,
                     "service": service_name(component.name, e.name)}
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
            volumes=_volumes(files_config_map),
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
        name = f"{desired.component.name}-secrets-{_short_hash(dict(secrets.encrypted))}"
        return {"name": name, "data": data}

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
            "environment": {"name": env.name, "production": env.production},
            "cluster": cluster,
            "project": project,
            "namespace": namespace,
            "label_prefix": LABEL_PREFIX,
            "labels": labels,
        }

    def _render_folder(self, folder: str, context: Mapping[str, Any], namespace: str,
                       labels: Mapping[str, str], annotations: Mapping[str, str]) -> list[Object]:
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
    if files_config_map:
        container["volumeMounts"] = [
            {"name": "files", "mountPath": f.path, "subPath": file_key(f.path),
             "readOnly": True}
            for f in desired.files
        ]
    for probe, field in ((component.readiness, "readinessProbe"),
                         (component.liveness, "livenessProbe")):
        if probe:
            container[field] = {"httpGet": {"path": probe.path, "port": probe.port},
                                "periodSeconds": 10, "failureThreshold": 3}
    requests = {k: v for k, v in (("cpu", desired.resources.cpu),
                                  ("memory", desired.resources.memory)) if v}
    if requests:
        container["resources"] = {"requests": requests}
        if desired.resources.memory:
            container["resources"]["limits"] = {"memory": desired.resources.memory}
    return container


def _volumes(files_config_map: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not files_config_map:
        return []
    return [{"name": "files", "configMap": {"name": files_config_map["name"]}}]
