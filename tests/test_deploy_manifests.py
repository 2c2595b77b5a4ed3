"""deploy/ runs the daemon in a cluster: `kubectl apply -k deploy/` with the inputs a user
writes as deploy/README.md says (the image, reconciler.env, secrets/) gives valid objects
that become Available and carry those inputs, a missing input is named, and the
ServiceAccount's rights are enough for a real reconcile and no more."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient

from reconciler.kube.client import KubeClient, KubeError
from reconciler.kube.inventory import ObjectRef
from reconciler.kube.lease import LeaderElection
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.reconcile import SYSTEM_NAMESPACE, apply_environment
from reconciler.render import k8sschema

from conftest import ROOT, LiveEnv, client_as, controlplane_module, wait_for

IMAGE = "registry.example.com/platform/reconciler:1.2.3"
CLUSTER = "nonprod-eu"
STATE_REPO_URL = "https://git.example.com/acme/state.git"
WEBHOOK_SECRET = "the Git host's webhook secret"
INPUTS = ("reconciler.env", "secrets/age-keys.txt", "secrets/webhook-secret")


@pytest.fixture(scope="session")
def tools() -> Path:
    """The directory holding kubectl and kustomize, built with the control plane."""
    return controlplane_module().build()


def configure(deploy: Path, tools: Path, age_key: Path,
              webhook_secret: str = WEBHOOK_SECRET) -> None:
    """What deploy/README.md tells a user to do before `kubectl apply -k deploy/`."""
    subprocess.run([tools / "kustomize", "edit", "set", "image", f"reconciler={IMAGE}"],
                   cwd=deploy, check=True)
    (deploy / "reconciler.env").write_text(
        f"CLUSTER={CLUSTER}\nSTATE_REPO_URL={STATE_REPO_URL}\n")
    (deploy / "secrets").mkdir(exist_ok=True)
    (deploy / "secrets/webhook-secret").write_text(webhook_secret)
    shutil.copy(age_key, deploy / "secrets/age-keys.txt")


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory, tools: Path, demo_key: Path) -> Path:
    """A user's copy of deploy/ with every input written."""
    path = tmp_path_factory.mktemp("user") / "deploy"
    shutil.copytree(ROOT / "deploy", path)
    configure(path, tools, demo_key)
    return path


def kubectl(tools: Path, *args: str | Path,
            kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    config = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run([tools / "kubectl", *config, *map(str, args)], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def manifests(deploy: Path, tools: Path) -> list[dict[str, Any]]:
    built = kubectl(tools, "kustomize", deploy)
    assert built.returncode == 0, built.stderr
    return [document for document in yaml.safe_load_all(built.stdout) if document]


@pytest.fixture(scope="module")
def applied(deploy: Path, tools: Path, control_plane: Path) -> Iterator[Path]:
    """`kubectl apply -k deploy/` against the test control plane, as a user runs it."""
    result = kubectl(tools, "apply", "-k", deploy, kubeconfig=control_plane)
    assert result.returncode == 0, result.stderr
    yield deploy


def test_manifests_are_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    for document in manifests:
        assert k8sschema.problems(document) == [], document["metadata"]["name"]


def test_the_inputs_are_never_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *INPUTS], cwd=ROOT / "deploy",
                             capture_output=True, text=True)
    assert ignored.stdout.split() == list(INPUTS)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT / "deploy", capture_output=True,
                             text=True, check=True).stdout.split()
    assert not set(tracked) & set(INPUTS)


