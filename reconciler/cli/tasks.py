"""`reconciler task`: run a task on demand, list its executions, read an execution's logs."""

from __future__ import annotations

import datetime
import getpass
import os
from pathlib import Path

import click

from reconciler.cli.base import KUBECONFIG, cli, output_of, output_option, print_data, print_rows, state_of
from reconciler.errors import ReconcilerError
from reconciler.git.store import author_identity
from reconciler.kube.client import KubeClient
from reconciler.kube.executions import Execution
from reconciler.reconcile import clusters_of, connect_cluster
from reconciler.tasks import follow, list_executions, logs, record, start, task_release

_COLUMNS = ("id", "trigger", "by", "start", "end", "duration", "status", "reason", "release",
            "image", "commit")


@cli.group("task")
def task_group() -> None:
    """Scheduled and manual tasks: run one now, list executions, read their logs."""


def _who(repo: Path) -> str:
    """Who starts a run: the Git author (as for writes), else the login name."""
    found = author_identity(repo) if repo.is_dir() else None
    if found:
        return found
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _row(execution: Execution, table: bool) -> dict[str, object]:
    """An execution as a table row (short commit, duration in words) or as data (seconds)."""
    duration = execution.duration
    return {"id": execution.id, "cluster": execution.cluster, "trigger": execution.trigger,
            "by": execution.triggered_by, "start": execution.start, "end": execution.end,
            "duration": ("" if duration is None else _seconds(duration)) if table else duration,
            "status": execution.status, "reason": execution.reason,
            "release": execution.release, "image": execution.image,
            "commit": execution.commit[:12] if table else execution.commit}


def _seconds(seconds: int) -> str:
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes \
        else f"{seconds}s"


@task_group.command("run")
@click.argument("ref", metavar="P/C")
@click.option("--env", "environment", required=True)
@click.option("--cluster", help="The cluster to run it in (default: the environment's only "
              "cluster; required when it has several).")
@click.option("--wait", is_flag=True, help="Follow the execution to its end; exit 1 if it "
              "failed.")
@click.option("--timeout", type=click.FloatRange(min=1), help="With --wait: stop following "
              "after this many seconds (exit 1); default: until it ends.")
@KUBECONFIG
@output_option
@click.pass_context
def run_command(ctx: click.Context, ref: str, environment: str, cluster: str | None, wait: bool,
                timeout: float | None, kubeconfig: Path | None) -> None:
    """Start one execution of task P/C (a manual task, or an extra run of a scheduled one)
    from the release now in ENV, rendered from the state; refused until the cluster runs
    that release. Prints the execution id."""
    state = state_of(ctx)
    component, _ = task_release(state, environment, ref)
    clusters = clusters_of(state, environment, cluster)
    if len(clusters) > 1:
        raise ReconcilerError(f"{environment} spans several clusters ({', '.join(clusters)}): "
                              "choose one with --cluster")
    client = connect_cluster(state, clusters[0], kubeconfig)
    execution = start(state, environment, clusters[0], client, ref, _who(ctx.obj["repo"]))
    if not wait:
        _print(ctx, execution)
        return
    click.echo(f"started {execution.id} (Job {execution.job}) in {clusters[0]}", err=True)
    execution = follow(client, environment, component, execution.job, timeout)
    recorded = record(client, environment, component, clusters[0],
                      datetime.datetime.now(datetime.UTC), known=[execution])
    if recorded.warning:
        click.echo(f"warning: {recorded.warning}", err=True)
    _print(ctx, execution)
    if execution.status == "failed":
        raise ReconcilerError(f"execution {execution.id} failed: {execution.reason}")
    if not execution.finished:
        raise ReconcilerError(f"execution {execution.id} is still running after {timeout:g} s")


def _print(ctx: click.Context, execution: Execution) -> None:
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), _row(execution, table=False))
    elif execution.finished:
        click.echo(f"{execution.id} {execution.status}"
                   + (f": {execution.reason}" if execution.reason else ""))
    else:
        click.echo(execution.id)


@task_group.command("executions")
@click.argument("ref", metavar="P/C")
@click.option("--env", "environment", required=True)
@click.option("--cluster", help="Only this cluster of the environment (default: all of them).")
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Executions started in the last N days.")
@click.option("--limit", type=click.IntRange(min=1), help="At most N executions.")
@KUBECONFIG
@output_option
@click.pass_context
def executions_command(ctx: click.Context, ref: str, environment: str, cluster: str | None,
                       days: int, limit: int | None, kubeconfig: Path | None) -> None:
    """Executions of task P/C in ENV, newest first: id, trigger (schedule, or manual and by
    whom), start, end, duration, status (running, succeeded, failed and why), release,
    image and source commit; then the totals of the last 30 days. Executions whose Jobs
    Kubernetes deleted come from the task's record in reconciler-system, which this brings
    up to date."""
    state = state_of(ctx)
    task_release(state, environment, ref)
    clients: dict[str, KubeClient] = {
        name: connect_cluster(state, name, kubeconfig)
        for name in clusters_of(state, environment, cluster)}
    listing = list_executions(state, environment, ref, clients,
                              datetime.datetime.now(datetime.UTC), days, limit)
    for warning in listing.warnings:
        click.echo(f"warning: {warning}", err=True)
    rows = [_row(e, table=output_of(ctx) == "table") for e in listing.executions]
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), {"executions": rows, "last30Days": dict(listing.totals)})
        return
    columns = _COLUMNS if len(clients) == 1 else ("cluster", *_COLUMNS)
    print_rows(ctx, rows, columns)
    click.echo(f"last 30 days: {listing.totals['succeeded']} succeeded, "
               f"{listing.totals['failed']} failed")


@task_group.command("logs")
@click.argument("execution", metavar="EXECUTION_ID")
@click.option("--env", "environment", help="The execution's environment (default: look in "
              "every environment).")
@KUBECONFIG
@click.pass_context
def logs_command(ctx: click.Context, execution: str, environment: str | None,
                 kubeconfig: Path | None) -> None:
    """The logs of every pod (every attempt) of an execution, from the API server's log
    endpoint, while Kubernetes keeps its Job."""
    state = state_of(ctx)
    environments = [state.environment_named(environment).name] if environment else sorted(
        state.environments)
    clients: dict[str, KubeClient] = {}

    def client_for(name: str) -> KubeClient:
        if name not in clients:
            clients[name] = connect_cluster(state, name, kubeconfig)
        return clients[name]

    found = logs(state, environments, execution, client_for)
    for entry in found:
        if len(found) > 1:
            click.echo(f"==> pod {entry.pod}, container {entry.container} <==")
        click.echo(entry.text, nl=not entry.text.endswith("\n"))
