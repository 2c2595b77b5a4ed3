"""Promote only what was verified healthy. When a release runs Healthy in a cluster, that
cluster's daemon (or `apply --wait`) records it in the state repo's remote, under
refs/reconciler/verifications/<cluster>, never on main. A promotion into a stage with
`requiresVerification` (the example's staging) needs the release recorded Healthy on every
cluster of the previous stage, and its soak time counts from then; `--skip-verification
--reason` is the audited emergency exit; `promote --auto` promotes what is verified.

The example's development environment (renamed per test) runs on the test control plane;
storefront's release there differs from staging's, so it is the one promoted."""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner
from kubernetes.client import ApiClient

from reconciler.cli import cli
from reconciler.daemon.loop import Daemon
from reconciler.errors import ReconcilerError
from reconciler.git.store import clone_bare
from reconciler.kube.client import KubeClient
from reconciler.load.verifications import publish_records, read_records
from reconciler.model.verification import observe
from reconciler.operations.common import run
from reconciler.operations.releases import promote

from conftest import (
    IDENTITY,
    LiveEnv,
    Result,
    Running,
    cli_in,
    clone,
    commit_all,
    commit_and_push,
    edit,
    file_at,
    refs,
    status_of,
    tip,
    wait_for,
)

STOREFRONT = "shop/storefront"
RECORDS = "refs/reconciler/verifications/nonprod-eu"


