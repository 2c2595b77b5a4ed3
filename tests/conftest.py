"""Shared fixtures: real state repos in Git (made by `reconciler init`) and a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.example import init_state_repo

HEADER = "apiVersion: reconciler/v1\n"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


Run = Callable[..., Result]


@pytest.fixture(scope="session")
def example_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "acme"
    init_state_repo(path, example=True)
    return path


@pytest.fixture
def repo(example_template: Path, tmp_path: Path) -> Path:
    """A private copy of the example state repo, a Git repository with one commit."""
    path = tmp_path / "state"
    shutil.copytree(example_template, path, symlinks=True)
    return path


@pytest.fixture
def run(repo: Path) -> Run:
    """Run `reconciler --repo <repo> ARGS...` in-process."""

    def invoke(*args: str, repo_path: Path | None = None, input: str | None = None) -> Result:
        runner = CliRunner()
        result = runner.invoke(cli, ["--repo", str(repo_path or repo), *args], input=input,
                               catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke


def write(repo: Path, relative: str, text: str, header: bool = True) -> Path:
    path = repo / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((HEADER if header else "") + text)
    return path


def edit(repo: Path, relative: str, old: str, new: str) -> None:
    path = repo / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


def commit_all(repo: Path, message: str = "change") -> str:
    repository = pygit2.Repository(str(repo))
    repository.index.add_all()
    repository.index.write()
    tree = repository.index.write_tree()
    signature = pygit2.Signature("Test", "test@example.com")
    parents = [] if repository.head_is_unborn else [repository.head.target]
    return str(repository.create_commit("HEAD", signature, signature, message, tree, parents))


def line_of(repo: Path, relative: str, text: str) -> int:
    """The 1-based line of the first line of a file that contains ``text``."""
    for number, line in enumerate((repo / relative).read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {relative}")
