"""The Kubernetes API through the official client: contexts, discovery, get/apply/delete.

Every call the tool makes to a cluster goes through ``KubeClient``, which turns the client's
exceptions into ``KubeError`` (the API answered no) and ``Unreachable`` (it did not answer),
and counts the requests and the writes it sends. Answers are read as plain JSON, not through
the dynamic client's object wrappers, which cost more CPU than the request itself. A client
can be guarded (``guarded``): it then sends a write only while its guard allows, as a
daemon's writes are allowed only while it leads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from reconciler.errors import ReconcilerError
from reconciler.kube.inventory import ObjectRef

_DISCOVERY_ATTEMPTS = 10
_DISCOVERY_PAUSE = 0.5
_NOT_FOUND_ATTEMPTS = 2


class KubeError(ReconcilerError):
    """The API server refused a request."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Unreachable(ReconcilerError):
    """The API server did not answer."""


class WriteRefused(ReconcilerError):
    """A guarded client's guard no longer allows writes (this replica stopped leading)."""


def connect(context: str | None, kubeconfig: Path | None = None) -> KubeClient:
    """A client for a kubeconfig context; inside a pod without a kubeconfig, the pod's own
    service account."""
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if in_pod and kubeconfig is None and not os.environ.get("KUBECONFIG"):
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        return KubeClient(kubernetes.client.ApiClient(configuration))
    try:
        api = kubernetes.config.new_client_from_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context)
    except (ConfigException, OSError) as exc:
        raise ReconcilerError(f"cannot use kubeconfig context {context!r}: {exc}") from None
    api.configuration.retries = 1
    return KubeClient(api)


