"""Shared fixtures: real state repos in Git (made by `reconciler init`) and a CLI runner."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import importlib.util
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pygit2
import pytest
from click.testing import CliRunner
from kubernetes.client import ApiClient

from reconciler import sops
from reconciler.cli import cli
from reconciler.daemon.loop import Daemon
from reconciler.git.store import GitTree, follow
from reconciler.load.loader import load_state_and_problems
from reconciler.load.verifications import publish_records
from reconciler.model.verification import HEALTHY, observe
from reconciler.operations.init import init_state_repo
from reconciler.reconcile import SYSTEM_NAMESPACE
from reconciler.render.engine import Decrypt

HEADER = "apiVersion: reconciler/v1\n"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


Run = Callable[..., Result]


@pytest.fixture(scope="session")
def example_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "acme"
    init_state_repo(path, example=True, demo_key=path.parent / DEMO_KEY_FILE)
    return path


DEMO_KEY_FILE = "acme-age-key.txt"


@pytest.fixture(scope="session")
def demo_key(example_template: Path) -> Path:
    """The age private key that the example's development secrets are encrypted to."""
    return example_template.parent / DEMO_KEY_FILE


@pytest.fixture
def repo(example_template: Path, tmp_path: Path) -> Path:
    """A private copy of the example state repo, a Git repository with one commit."""
    path = tmp_path / "state"
    shutil.copytree(example_template, path, symlinks=True)
    return path


