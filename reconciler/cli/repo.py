"""Commands on the state repo as a whole: init, validate, render, codeowners."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reconciler.cache import Cache
from reconciler.cli.base import (
    cli,
    decryptor,
    output_of,
    output_option,
    print_data,
    print_table,
    state_of,
    write,
)
from reconciler.errors import UsageError
from reconciler.operations.codeowners import codeowners
from reconciler.operations.init import default_demo_key, init_state_repo
from reconciler.render.engine import render_environment
from reconciler.render.output import write_tree


@cli.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--example", is_flag=True,
              help="Copy the bundled example organisation instead of a minimal skeleton.")
@click.option("--demo-key", type=click.Path(dir_okay=False, path_type=Path),
              help="With --example: where to write the new age private key that the example's "
                   "secrets are encrypted to (default: PATH-age-key.txt beside PATH, never "
                   "inside the repo).")
def init(path: Path, example: bool, demo_key: Path | None) -> None:
    """Create a new state repo (a Git repository with one commit) in PATH.

    PATH must not exist or be empty. Without --example the repo holds one organisation,
    cluster, pipeline and environment to grow from. With --example, the example's
    development secrets are encrypted to a new age key kept outside the repo.
    """
    if demo_key is not None and not example:
        raise UsageError("--demo-key goes with --example")
    commit = init_state_repo(path, example, demo_key)
    click.echo(f"initialised state repo {path} at {commit[:12]}")
    if example:
        key_file = demo_key or default_demo_key(path)
        click.echo(f"wrote the example's age private key to {key_file} (not in the repo); to "
                   f"decrypt its secrets: export SOPS_AGE_KEY_FILE={key_file}")


@cli.command()
@output_option
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Check every file of the state repo and the references between them.

    Reports every problem, one per line, as `error: <path>:<line>: <message>`, and exits 1
    if there is any. Warnings (a component that relaxes the restricted defaults, a service
    without a readiness probe) follow as `warning: <path>:<line>: <message>` on stderr and
    do not fail. With -o json, also prints a summary object on stdout.
    """
    state = state_of(ctx)
    for notice in state.notices:
        click.echo(f"warning: {notice}", err=True)
    summary = {
        "valid": True,
        "warnings": [str(notice) for notice in state.notices],
        "revision": state.revision,
        "environments": len(state.environments),
        "components": len(state.components),
        "builds": len(state.builds),
        "releases": len(state.releases),
    }
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), summary)
    else:
        click.echo(f"ok: {summary['components']} components, {summary['releases']} releases in "
                   f"{summary['environments']} environments ({state.revision})")


@cli.command()
@click.option("--env", "environment", required=True, help="The environment to render.")
@click.option("--project", help="Only this project.")
@click.option("--component", help="Only this component (needs --project).")
@click.option("--cluster", help="Render for this cluster of the environment.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write one file per object under DIR/<namespace>/<kind>-<name>.yaml "
                   "instead of printing. DIR must be new, empty, or written by render before "
                   "(files you added there are never deleted: render refuses instead).")
@click.option("--reveal-secrets", is_flag=True,
              help="Put decrypted secret values in the output. Without it every secret value "
                   "is masked.")
@output_option
@click.pass_context
def render(ctx: click.Context, environment: str, project: str | None, component: str | None,
           cluster: str | None, out: Path | None, reveal_secrets: bool) -> None:
    """Render an environment's Kubernetes manifests.

    Objects are validated against the Kubernetes OpenAPI schemas and printed sorted (kind
    order, then namespace and name) as YAML; -o json prints a v1 List, -o table a summary.
    """
    if component is not None and project is None:
        raise UsageError("--component needs --project")
    state = state_of(ctx, labelled=out is not None)  # only --out's marker shows the revision
    cache = Cache.at_home("render")
    rendered = render_environment(state, environment, project=project, component=component,
                                  cluster=cluster,
                                  decrypt=decryptor(ctx, environment) if reveal_secrets else None,
                                  cache=cache)
    cache.save()
    if out is not None:
        count = write_tree(out, rendered)
        click.echo(f"wrote {count} objects to {out}")
        return
    output = output_of(ctx, "yaml")
    if output == "yaml":
        click.echo(rendered.manifests(), nl=False)
    elif output == "json":
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered.objects},
                              indent=2))
    else:
        rows = [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
                for o in rendered.objects]
        print_table(("KIND", "NAMESPACE", "NAME"), rows)


@cli.command("codeowners")
@click.pass_context
def codeowners_command(ctx: click.Context) -> None:
    """Write CODEOWNERS from the organisation's groups and the pipelines' approvers, so the Git
    host makes the right people approve promotion pull requests into each environment."""
    write(ctx, codeowners())
