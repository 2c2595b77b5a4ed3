"""Render output is fixed byte for byte: the bundled example and a generated repo of 1,000
components render to the digests recorded before the fast emitter and the render cache
(commit 0e86155), from scratch and again through a warm cache."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from reconciler.cache import Cache
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.render.engine import render_environment
from reconciler.resources import data_dir

ROOT = Path(__file__).resolve().parent.parent

EXAMPLE = {
    "development": "46915dab997ff991b64afbecee89a45dc4b0febdf6af74244cc9d4bcec3490cd",
    "production": "701604607434309f34c17ebfeb27ba054a0259d8ea0dbeb88f95fe205a0bbbb0",
    "staging": "5ff2ca7be7044c653e6e145a6f78269f2ebf1243ffb95867817abf45f4ef9b7b",
}
GENERATED_1000 = {
    "development": "70eb20bd92d0a3fbf97c739f99fe7a1636ed2efe00d79dafa4700d75d74640fd",
    "production": "ddad57d19ff20e7063bd834a9d593862b491d1771b2ceb4313df75a038d0482d",
    "staging": "154858dfbb1c6cc6a67c7b22608bbf067afe28b9024779037feb38fcdb4b5684",
}


def digests(repo: Path, folder: Path | None) -> dict[str, str]:
    state_cache, render_cache = Cache("state", folder), Cache("render", folder)
    state = load_state(WorkTree(repo), state_cache)
    found = {}
    for environment in sorted(state.environments):
        rendered = render_environment(state, environment, cache=render_cache)
        found[environment] = hashlib.sha256(rendered.manifests().encode()).hexdigest()
    state_cache.save()
    render_cache.save()
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "bench/generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    repo = tmp_path_factory.mktemp("generated")
    module.generate(repo, 1000)
    return repo


def test_the_example_renders_to_its_recorded_bytes(tmp_path: Path) -> None:
    example = data_dir("example-state-repo")
    assert digests(example, None) == EXAMPLE
    assert digests(example, tmp_path) == EXAMPLE, "filling the cache"
    assert digests(example, tmp_path) == EXAMPLE, "served from the cache"


def test_a_generated_repo_of_1000_components_renders_to_its_recorded_bytes(
        generated: Path, tmp_path: Path) -> None:
    assert digests(generated, tmp_path) == GENERATED_1000
    assert digests(generated, tmp_path) == GENERATED_1000, "served from the cache"
