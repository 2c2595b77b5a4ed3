"""The daemon's HTTP side: /healthz, /readyz (503 with the reason), Prometheus /metrics,
and POST /hooks/git, which only a request signed with the shared secret can trigger."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import prometheus_client

from reconciler.daemon.metrics import log

if TYPE_CHECKING:
    from reconciler.daemon.loop import Daemon

MAX_WEBHOOK_BODY = 1 << 20


def webhook_authentic(secret: bytes | None, headers: Mapping[str, str], body: bytes) -> bool:
    """GitHub's ``X-Hub-Signature-256`` (HMAC-SHA256 of the body), GitLab's
    ``X-Gitlab-Token``, or ``Authorization: Bearer``, against the shared secret (header
    names in lower case)."""
    if not secret:
        return False
    signature = headers.get("x-hub-signature-256") or ""
    if signature.startswith("sha256="):
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.removeprefix("sha256="), expected)
    token = headers.get("x-gitlab-token") or ""
    bearer = headers.get("authorization") or ""
    offered = token or (bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else "")
    return bool(offered) and hmac.compare_digest(offered.encode(), secret)


def serve(daemon: Daemon, address: str, probes: bool = True,
          webhook: bool = True) -> http.server.ThreadingHTTPServer:
    """Serve /healthz, /readyz and /metrics (``probes``) and POST /hooks/git
    (``webhook``) on ``address``; the two can listen apart."""
    host, _, port = address.rpartition(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not probes:
                self._reply(404, b"not found\n")
            elif self.path == "/healthz":
                self._reply(200, b"ok\n")
            elif self.path == "/readyz":
                reason = daemon.not_ready()
                self._reply(503 if reason else 200,
                            f"not ready: {reason}\n".encode() if reason else b"ok\n")
            elif self.path == "/metrics":
                self._reply(200, prometheus_client.generate_latest(daemon.metrics.registry),
                            prometheus_client.CONTENT_TYPE_LATEST)
            else:
                self._reply(404, b"not found\n")

        def do_POST(self) -> None:
            if self.path != "/hooks/git" or not webhook:
                self._reply(404, b"not found\n")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_WEBHOOK_BODY:
                self._reply(413, b"body missing or too large\n")
                return
            body = self.rfile.read(length)
            headers = {key.lower(): value for key, value in self.headers.items()}
            if not webhook_authentic(daemon.webhook_key(), headers, body):
                log.warning("webhook refused", extra={"from": self.client_address[0]})
                self._reply(401, b"unauthenticated\n")
                return
            daemon.trigger.set()
            self._reply(202, b"fetching\n")

        def _reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http", extra={"request": format % args})

    server = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
