"""Writes on the remotes teams really have: a remote that refuses (a hook) is reported once
with its own words; pull request branches are never overwritten silently; stages that
require a pull request get one for rollbacks too; writers sharing one clone take turns."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from conftest import (
    IDENTITY,
    cli_in,
    commit_and_push,
    file_at,
    record_healthy,
    refs,
    register_checkout,
    tip,
    wait_for,
)

HOOK = "#!/bin/sh\necho 'main is protected: open a pull request' >&2\nexit 1\n"


def install_hook(remote: Path, name: str) -> None:
    hook = remote / "hooks" / name
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(HOOK)
    hook.chmod(0o755)


def test_a_remote_hook_that_refuses_is_reported_once_and_nothing_lands(work: Path,
                                                                         remote: Path) -> None:
    for hook in ("pre-receive", "update"):
        install_hook(remote, hook)
        before = refs(remote)
        result = cli_in(work, "config", "set", "shop/checkout", "FLAG=1")
        assert result.exit_code == 1
        assert result.errors == [f"error: origin refused the push: {hook} hook declined; "
                                 "nothing was written"]
        assert "remote: main is protected: open a pull request" in result.stderr
        assert "kept moving" not in result.stderr
        assert refs(remote) == before
        (remote / "hooks" / hook).unlink()
    assert cli_in(work, "config", "set", "shop/checkout", "FLAG=1").exit_code == 0


@pytest.fixture
def served(remote: Path, tmp_path: Path) -> Iterator[str]:
    """The bare remote behind a real Git server (git daemon on the loopback)."""
    if shutil.which("git") is None:
        pytest.skip("needs git for git daemon")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all",
                               "--enable=receive-pack", f"--base-path={remote.parent}",
                               "--listen=127.0.0.1", f"--port={port}", str(remote.parent)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"git://127.0.0.1:{port}/{remote.name}"
    try:
        wait_for(lambda: subprocess.run(["git", "ls-remote", url], capture_output=True,
                                        timeout=5).returncode == 0, "git daemon serving")
        yield url
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_a_git_server_that_refuses_is_reported_once_with_its_words(
        served: str, remote: Path, tmp_path: Path) -> None:
    install_hook(remote, "pre-receive")
    work = Path(pygit2.clone_repository(served, str(tmp_path / "served-work")).workdir)
    before = refs(remote)
    result = cli_in(work, "config", "set", "shop/checkout", "FLAG=1")
    assert result.exit_code == 1
    assert result.errors == ["error: origin refused the push: pre-receive hook declined; nothing "
                             "was written"]
    assert "remote: main is protected: open a pull request" in result.stderr
    assert refs(remote) == before


def test_a_second_pull_request_for_the_same_stage_is_not_overwritten(work: Path,
                                                                     remote: Path) -> None:
    assert register_checkout(work).exit_code == 0
    record_healthy(work)  # development's cluster saw it run Healthy
    first = cli_in(work, "promote", "shop/checkout", "--to", "staging", "--branch")
    assert first.exit_code == 0, first.stderr
    branch = "refs/heads/promote/shop/checkout/staging"
    first_held = refs(remote)[branch]
    assert cli_in(work, "config", "set", "shop/catalog", "A=1").exit_code == 0
    record_healthy(work)  # development's cluster saw it run Healthy
    assert cli_in(work, "promote", "shop/checkout", "--to", "staging", "--branch").exit_code == 0, \
        "the same promotion again, on a newer main, is fine"
    held = refs(remote)[branch]
    assert held != first_held
    assert cli_in(work, "build", "register", "shop/checkout", "--commit", "d" * 40, "--image",
                  "registry.acme.example/shop/checkout@sha256:" + "d" * 64).exit_code == 0
    record_healthy(work)  # development's cluster saw it run Healthy
    again = cli_in(work, "promote", "shop/checkout", "--to", "staging", "--branch")
    assert again.exit_code == 1
    assert again.errors == [f"error: promote/shop/checkout/staging already holds an unmerged "
                            f"pull request ({held[:12]} 'promote shop/checkout to staging'): "
                            "merge or close it first, or pass --replace to overwrite it; "
                            "nothing was written"]
    assert refs(remote)[branch] == held
    record_healthy(work)  # development's cluster saw it run Healthy
    replaced = cli_in(work, "promote", "shop/checkout", "--to", "staging", "--branch",
                      "--replace")
    assert replaced.exit_code == 0, replaced.stderr
    assert refs(remote)[branch] != held
    assert cli_in(work, "promote", "shop/checkout", "--to", "staging", "--replace").exit_code == 2


def test_a_rollback_into_a_pull_request_stage_needs_a_branch(work: Path, remote: Path) -> None:
    before = refs(remote)
    refused = cli_in(work, "rollback", "shop/checkout", "--env", "production")
    assert (refused.exit_code, refused.errors) == (
        1, ["error: rollbacks into production need a pull request: run again with --branch"])
    assert refs(remote) == before
    with_branch = cli_in(work, "rollback", "shop/checkout", "--env", "production", "--branch")
    assert with_branch.errors == ["error: no earlier release of shop/checkout in production in "
                                  "the history"], "past the pull request rule"
    assert cli_in(work, "rollback", "shop/checkout", "--env", "staging").exit_code == 1
    assert cli_in(work, "config", "set", "shop/checkout", "PRE=1").exit_code == 0
    assert register_checkout(work).exit_code == 0
    record_healthy(work)  # development's cluster saw it run Healthy
    assert cli_in(work, "promote", "shop/checkout", "--to", "staging").exit_code == 0
    assert cli_in(work, "rollback", "shop/checkout", "--env", "staging").exit_code == 0
    assert tip(remote).message_trailers["Operation"] == "rollback"
    assert "Pull-Request-Branch" not in tip(remote).message_trailers


def test_writers_sharing_one_clone_take_turns(work: Path, remote: Path) -> None:
    environment = {**os.environ, **IDENTITY}
    keys = [f"SHARED_{i}" for i in range(4)]
    processes = [subprocess.Popen([sys.executable, "-m", "reconciler", "--repo", str(work),
                                   "config", "set", "shop/checkout", f"{key}=1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=environment) for key in keys]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    text = file_at(remote, "projects/shop/components/checkout/config.yaml")
    assert all(f"{key}: '1'" in text or f"{key}: \"1\"" in text or f"{key}: 1" in text
               for key in keys), text
    assert not [name for name in pygit2.Repository(str(work)).references
                if name.startswith("refs/reconciler/")]


def test_a_broken_main_can_be_repaired_with_the_tool(work: Path, remote: Path) -> None:
    pipeline = "pipelines/fast-lane.yaml"
    text = (work / pipeline).read_text()
    (work / pipeline).write_text(text + "owner: nobody\n")
    commit_and_push(work, "a typo breaks main")
    broken = cli_in(work, "validate")
    assert broken.exit_code == 1
    problem = broken.errors[0].removeprefix("error: ")
    config = cli_in(work, "config", "set", "shop/checkout", "FLAG=1")
    assert config.exit_code == 0, config.stderr
    assert config.stderr.splitlines() == ["warning: main still has 1 problem(s), none new:",
                                          f"warning: {problem}"]
    before = refs(remote)
    worse = cli_in(work, "config", "set", "shop/checkout", "1BAD=x")
    assert worse.exit_code == 1, "a write that adds a problem is still refused"
    assert [e for e in worse.errors if "1BAD" in e] and problem not in worse.stderr
    assert refs(remote) == before
    assert register_checkout(work).exit_code == 0
    record_healthy(work)  # development's cluster saw it run Healthy
    assert cli_in(work, "promote", "shop/checkout", "--to", "staging").exit_code == 0
    rollback = cli_in(work, "rollback", "shop/checkout", "--env", "staging")
    assert rollback.exit_code == 0, rollback.stderr
    unreadable = cli_in(work, "promote", "shop/reindex", "--to", "production")
    assert unreadable.errors == ["error: shop/reindex's pipeline 'fast-lane' does not load: fix "
                                 "pipelines/fast-lane.yaml first"]
