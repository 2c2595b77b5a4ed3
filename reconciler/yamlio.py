"""YAML in and out.

State files are read with ruamel.yaml so every value keeps its line number for error
messages, and so hostile input (alias bombs, huge or deeply nested files, duplicate
keys, tabs) becomes a clear error instead of a hang or a traceback. Rendered manifests,
which the tool itself produces by the thousand, go through PyYAML's C loader and
dumper, which are an order of magnitude faster.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.errors import ReconcilerError

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000

JsonPath = Sequence[str | int]


@dataclass(frozen=True)
class Document:
    """A parsed state file: plain data plus the ruamel tree that knows line numbers."""

    path: str
    data: dict[str, Any]
    tree: CommentedMap

    def line_of(self, where: JsonPath) -> int:
        """The 1-based line of the deepest node of ``where`` that exists in the file."""
        node: Any = self.tree
        line = node.lc.line + 1
        for step in where:
            try:
                if isinstance(node, CommentedMap) and step in node:
                    line = node.lc.key(step)[0] + 1
                    node = node[step]
                elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
                    line = node.lc.item(step)[0] + 1
                    node = node[step]
                else:
                    break
            except (KeyError, TypeError, AttributeError):
                break
        return line


class YamlFileError(ReconcilerError):
    """A state file that is not acceptable YAML."""


def load_state_file(path: str, content: bytes) -> Document:
    """Parse one state file, which must hold exactly one YAML mapping."""
    if len(content) > MAX_FILE_BYTES:
        raise YamlFileError(f"file is larger than {MAX_FILE_BYTES // 1024} KiB", path)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"file is not valid UTF-8 (byte {exc.start})", path) from None
    parser = YAML(typ="rt")
    parser.allow_duplicate_keys = False
    try:
        documents = [d for d in parser.load_all(text) if d is not None]
    except MarkedYAMLError as exc:
        raise _marked_error(path, exc) from None
    except YAMLError as exc:
        raise YamlFileError(f"invalid YAML: {exc}", path) from None
    except RecursionError:
        raise YamlFileError("invalid YAML: nesting is too deep", path) from None
    if not documents:
        raise YamlFileError("file is empty", path, 1)
    if len(documents) > 1:
        raise YamlFileError("file must hold one YAML document, found several", path)
    tree = documents[0]
    if not isinstance(tree, CommentedMap):
        raise YamlFileError("file must hold a YAML mapping", path, 1)
    budget = [MAX_NODES]
    try:
        data = _to_plain(tree, budget)
    except RecursionError:
        raise YamlFileError("invalid YAML: nesting is too deep", path) from None
    except _TooBig:
        raise YamlFileError(
            f"document expands to more than {MAX_NODES} values (an alias bomb?)", path
        ) from None
    return Document(path, data, tree)


def _marked_error(path: str, exc: MarkedYAMLError) -> YamlFileError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 0
    problem = exc.problem or exc.context or "invalid YAML"
    if "\t" in problem or "'\\t'" in problem:
        problem = "tab characters are not allowed for indentation"
    elif "duplicate key" in problem:
        problem = f"duplicate key {problem.split('duplicate key', 1)[1].strip()}"
    return YamlFileError(f"invalid YAML: {problem}", path, line)


class _TooBig(Exception):
    pass


def _to_plain(node: Any, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig
    if isinstance(node, Mapping):
        return {_scalar_key(k): _to_plain(v, budget) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v, budget) for v in node]
    return _scalar(node)


def _scalar_key(key: Any) -> str:
    return key if isinstance(key, str) else str(_scalar(key))


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date):
        text = value.isoformat()
        return text.replace("+00:00", "Z")
    return str(value)


_FAST_LOADER = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)


class _ManifestDumper(getattr(pyyaml, "CSafeDumper", pyyaml.SafeDumper)):  # type: ignore[misc]
    """Multi-line strings (file contents) as literal blocks, so they read as written."""


def _represent_str(dumper: pyyaml.SafeDumper, value: str) -> pyyaml.ScalarNode:
    style = "|" if "\n" in value and not value.startswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def load_manifests(text: str) -> list[Any]:
    """Parse the multi-document YAML a template produced (raises pyyaml.YAMLError)."""
    return [d for d in pyyaml.load_all(text, Loader=_FAST_LOADER) if d is not None]


ManifestError = pyyaml.YAMLError


def dump_manifests(objects: Sequence[Mapping[str, Any]]) -> str:
    """Kubernetes objects as one multi-document YAML stream, same input same bytes."""
    return pyyaml.dump_all(
        objects, Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=1000
    )
