"""API versions side by side. A component's release in an environment is `release.yaml`
while one API major runs there, and one `release-<major>.yaml` per major while several do.
Each major line is a workload of its own with a stable per-major address
(`<component>-<endpoint>-<major>`) that selects only that line's pods, so promoting a new
minor of v2 moves v2's consumers by a rolling update and leaves v3 untouched. Connections
resolve by major; a major that still has consumers is not retired. A component that runs
one major keeps the plain names: single-major repos render byte for byte as before.

The example's identity/auth runs v2 and v3 side by side in every environment: shop/checkout
connects to v2, identity/gateway to v3."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes
import pygit2
import pytest
import yaml
from kubernetes.client import ApiClient

from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.model.kinds import TASK_TYPES
from reconciler.render.engine import render_environment
from reconciler.yamlio import dump_manifests

from conftest import (
    LiveEnv,
    Result,
    Run,
    cli_in,
    commit_all,
    commit_and_push,
    edit,
    file_at,
    record_healthy,
    tip,
    wait_for,
    write,
)

AUTH = "identity/auth"
V2_COMMIT = "e" * 40
V2_IMAGE = f"registry.acme.example/identity/auth@sha256:{'e' * 64}"
DEVELOPMENT = "environments/development/identity/auth"
STAGING = "environments/staging/identity/auth"


def rendered(run: Run, environment: str, project: str = "identity",
             component: str | None = None, repo_path: Path | None = None
             ) -> dict[tuple[str, str], dict[str, Any]]:
    args = ["render", "--env", environment, "--project", project]
    if component:
        args += ["--component", component]
    result = run(*args, repo_path=repo_path)
    assert result.exit_code == 0, result.stderr
    return {(o["kind"], o["metadata"]["name"]): o
            for o in yaml.safe_load_all(result.stdout) if o}


def in_work(work: Path) -> Run:
    def invoke(*args: str, repo_path: Path | None = None) -> Result:
        return cli_in(repo_path or work, *args)
    return invoke


def new_v2_minor(work: Path) -> None:
    """auth's release-2.x branch moves on to v2.10, and CI registers its build."""
    edit(work, "projects/identity/components/auth/component.yaml", "version: v2.9",
         "version: v2.10")
    commit_and_push(work, "auth's 2.x line is at v2.10")
    registered = cli_in(work, "build", "register", AUTH, "--commit", V2_COMMIT, "--image",
                        V2_IMAGE, "--track", "release-2.x")
    assert registered.exit_code == 0, registered.stderr


# --- the layout: one file per major while several run ---

def test_each_major_line_is_a_workload_with_its_own_addresses(run: Run) -> None:
    found = rendered(run, "staging")
    v2, v3 = found[("Deployment", "auth-v2")], found[("Deployment", "auth-v3")]
    assert v2["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "auth", "app.kubernetes.io/part-of": "identity",
        "reconciler.io/major": "v2"}
    assert v3["spec"]["selector"]["matchLabels"]["reconciler.io/major"] == "v3"
    assert v2["metadata"]["labels"]["app.kubernetes.io/version"] == "v2.9"
    for major in ("v2", "v3"):
        service = found[("Service", f"auth-api-{major}")]
        assert service["spec"]["selector"] == found[("Deployment", f"auth-{major}")][
            "spec"]["selector"]["matchLabels"], "a line's Service selects only its pods"
    assert ("Deployment", "auth") not in found and ("Service", "auth-api") not in found
    gateway = rendered(run, "staging", component="gateway")
    config = next(o for (kind, name), o in gateway.items()
                  if kind == "ConfigMap" and name.startswith("gateway-config-"))
    assert config["data"]["AUTH_URL"] == \
        "grpc://auth-api-v3.identity-staging.svc.cluster.local:9000"


def test_a_build_of_another_major_runs_beside_the_one_there(repo: Path, run: Run) -> None:
    (repo / f"{DEVELOPMENT}/release-v2.yaml").unlink()
    (repo / f"{DEVELOPMENT}/release-v3.yaml").rename(repo / f"{DEVELOPMENT}/release.yaml")
    edit(repo, "projects/shop/components/checkout/component.yaml", "version: v2", "version: v3")
    commit_all(repo, "development runs auth v3 only")
    single = rendered(run, "development")
    assert ("Deployment", "auth") in single and ("Service", "auth-api") in single, \
        "one major: the plain names"
    deployed = run("deploy", AUTH, "--version", "v2")
    assert deployed.exit_code == 0, deployed.stderr
    head = pygit2.Repository(str(repo)).head.peel(pygit2.Commit)
    files = {e.name for e in head.tree[DEVELOPMENT]}
    assert {"release-v2.yaml", "release-v3.yaml"} <= files and "release.yaml" not in files
    assert "Version: v2" in head.message
    both = rendered(run, "development")
    assert {("Deployment", "auth-v2"), ("Deployment", "auth-v3")} <= set(both)


