"""Secrets are encrypted at rest in Git in the SOPS format with age, per environment: they
interoperate with the sops tool, decrypt only with the right key, detect tampering, and
never leak into output, errors, commit messages or Git objects."""

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

from reconciler.cli import cli

from conftest import IDENTITY, Result, commit_and_push, controlplane_module, edit, file_at, tip

VALUE = "correct horse battery staple"
OTHER = "tr0ub4dor&3"
SECRETS = "environments/staging/shop/checkout/secrets.sops.yaml"


class Keys:
    def __init__(self, folder: Path) -> None:
        self.identity = pyrage.x25519.Identity.generate()
        self.recipient = str(self.identity.to_public())
        self.file = folder / f"{self.recipient[:12]}.txt"
        self.file.write_text(f"# created: test\n{self.identity}\n")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


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
    env = {**IDENTITY, "SOPS_AGE_KEY_FILE": str(key.file) if key else None,
           "SOPS_AGE_KEY": None}
    result = CliRunner(env=env).invoke(cli, ["--repo", str(work), *args], input=stdin)
    return Result(result.exit_code, result.stdout, result.stderr)


def test_setting_a_new_secret_needs_only_the_public_key(work: Path, remote: Path,
                                                        recipients: Keys) -> None:
    result = secret_cli(work, "secret", "set", "shop/checkout", f"PAYMENT_API_KEY={VALUE}",
                        "--env", "staging")
    assert result.exit_code == 0, result.stderr
    text = file_at(remote, SECRETS)
    document = yaml.safe_load(text)
    assert document["sops"]["encrypted_regex"] == "^data$"
    assert document["sops"]["age"][0]["recipient"] == recipients.recipient
    assert document["data"]["PAYMENT_API_KEY"].startswith("ENC[AES256_GCM,data:")
    assert VALUE not in text
    trailers = tip(remote).message_trailers
    assert (trailers["Operation"], trailers["Key"]) == ("secret-set", "PAYMENT_API_KEY")
    assert VALUE not in tip(remote).message


def test_value_from_standard_input_or_a_file(work: Path, remote: Path, recipients: Keys,
                                             tmp_path: Path) -> None:
    assert secret_cli(work, "secret", "set", "shop/checkout", "FROM_STDIN", "--env", "staging",
                      stdin=VALUE + "\n").exit_code == 0
    value_file = tmp_path / "value.txt"
    value_file.write_text(OTHER)
    assert secret_cli(work, "secret", "set", "shop/checkout", "FROM_FILE", "--env", "staging",
                      "--from-file", str(value_file), key=recipients).exit_code == 0
    revealed = render_secret(work, recipients, "staging")
    assert revealed == {"FROM_STDIN": VALUE, "FROM_FILE": OTHER}


def render_secret(work: Path, key: Keys | None, environment: str) -> dict[str, str]:
    result = secret_cli(work, "render", "--env", environment, "--project", "shop",
                        "--component", "checkout", "--reveal-secrets", key=key)
    assert result.exit_code == 0, result.stderr
    secret = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Secret")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_changing_an_existing_file_needs_its_key(work: Path, remote: Path,
                                                recipients: Keys) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    before = str(tip(remote).id)
    refused = secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging")
    assert refused.exit_code == 1
    assert refused.errors == [f"error: {SECRETS}:1: no age key to decrypt staging's secrets: set "
                              "SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or pass --age-key-file; "
                              "changing a secrets file that already holds values needs its data "
                              "key, because SOPS encrypts every value of a file under one key"]
    assert str(tip(remote).id) == before
    assert secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging",
                      key=recipients).exit_code == 0
    assert render_secret(work, recipients, "staging") == {"A": VALUE, "B": OTHER}


def test_list_shows_keys_and_when_they_changed_never_values(work: Path,
                                                            recipients: Keys) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging",
               key=recipients)
    listed = secret_cli(work, "secret", "list", "shop/checkout", "--env", "staging")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY", "CHANGED", "BY"]
    assert [line.split()[0] for line in lines[1:]] == ["A", "B"]
    assert all("Dana" in line for line in lines[1:])
    assert VALUE not in listed.stdout and OTHER not in listed.stdout


def test_unset_removes_a_key_and_the_last_one_the_file(work: Path, remote: Path,
                                                       recipients: Keys) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging",
               key=recipients)
    assert secret_cli(work, "secret", "unset", "shop/checkout", "A", "--env", "staging",
                      key=recipients).exit_code == 0
    assert render_secret(work, recipients, "staging") == {"B": OTHER}
    assert secret_cli(work, "secret", "unset", "shop/checkout", "B", "--env", "staging",
                      key=recipients).exit_code == 0
    with pytest.raises(KeyError):
        file_at(remote, SECRETS)


def test_wrong_key_is_a_clear_error_naming_environment_and_file(work: Path, recipients: Keys,
                                                                tmp_path: Path) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    (tmp_path / "stranger").mkdir()
    stranger = Keys(tmp_path / "stranger")
    result = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=stranger)
    assert result.exit_code == 1
    assert result.errors == [f"error: {SECRETS}:1: none of the age keys given can decrypt "
                             "staging's secrets (wrong key, or the file is not encrypted to it)"]
    assert VALUE not in result.stdout + result.stderr


