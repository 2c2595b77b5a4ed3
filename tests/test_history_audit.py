"""`history` reads the tool's writes back from commit trailers; `audit` proves that every
digest ever released went through the pipeline from a registered build."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pygit2

from reconciler.git.store import transact
from reconciler.operations.releases import promote

from conftest import (
    CHECKOUT_IMAGE,
    NEW_COMMIT,
    cli_in,
    commit_and_push,
    edit,
    register_checkout,
    tip,
)

PRODUCTION = "environments/production/shop/checkout/release.yaml"


def promote_to_production_branch(work: Path) -> str:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    written = transact(work, lambda tree: promote("shop/checkout", "production", True,
                                                  later)(tree).write,
                       target_branch="promote/shop/checkout/production")
    assert written is not None
    return written.commit


def test_history_lists_the_tools_writes_newest_first(work: Path) -> None:
    register_checkout(work)
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


def test_audit_passes_on_a_clean_history_with_a_merged_pull_request(work: Path,
                                                                   remote: Path) -> None:
    register_checkout(work)
    cli_in(work, "promote", "shop/checkout", "--to", "staging")
    branch_commit = promote_to_production_branch(work)
    cli_in(work, "config", "set", "shop/catalog", "A=1")
    repository = pygit2.Repository(str(remote))
    main = repository.references["refs/heads/main"].target
    merged_tree = repository.merge_trees(repository.merge_base(main, branch_commit), main,
                                         branch_commit)
    signature = pygit2.Signature("Reviewer", "reviewer@acme.example")
    merge = repository.create_commit(None, signature, signature,
                                     "Merge pull request #7 from promote/shop/checkout/production",
                                     merged_tree.write_tree(repository),
                                     [main, pygit2.Oid(hex=branch_commit)])
    repository.references["refs/heads/main"].set_target(merge)
    auditor = pygit2.clone_repository(str(remote), str(work.parent / "auditor")).workdir
    assert CHECKOUT_IMAGE in (Path(auditor) / PRODUCTION).read_text()
    result = cli_in(Path(auditor), "audit")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("audit passed")


def test_audit_fails_on_a_hand_edited_production_digest(work: Path) -> None:
    register_checkout(work)
    edit(work, PRODUCTION, next(line for line in (work / PRODUCTION).read_text().splitlines()
                                if line.startswith("image:")), f'image: "{CHECKOUT_IMAGE}"')
    edit(work, PRODUCTION, next(line for line in (work / PRODUCTION).read_text().splitlines()
                                if line.startswith("commit:")), f'commit: "{NEW_COMMIT}"')
    commit_and_push(work, "hotfix production")
    hand_commit = str(pygit2.Repository(str(work)).head.target)
    result = cli_in(work, "audit")
    assert result.exit_code == 1
    assert f"error: {PRODUCTION}:1: commit {hand_commit[:12]}: changed by hand: the commit has " \
           "no reconciler trailers" in result.errors
    assert (f"error: {PRODUCTION}:1: commit {hand_commit[:12]}: released {CHECKOUT_IMAGE} to "
            "production without releasing it in staging first") in result.errors
    report = json.loads(cli_in(work, "-o", "json", "audit", "--env", "production").stdout)
    assert report["ok"] is False and len(report["findings"]) == 2, report["findings"]
    assert cli_in(work, "audit", "--env", "development").exit_code == 0


def test_audit_reports_a_build_record_deleted_by_hand(work: Path) -> None:
    build = next((work / "builds/shop/catalog").iterdir())
    build.unlink()
    commit_and_push(work, "tidy up builds")
    result = cli_in(work, "audit")
    assert result.exit_code == 1
    assert any(f"builds/shop/catalog/{build.name}:1:" in e and "changed by hand" in e
               for e in result.errors), result.errors


def test_audit_reports_hand_made_build_records(work: Path) -> None:
    (work / "builds/shop/checkout/extra.yaml").write_text("anything\n")
    commit_and_push(work, "sneak a build in")
    result = cli_in(work, "audit")
    assert any("builds/shop/checkout/extra.yaml:1:" in e and "changed by hand" in e
               for e in result.errors), result.errors
