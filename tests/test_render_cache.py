"""The parse and render cache: a second render reuses what did not change, gives the same
bytes as a render from scratch, and survives a corrupt, foreign or unwritable cache folder.
Decrypted secrets never reach it."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cache import Cache
from reconciler.cli import cli
from reconciler.load.loader import load_state
from reconciler.load.readers import WorkTree
from reconciler.render.engine import Rendered, render_environment

from conftest import Run, edit, line_of, write

CHECKOUT_CONFIG = "environments/production/shop/checkout/config.yaml"


def render(repo: Path, folder: Path | None, environment: str = "production") -> Rendered:
    state_cache, render_cache = Cache("state", folder), Cache("render", folder)
    state = load_state(WorkTree(repo), state_cache)
    rendered = render_environment(state, environment, cache=render_cache)
    state_cache.save()
    render_cache.save()
    return rendered


def from_scratch(repo: Path, environment: str = "production") -> str:
    return render(repo, None, environment).manifests()


def test_a_second_render_runs_no_template_and_prints_the_same_bytes(
        repo: Path, run: Run, render_cache: Path) -> None:
    first = run("render", "--env", "production")
    assert first.exit_code == 0, first.stderr
    assert (render_cache / "render.pack").is_file() and (render_cache / "state.pack").is_file()
    assert run("render", "--env", "production").stdout == first.stdout == from_scratch(repo)
    again = render(repo, render_cache)
    assert again.units_rendered == 0 and again.units_cached > 5


def test_a_one_file_change_renders_only_the_release_it_touches(
        repo: Path, render_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    render(repo, render_cache)
    edit(repo, CHECKOUT_CONFIG, "replicas: 4", "replicas: 5")
    with caplog.at_level(logging.DEBUG, logger="reconciler.load.loader"):
        changed = render(repo, render_cache)
    assert changed.units_rendered == 2, "the release's folders: component/ and its type's"
    assert "state files: 1 parsed" in caplog.text
    assert changed.manifests() == from_scratch(repo)
    assert "replicas: 5" in changed.manifests()


def test_a_template_override_is_a_change_for_every_release_of_its_type(
        repo: Path, run: Run) -> None:
    before = run("render", "--env", "production").stdout
    write(repo, "templates/component/extra.yaml.j2",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ component.name }}-extra\n"
          "  namespace: {{ namespace }}\ndata:\n  k: v\n", header=False)
    after = run("render", "--env", "production")
    assert after.exit_code == 0, after.stderr
    assert after.stdout != before and "checkout-extra" in after.stdout
    assert after.stdout == from_scratch(repo)


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 100, b"reconciler-cache 1\n" + b"x" * 40,
                                     b"reconciler-cache 1\n" + b"\x01" * 32 + b"\xff\xfe"])
def test_a_corrupt_cache_is_ignored_and_rebuilt(repo: Path, run: Run, render_cache: Path,
                                                garbage: bytes) -> None:
    expected = run("render", "--env", "production").stdout
    for pack in ("render.pack", "state.pack"):
        (render_cache / pack).write_bytes(garbage)
    assert run("render", "--env", "production").stdout == expected
    assert (render_cache / "render.pack").read_bytes() != garbage
    assert render(repo, render_cache).units_rendered == 0, "rebuilt, the cache serves again"


def test_a_foreign_pack_with_a_valid_frame_but_wrong_content_is_ignored(
        repo: Path, run: Run, render_cache: Path) -> None:
    expected = run("render", "--env", "production").stdout
    pack = render_cache / "render.pack"
    content = bytearray(pack.read_bytes())
    content[-10] ^= 0xFF  # a flipped byte: the checksum no longer matches
    pack.write_bytes(bytes(content))
    assert run("render", "--env", "production").stdout == expected


def test_an_unusable_cache_folder_leaves_render_working(
        repo: Path, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = run("render", "--env", "production").stdout
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for folder in (blocker, blocker / "below", tmp_path / "other-version"):
        monkeypatch.setenv("RECONCILER_CACHE_DIR", str(folder))
        if folder.name == "other-version":
            folder.mkdir()
            (folder / "render.pack").write_bytes(b"reconciler-cache 0\nold format")
            (folder / "unrelated.txt").write_text("kept")
        result = run("render", "--env", "production")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == expected
    assert (tmp_path / "other-version" / "unrelated.txt").read_text() == "kept"
    monkeypatch.setenv("RECONCILER_CACHE_DIR", "off")
    assert run("render", "--env", "production").stdout == expected


def test_revealed_secrets_never_reach_the_cache(repo: Path, demo_key: Path,
                                                render_cache: Path) -> None:
    env = {"SOPS_AGE_KEY_FILE": str(demo_key), "SOPS_AGE_KEY": None}
    args = ["--repo", str(repo), "render", "--env", "development", "--reveal-secrets"]
    for _ in range(2):
        result = CliRunner(env=env).invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
    value = b"demo-payment-key-not-for-production"
    assert base64.b64encode(value).decode() in result.stdout
    for pack in render_cache.iterdir():
        content = pack.read_bytes()
        assert value not in content and base64.b64encode(value) not in content, pack


def test_problems_in_unchanged_files_read_from_the_cache_keep_their_lines(
        repo: Path, run: Run) -> None:
    assert run("validate").exit_code == 0
    warm = run("validate")
    assert warm.exit_code == 0, warm.stderr
    (repo / "clusters/nonprod-eu.yaml").unlink()
    result = run("validate")
    environment = "environments/development/environment.yaml"
    line = line_of(repo, environment, "nonprod-eu")
    assert f"error: {environment}:{line}: unknown cluster 'nonprod-eu'" in result.errors
    assert line > 1


def test_a_packed_render_unpacks_to_the_same_objects_and_takes_less_room(repo: Path) -> None:
    rendered = render(repo, None)
    packed = rendered.pack()
    assert len(packed.packed) < len(repr(rendered.objects)) / 4
    unpacked = packed.unpack()
    assert unpacked.objects == rendered.objects and unpacked.revision == rendered.revision
    assert unpacked.manifests() == rendered.manifests()