def test_a_tampered_file_fails_its_integrity_check(work: Path, recipients: Keys) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging",
               key=recipients)
    document = yaml.safe_load((work / SECRETS).read_text())
    document["data"]["A"], document["data"]["B"] = document["data"]["B"], document["data"]["A"]
    (work / SECRETS).write_text(yaml.safe_dump(document, sort_keys=False))
    swapped = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=recipients)
    assert swapped.exit_code == 1
    assert any("failed its integrity check" in e for e in swapped.errors), swapped.stderr
    document["data"]["A"], document["data"]["B"] = document["data"]["B"], document["data"]["A"]
    del document["data"]["B"]
    (work / SECRETS).write_text(yaml.safe_dump(document, sort_keys=False))
    dropped = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=recipients)
    assert any("MAC mismatch" in e for e in dropped.errors), dropped.stderr
    assert VALUE not in swapped.stderr + dropped.stderr


def test_rotate_re_encrypts_to_the_current_recipients(work: Path, remote: Path,
                                                      recipients: Keys, tmp_path: Path) -> None:
    secret_cli(work, "secret", "set", "shop/checkout", f"A={VALUE}", "--env", "staging")
    (tmp_path / "new").mkdir()
    newcomer = Keys(tmp_path / "new")
    edit(work, "environments/staging/environment.yaml", recipients.recipient,
         newcomer.recipient)
    commit_and_push(work, "replace staging's age key")
    assert secret_cli(work, "secret", "rotate", "--env", "staging",
                      key=recipients).exit_code == 0
    assert tip(remote).message_trailers["Operation"] == "secret-rotate"
    assert render_secret(work, newcomer, "staging") == {"A": VALUE}
    old = secret_cli(work, "render", "--env", "staging", "--reveal-secrets", key=recipients)
    assert old.exit_code == 1, "the removed key no longer decrypts"


@pytest.fixture(scope="session")
def sops_tool() -> Path:
    controlplane = controlplane_module()
    try:
        return Path(controlplane.build()) / "sops"
    except controlplane.TestEnvError as exc:
        pytest.fail(f"{exc}: the sops interoperability tests need Go 1.26+ to build sops")


def test_files_interoperate_with_the_sops_tool(work: Path, remote: Path, recipients: Keys,
                                               sops_tool: Path) -> None:
    environment = {**os.environ, "SOPS_AGE_KEY_FILE": str(recipients.file)}
    plain = work / "plain.yaml"
    plain.write_text(f"apiVersion: reconciler/v1\nkind: Secrets\ndata:\n  A: {VALUE}\n")
    written = subprocess.run([str(sops_tool), "encrypt", "--age", recipients.recipient,
                              "--encrypted-regex", "^data$", "--input-type", "yaml",
                              "--output-type", "yaml", str(plain)],
                             capture_output=True, text=True, env=environment, check=True)
    plain.unlink()
    (work / SECRETS).write_text(written.stdout)
    commit_and_push(work, "secrets written with sops")
    assert secret_cli(work, "validate").exit_code == 0
    assert render_secret(work, recipients, "staging") == {"A": VALUE}
    assert secret_cli(work, "secret", "set", "shop/checkout", f"B={OTHER}", "--env", "staging",
                      key=recipients).exit_code == 0
    decrypted = subprocess.run([str(sops_tool), "decrypt", "--input-type", "yaml",
                                "--output-type", "yaml", str(work / SECRETS)],
                               capture_output=True, text=True, env=environment)
    assert decrypted.returncode == 0, decrypted.stderr
    assert yaml.safe_load(decrypted.stdout)["data"] == {"A": VALUE, "B": OTHER}


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
    outputs = []
    outputs.append(secret_cli(work, "secret", "set", "shop/checkout", f"PAYMENT_API_KEY={VALUE}",
                              "--env", "staging"))
    outputs.append(secret_cli(work, "secret", "set", "shop/checkout", f"B={VALUE}", "--env",
                              "staging"))  # refused: no key
    outputs.append(secret_cli(work, "render", "--env", "staging"))
    outputs.append(secret_cli(work, "-o", "json", "render", "--env", "staging"))
    outputs.append(secret_cli(work, "render", "--env", "staging", "--reveal-secrets"))
    outputs.append(secret_cli(work, "secret", "list", "shop/checkout", "--env", "staging"))
    outputs.append(secret_cli(work, "-o", "json", "history"))
    outputs.append(secret_cli(work, "audit"))
    outputs.append(secret_cli(work, "validate"))
    outputs.append(secret_cli(work, "config", "set", "shop/checkout", f"PAYMENT_API_KEY={VALUE}"))
    for result in outputs:
        for form in forms:
            assert form.decode() not in result.stdout + result.stderr
    for repository in (work, remote):
        for data in git_objects(repository):
            for form in forms:
                assert form not in data
    revealed = render_secret(work, recipients, "staging")
    assert revealed == {"PAYMENT_API_KEY": VALUE}, "only --reveal-secrets with the key shows it"
