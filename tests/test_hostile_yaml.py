"""Malformed or hostile YAML in a state file is a clear error with its line, never a hang,
a crash or a traceback, and every other file is still checked."""

from __future__ import annotations

from pathlib import Path

from conftest import Run, write

CLUSTER = "clusters/nonprod-eu.yaml"


def test_malformed_yaml_names_file_and_line(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "kind: Cluster\nname: nonprod-eu\nlabels: {region: eu\ncontext: x\n")
    result = run("validate")
    assert result.exit_code == 1
    assert result.errors == [f"error: {CLUSTER}:5: invalid YAML: did not find expected ',' or '}}'"]


def test_duplicate_key_is_refused(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "kind: Cluster\nname: nonprod-eu\nname: prod-eu\n")
    result = run("validate")
    assert result.exit_code == 1
    assert f"error: {CLUSTER}:4: invalid YAML: duplicate key 'name'" in result.errors


def test_tab_indentation_is_refused(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "kind: Cluster\nname: nonprod-eu\nlabels:\n\tregion: eu\n")
    result = run("validate")
    assert result.exit_code == 1
    assert any(f"{CLUSTER}:5:" in e and "tab" in e for e in result.errors), result.errors


def test_alias_bomb_is_refused(repo: Path, run: Run) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        previous = f"*a{level - 1}"
        levels.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")
    write(repo, CLUSTER, "kind: Cluster\nname: nonprod-eu\n" + "\n".join(levels) + "\n")
    result = run("validate")
    assert result.exit_code == 1
    assert any(CLUSTER in e and "alias bomb" in e for e in result.errors)


def test_deep_nesting_is_refused_not_a_crash(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "kind: Cluster\nname: nonprod-eu\nlabels: " + "[" * 50_000
          + "]" * 50_000 + "\n")
    result = run("validate")
    assert result.exit_code == 1
    assert any(CLUSTER in e and "nested more than" in e for e in result.errors)


def test_huge_file_is_refused(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "kind: Cluster\nname: nonprod-eu\n" + "# padding\n" * 200_000)
    result = run("validate")
    assert result.exit_code == 1
    assert any(CLUSTER in e and "larger than" in e for e in result.errors)


def test_binary_file_is_refused(repo: Path, run: Run) -> None:
    (repo / CLUSTER).write_bytes(b"\xff\xfe\x00kind: Cluster\n")
    result = run("validate")
    assert any(CLUSTER in e and "not valid UTF-8" in e for e in result.errors)


def test_empty_file_and_several_documents_are_refused(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "", header=False)
    write(repo, "clusters/prod-eu.yaml", "kind: Cluster\nname: prod-eu\n---\nkind: Cluster\n")
    result = run("validate")
    assert "error: clusters/nonprod-eu.yaml:1: file is empty" in result.errors
    assert any("clusters/prod-eu.yaml" in e and "several" in e for e in result.errors)


def test_a_list_instead_of_a_mapping_is_refused(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "- kind: Cluster\n", header=False)
    result = run("validate")
    assert f"error: {CLUSTER}:1: file must hold a YAML mapping" in result.errors


def test_custom_tags_are_refused(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "kind: Cluster\nname: !!python/name:os.system nonprod-eu\n")
    result = run("validate")
    assert any(CLUSTER in e and "is not allowed" in e for e in result.errors)


def test_yaml_1_2_keeps_on_and_yes_as_strings(repo: Path, run: Run) -> None:
    """YAML 1.1 would turn `on` into true; the state repo reads YAML 1.2."""
    write(repo, "projects/shop/components/checkout/config.yaml",
          "kind: Config\nenv: {FEATURE_FLAG: on, LEGACY: yes}\n")
    result = run("render", "--env", "development", "--project", "shop", "--component", "checkout")
    assert result.exit_code == 0, result.stderr
    assert "FEATURE_FLAG: 'on'" in result.stdout
    assert "LEGACY: 'yes'" in result.stdout


def test_every_broken_file_is_reported_in_one_run(repo: Path, run: Run) -> None:
    write(repo, CLUSTER, "kind: Cluster\nname: [\n")
    write(repo, "clusters/prod-eu.yaml", "kind: Cluster\nname: prod-eu\nname: x\n")
    result = run("validate")
    assert {e.split(":")[1].strip() for e in result.errors} >= {CLUSTER, "clusters/prod-eu.yaml"}
