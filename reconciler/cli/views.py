"""Read-only views: status, history, audit."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.base import (
    KUBECONFIG,
    cli,
    output_of,
    output_option,
    print_data,
    print_rows,
    print_table,
    revision_of,
    state_of,
)
from reconciler.errors import ReconcilerError
from reconciler.load.verifications import read_records
from reconciler.model.names import major, major_order, split_ref
from reconciler.operations.common import now_utc
from reconciler.queries.audit import audit
from reconciler.queries.history import events
from reconciler.queries.status import environment_order, status
from reconciler.reconcile import live_health_by_cluster


@cli.command("status")
@click.option("--env", "environment", help="Only this environment.")
@click.option("--live", is_flag=True, help="Add each release's live health in every cluster of "
              "its environment (needs access to the clusters).")
@KUBECONFIG
@output_option
@click.pass_context
def status_command(ctx: click.Context, environment: str | None, live: bool,
                   kubeconfig: Path | None) -> None:
    """The matrix of components x environments: version, short digest and age of each release;
    where clusters publish verification records, whether it is verified (✓ healthy on every
    cluster of its environment and for how long, ✗ Degraded somewhere, … waiting); and with
    --live its health in each cluster."""
    state = state_of(ctx)
    environments = environment_order(state, environment)
    health = None
    if live:
        health, warnings = live_health_by_cluster(state, environments, kubeconfig)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
    try:
        records = read_records(ctx.obj["repo"])
    except ReconcilerError as exc:
        records = {}
        click.echo(f"warning: verification records not read: {exc}", err=True)
    cells = status(state, environments, now_utc(), health, records)
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), [cell.as_dict(live) for cell in cells])
        return
    # A component that runs several API majors gets a row per major line.
    majors: dict[str, set[str]] = {}
    for cell in cells:
        majors.setdefault(cell.component, set()).add(major(cell.version))
    table: dict[str, dict[str, str]] = {}
    for cell in cells:
        text = f"{cell.version} {cell.short_digest} {cell.age}"
        if cell.verification_mark:
            text += f" {cell.verification_mark}"
        if live:
            text += " " + "/".join(sorted(set(cell.health.values())) or ["Unknown"])
        row = cell.component
        if len(majors[cell.component]) > 1:
            row += f" {major(cell.version)}"
        table.setdefault(row, {})[cell.environment] = text
    names = []
    for ref in sorted(f"{p}/{c}" for p, c in state.components):
        lines = sorted(majors.get(ref, ()), key=major_order)
        names += [f"{ref} {line}" for line in lines] if len(lines) > 1 else [ref]
    rows = [(name, *(table.get(name, {}).get(env, "-") for env in environments))
            for name in names]
    print_table(("COMPONENT", *(e.upper() for e in environments)), rows)


@cli.command("history")
@click.argument("component", required=False)
@click.option("--env", "environment", help="Only writes into (or from) this environment.")
@click.option("--limit", type=click.IntRange(min=0), default=0,
              help="At most this many (default, 0: all).")
@output_option
@click.pass_context
def history_command(ctx: click.Context, component: str | None, environment: str | None,
                    limit: int) -> None:
    """Every write of the tool, newest first: when, who, what, from where to where."""
    if component or environment:
        state = state_of(ctx)
        if component:
            split_ref(component)
            state.component_named(component)
        if environment:
            state.environment_named(environment)
    found = []
    for event in events(ctx.obj["repo"], component, environment, revision_of(ctx)):
        found.append(event.as_dict())
        if limit and len(found) >= limit:
            break
    # The major line is a column only where a component runs several side by side.
    line = ("version",) if any(event["version"] for event in found) else ()
    print_rows(ctx, found, ("time", "author", "operation", "component", *line,
                            "from_environment", "to_environment", "image", "commit"),
               short={"commit": 12, "image": 0})


@cli.command("audit")
@click.option("--env", "environment", help="Only findings about this environment.")
@click.option("--since", metavar="REV", help="Start the proof at this trusted commit (e.g. "
              "where the repo adopted the tool) instead of the first one.")
@click.option("-v", "--verbose", is_flag=True, help="Also list hand edits, as notices.")
@output_option
@click.pass_context
def audit_command(ctx: click.Context, environment: str | None, since: str | None,
                  verbose: bool) -> None:
    """Prove build-once-promote from the files, commit by commit along the branch's
    first-parent line; exit 1 on any violation.

    Every digest released to an environment must be a registered build with that digest,
    released in each earlier stage of its pipeline first, and into a stage that requires a
    pull request, merged from one. Build records must never change. A commit of the tool must
    change only what its trailers say. Merges, squashes and rebases of pull requests and
    careful hand edits pass; trailers attribute, they don't grant trust.
    """
    found = audit(ctx.obj["repo"], environment, revision_of(ctx), since, verbose)
    findings = [f for f in found if not f.notice]
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), {"ok": not findings,
                                    "findings": [f.as_dict() for f in found]})
    for finding in found:
        level = "notice" if finding.notice else "error"
        click.echo(f"{level}: {finding.path}:1: commit {finding.commit[:12]}: "
                   f"{finding.message}", err=True)
    if findings:
        ctx.exit(1)
    if output_of(ctx) not in ("json", "yaml"):
        click.echo("audit passed: every release went through its pipeline from a registered "
                   "build")
