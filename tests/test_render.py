"""`reconciler render` turns an environment's releases into sorted, validated Kubernetes
objects: per component type, with configuration, connections, isolation and labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from conftest import Run, commit_all, edit, write

SECRETS = "environments/production/shop/checkout/secrets/PAYMENT_API_KEY.sops.yaml"
CIPHERTEXT = "c2VjcmV0LWNpcGhlcnRleHQ="


def objects(run: Run, *args: str) -> list[dict[str, Any]]:
    result = run("render", *args)
    assert result.exit_code == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(found: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in found if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def test_service_renders_deployment_service_config_and_policy(run: Run) -> None:
    found = objects(run, "--env", "production", "--project", "shop", "--component", "checkout")
    kinds = [o["kind"] for o in found]
    assert kinds == ["Namespace", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy",
                     "ServiceAccount", "ConfigMap", "ConfigMap", "Service", "Deployment",
                     "PodDisruptionBudget"]
    deployment = find(found, "Deployment", "checkout")
    assert deployment["metadata"]["namespace"] == "shop-production"
    spec = deployment["spec"]
    assert spec["replicas"] == 4, "the production config overrides replicas"
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.acme.example/shop/checkout@sha256:")
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 8080}
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                      "limits": {"memory": "512Mi"}}
    service = find(found, "Service", "checkout-api")
    assert service["spec"]["ports"] == [{"name": "api", "port": 8080, "targetPort": 8080,
                                         "protocol": "TCP"}]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_configuration_merges_defaults_component_and_environment(run: Run) -> None:
    found = objects(run, "--env", "development", "--project", "shop", "--component", "checkout")
    config = next(o for o in found if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("checkout-config-"))
    assert config["data"] == {
        "LOG_LEVEL": "debug",  # environment overrides the configurable's default
        "LOG_FORMAT": "json",  # component config
        "CURRENCY": "EUR",
        "PAYMENT_PROVIDER_URL": "https://sandbox.payments.example",
        "CATALOG_URL": "http://catalog-api.shop-development.svc.cluster.local:4000",
        "SMS_API_URL": "https://api.twilio.com",  # project-level third-party connection
        # auth runs v2 and v3 side by side: the v2 connection reaches v2's own address
        "AUTH_URL": "grpc://auth-api-v2.identity-development.svc.cluster.local:9000",
    }
    deployment = find(found, "Deployment", "checkout")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    files = next(o for o in found if o["metadata"]["name"].startswith("checkout-files-"))
    assert files["data"]["etc.checkout.app.toml"].startswith("[checkout]\n")
    assert "/etc/checkout/app.toml" in [m["mountPath"] for m in container["volumeMounts"]]


def test_config_list_shows_exactly_what_the_pod_gets(repo: Path, run: Run) -> None:
    edit(repo, "environments/staging/shop/checkout/config.yaml", "env:",
         "env:\n  FEATURE_FLAG: yes\n  STRICT: true\n  RATIO: 1.50")
    listed = json.loads(run("-o", "json", "config", "list", "shop/checkout", "--env",
                            "staging").stdout)
    found = objects(run, "--env", "staging", "--project", "shop", "--component", "checkout")
    config_map = next(o for o in found if o["kind"] == "ConfigMap"
                      and o["metadata"]["name"].startswith("checkout-config-"))
    plain = {e["key"]: e["value"] for e in listed if e["value"] != "(secret)"}
    assert plain == config_map["data"]
    sources = {e["key"]: e["source"] for e in listed}
    assert (sources["STRICT"], plain["STRICT"]) == ("staging", "true")
    assert (sources["FEATURE_FLAG"], plain["FEATURE_FLAG"]) == ("staging", "yes")
    assert sources["CATALOG_URL"] == "connection catalog"
    assert sources["LOG_LEVEL"] in ("default", "component", "staging")


def test_connection_parameters_host_and_port(run: Run) -> None:
    found = objects(run, "--env", "production", "--project", "shop", "--component", "reindex")
    config = next(o for o in found if o["kind"] == "ConfigMap")
    assert config["data"]["CATALOG_HOST"] == "catalog-api.shop-production.svc.cluster.local"
    assert config["data"]["CATALOG_PORT"] == "4000"


def test_a_config_change_renames_the_configmap_and_rolls_the_pods(repo: Path, run: Run) -> None:
    args = ("--env", "staging", "--project", "shop", "--component", "checkout")
    before = find(objects(run, *args), "Deployment", "checkout")
    edit(repo, "environments/staging/shop/checkout/config.yaml", "sandbox.payments",
         "sandbox2.payments")
    after = find(objects(run, *args), "Deployment", "checkout")
    assert (before["spec"]["template"]["metadata"]["annotations"]
            != after["spec"]["template"]["metadata"]["annotations"])
    ref = lambda d: d["spec"]["template"]["spec"]["containers"][0]["envFrom"]  # noqa: E731
    assert ref(before) != ref(after)


def test_network_policies_follow_endpoint_visibility(run: Run) -> None:
    found = objects(run, "--env", "staging")
    deny = find([o for o in found if o["metadata"].get("namespace") == "shop-staging"],
                "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    catalog = find(found, "NetworkPolicy", "catalog")["spec"]["ingress"]
    assert catalog == [{"ports": [{"port": 4000, "protocol": "TCP"}],
                        "from": [{"podSelector": {}}]}]
    checkout = find(found, "NetworkPolicy", "checkout")["spec"]["ingress"]
    assert checkout[0]["from"] == [{"namespaceSelector": {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "In",
        "values": ["identity-staging", "shop-staging"]}]}}]
    storefront = find(found, "NetworkPolicy", "storefront")["spec"]["ingress"]
    assert storefront == [{"ports": [{"port": 3000, "protocol": "TCP"}], "from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}]
    namespace = find(found, "Namespace", "shop-staging")
    assert namespace["metadata"]["labels"]["reconciler.io/environment"] == "staging"


def test_public_endpoints_get_an_ingress(run: Run) -> None:
    found = objects(run, "--env", "production", "--project", "identity")
    ingress = find(found, "Ingress", "gateway")
    assert ingress["spec"]["rules"][0]["host"] == "acme.example"
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert paths == [{"path": "/identity/gateway/edge", "pathType": "Prefix", "backend": {
        "service": {"name": "gateway-edge", "port": {"number": 8443}}}}]
    # auth runs v2 and v3 side by side: each major line has its own Services and route
    assert [o["metadata"]["name"] for o in found if o["kind"] == "Service"] == [
        "auth-api-v2", "auth-api-v3", "auth-login-v2", "auth-login-v3", "gateway-edge"]
    v3 = find(found, "Ingress", "auth-v3")["spec"]["rules"][0]["http"]["paths"]
    assert v3 == [{"path": "/identity/auth-v3/login", "pathType": "Prefix", "backend": {
        "service": {"name": "auth-login-v3", "port": {"number": 8080}}}}]
    assert find(found, "Service", "auth-api-v2")["spec"]["ports"][0]["appProtocol"] == "grpc"


def test_scheduled_task_is_a_cronjob(run: Run) -> None:
    found = objects(run, "--env", "production", "--project", "shop", "--component",
                    "invoice-run")
    cronjob = find(found, "CronJob", "invoice-run")
    assert cronjob["spec"]["schedule"] == "0 3 * * *"
    assert cronjob["spec"]["suspend"] is False
    assert not [o for o in found if o["kind"] in ("Deployment", "Service", "Ingress")]


def test_manual_task_is_a_suspended_cronjob(run: Run) -> None:
    found = objects(run, "--env", "production", "--project", "shop", "--component", "reindex")
    cronjob = find(found, "CronJob", "reindex")
    assert cronjob["spec"]["suspend"] is True
    assert "kubectl create job --from=cronjob/reindex" in (
        cronjob["metadata"]["annotations"]["reconciler.io/run"])


def test_web_app_and_proxy_render_workloads(run: Run) -> None:
    found = objects(run, "--env", "production")
    assert find(found, "Deployment", "storefront")["spec"]["replicas"] == 2
    assert find(found, "Deployment", "gateway")
    assert find(found, "Ingress", "storefront")


def test_every_object_carries_standard_labels_and_the_tools_annotations(repo: Path,
                                                                        run: Run) -> None:
    found = objects(run, "--env", "production")
    for obj in found:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "reconciler"
        assert labels["app.kubernetes.io/part-of"] in ("shop", "identity")
        assert labels["reconciler.io/environment"] == "production"
    before = run("render", "--env", "production").stdout
    edit(repo, "environments/staging/shop/checkout/config.yaml", "sandbox", "sandbox2")
    commit_all(repo, "an unrelated change")
    assert run("render", "--env", "production").stdout == before, \
        "a commit that changes nothing here rewrites nothing here"
    deployment = find(found, "Deployment", "checkout")
    annotations = deployment["metadata"]["annotations"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert annotations["reconciler.io/image"] == image
    assert annotations["reconciler.io/release"] == (
        deployment["spec"]["template"]["metadata"]["annotations"]["reconciler.io/release"])


def test_output_is_sorted_and_deterministic(run: Run) -> None:
    first = run("render", "--env", "production").stdout
    assert first == run("render", "--env", "production").stdout
    found = [d for d in yaml.safe_load_all(first) if d]
    order = ["Namespace", "NetworkPolicy", "ServiceAccount", "ConfigMap", "Service", "Deployment",
             "CronJob", "PodDisruptionBudget", "Ingress"]
    ranks = [order.index(o["kind"]) for o in found]
    assert ranks == sorted(ranks)


def test_work_tree_and_commit_render_identically(repo: Path, run: Run) -> None:
    from_tree = run("render", "--env", "production").stdout
    from_commit = run("--revision", "HEAD", "render", "--env", "production").stdout
    assert from_tree == from_commit
    edit(repo, "environments/production/shop/checkout/config.yaml", "replicas: 4", "replicas: 5")
    assert run("render", "--env", "production").stdout != from_commit
    assert run("--revision", "HEAD", "render", "--env", "production").stdout == from_commit
    commit_all(repo)
    assert run("--revision", "HEAD", "render", "--env", "production").stdout != from_commit


def test_secrets_are_masked_unless_revealed(repo: Path, run: Run) -> None:
    write(repo, SECRETS, "kind: Secrets\ndata:\n  PAYMENT_API_KEY: "
          f"ENC[AES256_GCM,data:{CIPHERTEXT},iv:aXY=,tag:dGFn,type:str]\n"
          "sops: {version: 3.9.0}\n")
    result = run("render", "--env", "production", "--project", "shop", "--component", "checkout")
    assert result.exit_code == 0, result.stderr
    found = [d for d in yaml.safe_load_all(result.stdout) if d]
    secret = next(o for o in found if o["kind"] == "Secret")
    assert secret["data"] == {"PAYMENT_API_KEY": "++++++++"}
    assert CIPHERTEXT not in result.stdout
    container = find(found, "Deployment", "checkout")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    revealed = run("render", "--env", "production", "--reveal-secrets")
    assert revealed.exit_code == 1
    assert revealed.errors == [f"error: {SECRETS}:1: no age key to decrypt production's secrets: "
                               "set SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or pass --age-key-file"]
    assert revealed.stdout == ""


def test_filters_and_unknown_names(run: Run) -> None:
    only_identity = objects(run, "--env", "staging", "--project", "identity")
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in only_identity} == {
        "identity-staging"}
    assert run("render", "--env", "qa").errors == [
        "error: unknown environment 'qa' (environments: development, production, staging)"]
    assert run("render", "--env", "staging", "--project", "nope").exit_code == 1
    assert run("render", "--env", "staging", "--component", "checkout").errors == [
        "error: --component needs --project"]
    assert run("render", "--env", "staging", "--cluster", "prod-eu").errors == [
        "error: cluster 'prod-eu' is not part of environment staging (clusters: nonprod-eu)"]
    assert objects(run, "--env", "production", "--cluster", "prod-us")


def test_json_output_is_a_list(run: Run) -> None:
    result = run("render", "--env", "development", "-o", "json")
    document = json.loads(result.stdout)
    assert document["kind"] == "List" and len(document["items"]) > 10


def test_out_writes_one_file_per_object_and_never_clobbers(repo: Path, run: Run,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = run("render", "--env", "production", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert (out / "_cluster/namespace-shop-production.yaml").is_file()
    deployment = yaml.safe_load((out / "shop-production/deployment-checkout.yaml").read_text())
    assert deployment["kind"] == "Deployment"
    total = len([p for p in out.rglob("*.yaml")])
    assert total == len(objects(run, "--env", "production"))
    assert run("render", "--env", "production", "--out", str(out)).exit_code == 0
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    refused = run("render", "--env", "production", "--out", str(precious))
    assert refused.exit_code == 1
    assert (precious / "notes.txt").read_text() == "keep me"


def test_out_records_the_commit_rendered_and_whether_the_work_tree_differed(
        repo: Path, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    head = pygit2.Repository(str(repo)).head.target
    assert run("render", "--env", "production", "--out", str(tmp_path / "a")).exit_code == 0
    assert (tmp_path / "a/.reconciler-render").read_text().startswith(f"# production {head}\n")
    printed = run("render", "--env", "production").stdout
    edit(repo, "environments/production/shop/checkout/config.yaml", "replicas: 4", "replicas: 5")
    assert run("render", "--env", "production", "--out", str(tmp_path / "b")).exit_code == 0
    assert (tmp_path / "b/.reconciler-render").read_text().startswith(
        f"# production {head}-dirty\n")
    assert run("render", "--env", "production").stdout == printed.replace(
        "replicas: 4", "replicas: 5"), "printed manifests carry no revision"

    def status_not_needed(path: Path) -> bool:
        raise AssertionError("printing manifests runs no git status")

    monkeypatch.setattr("reconciler.cli.base.is_dirty", status_not_needed)
    assert run("render", "--env", "production").exit_code == 0


def test_out_replaces_what_it_wrote_and_never_deletes_a_users_file(repo: Path, run: Run,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    assert run("render", "--env", "production", "--out", str(out)).exit_code == 0
    (repo / "environments/production/shop/storefront/release.yaml").unlink()
    assert run("render", "--env", "production", "--out", str(out)).exit_code == 0
    assert not (out / "shop-production/deployment-storefront.yaml").exists(), \
        "an object that left the render leaves the folder"
    assert (out / "shop-production/deployment-checkout.yaml").is_file()
    (out / "shop-production/kustomization.yaml").write_text("mine\n")
    refused = run("render", "--env", "production", "--out", str(out))
    assert refused.exit_code == 1
    assert refused.errors == [f"error: --out {out} holds files render did not write "
                              "(shop-production/kustomization.yaml): move them away or choose "
                              "another folder; nothing was written"]
    assert (out / "shop-production/kustomization.yaml").read_text() == "mine\n"
    assert (out / "shop-production/deployment-checkout.yaml").is_file()


def test_out_into_a_folder_that_cannot_be_written_is_a_clear_error(run: Run,
                                                                   tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run("render", "--env", "production", "--out", str(blocker / "manifests"))
    assert result.exit_code == 1
    assert result.errors == [f"error: cannot write --out {blocker / 'manifests'}: Not a directory"]


def test_organisation_template_overrides_a_builtin(repo: Path, run: Run) -> None:
    write(repo, "templates/service/services.yaml.j2", """\
{% for endpoint in component.endpoints %}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ endpoint.service | tojson }}
  namespace: {{ namespace | tojson }}
  annotations: {team: {{ project | tojson }}}
