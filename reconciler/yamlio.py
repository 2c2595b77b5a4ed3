"""YAML in and out.

State files are parsed with libyaml (through PyYAML's C parser), which is dozens of times
faster than a pure-Python parser on repos of thousands of files. The node tree keeps every
value's line for error messages, scalars resolve by the YAML 1.2 core schema (``on`` and
``yes`` stay strings), and hostile input (alias bombs, deep nesting, huge files, duplicate
keys, tabs, custom tags) becomes a clear error instead of a hang, a crash or a traceback.
Rendered manifests go out through the C dumper for the same reason.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml as pyyaml
import yaml_rs
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



@functools.lru_cache(maxsize=1 << 16)
def _plain_tag(value: str) -> str:
    for tag, pattern in _Yaml12Loader.yaml_implicit_resolvers.get(value[:1], ()):
        if pattern.match(value):
            return str(tag)
    return _STR


def _resolve(self: Any, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
    """PyYAML's resolver without its per-call overhead (libyaml calls it for every value)."""
    if kind is ScalarNode:
        return _plain_tag(value) if implicit[0] else _STR
    return _SEQ if kind is SequenceNode else _MAP


_Yaml12Loader.resolve = _resolve

_STR, _NULL, _BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class Document:
    """A parsed state file: plain data, and its bytes to find a value's line from.

    The node tree that knows lines is built again only when a line is asked for (a problem
    to report), so documents kept from a cache, and a loaded state, stay small.
    """

    path: str
    data: dict[str, Any]
    source: bytes

    @functools.cached_property
    def _tree(self) -> Node | None:
        try:
            nodes = pyyaml.compose_all(self.source.decode("utf-8"), Loader=_Yaml12Loader)
            return next((n for n in nodes if isinstance(n, MappingNode)), None)
        except (pyyaml.YAMLError, UnicodeDecodeError):
            return None

    def line_of(self, where: JsonPath) -> int:
        """The 1-based line of the deepest node of ``where`` that exists in the file."""
        node = self._tree
        if node is None:
            return 0
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
        # libyaml refuses nesting deeper than 1,000 levels itself, so composing in C is safe;
        # the converter then refuses more than MAX_DEPTH.
        nodes = list(pyyaml.compose_all(text, Loader=_Yaml12Loader))
    except pyyaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):
            mark = exc.problem_mark
            raise YamlFileError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", path,
                                mark.line + 1 if mark is not None else 0) from None
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
    return Document(path, data, content)


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

    def convert(self, node: Node, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise YamlFileError(f"document expands to more than {MAX_NODES} values "
                                "(an alias bomb?)", self.path)
        if isinstance(node, MappingNode):
            return self._mapping(node, depth + 1)
        if isinstance(node, SequenceNode):
            self._tag(node, _SEQ)
            self._depth(node, depth + 1)
            return [self.convert(item, depth + 1) for item in node.value]
        return self._scalar(node)

    def _depth(self, node: Node, depth: int) -> None:
        # Counted on the composed tree, so aliases nesting anchors count too.
        if depth > MAX_DEPTH:
            raise self._error(node, f"nested more than {MAX_DEPTH} levels deep")

    def _mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        self._tag(node, _MAP)
        self._depth(node, depth)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise self._error(key_node, "keys must be plain values, not lists or mappings")
            key = key_node.value
            if key == "<<" and key_node.tag != _STR:
                raise self._error(key_node, "merge keys (<<) are not supported")
            if key in result:
                raise self._error(key_node, f"duplicate key {key!r}")
            result[key] = self.convert(value_node, depth)
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


def _dump_with_libyaml(objects: Sequence[object]) -> str:
    return pyyaml.dump_all(
        objects, Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=1000
    )


def dump_manifests(objects: Sequence[object]) -> str:
    """Documents (Kubernetes objects) as one YAML stream, same input same bytes."""
    return join_documents(dump_documents(objects))


def join_documents(documents: Sequence[str]) -> str:
    """The YAML stream of documents each dumped on its own by ``dump_documents``.

    A document ending in a kept final line break (``|+``) is closed by ``...`` only at the
    end of the stream, as libyaml does.
    """
    last = len(documents) - 1
    return "---\n".join(
        text[:-4] if index < last and text.endswith("\n...\n") else text
        for index, text in enumerate(documents))


def dump_documents(objects: Sequence[object]) -> list[str]:
    """Each object as its own YAML document, byte for byte what libyaml writes for it.

    PyYAML's representer and resolver run in Python for every value and cost seconds on a
    large environment. Objects are written here directly instead: block mappings and
    indentless sequences as libyaml lays them out, every scalar that is not obviously plain
    formatted once by libyaml itself (in one batch per call), and any document holding
    something unusual (multi-line or very long strings, odd keys or types) dumped by
    libyaml whole.
    """
    values: set[object] = set()
    keys: set[str] = set()
    plain: list[bool] = [_collect(obj, values, keys) for obj in objects]
    value_text = _libyaml_values(values)
    key_text = _libyaml_keys(keys)
    documents: list[str] = []
    for obj, simple in zip(objects, plain, strict=True):
        text = None
        if simple:
            lines: list[str] = []
            if _write_mapping(obj, 0, lines, value_text, key_text):  # type: ignore[arg-type]
                text = "".join(lines)
        if text is None:
            text = _dump_with_libyaml([obj])
        documents.append(text)
    return documents


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:@-]*")
_NOT_PLAIN = frozenset(("yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false",
                        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null",
                        "NULL"))
