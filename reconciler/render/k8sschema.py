"""Validate rendered objects against the Kubernetes OpenAPI schemas.

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
from typing import Any

import jsonschema
import jsonschema_rs
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.36"
_SCHEMA_DIR = f"v{KUBERNETES_VERSION}.0-local-strict"
_BASE = "https://kubernetes.invalid"
_DEFINITIONS = "/api/_definitions.json"


def _folder() -> Any:
    return files("kubernetes_validate") / "kubernetes-json-schema" / _SCHEMA_DIR


@cache
def _definitions() -> Any:
    return json.loads((_folder() / "_definitions.json").read_text())


@cache
def _registry() -> Registry[Any]:
    registry: Registry[Any] = Registry().with_resource(
        _DEFINITIONS, Resource.from_contents(_definitions()))
    return registry


@cache
def _fast_registry() -> Any:
    return jsonschema_rs.Registry([(_BASE + _DEFINITIONS, _definitions())])


@cache
def _schema(api_version: str, kind: str) -> Any:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema_file = _folder() / f"{kind.lower()}-{group_version}.json"
    return json.loads(schema_file.read_text()) if schema_file.is_file() else None


@cache
def _fast_validator(api_version: str, kind: str) -> Any:
    schema = _schema(api_version, kind)
    if schema is None:
        return None
    return jsonschema_rs.validator_for(schema, registry=_fast_registry(),
                                       base_uri=f"{_BASE}/api/{kind.lower()}.json")


@cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(_schema(api_version, kind), registry=_registry())


def problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with one object, as ``field.path: message`` strings; empty if valid."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind must be strings"]
    fast = _fast_validator(api_version, kind)
    if fast is None:
        return [f"unknown kind {kind} in {api_version} (Kubernetes {KUBERNETES_VERSION})"]
    if fast.is_valid(obj):
        return []
    found = []
    for error in _validator(api_version, kind).iter_errors(obj):
        where = ".".join(str(p) for p in error.absolute_path) or "(object)"
        found.append(f"{where}: {error.message}")
    return sorted(found)
