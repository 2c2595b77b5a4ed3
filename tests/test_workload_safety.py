"""Rendered workloads are safe and isolated by default (issue 15).

Every environment of the example and of a second, generated state repo is rendered for each
of its clusters, and every object is checked as a cluster operator would: each pod against
the Pod Security Standards' *restricted* profile, each container for requests and a memory
limit, each Deployment for a readiness probe, a PodDisruptionBudget, spreading and draining,
each namespace's NetworkPolicies for ingress *and* egress default deny, each Ingress for its
class, host and collisions. Components relax the defaults only explicitly, and validate says
what they relax. On the real control plane, a namespace that enforces `restricted` admits
every rendered workload, and the applied NetworkPolicies let no pod of one environment reach
another's.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient

from conftest import ROOT, LiveEnv, Run, edit, wait_for, write

Object = dict[str, Any]

# --- Rendering every environment of a state repo, for every cluster ---


def render(run: Run, repo: Path, *args: str) -> list[Object]:
    result = run("render", *args, repo_path=repo)
    assert result.exit_code == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def environments(repo: Path) -> dict[str, list[str]]:
    """environment -> its clusters, read from the files as a user would."""
    found = {}
    for path in sorted((repo / "environments").glob("*/environment.yaml")):
        data = yaml.safe_load(path.read_text())
        found[data["name"]] = data["clusters"]
    return found


def every_render(run: Run, repo: Path) -> Iterator[tuple[str, str, list[Object]]]:
    """(environment, cluster, objects) for every environment on each of its clusters."""
    for environment, clusters in environments(repo).items():
        for cluster in clusters:
            yield environment, cluster, render(run, repo, "--env", environment,
                                               "--cluster", cluster)


def generated_repo(tmp_path: Path) -> Path:
    """A second, independent state repo: bench/generate.py's, 36 components of every type,
    in three environments on one cluster."""
    spec = importlib.util.spec_from_file_location("generate", ROOT / "bench/generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path / "generated"
    module.generate(root, 36, per_project=12)
    return root


@pytest.fixture(params=["example", "generated"])
def any_repo(request: pytest.FixtureRequest, repo: Path, tmp_path: Path) -> Path:
    return repo if request.param == "example" else generated_repo(tmp_path)


def pod_specs(objects: list[Object]) -> Iterator[tuple[Object, Object]]:
    """(workload, pod spec) of every Deployment and CronJob."""
    for obj in objects:
        if obj["kind"] == "Deployment":
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def find(objects: list[Object], kind: str, name: str, namespace: str | None = None) -> Object:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
               and namespace in (None, o["metadata"].get("namespace"))]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def container_of(objects: list[Object], kind: str, name: str) -> Object:
    return next(spec for workload, spec in pod_specs(objects)
                if workload["kind"] == kind and workload["metadata"]["name"] == name
                )["containers"][0]


# --- The Pod Security Standards, restricted profile (v1.36), as the API server checks it ---

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """What of the restricted profile a pod spec breaks (empty: admitted)."""
    found = []
    context = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(host)
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    for sysctl in context.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    if context.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    pod_seccomp = (context.get("seccompProfile") or {}).get("type")
    containers = [*(pod.get("initContainers") or []), *pod["containers"]]
    for container in containers:
        name = container["name"]
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            found.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds {capabilities['add']}")
        non_root = security.get("runAsNonRoot", context.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if security.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (security.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{name}: hostPort")
        if security.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount")
    return found


def test_every_pod_meets_the_restricted_pod_security_standard(run: Run, any_repo: Path) -> None:
    checked = 0
    for environment, cluster, objects in every_render(run, any_repo):
        for workload, pod in pod_specs(objects):
            where = f"{environment}@{cluster} {workload['kind']} {workload['metadata']['name']}"
            assert restricted_violations(pod) == [], where
            checked += 1
    assert checked > 10


def test_namespaces_enforce_the_restricted_profile(run: Run, any_repo: Path) -> None:
    for _, _, objects in every_render(run, any_repo):
        for namespace in (o for o in objects if o["kind"] == "Namespace"):
            assert namespace["metadata"]["labels"][
                "pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_pod_without_the_defaults_would_be_refused() -> None:
    """The checker itself: the pod spec rendered before this issue breaks the profile."""
    before = {"containers": [{"name": "checkout", "image": "x@sha256:" + "a" * 64}]}
    assert len(restricted_violations(before)) == 4


def test_each_component_runs_as_its_own_service_account_without_a_token(run: Run,
                                                                      any_repo: Path) -> None:
    for _, _, objects in every_render(run, any_repo):
        accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                    for o in objects if o["kind"] == "ServiceAccount"}
        for workload, pod in pod_specs(objects):
            key = (workload["metadata"]["namespace"], pod["serviceAccountName"])
            assert pod["serviceAccountName"] == workload["metadata"]["name"] != "default"
            assert pod["automountServiceAccountToken"] is False
            assert accounts[key]["automountServiceAccountToken"] is False


def test_the_root_filesystem_is_read_only_and_tmp_is_writable(run: Run, any_repo: Path) -> None:
    for _, _, objects in every_render(run, any_repo):
        for workload, pod in pod_specs(objects):
            if workload["metadata"]["name"] == "gateway":
                continue  # relaxes the defaults in the example: see the test below
            container = pod["containers"][0]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
            assert volume["emptyDir"] == {} and not tmp.get("readOnly")
            assert pod["securityContext"]["runAsUser"] == 10001


GATEWAY = "projects/identity/components/gateway/component.yaml"


def test_a_component_relaxes_the_defaults_only_explicitly_and_validate_says_so(
        repo: Path, run: Run) -> None:
    text = (repo / GATEWAY).read_text()
    assert "runAsUser: 65532" in text and "writablePaths: [/var/cache/gateway]" in text
    edit(repo, GATEWAY, "  writablePaths:", "  readOnlyRootFilesystem: false\n"
         "  capabilities: {add: [NET_BIND_SERVICE]}\n  serviceAccountToken: true\n"
         "  writablePaths:")
    validated = run("validate")
    assert validated.exit_code == 0, validated.stderr
    warnings = [line for line in validated.stderr.splitlines() if GATEWAY in line]
    assert all(line.startswith("warning: ") for line in warnings)
    assert [line.split(": relaxes the restricted defaults: ")[1] for line in warnings] == [
        "runs as UID 65532 instead of 10001",
        "the root filesystem is writable",
        "adds the capabilities NET_BIND_SERVICE",
        "mounts its ServiceAccount token (API access)",
        "writable (emptyDir) at /var/cache/gateway besides /tmp",
    ]
    objects = render(run, repo, "--env", "production", "--project", "identity")
    gateway = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    assert gateway["securityContext"]["runAsUser"] == 65532
    assert gateway["automountServiceAccountToken"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"],
                                                            "add": ["NET_BIND_SERVICE"]}
    assert "/var/cache/gateway" in [m["mountPath"] for m in container["volumeMounts"]]
    assert restricted_violations(gateway) == [], "relaxations stay within the profile"
    # Nothing beyond the profile can be asked for: the namespace would refuse the pods.
    edit(repo, GATEWAY, "add: [NET_BIND_SERVICE]", "add: [SYS_ADMIN]")
    edit(repo, GATEWAY, "runAsUser: 65532", "runAsUser: 0")
    refused = run("validate")
    assert refused.exit_code == 1
    assert any("only NET_BIND_SERVICE" in line for line in refused.errors), refused.stderr
    assert any("runAsUser" in line and "non-root" in line for line in refused.errors)


# --- Zero downtime ---

SERVING = ("service", "web-app", "proxy")


def test_every_deployment_has_readiness_a_budget_spreading_and_drains(run: Run,
                                                                     any_repo: Path) -> None:
    checked = 0
    for _, _, objects in every_render(run, any_repo):
        budgets = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                   for o in objects if o["kind"] == "PodDisruptionBudget"}
        for deployment in (o for o in objects if o["kind"] == "Deployment"):
            spec = deployment["spec"]
            pod = spec["template"]["spec"]
            container = pod["containers"][0]
            readiness = container["readinessProbe"]
            assert readiness != container.get("livenessProbe")
            assert spec["minReadySeconds"] > 0
            assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
            spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
            assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
            for constraint in spread.values():
                assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
                assert constraint["labelSelector"]["matchLabels"] == spec["selector"][
                    "matchLabels"]
            sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            assert 0 < sleep < pod["terminationGracePeriodSeconds"]
            # One replica at a time; with one replica the budget never blocks a drain, and
            # scaling never creates or deletes it.
            budget = budgets[(deployment["metadata"]["namespace"], deployment["metadata"]["name"])]
            assert budget["spec"]["maxUnavailable"] == 1
            assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
            assert budget["spec"]["selector"] == spec["selector"]
            checked += 1
    assert checked > 10


def test_a_service_without_readiness_gets_a_tcp_probe_and_validate_warns(repo: Path,
                                                                         run: Run) -> None:
    catalog = "projects/shop/components/catalog/component.yaml"
    edit(repo, catalog, "health:\n  readiness: {path: /ready, port: 4000}\n", "")
    validated = run("validate")
    assert validated.exit_code == 0
    assert (f"warning: {catalog}:1: has no readiness probe: it gets a TCP probe on port 4000"
            in validated.stderr)
    objects = render(run, repo, "--env", "staging", "--project", "shop")
    assert container_of(objects, "Deployment", "catalog")["readinessProbe"]["tcpSocket"] == {
        "port": 4000}
    assert "livenessProbe" not in container_of(objects, "Deployment", "catalog")


def test_validate_warns_when_liveness_is_the_readiness_endpoint(repo: Path, run: Run) -> None:
    checkout = "projects/shop/components/checkout/component.yaml"
    assert "liveness" not in run("validate").stderr
    edit(repo, checkout, "liveness: {path: /livez", "liveness: {path: /healthz")
    assert "liveness is the readiness endpoint" in run("validate").stderr


# --- Resources ---


def test_every_container_requests_cpu_and_memory_and_has_a_memory_limit(run: Run,
                                                                       any_repo: Path) -> None:
    for _, _, objects in every_render(run, any_repo):
        for workload, pod in pod_specs(objects):
            for container in pod["containers"]:
                resources = container["resources"]
                assert set(resources["requests"]) == {"cpu", "memory"}, workload["metadata"]
                assert resources["limits"]["memory"] == resources["requests"]["memory"]


def test_default_resources_are_overridden_per_component_and_per_environment(
        repo: Path, run: Run) -> None:
    reindex = "projects/shop/components/reindex/component.yaml"
    assert "resources" not in (repo / reindex).read_text()
    objects = render(run, repo, "--env", "development", "--project", "shop")
    assert container_of(objects, "CronJob", "reindex")["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}
    assert container_of(objects, "CronJob", "invoice-run")["resources"]["requests"] == {
        "cpu": "500m", "memory": "512Mi"}, "the component's own"
    write(repo, "environments/production/shop/reindex/config.yaml",
          "kind: Config\nresources: {memory: 1Gi}\n")
    objects = render(run, repo, "--env", "production", "--project", "shop")
    assert container_of(objects, "CronJob", "reindex")["resources"] == {
        "requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


def test_limit_range_and_quota_come_from_the_environment_file(repo: Path, run: Run) -> None:
    objects = render(run, repo, "--env", "staging")
    for namespace in ("shop-staging", "identity-staging"):
        limits = find(objects, "LimitRange", "limits", namespace)["spec"]["limits"]
        assert limits == [{"type": "Container", "defaultRequest": {"cpu": "100m",
                                                                  "memory": "128Mi"},
                           "default": {"memory": "256Mi"}, "max": {"memory": "2Gi"}}]
        quota = find(objects, "ResourceQuota", "quota", namespace)
        assert quota["spec"]["hard"]["requests.cpu"] == "4"
    production = render(run, repo, "--env", "production")
    assert not [o for o in production if o["kind"] in ("LimitRange", "ResourceQuota")]
    edit(repo, "environments/production/environment.yaml", "domain:",
         "resourceQuota: {pods: lots}\ndomain:")
    refused = run("validate")
    assert refused.exit_code == 1 and "is not a Kubernetes quantity" in refused.stderr
    edit(repo, "environments/staging/environment.yaml", 'pods: "40"', 'pods: "40", limits.cpu: "8"')
    refused = run("validate")
    assert ("environments/staging/environment.yaml:10: resourceQuota limits.cpu would refuse "
            "every pod: containers do not set it, so give limitRange.default a cpu"
            in refused.stderr)
    edit(repo, "environments/staging/environment.yaml", "default: {memory: 256Mi}",
         "default: {memory: 256Mi, cpu: 500m}")
    assert "limits.cpu" not in run("validate").stderr


# --- Isolation ---


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector against a set of labels."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get(
            "values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


Pod = tuple[str, Mapping[str, str]]
"""A pod as policies see it: its namespace and its labels."""


class Policies:
    """NetworkPolicy semantics over a set of policies and namespace labels, to decide
    whether one pod may open a TCP connection to another's port. ``ipBlock`` peers count as
    matching every pod (some network plugins apply them to pod addresses too)."""

    def __init__(self, policies: list[Object], namespace_labels: Mapping[str, Mapping[str, str]]
                 ) -> None:
        self.policies = policies
        self.namespace_labels = namespace_labels

    def _peer(self, peer: Mapping[str, Any], policy_namespace: str, pod: Pod) -> bool:
        if "ipBlock" in peer:
            return True
        namespace, labels = pod
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"],
                                   self.namespace_labels.get(namespace, {}))
        else:
            in_namespace = namespace == policy_namespace
        return in_namespace and selects(peer.get("podSelector"), labels)

    def _allowed(self, direction: str, subject: Pod, other: Pod, port: int) -> bool:
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        isolating = [p for p in self.policies
                     if p["metadata"]["namespace"] == subject[0]
                     and selects(p["spec"]["podSelector"], subject[1])
                     and direction in p["spec"].get("policyTypes", ["Ingress"])]
        if not isolating:
            return True
        for policy in isolating:
            for rule in policy["spec"].get(key) or []:
                ports = rule.get("ports")
                if ports and not any(p.get("port") in (None, port)
                                     and p.get("protocol", "TCP") == "TCP" for p in ports):
                    continue
                peers = rule.get(peers_key)
                if not peers or any(self._peer(peer, policy["metadata"]["namespace"], other)
                                    for peer in peers):
                    return True
        return False

    def reaches(self, source: Pod, target: Pod, port: int) -> bool:
        return (self._allowed("Egress", source, target, port)
                and self._allowed("Ingress", target, source, port))


def rendered_pods(objects: list[Object]) -> dict[str, tuple[Pod, list[int]]]:
    """namespace/name -> (pod, its ports) of every workload."""
    found = {}
    for workload, pod in pod_specs(objects):
        template = (workload["spec"]["template"] if workload["kind"] == "Deployment"
                    else workload["spec"]["jobTemplate"]["spec"]["template"])
        namespace = workload["metadata"]["namespace"]
        ports = [p["containerPort"] for p in pod["containers"][0].get("ports") or []]
        found[f"{namespace}/{workload['metadata']['name']}"] = (
            (namespace, template["metadata"]["labels"]), ports)
    return found


def rendered_network(objects: list[Object]) -> Policies:
    """The policies as applied: the API server labels each namespace with its name."""
    labels = {o["metadata"]["name"]: {**o["metadata"]["labels"],
                                      "kubernetes.io/metadata.name": o["metadata"]["name"]}
              for o in objects if o["kind"] == "Namespace"}
    labels["ingress-nginx"] = {"kubernetes.io/metadata.name": "ingress-nginx"}
    labels["kube-system"] = {"kubernetes.io/metadata.name": "kube-system"}
    return Policies([o for o in objects if o["kind"] == "NetworkPolicy"], labels)


def test_every_namespace_denies_ingress_and_egress_by_default(run: Run, any_repo: Path) -> None:
    for environment, _, objects in every_render(run, any_repo):
        for namespace in (o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"):
            policies = [o for o in objects if o["kind"] == "NetworkPolicy"
                        and o["metadata"]["namespace"] == namespace]
            deny = [p for p in policies if p["spec"]["podSelector"] == {}
                    and not p["spec"].get("ingress") and not p["spec"].get("egress")]
            assert [set(p["spec"]["policyTypes"]) for p in deny] == [{"Ingress", "Egress"}]
            for policy in policies:
                for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
                    for peer in rule.get("from", []) + rule.get("to", []):
                        selector = peer.get("namespaceSelector")
                        if selector is None:
                            continue
                        keys = {*(selector.get("matchLabels") or {}),
                                *(e["key"] for e in selector.get("matchExpressions") or [])}
                        assert keys == {"kubernetes.io/metadata.name"}, (
                            f"{environment} {namespace}/{policy['metadata']['name']}: namespaces "
                            "are selected by name, never by a label a tenant can set")


def test_pods_reach_dns_and_their_connections_and_nothing_else(run: Run, repo: Path) -> None:
    objects = render(run, repo, "--env", "staging")
    network = rendered_network(objects)
    pods = rendered_pods(objects)
    checkout, _ = pods["shop-staging/checkout"]
    catalog, _ = pods["shop-staging/catalog"]
    storefront, _ = pods["shop-staging/storefront"]
    auth_v2, _ = pods["identity-staging/auth-v2"]
    auth_v3, _ = pods["identity-staging/auth-v3"]
    gateway, _ = pods["identity-staging/gateway"]
    dns: Pod = ("kube-system", {"k8s-app": "kube-dns"})
    assert network.reaches(checkout, dns, 53)
    assert network.reaches(checkout, catalog, 4000), "a declared connection"
    assert not network.reaches(storefront, catalog, 4000), "no connection declared"
    # auth runs v2 and v3 side by side: each connection reaches its own major's pods only.
    assert network.reaches(gateway, auth_v3, 9000), "organization endpoint, declared (v3)"
    assert not network.reaches(gateway, auth_v2, 9000), "gateway declares v3, not v2"
    assert network.reaches(checkout, auth_v2, 9000), "checkout declares v2"
    assert not network.reaches(checkout, auth_v3, 9000), "organization endpoint, not declared"
    assert not network.reaches(storefront, auth_v2, 9000), "no connection declared"
    outside: Pod = ("", {})
    assert not network.reaches(checkout, outside, 80), "an address outside the cluster"
    assert not network.reaches(checkout, ("default", {"component": "apiserver"}), 6443)
    # A third-party service is reached by its port (any address), or only at its CIDRs.
    policy = find(objects, "NetworkPolicy", "checkout")["spec"]["egress"]
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} in policy
    edit(repo, "marketplace/third-party/twilio.yaml", "summary:",
         "cidrs: [203.0.113.0/24]\nsummary:")
    policy = find(render(run, repo, "--env", "staging"), "NetworkPolicy", "checkout")
    assert {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
            "ports": [{"port": 443, "protocol": "TCP"}]} in policy["spec"]["egress"]


def test_public_endpoints_are_reached_only_from_the_ingress_controller(repo: Path,
                                                                      run: Run) -> None:
    objects = render(run, repo, "--env", "staging")
    network = rendered_network(objects)
    pods = rendered_pods(objects)
    storefront, _ = pods["shop-staging/storefront"]
    controller: Pod = ("ingress-nginx", {"app": "ingress-nginx"})
    assert network.reaches(controller, storefront, 3000)
    assert not network.reaches(pods["shop-staging/checkout"][0], storefront, 3000)
    edit(repo, "clusters/nonprod-eu.yaml", "namespace: ingress-nginx", "namespace: traefik")
    policy = find(render(run, repo, "--env", "staging"), "NetworkPolicy", "storefront")
    assert policy["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "traefik"}}}]


def test_no_pod_of_one_environment_reaches_another_on_a_shared_cluster(run: Run,
                                                                      repo: Path) -> None:
    both = render(run, repo, "--env", "development") + render(run, repo, "--env", "staging")
    network = rendered_network(both)
    pods = rendered_pods(both)
    crossings = [(source, target, port)
                 for source, (source_pod, _) in pods.items() if "-staging/" in source
                 for target, (target_pod, ports) in pods.items() if "-development/" in target
                 for port in ports if network.reaches(source_pod, target_pod, port)]
    assert crossings == []
    within = [(s, t) for s, (sp, _) in pods.items() if "-development/" in s
              for t, (tp, ports) in pods.items() if "-development/" in t
              for port in ports if network.reaches(sp, tp, port)]
    assert ("shop-development/checkout", "shop-development/catalog") in within


# --- Ingress ---


def ingress_routes(objects: list[Object]) -> Iterator[tuple[str, str, Object]]:
    for ingress in (o for o in objects if o["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                yield rule.get("host", ""), path["path"], ingress


def test_every_ingress_has_a_class_a_host_and_tls_and_no_route_collides(run: Run,
                                                                        any_repo: Path) -> None:
    routes: dict[tuple[str, str, str], str] = {}
    checked = 0
    for environment, cluster, objects in every_render(run, any_repo):
        for host, path, ingress in ingress_routes(objects):
            assert host, f"{environment} {ingress['metadata']['name']} has no host"
            if any_repo.name != "generated":
                assert ingress["spec"]["ingressClassName"] == "nginx"
                assert ingress["spec"]["tls"][0]["hosts"] == [host]
            other = routes.setdefault((cluster, host, path), environment)
            assert other == environment, f"{host}{path} on {cluster}: {other} and {environment}"
            checked += 1
    assert checked > 3


def test_ingress_host_class_and_tls_come_from_environment_and_cluster(run: Run,
                                                                      repo: Path) -> None:
    staging = render(run, repo, "--env", "staging")
    ingress = find(staging, "Ingress", "storefront")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["staging.acme.example"],
                                       "secretName": "acme-nonprod-tls"}]
    assert ingress["spec"]["rules"][0]["host"] == "staging.acme.example"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/shop/storefront/web"
    production = find(render(run, repo, "--env", "production", "--cluster", "prod-us"),
                      "Ingress", "storefront")
    assert production["spec"]["rules"][0]["host"] == "acme.example"


def test_a_cluster_with_a_gateway_gets_http_routes_instead(run: Run, repo: Path) -> None:
    edit(repo, "clusters/prod-us.yaml", "  tlsSecret: acme-tls",
         "  namespace: envoy-gateway-system\n  gateway: {name: public, namespace: gateways}")
    edit(repo, "clusters/prod-us.yaml", "  namespace: ingress-nginx\n", "")
    us = render(run, repo, "--env", "production", "--cluster", "prod-us", "--project", "shop")
    assert not [o for o in us if o["kind"] == "Ingress"]
    route = find(us, "HTTPRoute", "storefront")["spec"]
    assert route == {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "hostnames": ["acme.example"],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/shop/storefront/web"}}],
                   "backendRefs": [{"name": "storefront-web", "port": 3000}]}]}
    policy = find(us, "NetworkPolicy", "storefront")["spec"]["ingress"][0]["from"]
    assert policy == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "envoy-gateway-system"}}}]
    eu = render(run, repo, "--env", "production", "--cluster", "prod-eu", "--project", "shop")
    assert find(eu, "Ingress", "storefront") and not [o for o in eu if o["kind"] == "HTTPRoute"]


def test_validate_refuses_two_environments_routing_one_host_on_a_cluster(repo: Path,
                                                                        run: Run) -> None:
    edit(repo, "environments/staging/environment.yaml", "domain: staging.acme.example",
         "domain: development.acme.example")
    refused = run("validate")
    assert refused.exit_code == 1
    assert ("error: environments/staging/environment.yaml:5: routes "
            "development.acme.example/identity/auth-v2/login on cluster nonprod-eu, as environment "
            "development does there: give each environment of the cluster its own `domain`"
            in refused.stderr)
    edit(repo, "environments/staging/environment.yaml", "domain:", "# domain:")
    edit(repo, "environments/development/environment.yaml", "domain:", "# domain:")
    assert "(no host) on cluster nonprod-eu" in run("validate").stderr
    edit(repo, "environments/staging/environment.yaml", "clusters: [nonprod-eu]",
         "clusters: [prod-eu]")
    assert "routes" not in run("validate").stderr, "on different clusters they may"


def test_organisation_templates_still_override_the_defaults(repo: Path, run: Run) -> None:
    write(repo, "templates/service/disruption-budget.yaml.j2", "", header=False)
    objects = render(run, repo, "--env", "production", "--project", "shop")
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"
                and o["metadata"]["name"] == "checkout"]
    assert find(objects, "PodDisruptionBudget", "storefront"), "web-app keeps the built-in"


# --- On the real control plane ---


def rename_environment(repo: Path, old: str) -> str:
    """Give an environment of the example a unique name, as LiveEnv does for development."""
    new = f"s{uuid.uuid4().hex[:8]}"
    (repo / f"environments/{old}").rename(repo / f"environments/{new}")
    edit(repo, f"environments/{new}/environment.yaml", f"name: {old}", f"name: {new}")
    for pipeline in ("standard", "fast-lane"):
        path = repo / f"pipelines/{pipeline}.yaml"
        if f"environment: {old}" in path.read_text():
            edit(repo, f"pipelines/{pipeline}.yaml", f"environment: {old}",
                 f"environment: {new}")
    return new


def test_a_namespace_enforcing_restricted_admits_every_rendered_workload(
        live: LiveEnv, api_client: ApiClient) -> None:
    result = live.apply("--wait", "--timeout", "180")
    assert result.exit_code == 0, result.stdout + result.stderr
    core = kubernetes.client.CoreV1Api(api_client)
    apps = kubernetes.client.AppsV1Api(api_client)
    batch = kubernetes.client.BatchV1Api(api_client)
    namespaces = [f"shop-{live.name}", f"identity-{live.name}"]
    for namespace in namespaces:
        labels = core.read_namespace(namespace).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        # The API server enforces it: a pod as rendered before this issue is refused.
        with pytest.raises(kubernetes.client.ApiException) as refused:
            core.create_namespaced_pod(namespace, {"metadata": {"name": "plain"}, "spec": {
                "containers": [{"name": "c", "image": "registry.example/x@sha256:" + "a" * 64}]}},
                dry_run="All")
        assert refused.value.status == 403 and "PodSecurity" in refused.value.body
        # Pods made by the ReplicaSet controller were admitted, and became ready.
        for deployment in apps.list_namespaced_deployment(namespace).items:
            assert deployment.status.ready_replicas == deployment.spec.replicas >= 1
            pods = core.list_namespaced_pod(namespace, label_selector=",".join(
                f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())).items
            assert len(pods) >= deployment.spec.replicas
        # CronJobs run later: their pod templates are admitted as they are, as Pods.
        for cronjob in batch.list_namespaced_cron_job(namespace).items:
            template = api_client.sanitize_for_serialization(
                cronjob.spec.job_template.spec.template)
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{cronjob.metadata.name}-admission"},
                   "spec": template["spec"]}
            core.create_namespaced_pod(namespace, pod, dry_run="All")
    assert apps.list_namespaced_deployment(f"shop-{live.name}").items


def test_applied_policies_let_no_staging_pod_reach_development(live: LiveEnv,
                                                               api_client: ApiClient) -> None:
    staging = rename_environment(live.repo, "staging")
    assert live.apply("--wait", "--timeout", "180").exit_code == 0
    applied = live.run("apply", "--env", staging, "--wait", "--timeout", "180")
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    core = kubernetes.client.CoreV1Api(api_client)
    networking = kubernetes.client.NetworkingV1Api(api_client)
    namespaces = [f"{p}-{e}" for e in (live.name, staging) for p in ("shop", "identity")]
    labels = {n: core.read_namespace(n).metadata.labels for n in namespaces}
    labels["kube-system"] = core.read_namespace("kube-system").metadata.labels
    policies = [api_client.sanitize_for_serialization(p) for n in namespaces
                for p in networking.list_namespaced_network_policy(n).items]
    network = Policies(policies, labels)
    pods: dict[str, tuple[Pod, list[int]]] = {}
    for namespace in namespaces:
        wait_for(lambda n=namespace: bool(core.list_namespaced_pod(n).items), "pods")
        for pod in core.list_namespaced_pod(namespace).items:
            ports = [p.container_port for c in pod.spec.containers for p in c.ports or []]
            pods[f"{namespace}/{pod.metadata.name}"] = ((namespace, pod.metadata.labels), ports)
    crossings = [(source, target, port)
                 for source, (source_pod, _) in pods.items() if staging in source
                 for target, (target_pod, ports) in pods.items() if live.name in target
                 for port in ports if network.reaches(source_pod, target_pod, port)]
    assert crossings == []
    checkout = next(p for name, (p, _) in pods.items()
                    if name.startswith(f"shop-{live.name}/checkout-"))
    catalog = next(p for name, (p, _) in pods.items()
                   if name.startswith(f"shop-{live.name}/catalog-"))
    assert network.reaches(checkout, catalog, 4000), "within development, as declared"
