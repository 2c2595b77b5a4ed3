"""Validate rendered objects against the Kubernetes OpenAPI schemas.

Kinds of the built-in API groups are checked against their schema (a typo in a kind or a
field is an error). Kinds of other groups (custom resources such as a ServiceMonitor or an
HTTPRoute from organisation templates) are checked structurally here; the API server
checks them against their CRD's schema in apply's dry-run.

The schemas are the strict JSON Schema conversion that the maintained
``kubernetes-validate`` package ships for each Kubernetes release; this module caches
one compiled validator per kind, which that package's own entry point does not.
jsonschema-rs checks validity at native speed; python-jsonschema explains the rare
object that fails.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    import jsonschema
    from referencing import Registry

KUBERNETES_VERSION = "1.36"
_SCHEMA_DIR = f"v{KUBERNETES_VERSION}.0-local-strict"
_BASE = "https://kubernetes.invalid"
_DEFINITIONS = "/api/_definitions.json"


@cache
def _folder() -> Any:
    # Found without importing the package where it is a folder on disk: importing it pulls
    # in python-jsonschema. Elsewhere (a zip) through importlib.resources.
    spec = find_spec("kubernetes_validate")
    if spec is None:
        raise ReconcilerError("the kubernetes-validate package is not installed: reinstall "
                              "the reconciler with its dependencies")
    for location in spec.submodule_search_locations or ():
        folder = Path(location) / "kubernetes-json-schema" / _SCHEMA_DIR
        if folder.is_dir():
            return folder
    return files("kubernetes_validate") / "kubernetes-json-schema" / _SCHEMA_DIR


@cache
def _definitions() -> Any:
    return json.loads((_folder() / "_definitions.json").read_text())


@cache
def _registry() -> Registry[Any]:
    # The validators are imported when first used: a render whose objects all come from
    # the cache validates nothing.
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry().with_resource(
        _DEFINITIONS, Resource.from_contents(_definitions()))
    return registry


@cache
def _fast_registry() -> Any:
    import jsonschema_rs

    return jsonschema_rs.Registry([(_BASE + _DEFINITIONS, _definitions())])


def _group_version(api_version: str) -> str:
    return re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)


@cache
def _known_group_versions() -> frozenset[str]:
    """The API group versions the bundled schemas cover (``apps-v1``, ``v1``...)."""
    return frozenset(entry.name.removesuffix(".json").split("-", 1)[1]
                     for entry in _folder().iterdir()
                     if entry.name.endswith(".json") and "-" in entry.name)


def _builtin(api_version: str) -> bool:
    """A group version of Kubernetes itself (``v1``, ``apps/v1``, ``networking.k8s.io/v1``),
    not of a custom resource (``monitoring.coreos.com/v1``, ``networking.istio.io/v1``)."""
    group = api_version.rpartition("/")[0]
    official = "." not in group or group.endswith(".k8s.io")
    return official and _group_version(api_version) in _known_group_versions()


@cache
def _schema(api_version: str, kind: str) -> Any:
    schema_file = _folder() / f"{kind.lower()}-{_group_version(api_version)}.json"
    return json.loads(schema_file.read_text()) if schema_file.is_file() else None


@cache
def _fast_validator(api_version: str, kind: str) -> Any:
    schema = _schema(api_version, kind)
    if schema is None:
        return None
    import jsonschema_rs

    return jsonschema_rs.validator_for(schema, registry=_fast_registry(),
                                       base_uri=f"{_BASE}/api/{kind.lower()}.json")


@cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(_schema(api_version, kind), registry=_registry())


def problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with one object, as ``field.path: message`` strings; empty if valid."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind must be strings"]
    fast = _fast_validator(api_version, kind)
    if fast is None:
        if not _builtin(api_version):
            return _structural_problems(obj)
        return [f"unknown kind {kind} in {api_version} (Kubernetes {KUBERNETES_VERSION})"]
    if fast.is_valid(obj):
        return []
    found = []
    for error in _validator(api_version, kind).iter_errors(obj):
        where = ".".join(str(p) for p in error.absolute_path) or "(object)"
        found.append(f"{where}: {error.message}")
    return sorted(found)


_API_VERSION = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/v[0-9]+((alpha|beta)[0-9]+)?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*")


def _structural_problems(obj: dict[str, Any]) -> list[str]:
    """What any Kubernetes object must be, for kinds whose schema only the cluster has."""
    found = []
    if not _API_VERSION.fullmatch(str(obj["apiVersion"])):
        found.append(f"apiVersion: {obj['apiVersion']!r} is not GROUP/VERSION")
    if not _KIND.fullmatch(str(obj["kind"])):
        found.append(f"kind: {obj['kind']!r} is not a kind name")
    metadata = obj.get("metadata")
    for field in ("labels", "annotations"):
        values = metadata.get(field) if isinstance(metadata, dict) else None
        if values is not None and not (isinstance(values, dict) and all(
                isinstance(v, str) for v in values.values())):
            found.append(f"metadata.{field}: must map names to strings")
    return found