@pytest.fixture
def run(repo: Path) -> Run:
    """Run `reconciler --repo <repo> ARGS...` in-process."""

    def invoke(*args: str, repo_path: Path | None = None, input: str | None = None) -> Result:
        runner = CliRunner()
        result = runner.invoke(cli, ["--repo", str(repo_path or repo), *args], input=input,
                               catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke


def write(repo: Path, relative: str, text: str, header: bool = True) -> Path:
    path = repo / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((HEADER if header else "") + text)
    return path


def edit(repo: Path, relative: str, old: str, new: str) -> None:
    path = repo / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


def commit_all(repo: Path, message: str = "change") -> str:
    repository = pygit2.Repository(str(repo))
    repository.index.add_all()
    repository.index.write()
    tree = repository.index.write_tree()
    signature = pygit2.Signature("Test", "test@example.com")
    parents = [] if repository.head_is_unborn else [repository.head.target]
    return str(repository.create_commit("HEAD", signature, signature, message, tree, parents))


def line_of(repo: Path, relative: str, text: str) -> int:
    """The 1-based line of the first line of a file that contains ``text``."""
    for number, line in enumerate((repo / relative).read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {relative}")


# --- State repos behind a real bare remote, and the CLI as a developer runs it ---

DIGEST = "sha256:" + "e" * 64
NEW_COMMIT = "c" * 40
CHECKOUT_IMAGE = f"registry.acme.example/shop/checkout@{DIGEST}"
IDENTITY = {"GIT_AUTHOR_NAME": "Dana Developer", "GIT_AUTHOR_EMAIL": "dana@acme.example"}


@pytest.fixture
def remote(repo: Path, tmp_path: Path) -> Path:
    """A bare remote holding the example state repo."""
    bare = tmp_path / "remote.git"
    pygit2.clone_repository(str(repo), str(bare), bare=True)
    return bare


def clone(remote: Path, where: Path) -> Path:
    pygit2.clone_repository(str(remote), str(where))
    return where


@pytest.fixture
def work(remote: Path, tmp_path: Path) -> Path:
    return clone(remote, tmp_path / "work")


def cli_in(path: Path, *args: str) -> Result:
    result = CliRunner(env=IDENTITY).invoke(cli, ["--repo", str(path), *args],
                                            catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def refs(remote: Path) -> dict[str, str]:
    repository = pygit2.Repository(str(remote))
    return {name: str(repository.references[name].target) for name in repository.references}


def tip(remote: Path, branch: str = "main") -> pygit2.Commit:
    repository = pygit2.Repository(str(remote))
    return repository.references[f"refs/heads/{branch}"].peel(pygit2.Commit)


def file_at(remote: Path, path: str, branch: str = "main") -> str:
    repository = pygit2.Repository(str(remote))
    return repository[tip(remote, branch).tree[path].id].data.decode()


def file_exists(remote: Path, path: str, branch: str = "main") -> bool:
    return path in tip(remote, branch).tree


def register_checkout(work: Path) -> Result:
    return cli_in(work, "build", "register", "shop/checkout", "--commit", NEW_COMMIT,
                  "--image", CHECKOUT_IMAGE)


def commit_and_push(work: Path, message: str) -> None:
    """A change made by hand, without the tool's trailers."""
    repository = pygit2.Repository(str(work))
    repository.index.add_all()
    repository.index.write()
    signature = pygit2.Signature("Hand Editor", "hand@acme.example")
    repository.create_commit("HEAD", signature, signature, message,
                             repository.index.write_tree(), [repository.head.target])
    repository.remotes["origin"].push(["refs/heads/main:refs/heads/main"])



# --- A real Kubernetes control plane (testenv/), shared by the integration tests ---

ROOT = Path(__file__).resolve().parent.parent


def controlplane_module() -> Any:
    spec = importlib.util.spec_from_file_location("controlplane", ROOT / "testenv/controlplane.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An admin kubeconfig for etcd + kube-apiserver + controllers + KWOK nodes, up once."""
    controlplane = controlplane_module()
    try:
        binaries = controlplane.build()
    except controlplane.TestEnvError as exc:
        pytest.fail(f"{exc}. The integration tests need Go 1.26+ (apt-get install golang or "
                    "https://go.dev/dl) and the Go module proxy to build the control plane.")
    state = tmp_path_factory.mktemp("controlplane")
    kubeconfig = controlplane.up(state, binaries)
    yield kubeconfig
    controlplane.down(state)


@pytest.fixture
def api_client(control_plane: Path) -> Iterator[ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(control_plane))
    yield client
    client.close()


@pytest.fixture
def namespace(api_client: ApiClient) -> Iterator[str]:
    """A fresh namespace with its default service account, deleted afterwards."""
    core = kubernetes.client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(lambda: bool(core.list_namespaced_service_account(
        name, field_selector="metadata.name=default").items), "default service account")
    yield name
    core.delete_namespace(name)


class LiveEnv:
    """The example with its development environment renamed, pointed at the test cluster."""

    def __init__(self, repo: Path, kubeconfig: Path, age_key: Path) -> None:
        self.repo = repo
        self.kubeconfig = kubeconfig
        self.age_key = age_key
        """Decrypts the example's development secrets, as an operator's key would."""
        self.name = f"d{uuid.uuid4().hex[:8]}"
        (repo / "environments/development").rename(repo / f"environments/{self.name}")
        edit(repo, f"environments/{self.name}/environment.yaml", "name: development",
             f"name: {self.name}")
        for pipeline in ("standard", "fast-lane"):
            edit(repo, f"pipelines/{pipeline}.yaml", "environment: development",
                 f"environment: {self.name}")
        edit(repo, "clusters/nonprod-eu.yaml", "context: nonprod-eu", "context: testenv")

    def shop(self) -> str:
        return f"shop-{self.name}"

    def decrypt(self) -> Decrypt:
        """Decryption of this environment's secrets with the operator's key."""
        return sops.decryptor(lambda: sops.identities(self.age_key), self.name)

    def run(self, *args: str) -> Result:
        runner = CliRunner(env={"SOPS_AGE_KEY_FILE": str(self.age_key), "SOPS_AGE_KEY": None})
        result = runner.invoke(cli, ["--repo", str(self.repo), *args, "--kubeconfig",
                                     str(self.kubeconfig)], catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    def apply(self, *args: str) -> Result:
        return self.run("apply", "--env", self.name, *args)


@pytest.fixture
def live(repo: Path, control_plane: Path, demo_key: Path) -> LiveEnv:
    """The example's development environment, renamed uniquely, ready to apply."""
    return LiveEnv(repo, control_plane, demo_key)


def client_as(api_client: ApiClient, service_account: str, namespace: str) -> ApiClient:
    """An API client authenticated as a ServiceAccount (a real token from the TokenRequest API)."""
    token = kubernetes.client.CoreV1Api(api_client).create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    configuration = kubernetes.client.Configuration()
    configuration.host = api_client.configuration.host
    configuration.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return ApiClient(configuration)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


# --- The daemon as an operator sees it ---

SECRET = b"webhook-secret"


class Running:
    """A daemon on its own thread, with its HTTP endpoints, as an operator sees it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.server = daemon.serve("127.0.0.1:0")
        self.thread = threading.Thread(target=daemon.run, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path)) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, label: str = "") -> float:
        """The sum of a metric's samples on /metrics (0 if absent), only those whose labels
        include ``label`` if given."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name) and line[len(name)] in "{ " and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def hook(self, secret: bytes = SECRET, headers: dict[str, str] | None = None) -> int:
        """POST /hooks/git as GitHub sends it, signed with ``secret``."""
        body = b'{"ref": "refs/heads/main"}'
        signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            self.url("/hooks/git"), data=body, method="POST",
            headers=headers if headers is not None else {"X-Hub-Signature-256": signature})
        try:
            with urllib.request.urlopen(request) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(timeout=30)
        self.server.shutdown()


def status_of(api: ApiClient, environment: str) -> dict[str, str]:
    try:
        return kubernetes.client.CoreV1Api(api).read_namespaced_config_map(
            f"status-{environment}", SYSTEM_NAMESPACE).data or {}
    except kubernetes.client.ApiException:
        return {}


def record_healthy(clone_path: Path, environment: str = "development",
                   hours_ago: float = 2) -> None:
    """Verification records saying that every release now in ``environment`` (at origin's
    tip) ran Healthy on each of its clusters, ``hours_ago`` (long enough for any soak),
    published the way a cluster's daemon publishes them."""
    state, _ = load_state_and_problems(GitTree(clone_path, follow(clone_path)))
    seen = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=hours_ago)
    for cluster in state.environments[environment].clusters:
        records = {}
        for release in state.releases_in(environment):
            line = state.line_suffix(*release.key[:3], release.major)
            record = observe(None, cluster=cluster, environment=environment,
                             component=release.ref, release="", image=release.image,
                             state_commit="", health=HEALTHY, now=seen, line=line)
            assert record is not None
            records[f"{release.ref}@{line}"] = record
        publish_records(clone_path, cluster, records, f"verify {environment} on {cluster}")


@pytest.fixture(autouse=True)
def render_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own cache folder, so no test reads another's or the user's cache."""
    folder = tmp_path / "reconciler-cache"
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(folder))
    return folder
