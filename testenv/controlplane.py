"""Start and stop a real Kubernetes control plane on loopback, for tests and by hand.

etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler and KWOK (which
simulates nodes, so pods get scheduled and become Ready without a kubelet), all built from
upstream Go modules by testenv/build.sh. Standard library plus the openssl command only,
so scripts/testenv works without the project's virtualenv.

    python3 testenv/controlplane.py up   [--state-dir DIR] [--bin-dir DIR] [--nodes N] [--audit-all]
    python3 testenv/controlplane.py down [--state-dir DIR]

The API server writes an audit log of every write (who, with which user agent, when) to
logs/audit.log in the state folder; with `--audit-all` (or RECONCILER_TESTENV_AUDIT_ALL=1)
of every request, reads included. For fault tests, `pause`, `resume` and `restart` act on
one component of a running control plane (SIGSTOP, SIGCONT, stop and start again).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_STATE = Path(tempfile.gettempdir()) / f"reconciler-testenv-{os.getuid()}"
PIDS = "pids.json"
COMMANDS = "commands.json"
AUDIT_LOG = "logs/audit.log"
START_TIMEOUT = 120.0
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "verbs": ["create", "update", "patch", "delete",
                                             "deletecollection"]},
              {"level": "None"}],
}
AUDIT_ALL_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
"""Opt-in (``up(audit_all=True)``, ``up --audit-all`` or RECONCILER_TESTENV_AUDIT_ALL=1): every
request of every verb, reads included, for benchmarks that count requests per client."""


class TestEnvError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build() -> Path:
    """The binaries' directory, building them first if they are not cached."""
    result = subprocess.run(["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise TestEnvError("building the test control plane failed (see the messages above)")
    return Path(result.stdout.strip().splitlines()[-1])


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise TestEnvError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _certificates(pki: Path) -> None:
    pki.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
             "-subj", "/CN=reconciler-testenv-ca", cwd=pki)
    subjects = {
        "apiserver": ("/CN=kube-apiserver", "subjectAltName=IP:127.0.0.1,DNS:localhost,"
                      "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"),
        "admin": ("/O=system:masters/CN=testenv-admin", None),
        "controller-manager": ("/CN=system:kube-controller-manager", None),
        "scheduler": ("/CN=system:kube-scheduler", None),
    }
    for name, (subject, extension) in subjects.items():
        request = ["req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                   "-subj", subject]
        if extension:
            request += ["-addext", extension]
        _openssl(*request, cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "7", "-copy_extensions", "copy",
                 "-out", f"{name}.crt", cwd=pki)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki / f"{user}.crt"),
            "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": user}}],
        "current-context": "testenv",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")


class _Api:
    """Just enough HTTPS to wait for readiness and create nodes, as the admin."""

    def __init__(self, port: int, pki: Path) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                                 timeout=10)
        try:
            payload = json.dumps(body) if body is not None else None
            connection.request(method, path, body=payload,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _wait(what: str, check: object, processes: dict[str, subprocess.Popen[bytes]],
          logs: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise TestEnvError(f"{name} exited with {process.returncode} while waiting for "
                                   f"{what}; the end of its log:\n{_tail(logs / (name + '.log'))}")
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise TestEnvError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {logs}")


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _node(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name,
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "type": "kwok"}},
        # Room for every test's pods in one session (tests leave their namespaces behind);
        # still less CPU than the 500 cores tests ask for to make a pod unschedulable.
        "status": {"allocatable": {"cpu": "256", "memory": "2Ti", "pods": "1000"},
                   "capacity": {"cpu": "256", "memory": "2Ti", "pods": "1000"}},
    }