_LONGEST = 200
"""Longer scalars may wrap at libyaml's line width, which depends on the column."""
_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")


_AS_IS, _FORMATTED, _UNUSUAL = 0, 1, 2


@functools.lru_cache(maxsize=1 << 16)
def _string_class(value: str, is_key: bool) -> int:
    """_AS_IS: written plain; _FORMATTED: libyaml formats it; _UNUSUAL: libyaml writes the
    whole document (line breaks, lengths that may wrap or make a complex key)."""
    if len(value) > (120 if is_key else _LONGEST) or any(b in value for b in _BREAKS):
        return _UNUSUAL
    if _PLAIN.fullmatch(value) is not None and value not in _NOT_PLAIN and not value.endswith(":"):
        return _AS_IS
    return _FORMATTED


def _collect(node: object, values: set[object], keys: set[str]) -> bool:
    """Gather the scalars libyaml must format; False if the document must go to libyaml whole."""
    if type(node) is not dict or not node:
        return False
    stack: list[object] = [node]
    string_class = _string_class
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key, value in item.items():  # type: ignore[attr-defined]
                if type(key) is not str:
                    return False
                found = string_class(key, True)
                if found:
                    if found == _UNUSUAL:
                        return False
                    keys.add(key)
                if type(value) is str:
                    found = string_class(value, False)
                    if found:
                        if found == _UNUSUAL:
                            return False
                        values.add(value)
                else:
                    stack.append(value)
        elif kind is list:
            stack.extend(item)  # type: ignore[arg-type]
        elif kind is str:
            found = string_class(item, False)
            if found:
                if found == _UNUSUAL:
                    return False
                values.add(item)
        elif kind is float:
            values.add(item)
        elif kind not in (int, bool, type(None)):
            return False
    return True


def _libyaml_values(values: set[object]) -> dict[object, str]:
    """How libyaml writes each value after ``key:`` or ``-`` (one line each)."""
    ordered = sorted(values, key=lambda v: (type(v).__name__, str(v)))
    if not ordered:
        return {}
    lines = _dump_with_libyaml([ordered]).splitlines()
    if len(lines) != len(ordered):
        raise AssertionError("a short single-line value took several lines")
    return {(type(v), v): line[2:] for v, line in zip(ordered, lines, strict=True)}


def _libyaml_keys(keys: set[str]) -> dict[str, str]:
    ordered = sorted(keys)
    if not ordered:
        return {}
    lines = _dump_with_libyaml([dict.fromkeys(ordered)]).splitlines()
    if len(lines) != len(ordered):
        raise AssertionError("a short single-line key took several lines")
    return {k: line[: -len(": null")] for k, line in zip(ordered, lines, strict=True)}


def _scalar(value: object, values: dict[object, str]) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str and _string_class(value, False) == _AS_IS:
        return value  # type: ignore[return-value]
    return values[(kind, value)]


def _write_mapping(mapping: dict[str, object], indent: int, lines: list[str],
                   values: dict[object, str], keys: dict[str, str], inline: bool = False) -> bool:
    """Append a block mapping at ``indent``; ``inline``: its first key follows ``- ``."""
    pad = " " * indent
    for key, value in mapping.items():
        head = (keys.get(key, key) + ":") if inline else f"{pad}{keys.get(key, key)}:"
        inline = False
        kind = type(value)
        if kind is dict:
            if not value:
                lines.append(head + " {}\n")
            else:
                lines.append(head + "\n")
                if not _write_mapping(value, indent + 2, lines, values, keys):  # type: ignore[arg-type]
                    return False
        elif kind is list:
            if not value:
                lines.append(head + " []\n")
            else:
                lines.append(head + "\n")
                if not _write_sequence(value, indent, lines, values, keys):  # type: ignore[arg-type]
                    return False
        else:
            text = _scalar(value, values)
            if len(head) + len(text) > 900:
                return False
            lines.append(f"{head} {text}\n")
    return True


def _write_sequence(sequence: list[object], indent: int, lines: list[str],
                    values: dict[object, str], keys: dict[str, str], inline: bool = False) -> bool:
    pad = " " * indent
    for item in sequence:
        head = "- " if inline else pad + "- "
        inline = False
        kind = type(item)
        if kind is dict:
            if not item:
                lines.append(head + "{}\n")
                continue
            lines.append(head)
            if not _write_mapping(item, indent + 2, lines, values, keys, inline=True):  # type: ignore[arg-type]
                return False
        elif kind is list:
            if not item:
                lines.append(head + "[]\n")
                continue
            lines.append(head)
            if not _write_sequence(item, indent + 2, lines, values, keys, inline=True):  # type: ignore[arg-type]
                return False
        else:
            text = _scalar(item, values)
            if len(head) + len(text) > 900:
                return False
            lines.append(f"{head}{text}\n")
    return True


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
