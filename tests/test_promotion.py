"""Build once, promote through Git: every write is one commit with trailers on the newest tip
of a real remote, refusals leave the remote untouched, and concurrent writers lose nothing."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pygit2
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.git.store import transact
from reconciler.operations.releases import promote

from conftest import (
    CHECKOUT_IMAGE,
    DIGEST,
    IDENTITY,
    NEW_COMMIT,
    cli_in,
    clone,
    commit_and_push,
    edit,
    file_at,
    record_healthy,
    refs,
    register_checkout,
    tip,
)


def test_build_register_writes_the_record_and_auto_deploys(work: Path, remote: Path) -> None:
    result = register_checkout(work)
    assert result.exit_code == 0, result.stderr
    assert "deployed to development (autoDeploy)" in result.stdout
    commit = tip(remote)
    assert commit.message.startswith(f"build register shop/checkout {NEW_COMMIT[:12]} and deploy "
                                     "to development\n")
    trailers = commit.message_trailers
    assert trailers["Operation"] == "build-register"
    assert trailers["Component"] == "shop/checkout"
    assert trailers["Image"] == CHECKOUT_IMAGE
    assert trailers["Source-Commit"] == NEW_COMMIT
    assert trailers["To-Environment"] == "development"
    assert len(trailers["Release"]) == 16
    assert commit.author.name == "Dana Developer"
    assert f"image: \"{CHECKOUT_IMAGE}\"" in file_at(remote, f"builds/shop/checkout/{NEW_COMMIT}.yaml")
    release = file_at(remote, "environments/development/shop/checkout/release.yaml")
    assert CHECKOUT_IMAGE in release and 'version: "v1.2"' in release
    assert (work / "environments/development/shop/checkout/release.yaml").read_text() == release, \
        "the clone's work tree follows"


def test_registering_the_same_commit_again_keeps_the_newest_image(work: Path,
                                                                 remote: Path) -> None:
    register_checkout(work)
    before = refs(remote)
    again = register_checkout(work)
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert refs(remote) == before
    newer = CHECKOUT_IMAGE.replace("e" * 64, "f" * 64)
    replaced = cli_in(work, "build", "register", "shop/checkout", "--commit", NEW_COMMIT,
                      "--image", newer)
    assert "replaced the image of build" in replaced.stdout
    assert newer in file_at(remote, f"builds/shop/checkout/{NEW_COMMIT}.yaml")


def test_a_build_on_a_track_without_auto_deploy_only_registers(work: Path, remote: Path) -> None:
    result = cli_in(work, "build", "register", "shop/storefront", "--commit", NEW_COMMIT,
                    "--image", f"registry.acme.example/shop/storefront@{DIGEST}")
    assert result.exit_code == 0
    assert "deploy" not in tip(remote).message.split("\n")[0]
    assert DIGEST not in file_at(remote, "environments/development/shop/storefront/release.yaml")


def test_full_path_development_staging_production(work: Path, remote: Path) -> None:
    register_checkout(work)
    record_healthy(work)  # development's cluster saw it run Healthy
    staged = cli_in(work, "promote", "shop/checkout", "--to", "staging")
    assert staged.exit_code == 0, staged.stderr
    trailers = tip(remote).message_trailers
    assert (trailers["From-Environment"], trailers["To-Environment"]) == ("development", "staging")
    assert trailers["Pipeline"] == "standard"
    assert CHECKOUT_IMAGE in file_at(remote, "environments/staging/shop/checkout/release.yaml")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)
    written = transact(work, lambda tree: promote("shop/checkout", "production", True,
                                                  later)(tree).write,
                       target_branch="promote/shop/checkout/production")
    assert written is not None and written.pushed
    production = "environments/production/shop/checkout/release.yaml"
    assert CHECKOUT_IMAGE not in file_at(remote, production), "main waits for the merge"
    branch_tip = tip(remote, "promote/shop/checkout/production")
    assert CHECKOUT_IMAGE in file_at(remote, production, "promote/shop/checkout/production")
    assert str(branch_tip.parent_ids[0]) == str(tip(remote).id)
    pygit2.Repository(str(remote)).references["refs/heads/main"].set_target(branch_tip.id)
    status = cli_in(clone(remote, work.parent / "auditor"), "-o", "json", "status")
    assert status.exit_code == 0
    assert {"component": "shop/checkout", "environment": "production"}.items() <= next(
        c for c in json.loads(status.stdout)
        if c["component"] == "shop/checkout" and c["environment"] == "production").items()
    assert cli_in(work.parent / "auditor", "audit").exit_code == 0


def test_refusals_leave_the_remote_untouched(work: Path, remote: Path) -> None:
    register_checkout(work)
    record_healthy(work)  # development's cluster saw it run Healthy
    cli_in(work, "promote", "shop/checkout", "--to", "staging")
    before = refs(remote)
    cases = {
        ("promote", "shop/checkout", "--to", "qa"): "unknown environment 'qa'",
        ("promote", "shop/reindex", "--to", "staging"):
            "staging is not a stage of shop/reindex's pipeline fast-lane "
            "(development -> production)",
        ("promote", "shop/checkout", "--to", "development"):
            "development is the first stage of standard: use deploy, not promote",
        ("promote", "shop/checkout", "--to", "production"):
            "promotions into production need a pull request: run again with --branch",
        ("promote", "shop/checkout", "--to", "production", "--branch"):
            "shop/checkout must soak in staging for 1h before production",
        ("promote", "shop/nope", "--to", "staging"): "unknown component shop/nope",
        ("build", "register", "shop/checkout", "--commit", NEW_COMMIT, "--image",
         "registry.acme.example/shop/checkout:latest"): "is not an image by digest",
        ("build", "register", "shop/checkout", "--commit", NEW_COMMIT, "--image",
         CHECKOUT_IMAGE, "--track", "develop"): "'develop' is not a track of shop/checkout",
        ("deploy", "shop/checkout", "--commit", "0" * 40):
            "no registered build of shop/checkout for commit",
        ("rollback", "shop/reindex", "--env", "staging"):
            "shop/reindex has no release in staging to roll back",
    }
    for args, message in cases.items():
        result = cli_in(work, *args)
        assert result.exit_code == 1, args
        assert any(message in line for line in result.errors), (args, result.stderr)
    assert refs(remote) == before


def test_promotion_needs_the_previous_stage_released(work: Path, remote: Path) -> None:
    (work / "environments/staging/shop/storefront/release.yaml").unlink()
    commit_and_push(work, "undeploy storefront from staging")
    before = refs(remote)
    refused = cli_in(work, "promote", "shop/storefront", "--to", "production", "--branch")
    assert refused.errors == ["error: shop/storefront has no release in staging, the stage "
                              "before production: promote it there first"]
    assert refs(remote) == before


def test_missing_required_configurables_are_all_named(work: Path, remote: Path) -> None:
    edit(work, "projects/shop/components/storefront/component.yaml", "connections:",
         "configurables:\n  - {name: FRAUD_API, required: true}\n"
         "  - {name: FRAUD_KEY, required: true}\nconnections:")
    (work / "environments/development/shop/storefront/config.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Config\nenv: {FRAUD_API: https://fraud.dev, "
        "FRAUD_KEY: dev}\n")
    for environment in ("staging", "production"):
        (work / f"environments/{environment}/shop/storefront/release.yaml").unlink()
    commit_and_push(work, "storefront needs fraud checks")
    record_healthy(work)  # development's cluster saw it run Healthy
    before = refs(remote)
    refused = cli_in(work, "promote", "shop/storefront", "--to", "staging")
    assert refused.exit_code == 1
    assert any("staging lacks required configurables of shop/storefront: FRAUD_API, FRAUD_KEY"
               in e for e in refused.errors), refused.stderr
    assert refs(remote) == before


def test_rollback_restores_the_previous_release_with_a_new_commit(work: Path,
                                                                 remote: Path) -> None:
    original = file_at(remote, "environments/staging/shop/checkout/release.yaml")
    register_checkout(work)
    record_healthy(work)  # development's cluster saw it run Healthy
    cli_in(work, "promote", "shop/checkout", "--to", "staging")
    history_before = len(list(pygit2.Repository(str(remote)).walk(tip(remote).id)))
    result = cli_in(work, "rollback", "shop/checkout", "--env", "staging")
    assert result.exit_code == 0, result.stderr
    rolled = file_at(remote, "environments/staging/shop/checkout/release.yaml")
    original_image = next(line for line in original.splitlines() if line.startswith("image:"))
    assert original_image.split()[-1].strip('"') in rolled
    assert tip(remote).message_trailers["Operation"] == "rollback"
    assert len(list(pygit2.Repository(str(remote)).walk(tip(remote).id))) == history_before + 1
    forward = cli_in(work, "rollback", "shop/checkout", "--env", "staging", "--to",
                     NEW_COMMIT[:10])
    assert forward.exit_code == 0, forward.stderr
    assert CHECKOUT_IMAGE in file_at(remote, "environments/staging/shop/checkout/release.yaml")
    assert cli_in(work, "audit").exit_code == 0


def test_deploy_takes_the_newest_build_of_the_default_track(work: Path, remote: Path) -> None:
    cli_in(work, "build", "register", "identity/auth", "--commit", NEW_COMMIT, "--image",
           f"registry.acme.example/identity/auth@{DIGEST}")
    cli_in(work, "build", "register", "identity/auth", "--commit", "d" * 40, "--image",
           f"registry.acme.example/identity/auth@sha256:{'d' * 64}", "--track", "release-2.x")
    result = cli_in(work, "deploy", "identity/auth")
    assert result.exit_code == 0, result.stderr
    folder = "environments/development/identity/auth"
    release = file_at(remote, f"{folder}/release-v3.yaml")
    assert DIGEST in release and 'version: "v3.1"' in release, "the default track's newest"
    other_major = cli_in(work, "deploy", "identity/auth", "--commit", "d" * 12)
    assert other_major.exit_code == 0, other_major.stderr
    assert "d" * 64 in file_at(remote, f"{folder}/release-v2.yaml"), \
        "a build of the v2 track replaces the v2 line only"
    assert DIGEST in file_at(remote, f"{folder}/release-v3.yaml")


def test_a_component_follows_its_own_pipeline(work: Path, remote: Path) -> None:
    cli_in(work, "build", "register", "shop/reindex", "--commit", NEW_COMMIT, "--image",
           f"registry.acme.example/shop/reindex@{DIGEST}")
    assert DIGEST not in file_at(remote, "environments/development/shop/reindex/release.yaml"), \
        "reindex's image track does not auto-deploy"
    assert cli_in(work, "deploy", "shop/reindex").exit_code == 0
    assert DIGEST in file_at(remote, "environments/development/shop/reindex/release.yaml")
    result = cli_in(work, "promote", "shop/reindex", "--to", "production", "--branch")
    assert result.exit_code == 0, result.stderr
    trailers = tip(remote, "promote/shop/reindex/production").message_trailers
    assert (trailers["Pipeline"], trailers["From-Environment"]) == ("fast-lane", "development")


def test_config_set_and_unset_keep_comments_and_order(work: Path, remote: Path) -> None:
    path = "projects/shop/components/checkout/config.yaml"
    edit(work, path, "  CURRENCY: EUR", "  CURRENCY: EUR  # ISO 4217, ask finance first")
    commit_and_push(work, "document the currency")
    assert cli_in(work, "config", "set", "shop/checkout", "LOG_FORMAT=text").exit_code == 0
    text = file_at(remote, path)
    assert "LOG_FORMAT: text\n  CURRENCY: EUR  # ISO 4217, ask finance first" in text
    assert cli_in(work, "config", "set", "shop/checkout", "TIMEOUT=5s", "--env",
                  "staging").exit_code == 0
    assert "TIMEOUT: 5s" in file_at(remote, "environments/staging/shop/checkout/config.yaml")
    assert cli_in(work, "config", "unset", "shop/checkout", "LOG_FORMAT").exit_code == 0
    assert "LOG_FORMAT" not in file_at(remote, path)
    assert "# ISO 4217, ask finance first" in file_at(remote, path)
    trailers = tip(remote).message_trailers
    assert (trailers["Operation"], trailers["Key"]) == ("config-unset", "LOG_FORMAT")
    listed = cli_in(work, "-o", "json", "config", "list", "shop/checkout", "--env", "staging")
    values = {row["key"]: row for row in json.loads(listed.stdout)}
    assert values["TIMEOUT"] == {"key": "TIMEOUT", "value": "5s", "source": "staging"}
    assert values["LOG_LEVEL"]["source"] == "default"
    refused = cli_in(work, "config", "set", "shop/checkout", "PAYMENT_API_KEY=x")
    assert any("secret configurable" in e for e in refused.errors)


def test_six_writers_in_parallel_lose_nothing(remote: Path, tmp_path: Path) -> None:
    writers = [("shop/checkout", f"SAME_FILE_{i}") for i in range(3)] + [
        ("shop/catalog", "OTHER_A"), ("identity/auth", "OTHER_B"), ("shop/storefront", "OTHER_C")]
    clones = [clone(remote, tmp_path / f"writer-{i}") for i in range(len(writers))]
    environment = {**os.environ, **IDENTITY}
    processes = [subprocess.Popen([sys.executable, "-m", "reconciler", "--repo", str(path),
                                   "config", "set", component, f"{key}=value-{key}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=environment)
                 for path, (component, key) in zip(clones, writers, strict=True)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    for component, key in writers:
        project, name = component.split("/")
        text = file_at(remote, f"projects/{project}/components/{name}/config.yaml")
        assert text.count(f"{key}: value-{key}") == 1, (key, text)
    messages = [c.message for c in pygit2.Repository(str(remote)).walk(tip(remote).id)]
    assert sum(m.startswith("config set") for m in messages) == 6


def test_a_local_branch_with_unpushed_commits_is_not_overwritten(work: Path,
                                                               remote: Path) -> None:
    repository = pygit2.Repository(str(work))
    signature = pygit2.Signature("Me", "me@acme.example")
    repository.create_commit("HEAD", signature, signature, "local only", repository.head.peel(
        pygit2.Commit).tree.id, [repository.head.target])
    before = refs(remote)
    result = register_checkout(work)
    assert result.errors == ["error: local main has commits that are not on origin: push or "
                             "drop them first; nothing was written"]
    assert refs(remote) == before


def test_writes_without_a_remote_commit_locally(repo: Path) -> None:
    result = cli_in(repo, "config", "set", "shop/checkout", "FLAG=1")
    assert result.exit_code == 0, result.stderr
    assert "on main" in result.stdout
    repository = pygit2.Repository(str(repo))
    assert repository.head.peel(pygit2.Commit).message.startswith("config set shop/checkout FLAG")
    assert repository.status() == {}, "the work tree follows the commit"


def test_a_repo_whose_branch_is_master_is_written_to_master(repo: Path,
                                                           tmp_path: Path) -> None:
    local = pygit2.Repository(str(repo))
    local.branches.local.create("master", local.head.peel(pygit2.Commit))
    local.set_head("refs/heads/master")
    local.branches.local.delete("main")
    bare = tmp_path / "master.git"
    pygit2.clone_repository(str(repo), str(bare), bare=True)
    work = clone(bare, tmp_path / "master-work")
    result = cli_in(work, "config", "set", "shop/checkout", "FLAG=1")
    assert result.exit_code == 0, result.stderr
    assert "pushed master to origin" in result.stdout
    assert tip(bare, "master").message.startswith("config set shop/checkout FLAG")


def test_a_feature_branch_checked_out_does_not_change_where_writes_go(work: Path,
                                                                       remote: Path) -> None:
    repository = pygit2.Repository(str(work))
    repository.branches.local.create("my-feature", repository.head.peel(pygit2.Commit))
    repository.checkout("refs/heads/my-feature")
    result = cli_in(work, "config", "set", "shop/checkout", "FLAG=1")
    assert result.exit_code == 0, result.stderr
    assert "pushed main to origin" in result.stdout
    assert "refs/heads/my-feature" not in refs(remote)


def test_an_origin_that_does_not_exist_is_named(work: Path, tmp_path: Path) -> None:
    missing = tmp_path / "gone.git"
    pygit2.Repository(str(work)).remotes.set_url("origin", str(missing))
    result = cli_in(work, "config", "set", "shop/checkout", "FLAG=1")
    assert (result.exit_code, result.errors) == (
        1, [f"error: cannot reach origin {missing}: no such repository"])


def test_who_is_writing_must_be_known(work: Path, tmp_path: Path) -> None:
    levels = [pygit2.enums.ConfigLevel.GLOBAL, pygit2.enums.ConfigLevel.XDG,
              pygit2.enums.ConfigLevel.SYSTEM]
    saved = {level: pygit2.settings.search_path[level] for level in levels}
    empty = tmp_path / "no-config"
    empty.mkdir()
    try:
        for level in levels:
            pygit2.settings.search_path[level] = str(empty)
        runner = CliRunner(env={"GIT_AUTHOR_NAME": None, "GIT_AUTHOR_EMAIL": None,
                                "EMAIL": None, "GIT_COMMITTER_NAME": None,
                                "GIT_COMMITTER_EMAIL": None})
        result = runner.invoke(cli, ["--repo", str(work), "config", "set", "shop/checkout",
                                     "A=1"], catch_exceptions=False)
    finally:
        for level, value in saved.items():
            pygit2.settings.search_path[level] = value
    assert result.exit_code == 1
    assert "Set git config user.name and user.email" in result.stderr


def test_codeowners_guards_each_environment(work: Path, remote: Path) -> None:
    assert cli_in(work, "codeowners").exit_code == 0
    text = file_at(remote, "CODEOWNERS")
    assert "* @acme/platform" in text
    assert "/environments/production/ @acme/platform" in text
    assert "nothing to do" in cli_in(work, "codeowners").stdout
