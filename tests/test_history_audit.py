"""`history` shows every release change in the order it reached main, however it arrived;
`audit` proves from the files that every digest ever released went through the pipeline
from a registered build, and passes on the Git workflows teams really use."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pygit2
import pytest

from reconciler.git.store import Write, transact
from reconciler.operations.common import commit_message
from reconciler.operations.releases import promote

from conftest import (
    CHECKOUT_IMAGE,
    IDENTITY,
    NEW_COMMIT,
    cli_in,
    clone,
    commit_and_push,
    edit,
    record_healthy,
    register_checkout,
    tip,
)

PRODUCTION = "environments/production/shop/checkout/release.yaml"
REVIEWER = pygit2.Signature("Reviewer", "reviewer@acme.example")


def promote_to_production_branch(work: Path) -> str:
    """`promote --branch` as Dana runs it, two hours later (past staging's soak time)."""
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    saved = {key: os.environ.get(key) for key in IDENTITY}
    os.environ.update(IDENTITY)
    try:
        written = transact(work, lambda tree: promote("shop/checkout", "production", True,
                                                      later)(tree).write,
                           target_branch="promote/shop/checkout/production")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert written is not None
    return written.commit


def promoted_to_staging_with_a_pull_request_for_production(work: Path) -> str:
    assert register_checkout(work).exit_code == 0
    record_healthy(work)  # development's cluster saw it run Healthy
    assert cli_in(work, "promote", "shop/checkout", "--to", "staging").exit_code == 0
    return promote_to_production_branch(work)


def land(remote: Path, branch_commit: str, how: str) -> str:
    """Land a pull request's branch on main as a Git host does."""
    repository = pygit2.Repository(str(remote))
    main = repository.references["refs/heads/main"].target
    branch = repository[pygit2.Oid(hex=branch_commit)].peel(pygit2.Commit)
    tree = repository.merge_trees(repository.merge_base(main, branch.id), main,
                                  branch.id).write_tree(repository)
    if how == "merge":
        commit = repository.create_commit(
            None, REVIEWER, REVIEWER, "Merge pull request #7 from promote/shop/checkout/production",
            tree, [main, branch.id])
    elif how == "squash with git's message":
        indented = "\n".join(f"    {line}" if line else "" for line in branch.message.splitlines())
        message = (f"Squashed commit of the following:\n\ncommit {branch.id}\n"
                   f"Author: {branch.author.name} <{branch.author.email}>\n\n{indented}\n")
        commit = repository.create_commit(None, branch.author, REVIEWER, message, tree, [main])
    elif how == "squash with the title only":
        commit = repository.create_commit(None, branch.author, REVIEWER,
                                          "Promote checkout to production (#7)\n", tree, [main])
    else:  # rebase
        commit = repository.create_commit(None, branch.author, REVIEWER, branch.message, tree,
                                          [main])
    repository.references["refs/heads/main"].set_target(commit)
    return str(commit)


def test_history_lists_the_tools_writes_newest_first(work: Path) -> None:
    register_checkout(work)
    record_healthy(work)  # development's cluster saw it run Healthy
    cli_in(work, "promote", "shop/checkout", "--to", "staging")
    cli_in(work, "config", "set", "shop/catalog", "A=1")
    result = cli_in(work, "-o", "json", "history")
    events = json.loads(result.stdout)
    assert [e["operation"] for e in events] == ["config-set", "promote", "build-register", "init"]
    promoted = events[1]
    assert promoted["component"] == "shop/checkout"
    assert (promoted["from_environment"], promoted["to_environment"]) == ("development", "staging")
    assert promoted["image"] == CHECKOUT_IMAGE
    assert promoted["author"] == "Dana Developer"
    assert promoted["commit"] == str(tip(work.parent / "remote.git").parents[0].id)
    only = json.loads(cli_in(work, "-o", "json", "history", "shop/checkout", "--env",
                             "staging").stdout)
    assert [e["operation"] for e in only] == ["promote"]
    table = cli_in(work, "history", "--limit", "1").stdout.splitlines()
    assert table[0].split()[:3] == ["TIME", "AUTHOR", "OPERATION"] and len(table) == 2


@pytest.mark.parametrize("how", ["merge", "squash with git's message",
                                 "squash with the title only", "rebase"])
def test_a_promotion_pull_request_passes_the_audit_and_shows_in_history(
        work: Path, remote: Path, tmp_path: Path, how: str) -> None:
    landed = land(remote, promoted_to_staging_with_a_pull_request_for_production(work), how)
    auditor = clone(remote, tmp_path / "auditor")
    assert CHECKOUT_IMAGE in (auditor / PRODUCTION).read_text()
    result = cli_in(auditor, "audit")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("audit passed")
    events = json.loads(cli_in(auditor, "-o", "json", "history", "shop/checkout", "--env",
                               "production").stdout)
    assert len(events) == 1, events
    event = events[0]
    assert (event["commit"], event["to_environment"], event["image"]) == (
        landed, "production", CHECKOUT_IMAGE)
    assert event["author"] == "Dana Developer", "the promoter"
    assert event["merged_by"] == "Reviewer"
    expected = "release" if how == "squash with the title only" else "promote"
    assert event["operation"] == expected
    if expected == "promote":
        assert event["pull_request_branch"] == "promote/shop/checkout/production"


def test_a_repo_that_adopted_the_tool_by_hand_passes(repo: Path, tmp_path: Path) -> None:
    adopted = tmp_path / "adopted"
    adopted.mkdir()
    repository = pygit2.init_repository(str(adopted), initial_head="main")
    for source in repo.rglob("*"):
        if source.is_file() and ".git" not in source.relative_to(repo).parts:
            target = adopted / source.relative_to(repo)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    repository.index.add_all()
    repository.index.write()
    signature = pygit2.Signature("Platform", "platform@acme.example")
    first = repository.create_commit("HEAD", signature, signature, "our existing state",
                                     repository.index.write_tree(), [])
    assert cli_in(adopted, "audit").exit_code == 0
    edit(adopted, "environments/staging/environment.yaml", "clusters:",
         "secretRecipients: [age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq]\n"
         "clusters:")
    repository.index.add_all()
    repository.index.write()
    repository.create_commit("HEAD", signature, signature, "staging's age key",
                             repository.index.write_tree(), [repository.head.target])
    assert cli_in(adopted, "audit").exit_code == 0
    assert cli_in(adopted, "audit", "--since", str(first)).exit_code == 0
    verbose = cli_in(adopted, "audit", "-v")
    assert verbose.exit_code == 0
    assert verbose.stderr.startswith("notice: environments/staging/environment.yaml:1: commit ")


def test_a_hand_edited_production_digest_fails_with_path_and_commit(work: Path) -> None:
    register_checkout(work)
    image_line = next(line for line in (work / PRODUCTION).read_text().splitlines()
                      if line.startswith("image:"))
    commit_line = next(line for line in (work / PRODUCTION).read_text().splitlines()
                       if line.startswith("commit:"))
    edit(work, PRODUCTION, image_line, f'image: "{CHECKOUT_IMAGE}"')
    edit(work, PRODUCTION, commit_line, f'commit: "{NEW_COMMIT}"')
    commit_and_push(work, "hotfix production")
    hand = str(pygit2.Repository(str(work)).head.target)[:12]
    result = cli_in(work, "audit")
    assert result.exit_code == 1
    assert result.errors == [
        f"error: {PRODUCTION}:1: commit {hand}: released {CHECKOUT_IMAGE} to production without "
        "releasing it in staging first",
        f"error: {PRODUCTION}:1: commit {hand}: released into production, which requires a pull "
        "request, without one (a direct push)",
    ]
    report = json.loads(cli_in(work, "-o", "json", "audit", "--env", "production").stdout)
    assert report["ok"] is False and len(report["findings"]) == 2, report["findings"]
    assert cli_in(work, "audit", "--env", "development").exit_code == 0


def test_an_unregistered_digest_fails(work: Path) -> None:
    staging = "environments/staging/shop/catalog/release.yaml"
    text = (work / staging).read_text()
    image = next(line for line in text.splitlines() if line.startswith("image:"))
    edit(work, staging, image, "image: registry.acme.example/shop/catalog@sha256:" + "f" * 64)
    commit_and_push(work, "try another image")
    result = cli_in(work, "audit")
    assert any(e.startswith(f"error: {staging}:1:") and "but build" in e
               for e in result.errors), result.errors


def test_a_direct_push_into_a_pull_request_stage_fails(work: Path, remote: Path) -> None:
    branch_commit = promoted_to_staging_with_a_pull_request_for_production(work)
    repository = pygit2.Repository(str(remote))
    branch = repository[pygit2.Oid(hex=branch_commit)].peel(pygit2.Commit)
    repository.references["refs/heads/main"].set_target(repository.create_commit(
        None, branch.author, branch.author, "promote shop/checkout to production\n",
        branch.tree.id, [branch.parents[0].id]))
    result = cli_in(clone(remote, work.parent / "auditor"), "audit")
    assert result.exit_code == 1
    assert len(result.errors) == 1
    assert result.errors[0].endswith("released into production, which requires a pull request, "
                                     "without one (a direct push)")


def test_a_build_record_changed_or_deleted_fails(work: Path) -> None:
    build = next((work / "builds/shop/catalog").iterdir())
    edit(work, f"builds/shop/catalog/{build.name}", "builtAt:", "# tweaked\nbuiltAt:")
    commit_and_push(work, "tweak a build")
    result = cli_in(work, "audit")
    assert result.errors == [f"error: builds/shop/catalog/{build.name}:1: commit "
                             f"{str(pygit2.Repository(str(work)).head.target)[:12]}: build "
                             "record modified after it was registered: builds are immutable"]
    build.unlink()
    commit_and_push(work, "tidy up builds")
    assert any("build record deleted after it was registered" in e
               for e in cli_in(work, "audit").errors)


def test_a_tool_commit_that_also_edits_another_component_fails(work: Path) -> None:
    register_checkout(work)
    config = "projects/shop/components/catalog/config.yaml"
    fields = {"Operation": "promote", "Component": "shop/checkout",
              "From-Environment": "development", "To-Environment": "staging"}

    def sneaky(tree: object) -> Write:
        release = (work / "environments/development/shop/checkout/release.yaml").read_bytes()
        return Write(commit_message("promote shop/checkout to staging", fields),
                     {"environments/staging/shop/checkout/release.yaml": release,
                      config: b"apiVersion: reconciler/v1\nkind: Config\nenv: {SNEAKY: '1'}\n"})

    written = transact(work, sneaky)
    assert written is not None
    result = cli_in(work, "audit")
    assert result.errors == [f"error: {config}:1: commit {written.commit[:12]}: the commit is a "
                             "promote of shop/checkout, but also changes this file"]


def test_wrong_requests_are_errors(run: object, repo: Path, tmp_path: Path) -> None:
    assert cli_in(repo, "audit", "--env", "nope").errors == ["error: unknown environment 'nope'"]
    empty = tmp_path / "empty"
    pygit2.init_repository(str(empty))
    assert cli_in(empty, "audit").errors == [f"error: {empty} has no commits to audit"]
    other = tmp_path / "other"
    repository = pygit2.init_repository(str(other), initial_head="main")
    (other / "notes.txt").write_text("not a state repo")
    repository.index.add_all()
    repository.index.write()
    signature = pygit2.Signature("X", "x@x")
    repository.create_commit("HEAD", signature, signature, "notes", repository.index.write_tree(),
                             [])
    assert cli_in(other, "audit").errors == [
        f"error: {other} is not a state repo: organization.yaml is missing at HEAD"]
    assert cli_in(repo, "audit", "--since", "no-such-rev").exit_code == 1


def test_the_audit_carries_on_from_its_cache(work: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CACHE_DIR")  # the default place: under XDG_CACHE_HOME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli_in(work, "audit").exit_code == 0
    saved = list((tmp_path / "cache/reconciler/audit").glob("*/*.json"))
    assert len(saved) == 1, "the progress at the tip is kept outside the work tree"
    register_checkout(work)
    assert cli_in(work, "audit").exit_code == 0
    newest = str(pygit2.Repository(str(work)).head.target)
    progress = saved[0].parent / f"{newest}.json"
    data = json.loads(progress.read_text())
    data["findings"].append({"commit": newest, "path": PRODUCTION, "message": "from the cache",
                             "notice": False})
    progress.write_text(json.dumps(data))
    assert any("from the cache" in e for e in cli_in(work, "audit").errors), \
        "a re-run starts from the saved progress"
    progress.write_text("{not json")
    assert cli_in(work, "audit").exit_code == 0, "a broken cache is ignored"
    for file in saved[0].parent.glob("*.json"):
        file.unlink()
    assert cli_in(work, "audit").exit_code == 0, "and a deleted one rebuilt"
