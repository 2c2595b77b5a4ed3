"""Commands that talk to clusters: apply, diff, and the daemon (run)."""

from __future__ import annotations

import datetime
import signal
from pathlib import Path

import click

from reconciler.cache import Cache
from reconciler.cli.base import KUBECONFIG, cli, decryptor, output_option, print_rows, state_of
from reconciler.errors import ReconcilerError, UsageError
from reconciler.git.store import GitTree, clone_bare, follow
from reconciler.kube.client import connect
from reconciler.load.loader import load_cluster
from reconciler.reconcile import apply_clusters, diff_clusters, record_verifications
from reconciler.render.workloads import verification_targets


@cli.command("apply")
@click.option("--env", "environment", required=True)
@click.option("--cluster", help="Only this cluster of the environment (default: all of them).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--no-prune", is_flag=True, help="Do not delete objects that left the render.")
@click.option("--allow-empty", is_flag=True, help="Allow an apply that deletes every object "
              "applied before (an empty render).")
@click.option("--wait", is_flag=True, help="Wait until every object is healthy, then record "
              "each release's health per cluster in the state repo's remote "
              "(refs/reconciler/verifications/CLUSTER), for stages with requiresVerification.")
@click.option("--timeout", type=float, default=300, show_default=True,
              help="Seconds --wait waits.")
@click.option("--force-conflicts", is_flag=True, help="Take back fields that another field "
              "manager (kubectl edit, another controller) changed; without it such conflicts "
              "are reported per object.")
@KUBECONFIG
@output_option
@click.pass_context
def apply_command(ctx: click.Context, environment: str, cluster: str | None, dry_run: bool,
                  no_prune: bool, allow_empty: bool, wait: bool, timeout: float,
                  force_conflicts: bool, kubeconfig: Path | None) -> None:
    """Render ENV and server-side apply it to its clusters, prune what left the render, and
    optionally wait for health. Prints a change set; exits 1 if anything failed."""
    state = state_of(ctx)
    cache = Cache.at_home("render")
    try:
        results = apply_clusters(state, environment, cluster, kubeconfig,
                                 decrypt=decryptor(ctx, environment), prune=not no_prune,
                                 allow_empty=allow_empty, dry_run=dry_run, wait=wait,
                                 timeout=timeout, force_conflicts=force_conflicts, cache=cache)
    finally:
        cache.save()
    if wait and not dry_run:
        for result in results:
            try:
                record_verifications(ctx.obj["repo"], result.cluster,
                                     verification_targets(state, environment), environment,
                                     result.revision, result.health,
                                     datetime.datetime.now(datetime.UTC))
            except ReconcilerError as exc:
                click.echo(f"warning: health not recorded for {result.cluster}: {exc}",
                           err=True)
    rows = []
    for result in results:
        for change in result.changes:
            health = result.health.get(change.ref)
            rows.append({"cluster": result.cluster, "action": change.action,
                         "kind": change.ref.kind, "namespace": change.ref.namespace,
                         "name": change.ref.name, "health": health.status if health else "",
                         "message": change.message or (health.message if health else "")})
    print_rows(ctx, rows, ("cluster", "action", "kind", "namespace", "name", "health",
                           "message"))
    if any(result.failed for result in results):
        ctx.exit(1)


@cli.command("diff")
@click.option("--env", "environment", required=True)
@click.option("--cluster", help="Only this cluster of the environment (default: all of them).")
@KUBECONFIG
@click.pass_context
def diff_command(ctx: click.Context, environment: str, cluster: str | None,
                 kubeconfig: Path | None) -> None:
    """What apply would change: a unified diff of each live object against its server-side
    dry-run, with Secret values masked. Exits 1 when there are differences (like diff)."""
    texts = diff_clusters(state_of(ctx), environment, cluster, kubeconfig,
                          decryptor(ctx, environment))
    for text in texts:
        click.echo(text, nl=False)
    if texts:
        ctx.exit(1)


