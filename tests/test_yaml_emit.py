"""Rendered manifests are written by a fast emitter that must give libyaml's bytes exactly.

The reference is what render wrote before the fast emitter: PyYAML's libyaml dumper, block
style, insertion order, width 1000, multi-line strings as literal blocks.
"""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
import yaml

from reconciler.yamlio import dump_documents, dump_manifests, join_documents, load_manifests


class _Reference(yaml.CSafeDumper):  # type: ignore[misc]
    pass


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.startswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Reference.add_representer(str, _literal)


def reference(objects: list[Any]) -> str:
    return yaml.dump_all(objects, Dumper=_Reference, sort_keys=False, default_flow_style=False,
                         width=1000)


TRICKY = [
    "", " ", "  x", "x ", "yes", "No", "on", "OFF", "true", "False", "null", "NULL", "~", "y",
    "n", "1", "-1", "+1", "0x1F", "0o17", "0b101", "1_000", "1e3", "1.5", "1.", ".5", ".inf",
    "-.inf", ".nan", "12:30", "1:20:30.5", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
    "a: b", "a:b", "a:", ":a", "a #b", "a#b", "#a", "-a", "- a", "-", "--", "---", "...",
    "?a", "? a", "@a", "`a", "'a'", '"a"', "a'b", 'a"b', "!a", "&a", "*a", "*/15 * * * *",
    "%a", "|", ">", "{a}", "[a]", "a,b", "a]", "a}", "<<", "=", "é", "snow ☃", "\t", "a\tb",
    "a\nb", "a\n", "a\n\n", "\n", "\na", " a\nb", "a \nb", "a\n b\n", "a\r\nb", "a\x85b",
    "line one\nline two\n", "x" * 250, "word " * 60, "a" * 1100, "http://x.example/a?b=c#d",
    "registry.example/app@sha256:" + "a" * 64, "app.kubernetes.io/name", "/tmp", "./a",
    "C:\\path", "\x00", "\x07bell", "\ufeff", "0123", "00", "0", "1.0e+3", "Yes please",
]


def random_scalar(rng: random.Random) -> Any:
    choice = rng.random()
    if choice < 0.45:
        return rng.choice(TRICKY)
    if choice < 0.6:
        alphabet = string.ascii_letters + string.digits + " :#-_./@'\"\n\t{}[],&*!|>%?"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if choice < 0.7:
        return rng.randint(-10**12, 10**12)
    if choice < 0.78:
        return rng.choice([0.5, -1.0, 1e20, 1e-7, float("inf"), 3.0, 0.1])
    if choice < 0.88:
        return rng.choice([True, False, None])
    return "".join(rng.choice(string.ascii_lowercase + "-./") for _ in range(rng.randint(1, 30)))


def random_value(rng: random.Random, depth: int) -> Any:
    if depth > 4 or rng.random() < 0.5:
        return random_scalar(rng)
    if rng.random() < 0.5:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return random_mapping(rng, depth + 1)


def random_mapping(rng: random.Random, depth: int) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for _ in range(rng.randint(0, 5)):
        key = random_scalar(rng)
        mapping[key if isinstance(key, str) else str(key)] = random_value(rng, depth)
    return mapping


@pytest.mark.parametrize("seed", range(40))
def test_random_documents_match_libyaml_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)
    objects = [random_mapping(rng, 0) or {"empty": {}} for _ in range(30)]
    assert dump_manifests(objects) == reference(objects)


def test_each_tricky_string_as_key_value_and_item_matches_libyaml() -> None:
    objects = [{value: value, "list": [value, [value], {value: [value]}]} for value in TRICKY]
    assert dump_manifests(objects) == reference(objects)
    for obj in objects:
        assert dump_manifests([obj]) == reference([obj])


def test_documents_join_into_the_stream_even_with_kept_final_line_breaks() -> None:
    objects = [{"a": "x\n\n"}, {"b": 1}, {"c": "y\n\n\n"}, {"d": {"e": ["f\n\n"]}}]
    documents = dump_documents(objects)
    assert len(documents) == len(objects)
    assert join_documents(documents) == reference(objects)
    assert join_documents(documents[1:2]) == reference(objects[1:2])


def test_rendered_objects_round_trip() -> None:
    objects = [{"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "web-config", "namespace": "shop-dev",
                             "labels": {"app.kubernetes.io/name": "web"}},
                "data": {"PORT": "8080", "DEBUG": "true", "nginx.conf": "server {\n}\n"}}]
    text = dump_manifests(objects)
    assert text == reference(objects)
    assert load_manifests(text) == objects