class _Discovery:
    """The API's discovery, made once and shared by a client and its siblings, and the count
    of requests they sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dynamic: DynamicClient | None = None
        self.requests = 0
        self.counting = threading.Lock()


POOL_SIZE = 32
"""Connections kept open to the API server: every worker thread of every environment
(``ResourceManager.concurrency`` each) reuses one instead of opening a new one per request."""


def _widen_pool(api: kubernetes.client.ApiClient) -> None:
    manager = getattr(getattr(api, "rest_client", None), "pool_manager", None)
    settings = getattr(manager, "connection_pool_kw", None)
    if isinstance(settings, dict) and settings.get("maxsize", 0) < POOL_SIZE:
        settings["maxsize"] = POOL_SIZE
        manager.clear()  # type: ignore[union-attr]  # pools made before take the new size


class KubeClient:
    def __init__(self, api: kubernetes.client.ApiClient, timeout: float = 30) -> None:
        _widen_pool(api)
        self.api = api
        self.timeout = timeout
        self._discovery = _Discovery()
        self._guard: Callable[[], bool] = lambda: True
        self.writes = 0

    def guarded(self, may_write: Callable[[], bool]) -> KubeClient:
        """This client (same connection and discovery), refusing each write with
        ``WriteRefused`` unless ``may_write()`` says yes just before it is sent."""
        return self._sibling(guard=may_write)

    def with_timeout(self, seconds: float) -> KubeClient:
        """This client, giving up on each request after ``seconds``."""
        return self._sibling(timeout=seconds)

    def _sibling(self, timeout: float | None = None,
                 guard: Callable[[], bool] | None = None) -> KubeClient:
        sibling = KubeClient(self.api, self.timeout if timeout is None else timeout)
        sibling._discovery = self._discovery
        sibling._guard = guard or self._guard
        return sibling

    def _write(self, ref: ObjectRef) -> None:
        if not self._guard():
            raise WriteRefused(f"not writing {ref}: this replica no longer leads")
        self.writes += 1

    @property
    def requests(self) -> int:
        """API requests sent by this client and its siblings (discovery included)."""
        return self._discovery.requests

    def _count(self) -> None:
        with self._discovery.counting:
            self._discovery.requests += 1

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def _resource(self, api_version: str, kind: str) -> Any:
        discovery = self._discovery
        with discovery.lock:
            if discovery.dynamic is None:
                discovery.dynamic = self._call(lambda: DynamicClient(self.api))
            dynamic = discovery.dynamic
        for attempt in range(_DISCOVERY_ATTEMPTS):
            try:
                return dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                if attempt >= _NOT_FOUND_ATTEMPTS:
                    raise KubeError(f"the cluster has no {kind} in {api_version}") from None
                # A CRD just established can be missing from discovery for a moment.
                with discovery.lock:
                    dynamic.resources.invalidate_cache()
                time.sleep(_DISCOVERY_PAUSE)
            except KeyError:
                # A group being registered right now (a CRD just established) can show in
                # discovery before its resources do; the client then fails on the gap.
                time.sleep(_DISCOVERY_PAUSE)
        raise KubeError(f"the cluster's discovery of {api_version} is incomplete (a CRD being "
                        "registered?); try again")

    def _call(self, action: Any) -> Any:
        self._count()
        try:
            return action()
        except DynamicApiError as exc:
            raise KubeError(_message(exc), exc.status, str(exc.reason)) from None
        except kubernetes.client.ApiException as exc:
            raise KubeError(_message(exc), exc.status, str(exc.reason)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"cannot reach the API server at {self.host}: "
                              f"{type(exc).__name__}") from None

    def _json(self, action: Any) -> dict[str, Any]:
        """``action``'s answer (a dynamic client call made with ``serialize=False``) as JSON."""
        response = self._call(action)
        try:
            found = json.loads(response.data)
        except (TypeError, ValueError) as exc:
            raise KubeError(f"the API server at {self.host} sent an answer that is not JSON: "
                            f"{exc}") from None
        if not isinstance(found, dict):
            raise KubeError(f"the API server at {self.host} sent an unexpected answer")
        return found

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        resource = self._resource(ref.api_version, ref.kind)
        try:
            return self._json(lambda: resource.get(
                name=ref.name, namespace=ref.namespace or None, serialize=False,
                _request_timeout=self.timeout))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list_objects(self, api_version: str, kind: str, namespace: str,
                     label_selector: str = "") -> list[dict[str, Any]]:
        """The objects of a kind in ``namespace`` (none if it does not exist) that match
        ``label_selector``."""
        return [item for page in self.list_pages(api_version, kind, namespace, label_selector)
                for item in page]

    def list_pages(self, api_version: str, kind: str, namespace: str | None,
                   label_selector: str = "", limit: int = 500) -> Iterator[list[dict[str, Any]]]:
        """The objects of a kind that match ``label_selector``, in ``namespace`` or, with
        None, in every namespace, a page of at most ``limit`` at a time (so a caller that
        keeps only a summary of each never holds them all). Each object carries its
        ``apiVersion`` and ``kind``, as a GET's answer does."""
        for items, _ in self.snapshot_pages(api_version, kind, namespace, label_selector, limit):
            yield items

    def snapshot_pages(self, api_version: str, kind: str, namespace: str | None,
                       label_selector: str = "", limit: int = 500,
                       ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """``list_pages``, each page with the resourceVersion of the list (the same on every
        page): a watch from it misses nothing that changed after."""
        resource = self._resource(api_version, kind)
        token: str | None = None
        version = ""
        while True:
            page = self._json(lambda at=token: resource.get(
                namespace=namespace, label_selector=label_selector or None, limit=limit,
                _continue=at, serialize=False, _request_timeout=self.timeout))
            items = page.get("items") or []
            for item in items:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
            version = version or str((page.get("metadata") or {}).get("resourceVersion") or "")
            yield items, version
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return

    def watch(self, api_version: str, kind: str, namespace: str | None, label_selector: str,
              resource_version: str, seconds: int) -> Watch:
        """A watch of a kind's changes after ``resource_version``, for at most ``seconds``
        (the server then ends it): iterate it for events (plain JSON, bookmarks included),
        ``cancel`` it from any thread to end it early."""
        resource = self._resource(api_version, kind)
        response = self._call(lambda: resource.get(
            namespace=namespace, label_selector=label_selector or None, watch=True,
            allow_watch_bookmarks=True, resource_version=resource_version,
            timeout_seconds=seconds, serialize=False, _preload_content=False,
            _request_timeout=(self.timeout, seconds + self.timeout)))
        return Watch(getattr(response, "response", response), self)

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """One container's log, from the API server's log endpoint (which asks the node)."""
        core = kubernetes.client.CoreV1Api(self.api)
        return str(self._call(lambda: core.read_namespaced_pod_log(
            pod, namespace, container=container, _request_timeout=self.timeout)))

    def apply(self, obj: Mapping[str, Any], field_manager: str, force: bool,
              dry_run: bool) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        resource = self._resource(ref.api_version, ref.kind)
        if not dry_run:
            self._write(ref)
        return self._json(lambda: resource.server_side_apply(
            body=dict(obj), name=ref.name, namespace=ref.namespace or None,
            field_manager=field_manager, force_conflicts=force,
            dry_run="All" if dry_run else None, serialize=False, _request_timeout=self.timeout))

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        resource = self._resource(ref.api_version, ref.kind)
        self._write(ref)
        return self._json(lambda: resource.create(
            body=dict(obj), namespace=ref.namespace or None, serialize=False,
            _request_timeout=self.timeout))

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Update with optimistic concurrency: fails with 409 if resourceVersion moved."""
        ref = ObjectRef.of(obj)
        resource = self._resource(ref.api_version, ref.kind)
        self._write(ref)
        return self._json(lambda: resource.replace(
            body=dict(obj), name=ref.name, namespace=ref.namespace or None, serialize=False,
            _request_timeout=self.timeout))

    def delete(self, ref: ObjectRef) -> None:
        resource = self._resource(ref.api_version, ref.kind)
        self._write(ref)
        self._call(lambda: resource.delete(name=ref.name, namespace=ref.namespace or None,
                                           propagation_policy="Background",
                                           serialize=False, _request_timeout=self.timeout))


class Watch:
    """The events of one watch request, as plain JSON, one per line of the answer."""

    def __init__(self, response: Any, client: KubeClient) -> None:
        self.response = response
        self.client = client

    def __iter__(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Each event and its line as sent (the caller may keep the bytes instead)."""
        pending = b""
        try:
            for chunk in self.response.stream(64 * 1024, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event, line
        except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError) as exc:
            raise Unreachable(f"the watch of {self.client.host} ended: "
                              f"{type(exc).__name__}") from None
        finally:
            with contextlib.suppress(Exception):  # closing what may be closed already
                self.response.close()

    def cancel(self) -> None:
        """End the watch from another thread: its reader sees the connection end."""
        connection = getattr(self.response, "connection", None) or \
            getattr(self.response, "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: "")()
    try:
        return str(json.loads(body).get("message", body))
    except (TypeError, ValueError, AttributeError):
        return str(body or exc)