def test_promoting_a_new_minor_moves_only_its_line(work: Path, remote: Path) -> None:
    run = in_work(work)
    before = rendered(run, "staging")
    checkout_before = rendered(run, "staging", "shop", "checkout")
    new_v2_minor(work)
    assert cli_in(work, "deploy", AUTH, "--version", "v2").exit_code == 0
    record_healthy(work)
    ambiguous = cli_in(work, "promote", AUTH, "--to", "staging")
    assert ambiguous.errors == ["error: identity/auth runs v2, v3 side by side in development: "
                                "choose one with --version"]
    promoted = cli_in(work, "promote", AUTH, "--to", "staging", "--version", "v2")
    assert promoted.exit_code == 0, promoted.stderr
    assert V2_IMAGE in file_at(remote, f"{STAGING}/release-v2.yaml")
    assert 'version: "v2.10"' in file_at(remote, f"{STAGING}/release-v2.yaml")
    pygit2.Repository(str(work)).remotes["origin"].fetch()
    subprocess.run(["git", "-C", str(work), "reset", "-q", "--hard", "origin/main"], check=True)
    after = rendered(run, "staging")
    v2 = after[("Deployment", "auth-v2")]
    assert v2["spec"]["template"]["spec"]["containers"][0]["image"] == V2_IMAGE
    assert v2["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "a rolling update"
    assert after[("Service", "auth-api-v2")]["spec"] == before[("Service", "auth-api-v2")][
        "spec"], "v2's address and selector stay"
    for name in ("auth-v3", "auth-api-v3", "auth-login-v3"):
        kind = "Deployment" if name == "auth-v3" else "Service"
        assert after[(kind, name)] == before[(kind, name)], f"{name} untouched"
    assert rendered(run, "staging", "shop", "checkout") == checkout_before, \
        "v2's consumer keeps its AUTH_URL (no rollout of checkout)"
    status = cli_in(work, "status", "--env", "staging")
    assert "identity/auth v2  v2.10" in status.stdout and "identity/auth v3  v3.1" in \
        status.stdout
    history = cli_in(work, "-o", "json", "history", AUTH, "--env", "staging")
    assert '"version": "v2"' in history.stdout
    audit = cli_in(work, "audit")
    assert audit.exit_code == 0, audit.stderr


def test_rollback_stays_on_its_line(work: Path, remote: Path) -> None:
    new_v2_minor(work)
    assert cli_in(work, "deploy", AUTH, "--version", "v2").exit_code == 0
    back = cli_in(work, "rollback", AUTH, "--env", "development", "--version", "v2")
    assert back.exit_code == 0, back.stderr
    assert 'version: "v2.9"' in file_at(remote, f"{DEVELOPMENT}/release-v2.yaml")
    assert "3.1" in file_at(remote, f"{DEVELOPMENT}/release-v3.yaml")
    v3 = cli_in(work, "rollback", AUTH, "--env", "development", "--version", "v3")
    assert v3.errors == ["error: no earlier v3 release of identity/auth in development in the "
                         "history"]


def test_a_major_with_consumers_is_not_retired(work: Path, remote: Path) -> None:
    before = tip(remote).id
    refused = cli_in(work, "retire", AUTH, "--env", "development", "--version", "v2")
    assert refused.errors == ["error: identity/auth v2 still has consumers in development: "
                              "shop/checkout (connection 'auth'); move them to another major "
                              "(or remove the connections) first"]
    assert tip(remote).id == before
    edit(work, "projects/shop/components/checkout/component.yaml", "version: v2", "version: v3")
    commit_and_push(work, "checkout moves to auth v3")
    retired = cli_in(work, "retire", AUTH, "--env", "development", "--version", "v2")
    assert retired.exit_code == 0, retired.stderr
    assert "retired identity/auth v2.9 in development (v3.1 keeps running)" in retired.stdout
    files = {e.name for e in tip(remote).tree[DEVELOPMENT]}
    assert "release.yaml" in files and not {"release-v2.yaml", "release-v3.yaml"} & files
    assert "3.1" in file_at(remote, f"{DEVELOPMENT}/release.yaml"), "content kept, renamed"
    assert cli_in(work, "retire", AUTH, "--env", "development", "--version", "v2").errors == [
        "error: identity/auth runs v3 in development, not v2: nothing to retire"]
    assert cli_in(work, "retire", AUTH, "--env", "development").exit_code == 2, "--version"
    assert cli_in(work, "audit").exit_code == 0
    events = cli_in(work, "history", AUTH, "--env", "development").stdout
    assert "retire" in events


def test_release_files_must_agree_with_their_major(repo: Path, run: Run) -> None:
    edit(repo, f"{DEVELOPMENT}/release-v2.yaml", "version: v2.9", "version: v3.1")
    result = run("validate")
    assert result.exit_code == 1
    assert (f"error: {DEVELOPMENT}/release-v2.yaml:6: version v3.1 is not v2, the major the "
            "file's name says") in result.errors
    edit(repo, f"{DEVELOPMENT}/release-v2.yaml", "version: v3.1", "version: v2.9")
    write(repo, f"{DEVELOPMENT}/release.yaml",
          (repo / f"{DEVELOPMENT}/release-v2.yaml").read_text().removeprefix(
              "apiVersion: reconciler/v1\n"))
    two = run("validate")
    assert (f"error: {DEVELOPMENT}/release.yaml:6: {DEVELOPMENT}/release-v2.yaml releases v2 "
            "too: one file per major (v2 is v2.9 here, v2.9 there)") in two.errors


def test_a_connection_needs_its_major_released_in_the_environment(repo: Path,
                                                                  run: Run) -> None:
    (repo / f"{STAGING}/release-v2.yaml").unlink()
    (repo / f"{STAGING}/release-v3.yaml").rename(repo / f"{STAGING}/release.yaml")
    result = run("validate")
    assert result.exit_code == 1
    assert ("error: environments/staging/shop/checkout/release.yaml:1: connection 'auth' needs "
            "identity/auth v2, but staging runs v3.1") in result.errors


def test_single_major_repos_render_byte_for_byte_as_before(tmp_path: Path) -> None:
    """Golden digests of a generated repo (every component type, one major each), leaving
    out tasks, whose CronJob gained defaults (issue 17). `before_lines`: the renderer before
    release lines existed (commit 804ef57), release ids masked, since those now hash only
    the templates a type uses, so the task template changed them once; `now`: every byte."""
    generated = tmp_path / "generated"
    subprocess.run([sys.executable, str(Path(__file__).parents[1] / "bench/generate.py"),
                    str(generated), "--components", "30"], check=True, capture_output=True)
    state = load_state(WorkTree(generated))
    tasks = {c.name for c in state.components.values() if c.type in TASK_TYPES}
    before_lines, now = {}, {}
    for environment in ("development", "staging", "production"):
        objects = [o for o in render_environment(state, environment).objects
                   if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") not in tasks]
        text = dump_manifests(objects)
        masked = re.sub(r"(reconciler\.io/release: )[0-9a-f]{16}", r"\1<id>", text)
        before_lines[environment] = hashlib.sha256(masked.encode()).hexdigest()
        now[environment] = hashlib.sha256(text.encode()).hexdigest()
    assert before_lines == {
        "development": "284a63f7120aa6506938ae5425e0f02e46ae55770c0cd232a1d7abdc7f2adc6c",
        "staging": "c8dd4cb7d74459aa29ce53b2f45b755179aa1a7272224ea1c27629ddde7bf0b9",
        "production": "f521a853f0dd0c04b9b732944d243bf22da3d7dcfbe58a6450b949254497973b",
    }
    assert now == {
        "development": "f126d18ed9adbef498365213d5e0fb57ab95a71302ad740ada5923beefca9a89",
        "staging": "b0b885f72d3d87c8aa8f4e78918b3370434f3ab2353f63ff1d1ab017246404c1",
        "production": "04d7fdf483fc71e3f0796c45d8abce5a76701f5ddb16c004adbf87928a0e8958",
    }


def test_a_task_template_change_is_a_new_release_of_tasks_only(repo: Path, run: Run) -> None:
    def ids() -> dict[str, str]:
        found = run("render", "--env", "production", "-o", "json")
        assert found.exit_code == 0, found.stderr
        return {o["metadata"]["name"]: o["metadata"]["annotations"]["reconciler.io/release"]
                for o in json.loads(found.stdout)["items"]
                if o["kind"] in ("Deployment", "CronJob")}
    before = ids()
    builtin = Path(__file__).parents[1] / "templates/lib/cronjob.yaml.j2"
    write(repo, "templates/lib/cronjob.yaml.j2", builtin.read_text() + "# tuned\n",
          header=False)
    after = ids()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"invoice-run", "reindex"}, "only the tasks use the CronJob template"


# --- on the control plane ---

def endpoint_pods(api: ApiClient, namespace: str, service: str) -> set[str]:
    slices = kubernetes.client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}").items
    return {e.target_ref.name for s in slices for e in (s.endpoints or [])
            if e.target_ref is not None and (e.conditions is None or e.conditions.ready)}