def _cluster_context(repo: Path, cluster: str) -> str | None:
    """The kubeconfig context of ``cluster`` from the newest commit that says; a state that
    does not load (or a remote that is down) at start-up does not stop the daemon, which
    then uses the default context (in a pod: its own service account) and keeps trying."""
    from reconciler.daemon.metrics import log
    try:
        tree = GitTree(repo, follow(repo))
    except ReconcilerError as exc:
        log.warning("cannot read the state at start-up; using the default context",
                    extra={"error": str(exc)})
        return None
    found, problems = load_cluster(tree, cluster)
    if problems:
        log.warning("the cluster's file has problems" if found else
                    "the cluster's file does not load; using the default context",
                    extra={"cluster": cluster, "problems": [str(p) for p in problems]})
    return found.context if found is not None else None


@cli.command("run")
@click.option("--cluster", required=True, help="The cluster this daemon runs in (clusters/).")
@click.option("--interval", type=click.FloatRange(min=1), default=180, show_default=True,
              help="Seconds from the end of an environment's pass to its next drift check; "
                   "new commits (webhook, fetch, a local repo's refs) start a pass at once.")
@click.option("--listen", default="0.0.0.0:8080", show_default=True,
              help="Address for /healthz, /readyz, /metrics (and POST /hooks/git unless "
                   "--webhook-listen is given).")
@click.option("--webhook-listen", metavar="ADDR", help="A separate address for POST /hooks/git.")
@click.option("--webhook-secret-file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="RECONCILER_WEBHOOK_SECRET_FILE",
              help="The webhook's shared secret: GitHub's X-Hub-Signature-256, GitLab's "
                   "X-Gitlab-Token or Authorization: Bearer; read at each request. Without "
                   "it (or while the file is missing) the webhook refuses every request (401).")
@click.option("--lease-duration", type=click.IntRange(min=3), default=15, show_default=True,
              help="Seconds a leader's Lease lasts; a standby takes over only after seeing it "
                   "unchanged this long.")
@click.option("--renew-deadline", type=click.FloatRange(min=1), default=10, show_default=True,
              help="Seconds a leader keeps leading (and writing) without renewing.")
@click.option("--retry-period", type=click.FloatRange(min=0.5), default=2, show_default=True,
              help="Seconds between attempts to acquire or renew the Lease.")
@click.option("--clone-from", metavar="URL", help="Clone the state repo from URL into --repo "
              "first when --repo does not exist yet.")
@KUBECONFIG
@click.pass_context
def run_command(ctx: click.Context, cluster: str, interval: float, listen: str,
                webhook_listen: str | None, webhook_secret_file: Path | None,
                lease_duration: int, renew_deadline: float, retry_period: float,
                clone_from: str | None, kubeconfig: Path | None) -> None:
    """Keep CLUSTER in step with the state repo: follow it, apply every environment that
    includes CLUSTER, prune, wait for health, heal drift every --interval. One replica holds a
    Lease and applies; others stand by. Never exits on bad input: a commit that does not
    load, an unreachable remote or API server is reported and retried, each environment on
    its own. Logs JSON lines; stops cleanly on SIGTERM."""
    if not retry_period < renew_deadline < lease_duration:
        raise UsageError("need --retry-period < --renew-deadline < --lease-duration")
    repo: Path = ctx.obj["repo"]
    if not repo.exists() and clone_from:
        clone_bare(clone_from, repo)
    from reconciler.daemon.loop import Daemon  # only the daemon pays for its libraries
    from reconciler.daemon.metrics import json_logging

    json_logging()
    context = _cluster_context(repo, cluster)
    daemon = Daemon(repo, cluster, connect(context, kubeconfig), ctx.obj["age_key_file"],
                    interval=interval, lease=(lease_duration, renew_deadline, retry_period),
                    webhook_secret=webhook_secret_file)
    servers = [daemon.serve(listen, webhook=webhook_listen is None)]
    if webhook_listen is not None:
        servers.append(daemon.serve(webhook_listen, probes=False))
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    try:
        daemon.run()
    finally:
        for server in servers:
            server.shutdown()
