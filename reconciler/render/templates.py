"""The templates: built-in ones under the state repo's overrides, run in one Jinja2 sandbox
with limits, so a template, which is user code, can fail only as a located error.

Jinja2's sandbox refuses unsafe attributes and ranges over ``MAX_RANGE``; on top of it,
repetition (``*``) and powers (``**``) are capped, the output of one template is capped,
and one render gets a wall-clock budget (checked on every line of template code, through
a trace function scoped to template frames). Anything a template raises, a recursion too
deep included, becomes a ``TemplateFailure`` with the template's path and line.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import Any

import jinja2
import jinja2.meta
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.model.paths import TEMPLATES_FOLDER
from reconciler.resources import data_dir

BUILTIN_PREFIX = "(built-in) "
MAX_OUTPUT = 4 * 1024 * 1024
"""Characters one template may produce."""
MAX_VALUE = 1024 * 1024
"""Items a repetition (``"x" * n``, ``[a] * n``) may produce."""
MAX_POWER_BITS = 4096
SECONDS = 10.0
"""Wall-clock budget of all templates of one render."""


class TemplateFailure(Exception):
    """A template failed: where (its path as users know it, and line) and why."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(message)
        self.path, self.line, self.message = path, line, message


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (isinstance(sequence, str | list | tuple) and isinstance(count, int)
                        and len(sequence) * count > MAX_VALUE):
                    raise jinja2.exceptions.SecurityError(
                        f"repetition of {len(sequence) * count} items is larger than "
                        f"{MAX_VALUE}")
        if (operator == "**" and isinstance(left, int) and isinstance(right, int)
                and abs(left) > 1 and right * math.log2(abs(left)) > MAX_POWER_BITS):
            raise jinja2.exceptions.SecurityError(f"{left} ** {right} is too large")
        return super().call_binop(context, operator, left, right)


class Templates:
    """Built-in templates under the state repo's overrides, in one limited sandbox."""

    def __init__(self, overrides: Mapping[str, str]) -> None:
        self.builtin = data_dir("templates")
        self.overrides = dict(overrides)
        self.environment = _LimitedSandbox(
            loader=jinja2.FunctionLoader(self._load),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.policies["json.dumps_function"] = _dumps
        self._fingerprints: dict[str, str] = {}
        self.deadline = time.monotonic() + SECONDS

    def _load(self, name: str) -> tuple[str, str, Callable[[], bool]] | None:
        if name in self.overrides:
            return self.overrides[name], TEMPLATES_FOLDER + name, lambda: True
        try:
            file = self.builtin.joinpath(*split_template_path(name))
        except jinja2.TemplateNotFound:
            return None
        if not file.is_file():
            return None
        return file.read_text(), BUILTIN_PREFIX + "templates/" + name, lambda: True

    def path_of(self, name: str) -> str:
        """A template's path as users know it: in the state repo, or built in."""
        if name.startswith((TEMPLATES_FOLDER, BUILTIN_PREFIX)):
            return name
        return TEMPLATES_FOLDER + name if name in self.overrides else (
            BUILTIN_PREFIX + "templates/" + name)

    def names(self, folder: str) -> list[str]:
        found = {f"{folder}/{p.name}" for p in (self.builtin / folder).glob("*.yaml.j2")}
        found.update(n for n in self.overrides
                     if n.startswith(folder + "/") and n.endswith(".yaml.j2")
                     and n.count("/") == 1)
        return sorted(found)

    def fingerprint(self, folders: Iterable[str]) -> str:
        """A hash of every template a component type uses, so a template change is a
        new release."""
        key = ",".join(folders)
        if key not in self._fingerprints:
            digest = hashlib.sha256()
            for name in self._used([n for f in folders for n in self.names(f)]):
                source = self._load(name)
                digest.update(name.encode() + b"\0" + (source[0] if source else "").encode())
            self._fingerprints[key] = digest.hexdigest()
        return self._fingerprints[key]

    def _used(self, names: list[str]) -> list[str]:
        """``names`` and every template they include, import or extend, transitively: a
        change to a shared template is a new release only of the types that use it."""
        found: list[str] = []
        pending = list(names)
        while pending:
            name = pending.pop(0)
            if name in found:
                continue
            found.append(name)
            source = self._load(name)
            if source is None:
                continue
            try:
                parsed = self.environment.parse(source[0])
            except jinja2.TemplateSyntaxError:
                continue  # reported when it renders
            pending.extend(sorted(
                n for n in jinja2.meta.find_referenced_templates(parsed) if n is not None))
        return found

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """The template's output, or ``TemplateFailure`` at the template's line."""
        try:
            template = self.environment.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(self.path_of(exc.name or name), exc.lineno or 0,
                                  f"template syntax: {exc.message}") from None
        budget = _Budget(self.deadline)
        chunks: list[str] = []
        size = 0
        previous = sys.gettrace()
        sys.settrace(budget.trace)
        try:
            for chunk in template.generate(context):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise _Limit(f"output is larger than {MAX_OUTPUT // 1024 // 1024} MiB")
                chunks.append(chunk)
        except RecursionError as exc:
            raise self._failure(exc, name, "recursion too deep") from None
        except _Limit as exc:
            raise self._failure(exc, name, str(exc)) from None
        except Exception as exc:  # a template is user code: any failure is its error
            raise self._failure(exc, name, _describe(exc)) from None
        finally:
            sys.settrace(previous)
        return "".join(chunks)

    def _failure(self, exc: BaseException, name: str, message: str) -> TemplateFailure:
        path, line = _template_frame(exc, name)
        return TemplateFailure(self.path_of(path), line, f"template: {message}")


class _Limit(Exception):
    """A template went past one of the sandbox's limits."""


class _Budget:
    """Stops a template that runs too long: a trace function on template frames only, so
    other code runs untraced."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.lines = 0

    def trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "call" and frame.f_code.co_filename.endswith(".j2"):
            return self._line
        return None

    def _line(self, frame: FrameType, event: str, arg: object) -> Any:
        self.lines += 1
        if self.lines % 1000 == 0 and time.monotonic() > self.deadline:
            raise _Limit(f"rendering took longer than {SECONDS:g} s")
        return self._line


def _dumps(value: Any, **options: Any) -> str:
    """``tojson`` that names an undefined variable instead of failing on it."""
    return json.dumps(value, default=_undefined_as_error, **options)


def _undefined_as_error(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError | jinja2.TemplateError):
        return str(exc)
    if isinstance(exc, TypeError) and "Undefined" in str(exc):
        return "a value is undefined (" + str(exc) + ")"
    return f"{type(exc).__name__}: {exc}"


def _template_frame(exc: BaseException, fallback: str) -> tuple[str, int]:
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return frame.filename, frame.lineno or 0
    return fallback, 0