class Team:
    """The state repo behind a bare remote; the operator's clone applies, the developer's
    clone promotes."""

    def __init__(self, live: LiveEnv, tmp_path: Path) -> None:
        self.live = live
        commit_all(live.repo, "development renamed for this test")
        self.remote = tmp_path / "remote.git"
        pygit2.clone_repository(str(live.repo), str(self.remote), bare=True)
        self.operator = clone(self.remote, tmp_path / "operator")
        self.developer = clone(self.remote, tmp_path / "developer")

    def apply(self, *args: str) -> Result:
        """`apply --env ENV --wait` by an operator with the cluster's credentials."""
        runner = CliRunner(env={**IDENTITY, "SOPS_AGE_KEY_FILE": str(self.live.age_key)})
        result = runner.invoke(cli, ["--repo", str(self.operator), "apply", "--env",
                                     self.live.name, "--wait", "--kubeconfig",
                                     str(self.live.kubeconfig), *args], catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    def promote(self, *args: str) -> Result:
        return cli_in(self.developer, "promote", *args)

    def record_text(self, cluster: str = "nonprod-eu", component: str = "storefront") -> str:
        """The record on the remote ('' when there is none yet)."""
        repository = pygit2.Repository(str(self.remote))
        ref = repository.references.get(f"refs/reconciler/verifications/{cluster}")
        path = f"{self.live.name}/shop/{component}.yaml"
        if ref is None or path not in ref.peel(pygit2.Commit).tree:
            return ""
        return repository[ref.peel(pygit2.Commit).tree[path].id].data.decode()

    def never_ready(self) -> None:
        """Storefront in development asks for more CPU than any node has: never Available."""
        path = self.operator / f"environments/{self.live.name}/shop/storefront/config.yaml"
        path.write_text('apiVersion: reconciler/v1\nkind: Config\nresources: {cpu: "500"}\n')
        commit_and_push(self.operator, "storefront: too big to run")

    def storefront_in_staging(self) -> str:
        return file_at(self.remote, "environments/staging/shop/storefront/release.yaml")

    def storefront_in_development(self) -> str:
        image = next(line for line in file_at(
            self.remote, f"environments/{self.live.name}/shop/storefront/release.yaml"
        ).splitlines() if line.startswith("image:"))
        return image.split()[-1].strip('"')


@pytest.fixture
def team(live: LiveEnv, tmp_path: Path) -> Team:
    return Team(live, tmp_path)


def test_a_healthy_release_is_recorded_outside_main_and_may_be_promoted(team: Team) -> None:
    main_before = tip(team.remote).id
    refused = team.promote(STOREFRONT, "--to", "staging")
    assert refused.exit_code == 1
    assert "not verified in" in refused.stderr and "nonprod-eu: no verification record" in \
        refused.stderr
    applied = team.apply()
    assert applied.exit_code == 0, applied.stderr
    assert tip(team.remote).id == main_before, "no record lands on main"
    assert RECORDS in refs(team.remote)
    record = team.record_text()
    assert 'health: "Healthy"' in record and team.storefront_in_development() in record
    assert f'environment: "{team.live.name}"' in record
    promoted = team.promote(STOREFRONT, "--to", "staging")
    assert promoted.exit_code == 0, promoted.stderr
    assert team.storefront_in_development() in team.storefront_in_staging()
    assert cli_in(team.developer, "audit").exit_code == 0, "verified before it was promoted"
    status = cli_in(team.developer, "status", "--env", team.live.name)
    assert "✓ healthy on 1/1 clusters for " in status.stdout, status.stdout


def test_a_release_that_never_becomes_ready_is_refused_with_its_cluster(team: Team) -> None:
    team.never_ready()
    applied = team.apply("--timeout", "15")
    assert applied.exit_code == 1, "the wait timed out"
    assert 'health: "Progressing"' in team.record_text()
    before = refs(team.remote)
    refused = team.promote(STOREFRONT, "--to", "staging")
    assert refused.exit_code == 1
    assert "nonprod-eu: Progressing since 20" in refused.stderr, refused.stderr
    assert refs(team.remote) == before, "nothing written"
    status = cli_in(team.developer, "status", "--env", team.live.name)
    assert "… waiting" in status.stdout


def test_soak_time_counts_from_when_it_was_verified(team: Team) -> None:
    edit(team.operator, "pipelines/standard.yaml", "requiresVerification: true",
         "requiresVerification: true\n    soakTime: 1h")
    commit_and_push(team.operator, "staging: soak an hour in development first")
    assert team.apply().exit_code == 0
    refused = team.promote(STOREFRONT, "--to", "staging")
    assert refused.exit_code == 1
    assert re.search(r"healthy on 1/1 clusters for \dm of 1h, promotable from 20",
                     refused.stderr), refused.stderr
    records = read_records(team.developer)
    first = records[(team.live.name, STOREFRONT, "")]["nonprod-eu"].first_healthy
    assert first is not None
    healthy_at = datetime.datetime.fromisoformat(first.replace("Z", "+00:00"))
    too_soon = promote(STOREFRONT, "staging", False, healthy_at + datetime.timedelta(minutes=59),
                       verifications=records)
    with pytest.raises(ReconcilerError, match="for 59m of 1h"):
        run(team.developer, too_soon)
    done = run(team.developer, promote(STOREFRONT, "staging", False,
                                       healthy_at + datetime.timedelta(minutes=61),
                                       verifications=records))
    assert done.written is not None


def test_every_cluster_of_the_previous_stage_must_report_healthy(team: Team) -> None:
    (team.operator / "clusters/nonprod-us.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Cluster\nname: nonprod-us\n")
    edit(team.operator, f"environments/{team.live.name}/environment.yaml",
         "clusters: [nonprod-eu]", "clusters: [nonprod-eu, nonprod-us]")
    commit_and_push(team.operator, "development spans two clusters")
    assert team.apply("--cluster", "nonprod-eu").exit_code == 0
    refused = team.promote(STOREFRONT, "--to", "staging")
    assert "nonprod-us: no verification record" in refused.stderr, refused.stderr
    assert "nonprod-eu" not in refused.stderr.split("requires")[1], "nonprod-eu is fine"
    degraded = observe(None, cluster="nonprod-us", environment=team.live.name,
                       component=STOREFRONT, release="", image=team.storefront_in_development(),
                       state_commit="", health="Degraded",
                       now=datetime.datetime.now(datetime.UTC))
    assert degraded is not None
    publish_records(team.operator, "nonprod-us", {STOREFRONT: degraded}, "as nonprod-us's daemon")
    refused = team.promote(STOREFRONT, "--to", "staging")
    assert refused.exit_code == 1
    assert "nonprod-us: Degraded since 20" in refused.stderr, refused.stderr


def test_skipping_verification_needs_a_reason_is_recorded_and_audited(team: Team) -> None:
    assert team.promote(STOREFRONT, "--to", "staging", "--skip-verification").exit_code == 2
    skipped = team.promote(STOREFRONT, "--to", "staging", "--skip-verification", "--reason",
                           "INC-42: the fix must reach staging now")
    assert skipped.exit_code == 0, skipped.stderr
    assert tip(team.remote).message_trailers["Verification-Skipped"] == \
        "INC-42: the fix must reach staging now"
    audit = cli_in(team.developer, "audit")
    assert audit.exit_code == 1
    assert "with verification skipped: INC-42: the fix must reach staging now" in audit.stderr


def test_the_audit_finds_a_promotion_made_before_verification(team: Team) -> None:
    (team.developer / "environments/staging/shop/storefront/release.yaml").write_text(
        file_at(team.remote, f"environments/{team.live.name}/shop/storefront/release.yaml"))
    commit_and_push(team.developer, "hand-promote storefront to staging, unverified")
    time.sleep(1.1)  # commit times have whole seconds
    assert team.apply().exit_code == 0  # verified now: too late for that promotion
    audit = cli_in(team.developer, "audit")
    assert audit.exit_code == 1
    assert (f"before it was verified in {team.live.name} on nonprod-eu (first Healthy there at"
            in audit.stderr), audit.stderr


def test_automatic_promotion_promotes_what_is_verified(team: Team) -> None:
    edit(team.operator, "pipelines/standard.yaml", "requiresVerification: true",
         "requiresVerification: true\n    promotion: auto")
    commit_and_push(team.operator, "staging follows development automatically")
    waiting = team.promote("--auto")
    assert waiting.exit_code == 0
    assert f"waiting: {STOREFRONT} to staging" in waiting.stdout
    assert team.storefront_in_development() not in team.storefront_in_staging()
    assert team.apply().exit_code == 0
    done = team.promote("--auto")
    assert done.exit_code == 0, done.stderr
    assert team.storefront_in_development() in team.storefront_in_staging()
    assert "nothing to promote automatically" in team.promote("--auto").stdout


def test_the_daemon_records_health_and_carries_on_without_push_rights(
        team: Team, api_client: ApiClient, tmp_path: Path,
        daemons_for: Callable[[Path], Running]) -> None:
    hook = team.remote / "hooks/pre-receive"
    hook.write_text("#!/bin/sh\necho 'verification refs are read-only here' >&2\nexit 1\n")
    hook.chmod(0o755)
    follower = tmp_path / "follower.git"
    clone_bare(str(team.remote), follower)
    running = daemons_for(follower)
    wait_for(lambda: status_of(api_client, team.live.name).get("health") == "Healthy",
             "applied and healthy all the same", timeout=120)
    environment = f'environment="{team.live.name}"'
    wait_for(lambda: running.metric("reconciler_verification_errors_total", environment) >= 1,
             "the refused publication counted")
    assert running.get("/readyz")[0] == 200, "refused records do not make it unready"
    assert RECORDS not in refs(team.remote)
    hook.unlink()  # push rights granted: the next pass publishes what it could not
    running.daemon.trigger.set()
    wait_for(lambda: 'health: "Healthy"' in team.record_text(), "the records published",
             timeout=120)


def test_records_published_at_once_never_lose_one_another(team: Team, tmp_path: Path) -> None:
    writers = [clone(team.remote, tmp_path / f"writer-{n}") for n in range(4)]
    now = datetime.datetime.now(datetime.UTC)
    errors: list[BaseException] = []

    def publish(writer: Path, cluster: str, component: str) -> None:
        try:
            record = observe(None, cluster=cluster, environment="staging",
                             component=f"shop/{component}", release="", image="img@sha256:1",
                             state_commit="", health="Healthy", now=now)
            assert record is not None
            publish_records(writer, cluster, {record.component: record}, "concurrent")
        except BaseException as exc:
            errors.append(exc)

    jobs = [threading.Thread(target=publish, args=(writers[n % 4], cluster, f"c{n}"))
            for n in range(12) for cluster in ("eu", "us")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert not errors, errors
    records = read_records(team.developer)
    for cluster in ("eu", "us"):
        assert {ref for (_, ref, _), by in records.items() if cluster in by} == \
            {f"shop/c{n}" for n in range(12)}


@pytest.fixture
def daemons_for(team: Team, api_client: ApiClient) -> Iterator[Callable[[Path], Running]]:
    running: list[Running] = []

    def start(repo: Path) -> Running:
        daemon = Daemon(repo, "nonprod-eu", KubeClient(api_client), team.live.age_key,
                        interval=3600, wait_timeout=60, lease_name=f"lease-{team.live.name}")
        running.append(Running(daemon))
        return running[-1]

    yield start
    for each in running:
        each.stop()
