"""config set, unset and list: plain configuration per component and environment."""

from __future__ import annotations

import click

from reconciler.cli.base import cli, output_option, print_rows, state_of, write
from reconciler.errors import UsageError
from reconciler.operations.config import config_edit
from reconciler.queries.config import effective_configuration


@cli.group()
def config() -> None:
    """Set, unset and list configuration (not secrets) per component and environment."""


@config.command("set")
@click.argument("component")
@click.argument("assignment", metavar="KEY=VALUE")
@click.option("--env", "environment", help="Only this environment (default: all).")
@click.pass_context
def config_set(ctx: click.Context, component: str, assignment: str,
               environment: str | None) -> None:
    """Set an environment variable of COMPONENT, keeping the file's comments and order."""
    key, separator, value = assignment.partition("=")
    if not separator or not key:
        raise UsageError(f"{assignment!r} is not KEY=VALUE")
    write(ctx, config_edit(component, environment, key, value))


@config.command("unset")
@click.argument("component")
@click.argument("key")
@click.option("--env", "environment", help="Only this environment (default: all).")
@click.pass_context
def config_unset(ctx: click.Context, component: str, key: str, environment: str | None) -> None:
    """Remove an environment variable from COMPONENT's config."""
    write(ctx, config_edit(component, environment, key, None))


@config.command("list")
@click.argument("component")
@click.option("--env", "environment", help="The effective configuration in this environment, "
              "connection variables included.")
@output_option
@click.pass_context
def config_list(ctx: click.Context, component: str, environment: str | None) -> None:
    """COMPONENT's environment variables exactly as its pods get them, and where each value
    comes from (default, component, the environment, a connection); secrets by name only.
    Without --env, what all environments share."""
    entries = effective_configuration(state_of(ctx), component, environment)
    print_rows(ctx, [{"key": e.key, "value": e.value, "source": e.source} for e in entries],
               ("key", "value", "source"))
