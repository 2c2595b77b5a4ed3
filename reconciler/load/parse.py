"""Schema-valid YAML documents -> the model's frozen dataclasses, one function per kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    Security,
    Stage,
    ThirdPartyService,
    Track,
)


def organization(data: Mapping[str, Any]) -> Organization:
    groups = tuple(Group(g["name"], tuple(g["roles"]), tuple(g["members"]))
                   for g in data.get("groups", []))
    return Organization(data["name"], data["defaultPipeline"], groups)


def cluster(data: Mapping[str, Any], path: str) -> Cluster:
    ingress = data.get("ingress", {})
    dns = data.get("dns", {})
    return Cluster(data["name"], data.get("context", data["name"]), dict(data.get("labels", {})),
                   path, ingress_class=ingress.get("className"),
                   ingress_namespace=ingress.get("namespace", "ingress-nginx"),
                   tls_secret=ingress.get("tlsSecret"),
                   gateway=((ingress["gateway"]["namespace"], ingress["gateway"]["name"])
                            if "gateway" in ingress else None),
                   dns_namespace=dns.get("namespace", "kube-system"),
                   dns_pod_labels=dict(dns.get("podLabels", {"k8s-app": "kube-dns"})))


def pipeline(data: Mapping[str, Any], path: str) -> Pipeline:
    stages = tuple(
        Stage(s["environment"], s.get("promotion", "manual"), s.get("requiresPullRequest", False),
              tuple(s.get("approvers", [])), s.get("soakTime"),
              s.get("requiresVerification", False))
        for s in data["stages"]
    )
    return Pipeline(data["name"], stages, path)


def environment(data: Mapping[str, Any], path: str) -> Environment:
    return Environment(data["name"], data.get("production", False), tuple(data["clusters"]),
                       tuple(data.get("secretRecipients", [])), path, data.get("domain"),
                       data.get("limitRange"), data.get("resourceQuota"))


def _connections(data: Mapping[str, Any], path: str) -> tuple[Connection, ...]:
    return tuple(Connection(c["name"], c["service"], c["version"], dict(c["env"]), path, index)
                 for index, c in enumerate(data.get("connections", [])))


def project(data: Mapping[str, Any], path: str) -> Project:
    return Project(data["name"], tuple(data.get("pipelines", [])), _connections(data, path), path)


def _resources(data: Mapping[str, Any] | None) -> Resources:
    data = data or {}
    return Resources(data.get("cpu"), data.get("memory"))


def _probe(data: Mapping[str, Any] | None) -> Probe | None:
    return Probe(data["path"], data["port"]) if data else None


def component(project: str, data: Mapping[str, Any], path: str) -> Component:
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
        security=_security(data.get("security", {})),
        concurrency_policy=data.get("concurrencyPolicy", "Forbid"),
        backoff_limit=data.get("backoffLimit", 2),
        active_deadline_seconds=data.get("activeDeadlineSeconds"),
        starting_deadline_seconds=data.get("startingDeadlineSeconds", 300),
    )


def _security(data: Mapping[str, Any]) -> Security:
    return Security(
        run_as_user=data.get("runAsUser"),
        run_as_group=data.get("runAsGroup"),
        fs_group=data.get("fsGroup"),
        writable_paths=tuple(data.get("writablePaths", [])),
        read_only_root_filesystem=data.get("readOnlyRootFilesystem", True),
        add_capabilities=tuple(data.get("capabilities", {}).get("add", [])),
        service_account_token=data.get("serviceAccountToken", False),
    )


def config(data: Mapping[str, Any], path: str) -> Config:
    resources = data.get("resources")
    return Config(dict(data.get("env", {})),
                  tuple(ConfigFile(f["path"], f["content"]) for f in data.get("files", [])),
                  data.get("replicas"), _resources(resources) if resources else None, path)


def build_record(key: tuple[str, ...], data: Mapping[str, Any], path: str) -> Build:
    scan = data.get("scan")
    return Build(key[0], key[1], data["commit"], data["track"], data["image"], data["builtAt"],
                 scan["status"] if scan else None, path)


def release(environment: str, data: Mapping[str, Any], path: str) -> Release:
    project, component = data["component"].split("/")
    return Release(environment, project, component, data["commit"], data["image"],
                   data["version"], data["releasedAt"], path)


def third_party(data: Mapping[str, Any], path: str) -> ThirdPartyService:
    return ThirdPartyService(data["name"], data["version"], data["url"], data.get("summary", ""),
                             tuple(data.get("labels", [])), path, tuple(data.get("cidrs", [])))
