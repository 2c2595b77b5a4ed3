"""Secrets are encrypted at rest in Git, one SOPS file per secret with age, per environment:
setting or replacing one needs only public keys; they interoperate with the sops tool,
decrypt only with the right key, detect tampering, and never leak into output, errors,
commit messages or Git objects."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pyrage
import pytest
import yaml
from click.testing import CliRunner

from reconciler import sops
from reconciler.cli import cli

from conftest import IDENTITY, Result, commit_and_push, controlplane_module, edit, file_at, tip

VALUE = "correct horse battery staple"
OTHER = "tr0ub4dor&3"
FOLDER = "environments/staging/shop/checkout/secrets"
LEGACY = "environments/staging/shop/checkout/secrets.sops.yaml"


def secret_file(key: str) -> str:
    return f"{FOLDER}/{key}.sops.yaml"


class Keys:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.identity = pyrage.x25519.Identity.generate()
        self.recipient = str(self.identity.to_public())
        self.file = folder / f"{self.recipient[:12]}.txt"
        self.file.write_text(f"# created: test\n{self.identity}\n")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def recipients(work: Path, keys: Keys) -> Keys:
    """staging and production encrypt to one age key, which the test holds."""
    for environment in ("staging", "production"):
        path = f"environments/{environment}/environment.yaml"
        edit(work, path, "clusters:", f"secretRecipients: [{keys.recipient}]\nclusters:")
    commit_and_push(work, "age recipients")
    return keys


def secret_cli(work: Path, *args: str, key: Keys | None = None, stdin: str | None = None
               ) -> Result:
    """The CLI as a developer runs it: with a private key only when ``key`` is given."""
    env = {**IDENTITY, "SOPS_AGE_KEY_FILE": str(key.file) if key else None,
           "SOPS_AGE_KEY": None, "HOME": str(work.parent / "home")}
    result = CliRunner(env=env).invoke(cli, ["--repo", str(work), *args], input=stdin,
                                       catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def render_secret(work: Path, key: Keys | None, environment: str) -> dict[str, str]:
    result = secret_cli(work, "render", "--env", environment, "--project", "shop",
                        "--component", "checkout", "--reveal-secrets", key=key)
    assert result.exit_code == 0, result.stderr
    secret = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Secret")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_setting_a_secret_needs_only_the_public_key(work: Path, remote: Path,
                                                   recipients: Keys) -> None:
    result = secret_cli(work, "secret", "set", "shop/checkout", f"PAYMENT_API_KEY={VALUE}",
                        "--env", "staging")
    assert result.exit_code == 0, result.stderr
    text = file_at(remote, secret_file("PAYMENT_API_KEY"))
    document = yaml.safe_load(text)
    assert document["sops"]["encrypted_regex"] == "^data$"
    assert document["sops"]["age"][0]["recipient"] == recipients.recipient
    assert list(document["data"]) == ["PAYMENT_API_KEY"]
    assert document["data"]["PAYMENT_API_KEY"].startswith("ENC[AES256_GCM,data:")
    assert VALUE not in text
    trailers = tip(remote).message_trailers
    assert (trailers["Operation"], trailers["Key"]) == ("secret-set", "PAYMENT_API_KEY")
    assert VALUE not in tip(remote).message


def test_replacing_and_adding_secrets_need_no_private_key(work: Path, remote: Path,
                                                         recipients: Keys) -> None:
    assert secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env",
                      "staging").exit_code == 0
    before = file_at(remote, secret_file("A"))
    replaced = secret_cli(work, "secret", "set", "shop/checkout", f"A={OTHER}", "--env", "staging")
    added = secret_cli(work, "secret", "set", "shop/checkout", f"B={VALUE}", "--env", "staging")
    assert (replaced.exit_code, added.exit_code) == (0, 0), replaced.stderr + added.stderr
    assert file_at(remote, secret_file("A")) != before
    assert render_secret(work, recipients, "staging") == {"A": OTHER, "B": VALUE}


def test_value_from_standard_input_or_a_file(work: Path, recipients: Keys,
                                             tmp_path: Path) -> None:
    assert secret_cli(work, "secret", "set", "shop/checkout", "FROM_STDIN", "--env", "staging",
                      stdin=VALUE + "\n").exit_code == 0
    value_file = tmp_path / "value.txt"
    value_file.write_text(OTHER)
    assert secret_cli(work, "secret", "set", "shop/checkout", "FROM_FILE", "--env", "staging",
                      "--from-file", str(value_file)).exit_code == 0
    assert render_secret(work, recipients, "staging") == {"FROM_STDIN": VALUE, "FROM_FILE": OTHER}


def test_a_name_that_is_not_an_environment_variable_is_refused(work: Path, remote: Path,
                                                               recipients: Keys) -> None:
    before = str(tip(remote).id)
    for name in ("../../../../organization", "A/B", "1ABC", "A-B"):
        refused = secret_cli(work, "secret", "set", "shop/checkout", f"{name}={VALUE}", "--env",
                             "staging")
        assert refused.exit_code == 1
        assert refused.errors == [f"error: {name!r} is not a secret name: use an environment "
                                  "variable name ([A-Za-z_][A-Za-z0-9_]*)"]
    assert str(tip(remote).id) == before


def test_a_plain_configurable_is_not_made_a_secret(work: Path, remote: Path,
                                                  recipients: Keys) -> None:
    before = str(tip(remote).id)
    refused = secret_cli(work, "secret", "set", "shop/checkout", f"LOG_LEVEL={VALUE}", "--env",
                         "staging")
    assert refused.exit_code == 1
    assert refused.errors == ["error: LOG_LEVEL is a plain configurable of shop/checkout: use "
                              "reconciler config set, or declare it secret: true first"]
    assert str(tip(remote).id) == before


def test_an_environment_without_recipients_is_refused(work: Path, remote: Path) -> None:
    before = str(tip(remote).id)
    refused = secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    assert refused.exit_code == 1
    assert refused.errors == ["error: no secretRecipients: add age public keys to the "
                              "environment first"]
    assert str(tip(remote).id) == before


def test_list_shows_keys_who_changed_them_and_their_recipients_never_values(
        work: Path, remote: Path, recipients: Keys) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging")
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    listed = secret_cli(work, "secret", "list", "shop/checkout", "--env", "staging")
    assert listed.exit_code == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY", "CHANGED", "BY", "RECIPIENTS", "STALE"]
    assert [line.split()[0] for line in lines[1:]] == ["A", "B"]
    assert all("Dana Developer" in line and line.endswith("-") for line in lines[1:])
    assert VALUE not in listed.stdout and OTHER not in listed.stdout
    as_json = secret_cli(work, "-o", "json", "secret", "list", "shop/checkout", "--env", "staging")
    entries = yaml.safe_load(as_json.stdout)
    assert [(e["key"], e["recipients"], e["missing"], e["extra"]) for e in entries] == [
        ("A", [recipients.recipient], [], []), ("B", [recipients.recipient], [], [])]
    assert [e["by"] for e in entries] == ["Dana Developer", "Dana Developer"]
    assert entries[0]["changed"] >= entries[1]["changed"], "A was set after B"


def test_list_shows_a_file_left_stale_by_a_recipient_change(work: Path, recipients: Keys,
                                                            tmp_path: Path) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    newcomer = Keys(tmp_path / "newcomer")
    edit(work, "environments/staging/environment.yaml", recipients.recipient,
         f"{recipients.recipient}, {newcomer.recipient}")
    commit_and_push(work, "add an age key to staging")
    entries = yaml.safe_load(secret_cli(work, "-o", "json", "secret", "list", "shop/checkout",
                                        "--env", "staging").stdout)
    assert entries[0]["missing"] == [newcomer.recipient]
    table = secret_cli(work, "secret", "list", "shop/checkout", "--env", "staging").stdout
    assert f"missing {newcomer.recipient[:10]}..." in table
    secret_cli(work, "secret", "set", "shop/checkout", f"A={OTHER}", "--env", "staging")
    entries = yaml.safe_load(secret_cli(work, "-o", "json", "secret", "list", "shop/checkout",
                                        "--env", "staging").stdout)
    assert entries[0]["missing"] == [], "a secret set again is encrypted to every recipient"
    assert render_secret(work, newcomer, "staging") == {"A": OTHER}


def test_list_of_a_hand_committed_file_names_its_committer(work: Path, recipients: Keys) -> None:
    document = sops.encrypt({"A": VALUE}, [recipients.recipient])
    (work / FOLDER).mkdir(parents=True)
    (work / secret_file("A")).write_text(yaml.safe_dump(document, sort_keys=False))
    commit_and_push(work, "secret written by hand")
    lines = secret_cli(work, "secret", "list", "shop/checkout", "--env", "staging").stdout
    assert "Hand Editor" in lines.splitlines()[1]


def test_unset_deletes_the_secrets_file_without_a_key(work: Path, remote: Path,
                                                      recipients: Keys) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging")
    unset = secret_cli(work, "secret", "unset", "shop/checkout", "A", "--env", "staging")
    assert unset.exit_code == 0, unset.stderr
    assert tip(remote).message_trailers["Operation"] == "secret-unset"
    with pytest.raises(KeyError):
        file_at(remote, secret_file("A"))
    assert render_secret(work, recipients, "staging") == {"B": OTHER}
    again = secret_cli(work, "secret", "unset", "shop/checkout", "A", "--env", "staging")
    assert (again.exit_code, again.stdout.splitlines()[0]) == (
        0, "A is not a secret of shop/checkout in staging: nothing to do")


def test_a_required_secret_cannot_be_unset(work: Path, remote: Path, recipients: Keys) -> None:
    for environment in ("staging", "production"):  # development has the example's own
        secret_cli(work, "secret", "set", "shop/checkout", f"PAYMENT_API_KEY={VALUE}", "--env",
                   environment)
    edit(work, "projects/shop/components/checkout/component.yaml",
         "{name: PAYMENT_API_KEY, secret: true}",
         "{name: PAYMENT_API_KEY, secret: true, required: true}")
    commit_and_push(work, "PAYMENT_API_KEY is required")
    before = str(tip(remote).id)
    refused = secret_cli(work, "secret", "unset", "shop/checkout", "PAYMENT_API_KEY", "--env",
                         "staging")
    assert refused.exit_code == 1
    assert any("staging lacks required configurables of shop/checkout: PAYMENT_API_KEY (secret)"
               in e for e in refused.errors), refused.stderr
    assert str(tip(remote).id) == before


def test_wrong_key_is_a_clear_error_naming_environment_and_file(work: Path, recipients: Keys,
                                                                tmp_path: Path) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    stranger = Keys(tmp_path / "stranger")
    result = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=stranger)
    assert result.exit_code == 1
    assert result.errors == [f"error: {secret_file('A')}:1: none of the age keys given can "
                             "decrypt staging's secrets (wrong key, or the file is not encrypted "
                             "to it)"]
    assert VALUE not in result.stdout + result.stderr


def test_a_tampered_file_fails_its_integrity_check(work: Path, recipients: Keys) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    path = work / secret_file("A")
    original = yaml.safe_load(path.read_text())
    flipped = dict(original)
    ciphertext = original["data"]["A"]
    data = ciphertext.split("data:")[1].split(",")[0]
    changed = base64.b64encode(bytes([base64.b64decode(data)[0] ^ 1]) + base64.b64decode(data)[1:])
    flipped["data"] = {"A": ciphertext.replace(data, changed.decode())}
    path.write_text(yaml.safe_dump(flipped, sort_keys=False))
    tampered = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=recipients)
    assert tampered.exit_code == 1
    assert tampered.errors == [f"error: {secret_file('A')}:1: failed its integrity check: a value "
                               "does not decrypt (the file was changed without its data key)"]
    other = sops.encrypt({"A": OTHER}, [recipients.recipient])
    mixed = {**original, "sops": {**original["sops"], "mac": other["sops"]["mac"]}}
    path.write_text(yaml.safe_dump(mixed, sort_keys=False))
    wrong_mac = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=recipients)
    assert wrong_mac.exit_code == 1
    assert any("failed its integrity check" in e for e in wrong_mac.errors), wrong_mac.stderr
    assert VALUE not in tampered.stderr + wrong_mac.stderr


def test_one_file_holds_exactly_the_secret_it_is_named_after(work: Path,
                                                            recipients: Keys) -> None:
    (work / FOLDER).mkdir(parents=True)
    two = sops.encrypt({"A": VALUE, "B": OTHER}, [recipients.recipient])
    (work / secret_file("A")).write_text(yaml.safe_dump(two, sort_keys=False))
    misnamed = sops.encrypt({"C": VALUE}, [recipients.recipient])
    (work / secret_file("D")).write_text(yaml.safe_dump(misnamed, sort_keys=False))
    result = secret_cli(work, "validate")
    assert result.exit_code == 1
    assert result.errors == [
        f"error: {secret_file('A')}:3: holds A, B: a secrets file holds exactly one secret, the "
        "one its name says (A)",
        f"error: {secret_file('D')}:3: holds C: a secrets file holds exactly one secret, the one "
        "its name says (D)",
    ]
    assert VALUE not in result.stderr and OTHER not in result.stderr


def write_legacy(work: Path, keys: Keys, values: dict[str, str]) -> None:
    document = sops.encrypt(values, [keys.recipient])
    (work / LEGACY).write_text(yaml.safe_dump(document, sort_keys=False))
    commit_and_push(work, "secrets in the old single file")


def test_the_old_single_file_is_refused_with_how_to_split_it(work: Path,
                                                             recipients: Keys) -> None:
    write_legacy(work, recipients, {"A": VALUE, "B": OTHER})
    result = secret_cli(work, "validate")
    assert result.exit_code == 1
    assert result.errors == [
        f"error: {LEGACY}:1: several secrets in one SOPS file are no longer read (each secret is "
        "its own secrets/<KEY>.sops.yaml, so setting one needs only public keys): split it with "
        "`reconciler secret migrate --env staging`, which needs a key that decrypts it"]


def test_migrate_splits_the_old_file_in_one_commit(work: Path, remote: Path,
                                                   recipients: Keys) -> None:
    write_legacy(work, recipients, {"A": VALUE, "B": OTHER})
    before = str(tip(remote).id)
    without_key = secret_cli(work, "secret", "migrate", "--env", "staging")
    assert without_key.exit_code == 1
    assert without_key.errors == [f"error: {LEGACY}:1: no age key to decrypt staging's secrets: "
                                  "set SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or pass --age-key-file"]
    assert str(tip(remote).id) == before
    migrated = secret_cli(work, "secret", "migrate", "--env", "staging", key=recipients)
    assert migrated.exit_code == 0, migrated.stderr
    commit = tip(remote)
    assert commit.parents[0].id == pygit2.Oid(hex=before), "one commit"
    assert commit.message_trailers["Operation"] == "secret-migrate"
    with pytest.raises(KeyError):
        file_at(remote, LEGACY)
    assert list(yaml.safe_load(file_at(remote, secret_file("B")))["data"]) == ["B"]
    assert secret_cli(work, "validate").exit_code == 0
    assert render_secret(work, recipients, "staging") == {"A": VALUE, "B": OTHER}
    assert VALUE not in commit.message + migrated.stdout + migrated.stderr


def test_rotate_re_encrypts_to_the_current_recipients(work: Path, remote: Path,
                                                      recipients: Keys, tmp_path: Path) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging")
    newcomer = Keys(tmp_path / "new")
    edit(work, "environments/staging/environment.yaml", recipients.recipient,
         newcomer.recipient)
    commit_and_push(work, "replace staging's age key")
    before = str(tip(remote).id)
    assert secret_cli(work, "secret", "rotate", "--env", "staging").exit_code == 1, \
        "rotating needs a private key"
    assert str(tip(remote).id) == before
    assert secret_cli(work, "secret", "rotate", "--env", "staging",
                      key=recipients).exit_code == 0
    assert tip(remote).message_trailers["Operation"] == "secret-rotate"
    assert tip(remote).parents[0].id == pygit2.Oid(hex=before), "both files in one commit"
    assert render_secret(work, newcomer, "staging") == {"A": VALUE, "B": OTHER}
    old = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=recipients)
    assert old.exit_code == 1, "the removed key no longer decrypts"


@pytest.fixture(scope="session")
def sops_tool() -> Path:
    controlplane = controlplane_module()
    try:
        return Path(controlplane.build()) / "sops"
    except controlplane.TestEnvError as exc:
        pytest.fail(f"{exc}: the sops interoperability tests need Go 1.26+ to build sops")


def run_sops(tool: Path, keys: Keys, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "SOPS_AGE_KEY_FILE": str(keys.file)}
    return subprocess.run([str(tool), *args, "--input-type", "yaml", "--output-type", "yaml"],
                          capture_output=True, text=True, env=environment)


def test_a_file_written_by_sops_is_read(work: Path, recipients: Keys, sops_tool: Path) -> None:
    plain = work / "plain.yaml"
    plain.write_text(f"apiVersion: reconciler/v1\nkind: Secrets\ndata:\n  A: {VALUE}\n")
    written = run_sops(sops_tool, recipients, "encrypt", "--age", recipients.recipient,
                   "--encrypted-regex", "^data$", str(plain))
    assert written.returncode == 0, written.stderr
    plain.unlink()
    (work / FOLDER).mkdir(parents=True)
    (work / secret_file("A")).write_text(written.stdout)
    commit_and_push(work, "a secret written with sops")
    assert secret_cli(work, "validate").exit_code == 0
    assert render_secret(work, recipients, "staging") == {"A": VALUE}


def test_sops_decrypts_a_secret_replaced_without_a_private_key(work: Path, recipients: Keys,
                                                               sops_tool: Path) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    replaced = secret_cli(work, "secret", "set", "shop/checkout", f"A={OTHER}", "--env", "staging")
    assert replaced.exit_code == 0, replaced.stderr
    decrypted = run_sops(sops_tool, recipients, "decrypt", str(work / secret_file("A")))
    assert decrypted.returncode == 0, decrypted.stderr
    assert yaml.safe_load(decrypted.stdout)["data"] == {"A": OTHER}


def git_objects(path: Path) -> Iterator[bytes]:
    repository = pygit2.Repository(str(path))
    for oid in repository.odb:
        obj = repository[oid]
        if isinstance(obj, pygit2.Blob):
            yield obj.data
        elif isinstance(obj, pygit2.Commit):
            yield obj.message.encode()


def test_no_leaks_in_output_errors_history_or_git_objects(work: Path, remote: Path,
                                                          recipients: Keys) -> None:
    forms = [VALUE.encode(), base64.b64encode(VALUE.encode())]
    write_legacy(work, recipients, {"LEGACY": VALUE})
    outputs = [
        secret_cli(work, "validate"),  # refused: the old file
        secret_cli(work, "secret", "migrate", "--env", "staging"),  # refused: no key
        secret_cli(work, "secret", "migrate", "--env", "staging", key=recipients),
        secret_cli(work, "secret", "set", "shop/checkout", f"PAYMENT_API_KEY={VALUE}", "--env",
                   "staging"),
        secret_cli(work, "secret", "set", "shop/checkout", f"B={VALUE}", "--env", "staging"),
        secret_cli(work, "secret", "set", "shop/checkout", f"bad-name={VALUE}", "--env",
                   "staging"),
        secret_cli(work, "render", "--env", "staging"),
        secret_cli(work, "-o", "json", "render", "--env", "staging"),
        secret_cli(work, "render", "--env", "staging", "--reveal-secrets"),
        secret_cli(work, "secret", "list", "shop/checkout", "--env", "staging"),
        secret_cli(work, "-o", "json", "history"),
        secret_cli(work, "audit"),
        secret_cli(work, "validate"),
        secret_cli(work, "config", "set", "shop/checkout", f"PAYMENT_API_KEY={VALUE}"),
        secret_cli(work, "secret", "rotate", "--env", "staging", key=recipients),
        secret_cli(work, "secret", "unset", "shop/checkout", "B", "--env", "staging"),
    ]
    for result in outputs:
        for form in forms:
            assert form.decode() not in result.stdout + result.stderr
    for repository in (work, remote):
        for data in git_objects(repository):
            for form in forms:
                assert form not in data
    revealed = render_secret(work, recipients, "staging")
    assert revealed == {"LEGACY": VALUE, "PAYMENT_API_KEY": VALUE}, \
        "only --reveal-secrets with the key shows them"


def test_the_example_has_a_secret_that_its_demo_key_decrypts(work: Path, demo_key: Path) -> None:
    env = {"SOPS_AGE_KEY_FILE": str(demo_key), "SOPS_AGE_KEY": None}
    result = CliRunner(env=env).invoke(
        cli, ["--repo", str(work), "render", "--env", "development", "--project", "shop",
              "--component", "checkout", "--reveal-secrets"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    secret = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Secret")
    assert base64.b64decode(secret["data"]["PAYMENT_API_KEY"]) == \
        b"demo-payment-key-not-for-production"
    for path, _ in ((p, None) for p in work.rglob("*") if p.is_file() and ".git" not in p.parts):
        assert "AGE-SECRET-KEY-" not in path.read_text(errors="replace"), path