spec:
  type: NodePort
  selector: {{ selector | tojson }}
  ports: [{port: {{ endpoint.port }}}]
{% endfor %}
""", header=False)
    found = objects(run, "--env", "production", "--project", "identity")
    service = find(found, "Service", "auth-api-v3")
    assert service["spec"]["type"] == "NodePort"
    assert service["metadata"]["annotations"]["team"] == "identity"
    assert service["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "reconciler"
    storefront = find(objects(run, "--env", "production", "--project", "shop"), "Service",
                      "storefront-web")
    assert storefront["spec"]["type"] == "ClusterIP", "web-app keeps its built-in template"


def test_organisation_templates_can_add_objects(repo: Path, run: Run) -> None:
    write(repo, "templates/service/autoscaler.yaml.j2", """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: {{ component.name | tojson }}, namespace: {{ namespace | tojson }}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: {{ component.name | tojson }}}
  minReplicas: {{ replicas }}
  maxReplicas: {{ replicas * 2 }}
""", header=False)
    found = objects(run, "--env", "production", "--project", "shop")
    assert find(found, "HorizontalPodAutoscaler", "checkout")


SERVICE_MONITOR = """\
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: {{ component.name | tojson }}, namespace: {{ namespace | tojson }}}
spec: {selector: {matchLabels: {{ selector | tojson }}}, endpoints: [{port: http}]}
"""


def test_organisation_templates_can_add_custom_resources(repo: Path, run: Run) -> None:
    write(repo, "templates/service/monitor.yaml.j2", SERVICE_MONITOR, header=False)
    found = objects(run, "--env", "production", "--project", "shop")
    monitor = find(found, "ServiceMonitor", "checkout")
    assert monitor["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "reconciler"
    write(repo, "templates/service/monitor.yaml.j2",
          SERVICE_MONITOR.replace("kind: ServiceMonitor", "kind: serviceMonitor"), header=False)
    assert any("is not valid Kubernetes: kind: 'serviceMonitor' is not a kind name" in e
               for e in run("render", "--env", "production").errors)


def test_a_misspelt_builtin_kind_is_still_refused(repo: Path, run: Run) -> None:
    write(repo, "templates/service/pdb.yaml.j2", """\
