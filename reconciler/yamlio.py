"""YAML in and out.

State files are parsed with libyaml (through PyYAML's C parser), which is dozens of times
faster than a pure-Python parser on repos of thousands of files. The node tree keeps every
value's line for error messages, scalars resolve by the YAML 1.2 core schema (``on`` and
``yes`` stay strings), and hostile input (alias bombs, deep nesting, huge files, duplicate
keys, tabs, custom tags) becomes a clear error instead of a hang, a crash or a traceback.
Rendered manifests go out through the C dumper for the same reason.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml as pyyaml
import yaml_rs
from yaml.events import CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.errors import ReconcilerError

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 100

JsonPath = Sequence[str | int]

_BaseLoader: Any = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)


class _Yaml12Loader(_BaseLoader):  # type: ignore[misc]
    """libyaml parsing with the YAML 1.2 core schema's implicit types."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {}


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
):
    _Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern),
                                        list(_first))

_STR, _NULL, _BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class Document:
    """A parsed state file: plain data plus the node tree that knows line numbers."""

    path: str
    data: dict[str, Any]
    tree: MappingNode

    def line_of(self, where: JsonPath) -> int:
        """The 1-based line of the deepest node of ``where`` that exists in the file."""
        node: Node = self.tree
        line = node.start_mark.line + 1
        for step in where:
            if isinstance(node, MappingNode):
                pair = next((p for p in node.value if _is_key(p[0], step)), None)
                if pair is None:
                    break
                line, node = pair[0].start_mark.line + 1, pair[1]
            elif isinstance(node, SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
                line = node.start_mark.line + 1
            else:
                break
        return line


def _is_key(node: Node, step: str | int) -> bool:
    return isinstance(node, ScalarNode) and node.value == str(step)


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
    try:
        _check_depth(path, text)
        nodes = list(pyyaml.compose_all(text, Loader=_Yaml12Loader))
    except pyyaml.MarkedYAMLError as exc:
        raise _marked_error(path, text, exc) from None
    except pyyaml.YAMLError as exc:
        raise YamlFileError(f"invalid YAML: {exc}", path) from None
    nodes = [n for n in nodes if not (isinstance(n, ScalarNode) and n.tag == _NULL)]
    if not nodes:
        raise YamlFileError("file is empty", path, 1)
    if len(nodes) > 1:
        raise YamlFileError("file must hold one YAML document, found several", path,
                            nodes[1].start_mark.line + 1)
    tree = nodes[0]
    if not isinstance(tree, MappingNode):
        raise YamlFileError("file must hold a YAML mapping", path, tree.start_mark.line + 1)
    data = _Converter(path).convert(tree)
    return Document(path, data, tree)


def _check_depth(path: str, text: str) -> None:
    """libyaml's composer recurses in C and crashes on deep nesting: refuse it first."""
    depth = 0
    try:
        events = list(pyyaml.parse(text, Loader=_Yaml12Loader))
    except pyyaml.YAMLError as exc:
        if "nesting depth" not in str(exc):
            raise
        # PyYAML 6.0.4's own limit, met before ours: the same refusal.
        mark = getattr(exc, "problem_mark", None)
        raise YamlFileError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", path,
                            mark.line + 1 if mark is not None else 0) from None
    for event in events:
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise YamlFileError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep",
                                    path, line)
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def _marked_error(path: str, text: str, exc: pyyaml.MarkedYAMLError) -> YamlFileError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 0
    problem = exc.problem or exc.context or "invalid YAML"
    if mark is not None and text[mark.index:mark.index + 1] == "\t":
        problem = "tab characters are not allowed in YAML indentation"
    return YamlFileError(f"invalid YAML: {problem}", path, line)


class _Converter:
    """Node tree -> plain data, refusing duplicate keys, custom tags and alias bombs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.budget = MAX_NODES

    def convert(self, node: Node) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise YamlFileError(f"document expands to more than {MAX_NODES} values "
                                "(an alias bomb?)", self.path)
        if isinstance(node, MappingNode):
            return self._mapping(node)
        if isinstance(node, SequenceNode):
            self._tag(node, _SEQ)
            return [self.convert(item) for item in node.value]
        return self._scalar(node)

    def _mapping(self, node: MappingNode) -> dict[str, Any]:
        self._tag(node, _MAP)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise self._error(key_node, "keys must be plain values, not lists or mappings")
            key = key_node.value
            if key == "<<" and key_node.tag != _STR:
                raise self._error(key_node, "merge keys (<<) are not supported")
            if key in result:
                raise self._error(key_node, f"duplicate key {key!r}")
            result[key] = self.convert(value_node)
        return result

    def _scalar(self, node: Node) -> Any:
        value: str = node.value
        tag = node.tag
        if tag == _STR:
            return value
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return value.lower() == "true"
        if tag == _INT:
            if value.startswith(("0o", "0x")):
                return int(value[2:], 8 if value[1] == "o" else 16)
            return int(value)
        if tag == _FLOAT:
            lowered = value.lower()
            if lowered.endswith(".inf"):
                return -math.inf if lowered.startswith("-") else math.inf
            return math.nan if lowered == ".nan" else float(value)
        raise self._error(node, f"tag {tag} is not allowed")

    def _tag(self, node: Node, expected: str) -> None:
        if node.tag != expected:
            raise self._error(node, f"tag {node.tag} is not allowed")

    def _error(self, node: Node, message: str) -> YamlFileError:
        return YamlFileError(f"invalid YAML: {message}", self.path, node.start_mark.line + 1)


ManifestError = yaml_rs.YAMLDecodeError


def load_manifests(text: str) -> list[Any]:
    """Parse the multi-document YAML a template produced (raises ManifestError).

    yaml-rs (YAML 1.2, native) parses the thousands of rendered documents of a large
    environment an order of magnitude faster than PyYAML.
    """
    loaded = yaml_rs.loads(text, parse_datetime=False)
    documents = loaded if isinstance(loaded, list) else [loaded]
    return [d for d in documents if d is not None]


class _ManifestDumper(getattr(pyyaml, "CSafeDumper", pyyaml.SafeDumper)):  # type: ignore[misc]
    """Multi-line strings (file contents) as literal blocks, so they read as written."""


def _represent_str(dumper: pyyaml.SafeDumper, value: str) -> pyyaml.ScalarNode:
    style = "|" if "\n" in value and not value.startswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def dump_manifests(objects: Sequence[object]) -> str:
    """Documents (Kubernetes objects) as one YAML stream, same input same bytes."""
    return pyyaml.dump_all(
        objects, Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=1000
    )


def edit_mapping(content: bytes | None, template: str, edit: Callable[[Any], None]) -> bytes:
    """Round-trip edit of a YAML mapping file, keeping its comments, order and formatting.

    ``content`` None starts from ``template``. ``edit`` receives the ruamel mapping.
    """
    from ruamel.yaml import YAML  # the round-trip parser is slow: only writes pay for it

    editor = YAML(typ="rt")
    editor.preserve_quotes = True
    editor.width = 4096
    document = editor.load(content.decode("utf-8") if content is not None else template)
    edit(document)
    stream = io.StringIO()
    editor.dump(document, stream)
    return stream.getvalue().encode("utf-8")


def mapping_document(fields: Mapping[str, object]) -> bytes:
    """A small generated state file: ``key: value`` lines, strings quoted as JSON."""
    lines = [f"{key}: {json.dumps(value) if isinstance(value, str) or value is None else value}"
             for key, value in fields.items()]
    return ("\n".join(lines) + "\n").encode("utf-8")
