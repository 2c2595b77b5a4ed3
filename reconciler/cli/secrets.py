"""secret set, unset, list, rotate, migrate: one SOPS file per secret."""

from __future__ import annotations

import sys
from typing import Any

import click

from reconciler.cli.base import (
    age_keys,
    cli,
    output_of,
    output_option,
    print_data,
    print_table,
    revision_of,
    state_of,
    write,
)
from reconciler.errors import UsageError
from reconciler.model.names import split_ref
from reconciler.operations import secrets
from reconciler.queries.secrets import secret_entries


@cli.group("secret")
def secret_group() -> None:
    """Encrypted secrets per component and environment (SOPS files, age keys).

    Each secret is its own file, environments/ENV/PROJECT/COMPONENT/secrets/KEY.sops.yaml,
    encrypted to the environment's secretRecipients: setting, replacing or removing one needs
    no private key. Values are never printed, logged or put in a commit message. rotate and
    migrate decrypt, with keys from --age-key-file, $SOPS_AGE_KEY_FILE or $SOPS_AGE_KEY.
    """


@secret_group.command("set")
@click.argument("component")
@click.argument("assignment", metavar="KEY[=VALUE]")
@click.option("--env", "environment", required=True)
@click.option("--from-file", type=click.File("r"), help="Read the value from this file "
              "(- for standard input).")
@click.pass_context
def secret_set(ctx: click.Context, component: str, assignment: str, environment: str,
               from_file: Any) -> None:
    """Encrypt and store (or replace) one secret with only the environment's public keys.
    Without =VALUE the value is read from --from-file, or standard input (a hidden prompt
    on a terminal)."""
    key, separator, value = assignment.partition("=")
    if not key:
        raise UsageError(f"{assignment!r} is not KEY[=VALUE]")
    if not separator:
        if from_file is not None:
            value = from_file.read()
        elif sys.stdin.isatty():
            value = click.prompt(f"{key}", hide_input=True)
        else:
            value = sys.stdin.read().rstrip("\n")
    write(ctx, secrets.secret_set(component, environment, key, value))


@secret_group.command("unset")
@click.argument("component")
@click.argument("key")
@click.option("--env", "environment", required=True)
@click.pass_context
def secret_unset(ctx: click.Context, component: str, key: str, environment: str) -> None:
    """Remove one secret (deletes its file; needs no key)."""
    write(ctx, secrets.secret_unset(component, environment, key))


@secret_group.command("list")
@click.argument("component")
@click.option("--env", "environment", required=True)
@output_option
@click.pass_context
def secret_list(ctx: click.Context, component: str, environment: str) -> None:
    """The secret keys of COMPONENT in ENV: when and by whom each last changed, and the
    recipients its file is encrypted to (STALE names current recipients it is not encrypted
    to, or removed ones it still is: run `secret rotate`). Never values."""
    state = state_of(ctx)
    project, name = split_ref(component)
    state.component_named(component)
    state.environment_named(environment)
    entries = secret_entries(ctx.obj["repo"], state, project, name, environment,
                             revision_of(ctx))
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), [entry.as_dict() for entry in entries])
        return
    rows = [(e.key, e.changed or "-", e.by or "-", ", ".join(_short_key(r) for r in e.recipients),
             "; ".join([*(f"missing {_short_key(r)}" for r in e.missing),
                        *(f"removed {_short_key(r)}" for r in e.extra)]) or "-")
            for e in entries]
    print_table(("KEY", "CHANGED", "BY", "RECIPIENTS", "STALE"), rows)


def _short_key(recipient: str) -> str:
    return f"{recipient[:10]}...{recipient[-6:]}" if len(recipient) > 20 else recipient


@secret_group.command("rotate")
@click.option("--env", "environment", required=True)
@click.pass_context
def secret_rotate(ctx: click.Context, environment: str) -> None:
    """Re-encrypt every secret of ENV to its current secretRecipients (after a key was added
    or removed) under new data keys, in one commit. Needs a key that decrypts them."""
    write(ctx, secrets.secret_rotate(environment, age_keys(ctx)))


@secret_group.command("migrate")
@click.option("--env", "environment", required=True)
@click.pass_context
def secret_migrate(ctx: click.Context, environment: str) -> None:
    """Split ENV's old secrets.sops.yaml files (several secrets in one SOPS file) into one
    file per secret under secrets/, encrypted to the current secretRecipients, in one
    commit. Needs a key that decrypts the old files."""
    write(ctx, secrets.secret_migrate(environment, age_keys(ctx)))