apiVersion: policy/v1
kind: PodDisruptionBugdet
metadata: {name: {{ component.name | tojson }}, namespace: {{ namespace | tojson }}}
""", header=False)
    assert any("unknown kind PodDisruptionBugdet in policy/v1 (Kubernetes 1.36)" in e
               for e in run("render", "--env", "production").errors)


def test_a_template_change_is_a_new_release(repo: Path, run: Run) -> None:
    args = ("--env", "production", "--project", "identity", "--component", "auth")
    before = find(objects(run, *args), "Deployment", "auth-v3")["metadata"]["annotations"]
    write(repo, "templates/service/extra.yaml.j2", "", header=False)
    after = find(objects(run, *args), "Deployment", "auth-v3")["metadata"]["annotations"]
    assert before["reconciler.io/release"] != after["reconciler.io/release"]


def test_templates_run_sandboxed(repo: Path, run: Run) -> None:
    write(repo, "templates/service/evil.yaml.j2",
          "{{ component.__class__.__mro__[1].__subclasses__() }}\n", header=False)
    result = run("render", "--env", "production", "--project", "identity")
    assert result.exit_code == 1
    assert any(e.startswith("error: templates/service/evil.yaml.j2:1: template:") and
               "unsafe" in e for e in result.errors), result.errors


def test_undefined_variable_is_an_error_at_its_line(repo: Path, run: Run) -> None:
    write(repo, "templates/service/typo.yaml.j2",
          "# a comment line\n{{ relase.image }}\n", header=False)
    result = run("render", "--env", "production", "--project", "identity")
    assert result.errors[0].startswith("error: templates/service/typo.yaml.j2:2: template: "
                                       "'relase' is undefined"), result.errors


@pytest.mark.parametrize(("body", "message"), [
    ("{{ nosuchvar | tojson }}", "template: 'nosuchvar' is undefined"),
    ("{% for i in range(10**8) %}x{% endfor %}", "template: OverflowError: Range too big. The "
     "sandbox blocks ranges larger than MAX_RANGE (100000)."),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "template: recursion too deep"),
    ('{{ "x" * 10**9 }}', "template: repetition of 1000000000 items is larger than 1048576"),
    ("{{ 7 ** 100000 }}", "template: 7 ** 100000 is too large"),
    ('{% for i in range(100000) %}{{ "x" * 1000 }}{% endfor %}',
     "template: output is larger than 4 MiB"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "template: rendering took longer than 10 s"),
])
def test_a_runaway_template_is_a_located_error(repo: Path, run: Run, body: str,
                                               message: str) -> None:
    write(repo, "templates/service/extra.yaml.j2", f"x: {body}\n", header=False)
    result = run("render", "--env", "production", "--project", "shop", "--component",
                 "checkout")
    assert result.exit_code == 1
    assert result.errors == [f"error: templates/service/extra.yaml.j2:1: {message}"]


def test_template_syntax_error(repo: Path, run: Run) -> None:
    write(repo, "templates/service/broken.yaml.j2", "{% if %}\n", header=False)
    result = run("render", "--env", "production", "--project", "identity")
    assert result.errors[0].startswith("error: templates/service/broken.yaml.j2:1: template "
                                       "syntax:"), result.errors


def test_objects_outside_the_project_namespace_are_refused(repo: Path, run: Run) -> None:
    write(repo, "templates/service/escape.yaml.j2", """\