def up(state: Path, bin_dir: Path | None = None, nodes: int = 2,
       audit_all: bool | None = None) -> Path:
    """Start everything; returns the admin kubeconfig once /readyz is ok and nodes are Ready.
    The audit log holds the writes only, unless ``audit_all`` (default: the environment
    variable RECONCILER_TESTENV_AUDIT_ALL=1) asks for every request."""
    if audit_all is None:
        audit_all = os.environ.get("RECONCILER_TESTENV_AUDIT_ALL") == "1"
    if (state / PIDS).exists():
        raise TestEnvError(f"a control plane is already up in {state}: run 'down' first")
    binaries = bin_dir or build()
    state.mkdir(parents=True, exist_ok=True)
    pki, logs = state / "pki", state / "logs"
    _certificates(pki)
    logs.mkdir()
    ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "scheduler",
                                             "controller-manager", "kwok")}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfig = state / "admin.kubeconfig"
    for user in ("admin", "controller-manager", "scheduler"):
        _kubeconfig(state / f"{user}.kubeconfig", server, pki, user)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    commands: dict[str, list[str]] = {}
    (state / "audit-policy.json").write_text(json.dumps(AUDIT_ALL_POLICY if audit_all
                                                          else AUDIT_POLICY))

    def start(name: str, *args: str) -> None:
        commands[name] = [str(binaries / name), *args]
        (state / COMMANDS).write_text(json.dumps({"ports": ports, "commands": commands}))
        processes[name] = _launch(state, name, commands[name])

    try:
        etcd = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        start("etcd", "--data-dir", str(state / "etcd"), "--name", "testenv",
              "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
              "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
              "--initial-cluster", f"testenv={peer}", "--unsafe-no-fsync",
              "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}")
        _wait("etcd", lambda: _http_ok(ports["etcd"], "/health"), processes, logs)
        start("kube-apiserver",
              "--etcd-servers", etcd, "--bind-address", "127.0.0.1",
              "--advertise-address", "127.0.0.1", "--secure-port", str(ports["apiserver"]),
              "--tls-cert-file", str(pki / "apiserver.crt"),
              "--tls-private-key-file", str(pki / "apiserver.key"),
              "--client-ca-file", str(pki / "ca.crt"),
              "--authorization-mode", "Node,RBAC",
              "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
              "--service-account-key-file", str(pki / "sa.pub"),
              "--service-account-signing-key-file", str(pki / "sa.key"),
              "--service-cluster-ip-range", "10.96.0.0/16",
              "--allow-privileged=true", "--enable-priority-and-fairness=false",
              "--audit-policy-file", str(state / "audit-policy.json"),
              "--audit-log-path", str(state / AUDIT_LOG), "--audit-log-format", "json",
              "--cert-dir", str(state / "apiserver-certs"))
        api = _Api(ports["apiserver"], pki)
        _wait("kube-apiserver /readyz", lambda: api.request("GET", "/readyz")[0] == 200,
              processes, logs)
        cm = str(state / "controller-manager.kubeconfig")
        start("kube-controller-manager", "--kubeconfig", cm,
              "--authentication-kubeconfig", cm, "--authorization-kubeconfig", cm,
              "--bind-address", "127.0.0.1", "--secure-port", str(ports["controller-manager"]),
              "--service-account-private-key-file", str(pki / "sa.key"),
              "--root-ca-file", str(pki / "ca.crt"), "--use-service-account-credentials=true",
              "--leader-elect=false", "--controllers=*,-nodeipam,-cloud-node-lifecycle",
              "--cert-dir", str(state / "controller-manager-certs"))
        scheduler = str(state / "scheduler.kubeconfig")
        start("kube-scheduler", "--kubeconfig", scheduler,
              "--authentication-kubeconfig", scheduler, "--authorization-kubeconfig", scheduler,
              "--bind-address", "127.0.0.1", "--secure-port", str(ports["scheduler"]),
              "--leader-elect=false", "--cert-dir", str(state / "scheduler-certs"))
        start("kwok", "--kubeconfig", str(kubeconfig), "--manage-all-nodes=false",
              "--config", str(binaries / "kwok-stages.yaml"),
              "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
              "--node-ip=10.244.0.1", "--cidr=10.244.0.0/16",
              "--node-lease-duration-seconds=40",
              "--server-address", f"127.0.0.1:{ports['kwok']}")
        _kubeconfig(kubeconfig, server, pki, "admin")
        for index in range(nodes):
            status, body = api.request("POST", "/api/v1/nodes", _node(f"kwok-node-{index}"))
            if status not in (201, 409):
                raise TestEnvError(f"creating a simulated node failed: {status} {body[:300]!r}")
        _wait("simulated nodes to be Ready", lambda: _nodes_ready(api, nodes), processes, logs)
        _wait("the default service account",
              lambda: api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0]
              == 200, processes, logs)
    except BaseException:
        down(state)
        raise
    return kubeconfig