def deployment_pods(api: ApiClient, namespace: str, deployment: str) -> set[str]:
    apps = kubernetes.client.AppsV1Api(api)
    selector = apps.read_namespaced_deployment(deployment, namespace).spec.selector.match_labels
    pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items())).items
    return {p.metadata.name for p in pods if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}


def available(api: ApiClient, namespace: str, deployment: str, image: str | None = None) -> bool:
    found = kubernetes.client.AppsV1Api(api).read_namespaced_deployment(deployment, namespace)
    status = found.status
    return (status.observed_generation == found.metadata.generation
            and (status.updated_replicas or 0) == found.spec.replicas
            and (status.available_replicas or 0) == found.spec.replicas
            and (status.replicas or 0) == found.spec.replicas
            and (image is None or found.spec.template.spec.containers[0].image == image))


@pytest.mark.usefixtures("control_plane")
def test_both_lines_run_and_each_address_reaches_its_own_pods(live: LiveEnv,
                                                             api_client: ApiClient) -> None:
    namespace = f"identity-{live.name}"
    applied = live.apply("--wait", "--timeout", "240")
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    for major in ("v2", "v3"):
        wait_for(lambda m=major: available(api_client, namespace, f"auth-{m}"),  # type: ignore[misc]
                 f"auth-{major} Available", timeout=120)
        pods = deployment_pods(api_client, namespace, f"auth-{major}")
        wait_for(lambda m=major, p=pods: endpoint_pods(api_client, namespace,  # type: ignore[misc]
                                                       f"auth-api-{m}") == p,
                 f"auth-api-{major} endpoints", timeout=60)
        assert len(pods) == 2 and all(p.startswith(f"auth-{major}-") for p in pods)
    v3 = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment("auth-v3", namespace)

    # A new v2 minor: only the v2 line rolls, and its address follows it.
    commit_all(live.repo, "development renamed for this test")
    edit(live.repo, "projects/identity/components/auth/component.yaml", "version: v2.9",
         "version: v2.10")
    commit_all(live.repo, "auth's 2.x line is at v2.10")
    for step in (("build", "register", AUTH, "--commit", V2_COMMIT, "--image", V2_IMAGE,
                  "--track", "release-2.x"), ("deploy", AUTH, "--version", "v2")):
        done = cli_in(live.repo, *step)
        assert done.exit_code == 0, done.stderr
    subprocess.run(["git", "-C", str(live.repo), "reset", "-q", "--hard"], check=True)
    again = live.apply("--wait", "--timeout", "240")
    assert again.exit_code == 0, again.stdout + again.stderr
    wait_for(lambda: available(api_client, namespace, "auth-v2", V2_IMAGE), "v2.10 rolled out",
             timeout=120)
    new_pods = deployment_pods(api_client, namespace, "auth-v2")
    wait_for(lambda: endpoint_pods(api_client, namespace, "auth-api-v2") == new_pods,
             "auth-api-v2 reaches the v2.10 pods", timeout=60)
    core = kubernetes.client.CoreV1Api(api_client)
    images = {core.read_namespaced_pod(p, namespace).spec.containers[0].image for p in new_pods}
    assert images == {V2_IMAGE}
    after = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment("auth-v3",
                                                                               namespace)
    assert after.metadata.generation == v3.metadata.generation, "v3 untouched"
    assert endpoint_pods(api_client, namespace, "auth-api-v3") == deployment_pods(
        api_client, namespace, "auth-v3")
