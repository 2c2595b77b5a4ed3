"""Build once, promote: build register and list, deploy, promote, rollback."""

from __future__ import annotations

import click

from reconciler.cli.base import cli, output_option, print_rows, revision_of, state_of, write
from reconciler.errors import UsageError
from reconciler.model.names import split_ref
from reconciler.operations import releases
from reconciler.queries.builds import builds
from reconciler.queries.history import release_history

REPLACE = click.option("--replace", is_flag=True, help="With --branch: overwrite the branch even "
                       "when it holds another, unmerged pull request.")


@cli.group()
def build() -> None:
    """Register and list immutable build records."""


@build.command("register")
@click.argument("component")
@click.option("--commit", "source_commit", required=True, help="Source commit (40 hex digits).")
@click.option("--image", required=True, help="The image by digest: REPOSITORY@sha256:DIGEST.")
@click.option("--track", help="The deployment track (default: the component's first).")
@click.pass_context
def build_register(ctx: click.Context, component: str, source_commit: str, image: str,
                   track: str | None) -> None:
    """Record that COMPONENT (PROJECT/NAME) was built from --commit into --image.

    Registering the same commit again keeps only the newest image. A build on an
    autoDeploy track whose pipeline starts with `promotion: auto` is deployed to the first
    stage in the same commit.
    """
    split_ref(component)
    write(ctx, releases.build_register(component, source_commit, image, track))


@build.command("list")
@click.argument("component", required=False)
@output_option
@click.pass_context
def build_list(ctx: click.Context, component: str | None) -> None:
    """List registered builds, newest first (optionally of one COMPONENT)."""
    rows = [{"component": f"{b.project}/{b.component}", "commit": b.commit, "track": b.track,
             "image": b.image, "builtAt": b.built_at, "scan": b.scan_status or ""}
            for b in builds(state_of(ctx), component)]
    print_rows(ctx, rows, ("component", "commit", "track", "image", "builtAt", "scan"),
               short={"commit": 12})


@cli.command("deploy")
@click.argument("component")
@click.option("--commit", "source_commit", help="A registered build's commit (default: the "
              "newest build of the default track).")
@click.pass_context
def deploy_command(ctx: click.Context, component: str, source_commit: str | None) -> None:
    """Deploy a build of COMPONENT into the first environment of its pipeline."""
    write(ctx, releases.deploy(component, source_commit))


@cli.command("promote")
@click.argument("component")
@click.option("--to", "environment", required=True, help="The next stage of the pipeline.")
@click.option("--branch", is_flag=True, help="Commit on promote/<project>/<component>/<env> "
              "and push that branch for a pull request instead of main.")
@REPLACE
@click.pass_context
def promote_command(ctx: click.Context, component: str, environment: str, branch: bool,
                    replace: bool) -> None:
    """Promote COMPONENT's release from the previous stage into --to.

    Refused when --to is not the next stage, the previous stage has no release, the stage
    needs a pull request and --branch is missing, the soak time has not passed, or the
    environment lacks a required configurable.
    """
    if replace and not branch:
        raise UsageError("--replace goes with --branch")
    target = releases.promotion_branch(component, environment) if branch else None
    write(ctx, releases.promote(component, environment, branch), target_branch=target,
          replace=replace)


@cli.command("rollback")
@click.argument("component")
@click.option("--env", "environment", required=True)
@click.option("--to", "to", metavar="RELEASE", help="A source commit or image digest (prefix) "
              "released there before (default: the previous one).")
@click.option("--branch", is_flag=True, help="Commit on rollback/<project>/<component>/<env> "
              "and push that branch for a pull request instead of main (required where the "
              "stage requiresPullRequest).")
@REPLACE
@click.pass_context
def rollback_command(ctx: click.Context, component: str, environment: str,
                     to: str | None, branch: bool, replace: bool) -> None:
    """Release again a build that Git history shows ran in ENV before (a new commit)."""
    project, name = split_ref(component)
    history = release_history(ctx.obj["repo"], environment, project, name, revision_of(ctx))
    if replace and not branch:
        raise UsageError("--replace goes with --branch")
    target = releases.promotion_branch(component, environment, "rollback") if branch else None
    write(ctx, releases.rollback(component, environment, history, to, branch),
          target_branch=target, replace=replace)
