"""JSON Schema validation of state files against the bundled ``schemas/``.

Each kind has one schema; unknown keys are rejected so a typo is an error, not a
silent default. jsonschema-rs answers "valid?" at native speed for the thousands of
files of a large repo; only a file that fails is walked again by python-jsonschema,
whose errors carry the schema they failed, so the ``Problem``s are worded from the
schema's ``x-error`` hints and placed at the line of the offending key.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from reconciler.errors import Problem
from reconciler.load.cron import schedule_problem
from reconciler.resources import data_dir
from reconciler.yamlio import Document

if TYPE_CHECKING:
    import jsonschema

KIND_SCHEMAS = {
    "Organization": "organization",
    "Cluster": "cluster",
    "Pipeline": "pipeline",
    "Environment": "environment",
    "Project": "project",
    "Component": "component",
    "Build": "build",
    "Release": "release",
    "Config": "config",
    "Secrets": "secrets",
    "ThirdPartyService": "third-party-service",
}

def is_cron(value: object) -> bool:
    """Kubernetes CronJob syntax: five fields or a descriptor, no seconds field."""
    return not isinstance(value, str) or schedule_problem(value) is None


def is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value and parsed.tzinfo is not None


FORMATS = {"cron": is_cron, "date-time": is_date_time}


@cache
def _documents() -> dict[str, Any]:
    folder = data_dir("schemas")
    return {p.name: json.loads(p.read_text()) for p in folder.glob("*.schema.json")}


@cache
def _validators() -> dict[str, jsonschema.protocols.Validator]:
    """python-jsonschema, imported only when a file is invalid (it costs a tenth of a second
    to import, and a cached load needs no validator at all)."""
    import jsonschema
    from referencing import Registry, Resource

    format_checker = jsonschema.FormatChecker(formats=())
    for name, check in FORMATS.items():
        format_checker.checks(name)(check)
    documents = _documents()
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in documents.values()
    )
    return {
        kind: jsonschema.Draft202012Validator(
            documents[f"{stem}.schema.json"], registry=registry, format_checker=format_checker
        )
        for kind, stem in KIND_SCHEMAS.items()
    }


@cache
def _fast_validators() -> dict[str, Any]:
    import jsonschema_rs

    documents = _documents()
    registry = jsonschema_rs.Registry([(doc["$id"], doc) for doc in documents.values()])
    return {
        kind: jsonschema_rs.validator_for(
            documents[f"{stem}.schema.json"], registry=registry, formats=FORMATS,
            validate_formats=True,
        )
        for kind, stem in KIND_SCHEMAS.items()
    }


def expected_kind_problem(document: Document, kind: str) -> Problem | None:
    found = document.data.get("kind")
    if found == kind:
        return None
    return Problem(document.path, document.line_of(["kind"]), f"kind must be {kind}, not {found!r}")


def validate(document: Document, kind: str) -> list[Problem]:
    """Every schema problem of a document that should be of ``kind``."""
    if _fast_validators()[kind].is_valid(document.data):
        return []
    validator = _validators()[kind]
    show_values = kind != "Secrets"
    problems = [_problem(document, error, show_values)
                for error in _leaf_errors(validator, document.data)]
    return sorted(set(problems))


def _leaf_errors(validator: Any, data: Any) -> Iterator[jsonschema.ValidationError]:
    for error in validator.iter_errors(data):
        yield from _explain(error)


def _explain(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """Descend into if/then, allOf and oneOf groups unless the schema has its own words."""
    if isinstance(error.schema, dict) and "x-error" in error.schema:
        yield error
    elif error.validator in ("allOf",) and error.context:
        for sub in error.context:
            yield from _explain(sub)
    else:
        yield error


def _location(path: Any) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _problem(document: Document, error: jsonschema.ValidationError, show_values: bool) -> Problem:
    """One schema error in a user's words; ``show_values`` is off where values are secret."""
    path = list(error.absolute_path)
    where = _location(path)
    prefix = f"{where}: " if where else ""
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("x-error")
    if not show_values and error.validator not in ("additionalProperties", "required"):
        message = f"{prefix}{hint or 'invalid value (' + str(error.validator) + ')'}"
        return Problem(document.path, document.line_of(path), message)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(schema.get("properties", {}))
        unknown = sorted(str(k) for k in error.instance if k not in allowed)
        key = unknown[0] if unknown else ""
        names = ", ".join(repr(k) for k in unknown)
        message = f"{prefix}unknown key {names}"
        if allowed:
            message += f" (allowed: {', '.join(sorted(allowed))})"
        return Problem(document.path, document.line_of([*path, key]), message)
    if error.validator == "required":
        message = f"{prefix}{hint}" if hint else f"{prefix}missing required key {_missing(error)}"
        return Problem(document.path, document.line_of(path), message)
    if error.validator == "propertyNames" and hint is None:
        return Problem(document.path, document.line_of(path), f"{prefix}{error.message}")
    if hint:
        value = error.instance
        plain = not isinstance(value, dict | list) and error.validator not in ("not", "oneOf")
        message = f"{prefix}{value!r} {hint}" if plain else f"{prefix}{hint}"
        if error.validator == "format" and error.validator_value == "cron":
            message += f": {schedule_problem(str(value))}"
        return Problem(document.path, document.line_of(path), message)
    if error.validator == "const":
        message = f"{prefix}must be {error.validator_value!r}, not {error.instance!r}"
        return Problem(document.path, document.line_of(path), message)
    if error.validator == "enum":
        choices = ", ".join(str(v) for v in cast(list[Any], error.validator_value))
        message = f"{prefix}{error.instance!r} is not one of: {choices}"
        return Problem(document.path, document.line_of(path), message)
    if error.validator == "type":
        message = f"{prefix}must be of type {error.validator_value}, not {_type_name(error.instance)}"
        return Problem(document.path, document.line_of(path), message)
    return Problem(document.path, document.line_of(path), f"{prefix}{error.message}")


def _missing(error: jsonschema.ValidationError) -> str:
    message: str = error.message
    return message.split(" is a required property")[0]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)
