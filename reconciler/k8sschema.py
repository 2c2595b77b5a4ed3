"""Validate rendered objects against the Kubernetes OpenAPI schemas.

The schemas are the strict JSON Schema conversion that the maintained
``kubernetes-validate`` package ships for each Kubernetes release; this module only
caches one compiled validator per kind, which that package's own entry point does not,
so thousands of objects validate in seconds.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.34"
_SCHEMA_DIR = f"v{KUBERNETES_VERSION}.0-local-strict"


def _folder() -> Any:
    return files("kubernetes_validate") / "kubernetes-json-schema" / _SCHEMA_DIR


@cache
def _registry() -> Registry[Any]:
    definitions = json.loads((_folder() / "_definitions.json").read_text())
    resource = Resource.from_contents(definitions)
    return Registry().with_resource(definitions.get("$id", "/api/_definitions.json"), resource)


@cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema_file = _folder() / f"{kind.lower()}-{group_version}.json"
    if not schema_file.is_file():
        return None
    schema = json.loads(schema_file.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with one object, as ``field.path: message`` strings; empty if valid."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind must be strings"]
    validator = _validator(api_version, kind)
    if validator is None:
        return [f"unknown kind {kind} in {api_version} (Kubernetes {KUBERNETES_VERSION})"]
    found = []
    for error in validator.iter_errors(obj):
        where = ".".join(str(p) for p in error.absolute_path) or "(object)"
        found.append(f"{where}: {error.message}")
    return sorted(found)
