"""Every state file is checked against its kind's JSON Schema: unknown keys, names,
digests, versions and cron expressions are refused with the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Run, edit, line_of, write

CHECKOUT = "projects/shop/components/checkout/component.yaml"
INVOICE = "projects/shop/components/invoice-run/component.yaml"
STAGING_RELEASE = "environments/staging/shop/checkout/release.yaml"


def test_the_example_is_valid(run: Run) -> None:
    result = run("validate")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok: 7 components, 23 releases in 3 environments")


def test_unknown_key_is_an_error_not_a_silent_default(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "replicas: 2", "replica: 2")
    line = line_of(repo, CHECKOUT, "replica: 2")
    result = run("validate")
    assert result.exit_code == 1
    assert any(e.startswith(f"error: {CHECKOUT}:{line}: unknown key 'replica'")
               for e in result.errors), result.errors


def test_nested_unknown_key_names_its_place(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "    visibility: organization", "    visibilty: organization")
    line = line_of(repo, CHECKOUT, "visibilty")
    result = run("validate")
    assert any(f"{CHECKOUT}:{line}: endpoints[0]: unknown key 'visibilty'" in e
               for e in result.errors), result.errors


def test_image_tag_instead_of_digest_is_refused(repo: Path, run: Run) -> None:
    text = (repo / STAGING_RELEASE).read_text()
    image_line = next(line for line in text.splitlines() if line.startswith("image:"))
    edit(repo, STAGING_RELEASE, image_line, "image: registry.acme.example/shop/checkout:1.2.0")
    line = line_of(repo, STAGING_RELEASE, "image:")
    result = run("validate")
    assert result.exit_code == 1
    assert (f"error: {STAGING_RELEASE}:{line}: image: 'registry.acme.example/shop/checkout:1.2.0' "
            "is not an image by digest: use REPOSITORY@sha256:<64 hex digits>, never a tag"
            ) in result.errors


def test_non_dns_name_is_refused(repo: Path, run: Run) -> None:
    edit(repo, "clusters/prod-eu.yaml", "name: prod-eu", "name: Prod_EU")
    line = line_of(repo, "clusters/prod-eu.yaml", "Prod_EU")
    result = run("validate")
    assert (f"error: clusters/prod-eu.yaml:{line}: name: 'Prod_EU' is not a valid name: use a DNS "
            "label (lowercase letters, digits and '-', at most 63 characters)") in result.errors


def test_name_longer_than_63_characters_is_refused(repo: Path, run: Run) -> None:
    edit(repo, "clusters/prod-eu.yaml", "name: prod-eu", "name: " + "a" * 64)
    result = run("validate")
    assert any("clusters/prod-eu.yaml:" in e and "name:" in e and "DNS label" in e for e in result.errors)


@pytest.mark.parametrize(("schedule", "why"), [
    ("61 * * * *", "minute '61': end of range (61) above maximum (59)"),
    ("* * *", "expected exactly 5 fields (minute hour day-of-month month day-of-week), found 3"),
    ("0 3 * * * *", "expected exactly 5 fields (minute hour day-of-month month day-of-week), "
     "found 6"),
    ("every day", "expected exactly 5 fields (minute hour day-of-month month day-of-week), "
     "found 2"),
    ("0 3 L * *", "day of month 'L': failed to parse int from 'L'"),
    ("0 3 15W * *", "day of month '15W': failed to parse int from '15W'"),
    ("0 3 * * 1#2", "day of week '1#2': failed to parse int from '1#2'"),
    ("0 3 * * 7", "day of week '7': end of range (7) above maximum (6)"),
    ("0 3 * * 5-1", "day of week '5-1': beginning of range (5) beyond end of range (1)"),
    ("*/0 * * * *", "minute '*/0': step of range should be a positive number"),
    ("CRON_TZ=UTC 0 3 * * *", "TZ or CRON_TZ is not allowed in a schedule (Kubernetes wants "
     "timeZone)"),
    ("@fortnightly", "unknown descriptor '@fortnightly'"),
])
def test_a_schedule_the_api_server_refuses_is_refused(repo: Path, run: Run, schedule: str,
                                                      why: str) -> None:
    edit(repo, INVOICE, '"0 3 * * *"', f'"{schedule}"')
    line = line_of(repo, INVOICE, "schedule:")
    result = run("validate")
    assert result.errors == [f"error: {INVOICE}:{line}: schedule: '{schedule}' is not a valid "
                             f"cron expression: {why}"]


@pytest.mark.parametrize("schedule", ["@daily", "@every 1h30m", "0 3 ? * MON-FRI",
                                      "*/15 9-17 1,15 jan-jun 0", "5/10 * * * *"])
def test_schedules_the_api_server_accepts_are_accepted(repo: Path, run: Run,
                                                       schedule: str) -> None:
    edit(repo, INVOICE, '"0 3 * * *"', f'"{schedule}"')
    assert run("validate").exit_code == 0


def test_schedule_only_on_scheduled_tasks(repo: Path, run: Run) -> None:
    edit(repo, INVOICE, 'schedule: "0 3 * * *"\n', "")
    edit(repo, CHECKOUT, "replicas: 2", 'replicas: 2\nschedule: "0 3 * * *"')
    result = run("validate")
    assert f"error: {INVOICE}:1: a scheduled-task needs a 'schedule'" in result.errors
    assert f"error: {CHECKOUT}:1: only a scheduled-task has a 'schedule'" in result.errors


def test_version_must_be_major_minor(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "version: v1.2", "version: 1.2.3")
    result = run("validate")
    assert any(f"{CHECKOUT}:" in e and "tracks[0].version: '1.2.3' is not a valid version" in e
               for e in result.errors), result.errors


def test_wrong_type_and_missing_key(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "replicas: 2", "replicas: two")
    edit(repo, CHECKOUT, "type: service\n", "")
    result = run("validate")
    assert any("replicas: 'two' is not a valid replica count" in e for e in result.errors), \
        result.errors
    assert f"error: {CHECKOUT}:1: missing required key 'type'" in result.errors


def test_wrong_kind_for_the_place(repo: Path, run: Run) -> None:
    edit(repo, "clusters/prod-eu.yaml", "kind: Cluster", "kind: Pipeline")
    line = line_of(repo, "clusters/prod-eu.yaml", "kind:")
    result = run("validate")
    assert f"error: clusters/prod-eu.yaml:{line}: kind must be Cluster, not 'Pipeline'" in result.errors


def test_wrong_api_version(repo: Path, run: Run) -> None:
    edit(repo, "clusters/prod-eu.yaml", "reconciler/v1", "reconciler/v2")
    result = run("validate")
    assert ("error: clusters/prod-eu.yaml:1: apiVersion: must be 'reconciler/v1', not "
            "'reconciler/v2'") in result.errors


def test_track_needs_a_branch_or_an_image(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "  - branch: main\n    version: v1.2",
         "  - branch: main\n    image: registry.acme.example/x\n    version: v1.2")
    result = run("validate")
    assert any("tracks[0]: a track needs exactly one of 'branch' or 'image'" in e
               for e in result.errors), result.errors


def test_plain_text_secret_value_is_refused(repo: Path, run: Run) -> None:
    write(repo, "environments/staging/shop/checkout/secrets/PAYMENT_API_KEY.sops.yaml",
          "kind: Secrets\ndata: {PAYMENT_API_KEY: hunter2}\nsops: {version: 3.9.0}\n")
    result = run("validate")
    assert result.exit_code == 1
    assert any("data.PAYMENT_API_KEY" in e and "not a SOPS-encrypted value" in e
               for e in result.errors), result.errors
    assert "hunter2" not in result.stderr


def test_timestamps_must_be_rfc3339(repo: Path, run: Run) -> None:
    edit(repo, STAGING_RELEASE, '"2026-11-21T08:00:00Z"', '"yesterday"')
    result = run("validate")
    assert any("releasedAt: 'yesterday' is not an RFC 3339 time" in e for e in result.errors)