apiVersion: v1
kind: ConfigMap
metadata: {name: stolen, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: admin-for-all}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
""", header=False)
    result = run("render", "--env", "production", "--project", "identity")
    assert result.exit_code == 1
    assert any("ConfigMap kube-system/stolen: must be in namespace 'identity-production'" in e
               for e in result.errors), result.errors
    assert any("ClusterRoleBinding admin-for-all: must be in namespace" in e
               for e in result.errors)
    assert result.stdout == ""


def test_rendered_objects_are_validated_against_kubernetes_schemas(repo: Path,
                                                                   run: Run) -> None:
    write(repo, "templates/service/bad.yaml.j2", """\
apiVersion: v1
kind: Service
metadata: {name: {{ (component.name ~ "-bad") | tojson }}, namespace: {{ namespace | tojson }}}
spec: {ports: [{port: "eighty"}], typo: 1}
""", header=False)
    result = run("render", "--env", "production", "--project", "identity")
    assert result.exit_code == 1
    assert any(e.startswith("error: templates/service/bad.yaml.j2:1: Service "
                            "identity-production/auth-v3-bad is not valid Kubernetes:")
               and "spec.ports.0.port" in e for e in result.errors), result.errors
    assert any("'typo' was unexpected" in e for e in result.errors)


def test_template_output_that_is_not_yaml(repo: Path, run: Run) -> None:
    write(repo, "templates/service/notyaml.yaml.j2", "kind: [unclosed\n", header=False)
    result = run("render", "--env", "production", "--project", "identity")
    assert any(e.startswith("error: templates/service/notyaml.yaml.j2:1: template output is "
                            "not YAML") for e in result.errors), result.errors


def test_invalid_state_is_not_rendered(repo: Path, run: Run) -> None:
    edit(repo, "clusters/prod-eu.yaml", "name: prod-eu", "name: Prod")
    result = run("render", "--env", "production")
    assert result.exit_code == 1 and result.stdout == ""


def test_templates_cannot_include_files_outside_the_template_folders(repo: Path,
                                                                     run: Run) -> None:
    for name in ("/etc/passwd", "../../../../etc/passwd"):
        write(repo, "templates/service/sneaky.yaml.j2", f'{{% include "{name}" %}}\n',
              header=False)
        result = run("render", "--env", "production", "--project", "identity")
        assert result.exit_code == 1
        assert "root:" not in result.stdout + result.stderr
        assert any("sneaky.yaml.j2" in e and "passwd" in e for e in result.errors), result.errors