@pytest.mark.parametrize("missing", INPUTS)
def test_a_missing_input_is_named(missing: str, tmp_path: Path, tools: Path,
                                  demo_key: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", deploy)
    configure(deploy, tools, demo_key)
    (deploy / missing).unlink()
    built = kubectl(tools, "kustomize", deploy)
    assert built.returncode != 0
    assert str(deploy / missing) in built.stderr


def deployment(api_client: ApiClient) -> Any:
    return kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(
        "reconciler", SYSTEM_NAMESPACE)


def available(api_client: ApiClient) -> bool:
    """Rolled out: every replica updated to the newest template and available."""
    status = deployment(api_client).status
    return (status.observed_generation == deployment(api_client).metadata.generation
            and status.updated_replicas == 2 and status.available_replicas == 2
            and (status.replicas or 0) == 2)


def mounted_secret(api_client: ApiClient, volume: str) -> dict[str, str]:
    """The content of the Secret the daemon's pods mount as ``volume``."""
    name = next(v.secret.secret_name for v in deployment(api_client).spec.template.spec.volumes
                if v.name == volume)
    secret = kubernetes.client.CoreV1Api(api_client).read_namespaced_secret(
        name, SYSTEM_NAMESPACE)
    return {key: base64.b64decode(value).decode() for key, value in secret.data.items()}


def daemon_command(api_client: ApiClient) -> list[str]:
    """The daemon's arguments as the kubelet expands them, $(VAR) from the container's env."""
    core = kubernetes.client.CoreV1Api(api_client)
    container = deployment(api_client).spec.template.spec.containers[0]
    env: dict[str, str] = {}
    for variable in container.env:
        if variable.value_from is None:
            env[variable.name] = variable.value
        else:
            reference = variable.value_from.config_map_key_ref
            env[variable.name] = core.read_namespaced_config_map(
                reference.name, SYSTEM_NAMESPACE).data[reference.key]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container.args]


def test_kubectl_apply_k_runs_the_daemon_with_the_users_inputs(
        applied: Path, api_client: ApiClient, demo_key: Path) -> None:
    wait_for(lambda: available(api_client), "the daemon's Deployment", timeout=90)
    assert deployment(api_client).spec.template.spec.containers[0].image == IMAGE
    command = daemon_command(api_client)
    assert command[command.index("--cluster") + 1] == CLUSTER
    assert command[command.index("--clone-from") + 1] == STATE_REPO_URL
    assert mounted_secret(api_client, "age-key") == {"keys.txt": demo_key.read_text()}
    assert mounted_secret(api_client, "webhook") == {"secret": WEBHOOK_SECRET}


def test_a_changed_secret_rolls_the_pods(applied: Path, tools: Path, control_plane: Path,
                                         api_client: ApiClient, demo_key: Path) -> None:
    before = deployment(api_client).metadata.generation
    configure(applied, tools, demo_key, webhook_secret="rotated")
    result = kubectl(tools, "apply", "-k", applied, kubeconfig=control_plane)
    assert result.returncode == 0, result.stderr
    assert deployment(api_client).metadata.generation > before
    wait_for(lambda: available(api_client), "the rollout", timeout=90)
    assert mounted_secret(api_client, "webhook") == {"secret": "rotated"}


def as_service_account(api_client: ApiClient) -> KubeClient:
    return KubeClient(client_as(api_client, "reconciler", SYSTEM_NAMESPACE))


def test_the_daemons_rights_are_enough_for_a_reconcile(
        applied: Path, live: LiveEnv, api_client: ApiClient) -> None:
    daemon = as_service_account(api_client)
    state = load_state(WorkTree(live.repo))
    result = apply_environment(state, live.name, "nonprod-eu", daemon, decrypt=live.decrypt(),
                               force_conflicts=True)
    assert not [c for c in result.changes if c.action == "failed"], result.changes
    (live.repo / f"environments/{live.name}/shop/storefront/release.yaml").unlink()
    pruned = apply_environment(load_state(WorkTree(live.repo)), live.name, "nonprod-eu", daemon,
                               decrypt=live.decrypt(), force_conflicts=True)
    assert {c.ref.name for c in pruned.changes if c.action == "deleted"} >= {"storefront"}
    election = LeaderElection(daemon, SYSTEM_NAMESPACE, f"reconciler-rbac-{live.name}", "pod-0")
    assert election.try_acquire_or_renew()
    assert election.try_acquire_or_renew(), "renewing needs update"


@pytest.mark.parametrize("ref", [ObjectRef("v1", "Pod", "kube-system", "anything"),
                                 ObjectRef("v1", "Node", "", "kwok-node-0"),
                                 ObjectRef("rbac.authorization.k8s.io/v1", "ClusterRole", "",
                                           "cluster-admin")])
def test_the_daemon_has_no_rights_beyond_what_it_renders(applied: Path, api_client: ApiClient,
                                                         ref: ObjectRef) -> None:
    with pytest.raises(KubeError) as refused:
        as_service_account(api_client).get(ref)
    assert refused.value.status == 403
