"""The command line contract: exit codes, error lines on stderr, output formats, reading a
state repo from a commit, and help that explains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Run, commit_all, edit


def test_validate_json_summary(run: Run) -> None:
    result = run("-o", "json", "validate")
    summary = json.loads(result.stdout)
    assert summary["valid"] is True
    assert (summary["components"], summary["releases"], summary["environments"]) == (7, 23, 3)
    assert run("validate", "-o", "json").stdout == result.stdout


def test_every_problem_is_one_error_line_on_stderr(repo: Path, run: Run) -> None:
    edit(repo, "clusters/prod-eu.yaml", "name: prod-eu", "name: PROD")
    edit(repo, "pipelines/standard.yaml", "environment: staging", "environment: qa")
    result = run("validate")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert len(result.errors) == len(result.stderr.splitlines()) >= 2


def test_validate_a_commit_without_a_checkout(repo: Path, run: Run) -> None:
    first = run("--revision", "HEAD", "validate")
    assert first.exit_code == 0
    edit(repo, "clusters/prod-eu.yaml", "name: prod-eu", "name: PROD")
    assert run("validate").exit_code == 1, "the work tree is broken"
    assert run("--revision", "HEAD", "validate").exit_code == 0, "the commit is not"
    commit_all(repo, "break it")
    assert run("--revision", "HEAD", "validate").exit_code == 1
    assert run("--revision", "HEAD~1", "validate").exit_code == 0


def test_unknown_revision_and_missing_repo(run: Run, tmp_path: Path) -> None:
    assert run("--revision", "no-such-branch", "validate").errors[0].startswith(
        "error: unknown revision 'no-such-branch'")
    missing = run("validate", repo_path=tmp_path / "nowhere")
    assert missing.exit_code in (1, 2)
    assert "nowhere" in missing.stderr


def test_repo_from_environment_variable(repo: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "reconciler", "validate"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={"RECONCILER_REPO": str(repo), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_wrong_usage_exits_2(run: Run) -> None:
    result = run("render")
    assert result.exit_code == 2
    assert "Missing option '--env'" in result.stderr
    assert run("frobnicate").exit_code == 2


def test_a_component_without_its_project_is_wrong_usage(run: Run) -> None:
    result = run("render", "--env", "staging", "--component", "checkout")
    assert (result.exit_code, result.errors) == (2, ["error: --component needs --project"])


def test_a_negative_history_limit_is_wrong_usage(run: Run) -> None:
    result = run("history", "--limit", "-1")
    assert result.exit_code == 2
    assert "-1 is not in the range x>=0" in result.stderr


def test_unknown_components_and_environments_are_errors_not_empty_tables(run: Run) -> None:
    for args in (("history", "shop/nope"), ("build", "list", "shop/nope"),
                 ("config", "list", "shop/nope")):
        result = run(*args)
        assert (result.exit_code, result.errors) == (1, ["error: unknown component shop/nope"])
    assert run("history", "shop").errors == [
        "error: 'shop' is not a component: use PROJECT/COMPONENT"]
    assert run("history", "--env", "qa").errors == ["error: unknown environment 'qa'"]


def test_help_explains_commands(run: Run) -> None:
    top = run("--help").stdout
    for command in ("init", "validate", "render"):
        assert command in top
    assert "--reveal-secrets" in run("render", "--help").stdout
