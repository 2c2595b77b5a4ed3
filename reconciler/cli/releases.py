"""Build once, promote: build register and list, deploy, promote, rollback."""

from __future__ import annotations

import click

from reconciler.cli.base import cli, output_option, print_rows, revision_of, state_of, write
from reconciler.errors import ReconcilerError, UsageError
from reconciler.git.store import GitTree, follow
from reconciler.load.loader import load_state
from reconciler.load.verifications import Records, read_records
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
@click.argument("component", required=False)
@click.option("--to", "environment", help="The next stage of the pipeline.")
@click.option("--branch", is_flag=True, help="Commit on promote/<project>/<component>/<env> "
              "and push that branch for a pull request instead of main.")
@REPLACE
@click.option("--skip-verification", is_flag=True, help="Into a stage with "
              "requiresVerification: promote without the health records (and their soak "
              "time). An emergency exit: needs --reason, which the commit records and the "
              "audit lists.")
@click.option("--reason", help="Why verification is skipped (with --skip-verification).")
@click.option("--auto", is_flag=True, help="Instead of one promotion: promote every release "
              "waiting for a stage with `promotion: auto`, each with the same checks (one "
              "commit each; a pull request branch where the stage requires one). What is not "
              "ready yet is listed as waiting. For CI, e.g. on a schedule.")
@click.pass_context
def promote_command(ctx: click.Context, component: str | None, environment: str | None,
                    branch: bool, replace: bool, skip_verification: bool, reason: str | None,
                    auto: bool) -> None:
    """Promote COMPONENT's release from the previous stage into --to.

    Refused when --to is not the next stage, the previous stage has no release, the stage
    needs a pull request and --branch is missing, the stage requiresVerification and the
    release is not recorded Healthy on every cluster of the previous stage (each cluster
    named with what it reports), the soak time has not passed (counted from the
    verification where required), or the environment lacks a required configurable.
    """
    if replace and not branch:
        raise UsageError("--replace goes with --branch")
    if skip_verification != bool(reason):
        raise UsageError("--skip-verification needs --reason TEXT (and --reason goes with "
                         "--skip-verification)")
    records = read_records(ctx.obj["repo"])
    if auto:
        if component or environment or branch or skip_verification:
            raise UsageError("--auto promotes whatever is due: no COMPONENT, --to, --branch "
                             "or --skip-verification")
        _promote_due(ctx, records)
        return
    if not component or not environment:
        raise UsageError("give COMPONENT and --to ENV (or --auto)")
    target = releases.promotion_branch(component, environment) if branch else None
    write(ctx, releases.promote(component, environment, branch, verifications=records,
                                skip_verification=reason), target_branch=target,
          replace=replace)


def _promote_due(ctx: click.Context, records: Records) -> None:
    repo = ctx.obj["repo"]
    state = load_state(GitTree(repo, follow(repo)))
    due = releases.auto_promotions(state)
    if not due:
        click.echo("nothing to promote automatically")
    for component, environment in due:
        stage = state.pipelines[state.component_pipeline(state.component_named(component))] \
            .stage(environment)
        branch = stage is not None and stage.requires_pull_request
        target = releases.promotion_branch(component, environment) if branch else None
        try:
            write(ctx, releases.promote(component, environment, branch, verifications=records),
                  target_branch=target)
        except ReconcilerError as exc:
            click.echo(f"waiting: {component} to {environment}: {exc}")


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
