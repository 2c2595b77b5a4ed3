"""Build once, promote: build register and list, deploy, promote, rollback."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from reconciler.cli.base import cli, output_option, print_rows, revision_of, state_of, write
from reconciler.errors import ReconcilerError, UsageError
from reconciler.git.store import GitTree, follow
from reconciler.load.loader import load_state
from reconciler.load.verifications import Records, read_records
from reconciler.model.kinds import State
from reconciler.model.names import split_ref
from reconciler.operations import releases
from reconciler.queries.builds import builds
from reconciler.queries.history import release_history

F = TypeVar("F", bound=Callable[..., Any])

REPLACE = click.option("--replace", is_flag=True, help="With --branch: overwrite the branch even "
                       "when it holds another, unmerged pull request.")


def _version_option(what: str, required: bool = False) -> Callable[[F], F]:
    return click.option("--version", "version", metavar="vN", callback=_major,
                        required=required, help=f"The API major line {what} (v1, v2...). "
                        + ("" if required else "Needed only while the component runs several "
                           "majors side by side there."))


def _major(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"v[0-9]+(\.[0-9]+)?", value):
        raise click.BadParameter(f"{value!r} is not an API major such as v1")
    return value.split(".")[0] if value else None


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
              "newest build of the default track, or of --version's track).")
@click.option("--version", "version", metavar="vN", callback=_major, help="Deploy the newest "
              "build of this API major's track (v1, v2...) instead of the default track's.")
@click.pass_context
def deploy_command(ctx: click.Context, component: str, source_commit: str | None,
                   version: str | None) -> None:
    """Deploy a build of COMPONENT into the first environment of its pipeline.

    The build's track gives its API major: a build of another major than the one running
    there runs beside it (each major is a line of its own, with its own workload and
    addresses); one of the same major replaces that line's release.
    """
    write(ctx, releases.deploy(component, source_commit, version=version))


@cli.command("promote")
@click.argument("component", required=False)
@click.option("--to", "environment", help="The next stage of the pipeline.")
@click.option("--branch", is_flag=True, help="Commit on promote/<project>/<component>/<env> "
              "and push that branch for a pull request instead of main.")
@REPLACE
@_version_option("to promote")
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
                    branch: bool, replace: bool, version: str | None,
                    skip_verification: bool, reason: str | None, auto: bool) -> None:
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
        if component or environment or branch or skip_verification or version:
            raise UsageError("--auto promotes whatever is due: no COMPONENT, --to, --branch, "
                             "--version or --skip-verification")
        _promote_due(ctx, records)
        return
    if not component or not environment:
        raise UsageError("give COMPONENT and --to ENV (or --auto)")
    target = releases.promotion_branch(component, environment) if branch else None
    write(ctx, releases.promote(component, environment, branch, verifications=records,
                                skip_verification=reason, version=version),
          target_branch=target, replace=replace)


def _promote_due(ctx: click.Context, records: Records) -> None:
    repo = ctx.obj["repo"]
    state = load_state(GitTree(repo, follow(repo)))
    due = releases.auto_promotions(state)
    if not due:
        click.echo("nothing to promote automatically")
    for component, environment, line in due:
        stage = state.pipelines[state.component_pipeline(state.component_named(component))] \
            .stage(environment)
        branch = stage is not None and stage.requires_pull_request
        target = releases.promotion_branch(component, environment) if branch else None
        try:
            write(ctx, releases.promote(component, environment, branch, verifications=records,
                                        version=line), target_branch=target)
        except ReconcilerError as exc:
            previous = state.lines(_previous_stage(state, component, environment),
                                   *split_ref(component))
            shown = f"{component} {line}" if len(previous) > 1 else component
            click.echo(f"waiting: {shown} to {environment}: {exc}")


def _previous_stage(state: State, component: str, environment: str) -> str:
    pipeline = state.pipelines[state.component_pipeline(state.component_named(component))]
    stages = pipeline.environments
    return stages[stages.index(environment) - 1]


@cli.command("rollback")
@click.argument("component")
@click.option("--env", "environment", required=True)
@click.option("--to", "to", metavar="RELEASE", help="A source commit or image digest (prefix) "
              "released there before (default: the previous one).")
@click.option("--branch", is_flag=True, help="Commit on rollback/<project>/<component>/<env> "
              "and push that branch for a pull request instead of main (required where the "
              "stage requiresPullRequest).")
@REPLACE
@_version_option("to roll back")
@click.pass_context
def rollback_command(ctx: click.Context, component: str, environment: str,
                     to: str | None, branch: bool, replace: bool, version: str | None) -> None:
    """Release again a build that Git history shows ran in ENV before, on the same API
    major line (a new commit)."""
    project, name = split_ref(component)
    history = release_history(ctx.obj["repo"], environment, project, name, revision_of(ctx))
    if replace and not branch:
        raise UsageError("--replace goes with --branch")
    target = releases.promotion_branch(component, environment, "rollback") if branch else None
    write(ctx, releases.rollback(component, environment, history, to, branch,
                                 version=version),
          target_branch=target, replace=replace)


@cli.command("retire")
@click.argument("component")
@click.option("--env", "environment", required=True)
@_version_option("to stop running there", required=True)
@click.option("--branch", is_flag=True, help="Commit on retire/<project>/<component>/<env> "
              "and push that branch for a pull request instead of main (required where the "
              "stage requiresPullRequest).")
@REPLACE
@click.pass_context
def retire_command(ctx: click.Context, component: str, environment: str, version: str,
                   branch: bool, replace: bool) -> None:
    """Stop running one API major line of COMPONENT in ENV (a new commit); its other
    majors keep running. Refused while a release in ENV still connects to that major (each
    named)."""
    split_ref(component)
    if replace and not branch:
        raise UsageError("--replace goes with --branch")
    target = releases.promotion_branch(component, environment, "retire") if branch else None
    write(ctx, releases.retire(component, environment, version, branch),
          target_branch=target, replace=replace)