def _launch(state: Path, name: str, command: list[str]) -> subprocess.Popen[bytes]:
    """Start one component in a session of its own, its output appended to its log."""
    with open(state / "logs" / f"{name}.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    pids = json.loads((state / PIDS).read_text()) if (state / PIDS).exists() else {}
    (state / PIDS).write_text(json.dumps({**pids, name: process.pid}))
    return process


def _pid(state: Path, name: str) -> int:
    pids: dict[str, int] = json.loads((state / PIDS).read_text())
    if name not in pids:
        raise TestEnvError(f"no {name} in the control plane at {state}: one of {sorted(pids)}")
    return pids[name]


def pause(state: Path, name: str) -> None:
    """Freeze one component (SIGSTOP): its connections stay open and nothing answers."""
    _signal(_pid(state, name), signal.SIGSTOP)


def resume(state: Path, name: str) -> None:
    _signal(_pid(state, name), signal.SIGCONT)


def restart(state: Path, name: str) -> None:
    """Stop one component (SIGTERM, SIGKILL after 15 s) and start it again with the same
    command line and data; returns once etcd is healthy or the API server is ready again."""
    pid = _pid(state, name)
    _signal(pid, signal.SIGTERM)
    _wait_gone([pid], 15)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)
        _wait_gone([pid], 5)
    recorded = json.loads((state / COMMANDS).read_text())
    process = _launch(state, name, recorded["commands"][name])
    ports = recorded["ports"]
    api = _Api(ports["apiserver"], state / "pki")
    _wait(f"{name} to be back", {
        "etcd": lambda: _http_ok(ports["etcd"], "/health"),
        "kube-apiserver": lambda: api.request("GET", "/readyz")[0] == 200,
    }.get(name, lambda: True), {name: process}, state / "logs")


def _http_ok(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    finally:
        connection.close()


def _nodes_ready(api: _Api, count: int) -> bool:
    status, body = api.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
    if status != 200:
        return False
    ready = 0
    for node in json.loads(body)["items"]:
        conditions = node.get("status", {}).get("conditions", [])
        ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready >= count


def down(state: Path) -> None:
    """Stop every process `up` started (by pid) and remove its state; a no-op if none."""
    pids_file = state / PIDS
    if pids_file.exists():
        pids: dict[str, int] = json.loads(pids_file.read_text())
        for pid in reversed(list(pids.values())):
            _signal(pid, signal.SIGTERM)
        _wait_gone(pids.values(), 15)
        for pid in pids.values():
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        _wait_gone(pids.values(), 5)
    if state.exists():
        subprocess.run(["rm", "-rf", str(state)], check=False)


def _signal(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)


def _wait_gone(pids: Iterable[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running: not gone, and not a zombie (ours are reaped here; others by init)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return False
    return fields[0] != "Z"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "pause", "resume", "restart"])
    parser.add_argument("component", nargs="?", help="pause/resume/restart: which one "
                        "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)")
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("RECONCILER_TESTENV_STATE", DEFAULT_STATE)))
    parser.add_argument("--bin-dir", type=Path)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--audit-all", action="store_true", default=None,
                        help="up: audit every request, reads included (default: writes only; "
                             "also RECONCILER_TESTENV_AUDIT_ALL=1)")
    args = parser.parse_args()
    try:
        if args.command == "up":
            kubeconfig = up(args.state_dir, args.bin_dir, args.nodes, args.audit_all)
            print("control plane up; stop it with: scripts/testenv down"
                  + (f" --state-dir {args.state_dir}" if args.state_dir != DEFAULT_STATE else ""))
            print(f"export KUBECONFIG={kubeconfig}")
        elif args.command == "down":
            down(args.state_dir)
        else:
            if not args.component:
                parser.error(f"{args.command} needs a component")
            {"pause": pause, "resume": resume, "restart": restart}[args.command](
                args.state_dir, args.component)
    except TestEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
