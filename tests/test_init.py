"""`reconciler init` creates a Git state repo: the bundled example or a minimal skeleton,
and never overwrites anything."""

from __future__ import annotations

from pathlib import Path

import pygit2
from click.testing import CliRunner

from reconciler.cli import cli


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_example_is_a_valid_committed_git_repo(tmp_path: Path) -> None:
    target = tmp_path / "acme"
    code, out, _ = invoke("init", str(target), "--example")
    assert code == 0 and out.startswith(f"initialised state repo {target} at ")
    repository = pygit2.Repository(str(target))
    assert not repository.head_is_unborn
    assert repository.status() == {}, "everything is committed"
    assert invoke("--repo", str(target), "validate")[0] == 0


def test_example_is_realistic(tmp_path: Path) -> None:
    target = tmp_path / "acme"
    invoke("init", str(target), "--example")
    code, _, _ = invoke("--repo", str(target), "-o", "json", "validate")
    assert code == 0
    clusters = {p.stem for p in (target / "clusters").glob("*.yaml")}
    assert len(clusters) == 3
    assert len(list((target / "pipelines").glob("*.yaml"))) == 2
    assert len(list((target / "projects").glob("*/project.yaml"))) == 2
    types = {line.split(":")[1].strip()
             for p in target.glob("projects/*/components/*/component.yaml")
             for line in p.read_text().splitlines() if line.startswith("type:")}
    assert types == {"service", "web-app", "scheduled-task", "manual-task", "proxy"}
    production = (target / "environments/production/environment.yaml").read_text()
    assert "clusters: [prod-eu, prod-us]" in production


def test_skeleton_is_valid_and_named_after_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "Globex Corp"
    assert invoke("init", str(target))[0] == 0
    assert "name: globex-corp" in (target / "organization.yaml").read_text()
    assert invoke("--repo", str(target), "validate")[0] == 0
    code, out, _ = invoke("--repo", str(target), "render", "--env", "development")
    assert code == 0 and out == ""


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, _, err = invoke("init", str(target), "--example")
    assert code == 1
    assert err == f"error: {target} already exists and is not empty: nothing was written\n"
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_the_example_keeps_its_demo_age_key_outside_the_repo(tmp_path: Path) -> None:
    target = tmp_path / "acme"
    code, out, _ = invoke("init", str(target), "--example")
    key_file = tmp_path / "acme-age-key.txt"
    assert code == 0
    assert out.splitlines()[1] == (f"wrote the example's age private key to {key_file} (not in "
                                   f"the repo); to decrypt its secrets: export "
                                   f"SOPS_AGE_KEY_FILE={key_file}")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "AGE-SECRET-KEY-" in key_file.read_text()
    secret = target / "environments/development/shop/checkout/secrets/PAYMENT_API_KEY.sops.yaml"
    assert "ENC[AES256_GCM," in secret.read_text()
    rendered = CliRunner(env={"SOPS_AGE_KEY_FILE": str(key_file)}).invoke(
        cli, ["--repo", str(target), "render", "--env", "development", "--reveal-secrets"],
        catch_exceptions=False)
    assert rendered.exit_code == 0, rendered.stderr
    assert "ZGVtby1wYXltZW50LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=" in rendered.stdout  # base64


def test_the_demo_key_is_never_overwritten(tmp_path: Path) -> None:
    key_file = tmp_path / "mine.txt"
    key_file.write_text("my own key")
    code, _, err = invoke("init", str(tmp_path / "acme"), "--example", "--demo-key", str(key_file))
    assert code == 1
    assert err == (f"error: {key_file} already exists: pass another --demo-key file; nothing "
                   "was written\n")
    assert key_file.read_text() == "my own key"
    assert not (tmp_path / "acme").exists()
    assert invoke("init", str(tmp_path / "skeleton"), "--demo-key", str(key_file))[0] == 2


def test_init_where_nothing_can_be_written_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = invoke("init", str(blocker / "acme"))
    assert code == 1
    assert err == f"error: cannot create the state repo in {blocker / 'acme'}: Not a directory\n"
