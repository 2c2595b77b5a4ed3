"""The ``reconciler`` command: parse, call the library, format, map errors to exit codes."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from reconciler import __version__, sops
from reconciler.daemon.loop import Daemon, json_logging
from reconciler.errors import ReconcilerError, UsageError
from reconciler.git.store import GitTree, clone_bare, follow, head_revision, is_dirty, transact
from reconciler.kube.client import connect
from reconciler.load.loader import load_state
from reconciler.load.readers import TreeReader, WorkTree
from reconciler.model.kinds import State
from reconciler.operations import releases as promotion
from reconciler.operations.init import default_demo_key, init_state_repo
from reconciler.operations.releases import Outcome, split_ref
from reconciler.queries import history as audit_log
from reconciler.reconcile import apply_environment, diff_environment, live_health
from reconciler.render.engine import Rendered, render_environment
from reconciler.yamlio import dump_manifests

RENDER_MARKER = ".reconciler-render"
_OUTPUT_CHOICE = click.Choice(["table", "json", "yaml"])


def _output_option(command: Any) -> Any:
    """``-o`` after the subcommand too, as kubectl users expect; it wins over the global one."""

    def remember(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        if value:
            ctx.ensure_object(dict)["output"] = value

    return click.option("-o", "--output", type=_OUTPUT_CHOICE, expose_value=False,
                        callback=remember, help="Output format.")(command)


class _Group(click.Group):
    """Turns every expected error into ``error: ...`` lines on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReconcilerError as exc:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), envvar="RECONCILER_REPO",
              default=".", show_default="current directory or $RECONCILER_REPO",
              help="The state repo (a Git work tree).")
@click.option("--revision", "-r", metavar="REV",
              help="Read the state from this Git commit, branch or tag instead of the work tree.")
@click.option("-o", "--output", type=_OUTPUT_CHOICE,
              help="Output format (render defaults to yaml, other commands to table).")
@click.option("--age-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Age private keys for decrypting secrets (also $SOPS_AGE_KEY_FILE, "
                   "$SOPS_AGE_KEY, ~/.config/sops/age/keys.txt).")
@click.version_option(__version__, prog_name="reconciler")
@click.pass_context
def cli(ctx: click.Context, repo: Path, revision: str | None, output: str | None,
        age_key_file: Path | None) -> None:
    """GitOps reconciler and manifest renderer.

    The state repo holds organisation, clusters, environments, pipelines, projects,
    components, build records and, per environment, the released image digests with their
    configuration. This command validates it and renders each environment's Kubernetes
    manifests from it.
    """
    ctx.obj = {"repo": repo, "revision": revision, "output": output, "age_key_file": age_key_file}
    # A subcommand's own -o is parsed later and overwrites ctx.obj["output"].


def _reader(ctx: click.Context) -> TreeReader:
    repo: Path = ctx.obj["repo"]
    if ctx.obj["revision"]:
        return GitTree(repo, ctx.obj["revision"])
    head = head_revision(repo) if repo.is_dir() else None
    if head is None:
        return WorkTree(repo)
    return WorkTree(repo, head + ("-dirty" if is_dirty(repo) else ""))


def _state(ctx: click.Context) -> State:
    return load_state(_reader(ctx))


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
@_output_option
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Check every file of the state repo and the references between them.

    Reports every problem, one per line, as `error: <path>:<line>: <message>`, and exits 1
    if there is any. With -o json, also prints a summary object on stdout.
    """
    state = _state(ctx)
    summary = {
        "valid": True,
        "revision": state.revision,
        "environments": len(state.environments),
        "components": len(state.components),
        "builds": len(state.builds),
        "releases": len(state.releases),
    }
    if ctx.obj["output"] in ("json", "yaml"):
        _print_data(ctx.obj["output"], summary)
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
                   "instead of printing.")
@click.option("--reveal-secrets", is_flag=True,
              help="Put decrypted secret values in the output. Without it every secret value "
                   "is masked.")
@_output_option
@click.pass_context
def render(ctx: click.Context, environment: str, project: str | None, component: str | None,
           cluster: str | None, out: Path | None, reveal_secrets: bool) -> None:
    """Render an environment's Kubernetes manifests.

    Objects are validated against the Kubernetes OpenAPI schemas and printed sorted (kind
    order, then namespace and name) as YAML; -o json prints a v1 List, -o table a summary.
    """
    state = _state(ctx)
    decrypt = _decryptor(ctx, environment) if reveal_secrets else None
    rendered = render_environment(state, environment, project=project, component=component,
                                  cluster=cluster, decrypt=decrypt)
    if out is not None:
        _write_tree(out, rendered)
        click.echo(f"wrote {len(rendered.objects)} objects to {out}")
        return
    output = ctx.obj["output"] or "yaml"
    if output == "yaml":
        click.echo(dump_manifests(rendered.objects), nl=False)
    elif output == "json":
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered.objects},
                              indent=2))
    else:
        rows = [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
                for o in rendered.objects]
        _print_table(("KIND", "NAMESPACE", "NAME"), rows)


def _write(ctx: click.Context, operation: Any, target_branch: str | None = None) -> None:
    """Run a write operation on the newest tip of main and report what it did."""
    if ctx.obj["revision"]:
        raise UsageError("--revision reads an old commit; writes always go to the newest tip")
    outcomes: list[Outcome] = []

    def run(tree: GitTree) -> Any:
        outcome = operation(tree)
        outcomes[:] = [outcome]
        return outcome.write

    written = transact(ctx.obj["repo"], run, target_branch=target_branch)
    click.echo(outcomes[-1].summary if outcomes else "nothing to do")
    if written is not None:
        where = f"pushed {written.branch} to origin" if written.pushed else f"on {written.branch}"
        click.echo(f"commit {written.commit[:12]} {where}")
        if written.warning:
            click.echo(f"warning: {written.warning}", err=True)


def _clusters(state: State, environment: str, cluster: str | None) -> list[str]:
    if environment not in state.environments:
        raise ReconcilerError(f"unknown environment {environment!r}")
    members = list(state.environments[environment].clusters)
    if cluster is None:
        return members
    if cluster not in members:
        raise ReconcilerError(f"cluster {cluster!r} is not part of environment {environment} "
                              f"(clusters: {', '.join(members)})")
    return [cluster]


_KUBECONFIG = click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
                           help="Kubeconfig file (default: $KUBECONFIG or ~/.kube/config); the "
                                "context is the cluster file's `context`.")


@cli.command("apply")
@click.option("--env", "environment", required=True)
@click.option("--cluster", help="Only this cluster of the environment (default: all of them).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--no-prune", is_flag=True, help="Do not delete objects that left the render.")
@click.option("--allow-empty", is_flag=True, help="Allow an apply that deletes every object "
              "applied before (an empty render).")
@click.option("--wait", is_flag=True, help="Wait until every object is healthy.")
@click.option("--timeout", type=float, default=300, show_default=True,
              help="Seconds --wait waits.")
@click.option("--force-conflicts", is_flag=True, help="Take back fields that another field "
              "manager (kubectl edit, another controller) changed; without it such conflicts "
              "are reported per object.")
@_KUBECONFIG
@_output_option
@click.pass_context
def apply_command(ctx: click.Context, environment: str, cluster: str | None, dry_run: bool,
                  no_prune: bool, allow_empty: bool, wait: bool, timeout: float,
                  force_conflicts: bool, kubeconfig: Path | None) -> None:
    """Render ENV and server-side apply it to its clusters, prune what left the render, and
    optionally wait for health. Prints a change set; exits 1 if anything failed."""
    state = _state(ctx)
    failed = False
    rows = []
    for name in _clusters(state, environment, cluster):
        client = connect(state.clusters[name].context, kubeconfig)
        result = apply_environment(state, environment, name, client,
                                   decrypt=_decryptor(ctx, environment),
                                   prune=not no_prune, allow_empty=allow_empty,
                                   dry_run=dry_run, wait=wait, timeout=timeout,
                                   force_conflicts=force_conflicts)
        failed = failed or result.failed
        for change in result.changes:
            health = result.health.get(change.ref)
            rows.append({"cluster": name, "action": change.action, "kind": change.ref.kind,
                         "namespace": change.ref.namespace, "name": change.ref.name,
                         "health": health.status if health else "",
                         "message": change.message or (health.message if health else "")})
    _print_rows(ctx, rows, ("cluster", "action", "kind", "namespace", "name", "health",
                            "message"))
    if failed:
        ctx.exit(1)


@cli.command("diff")
@click.option("--env", "environment", required=True)
@click.option("--cluster", help="Only this cluster of the environment (default: all of them).")
@_KUBECONFIG
@click.pass_context
def diff_command(ctx: click.Context, environment: str, cluster: str | None,
                 kubeconfig: Path | None) -> None:
    """What apply would change: a unified diff of each live object against its server-side
    dry-run, with Secret values masked. Exits 1 when there are differences (like diff)."""
    state = _state(ctx)
    changed = False
    for name in _clusters(state, environment, cluster):
        client = connect(state.clusters[name].context, kubeconfig)
        for text in diff_environment(state, environment, name, client,
                                     _decryptor(ctx, environment)):
            changed = True
            click.echo(text, nl=False)
    if changed:
        ctx.exit(1)


@cli.command("run")
@click.option("--cluster", required=True, help="The cluster this daemon runs in (clusters/).")
@click.option("--interval", type=float, default=60, show_default=True,
              help="Seconds between fetches and drift checks.")
@click.option("--listen", default="0.0.0.0:8080", show_default=True,
              help="Address for /healthz, /readyz, /metrics and POST /hooks/git.")
@click.option("--clone-from", metavar="URL", help="Clone the state repo from URL into --repo "
              "first when --repo does not exist yet.")
@_KUBECONFIG
@click.pass_context
def run_command(ctx: click.Context, cluster: str, interval: float, listen: str,
                clone_from: str | None, kubeconfig: Path | None) -> None:
    """Keep CLUSTER in step with the state repo: follow it, apply every environment that
    includes CLUSTER, prune, wait for health, heal drift every --interval. One replica holds a
    Lease and applies; others stand by. Logs JSON lines; stops cleanly on SIGTERM."""
    repo: Path = ctx.obj["repo"]
    if not repo.exists() and clone_from:
        clone_bare(clone_from, repo)
    json_logging()
    state = load_state(GitTree(repo, follow(repo)))
    if cluster not in state.clusters:
        raise ReconcilerError(f"unknown cluster {cluster!r} (clusters: "
                              f"{', '.join(sorted(state.clusters))})")
    client = connect(state.clusters[cluster].context, kubeconfig)
    daemon = Daemon(repo, cluster, client, lambda: sops.identities(ctx.obj["age_key_file"]),
                    interval=interval)
    server = daemon.serve(listen)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    try:
        daemon.run()
    finally:
        server.shutdown()


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
    _write(ctx, promotion.build_register(component, source_commit, image, track))


@build.command("list")
@click.argument("component", required=False)
@_output_option
@click.pass_context
def build_list(ctx: click.Context, component: str | None) -> None:
    """List registered builds, newest first (optionally of one COMPONENT)."""
    state = _state(ctx)
    key = split_ref(component) if component else None
    builds = sorted((b for (p, c, _), b in state.builds.items() if key in (None, (p, c))),
                    key=lambda b: (b.built_at, b.commit), reverse=True)
    rows = [{"component": f"{b.project}/{b.component}", "commit": b.commit, "track": b.track,
             "image": b.image, "builtAt": b.built_at, "scan": b.scan_status or ""}
            for b in builds]
    _print_rows(ctx, rows, ("component", "commit", "track", "image", "builtAt", "scan"),
                short={"commit": 12})


@cli.command("deploy")
@click.argument("component")
@click.option("--commit", "source_commit", help="A registered build's commit (default: the "
              "newest build of the default track).")
@click.pass_context
def deploy_command(ctx: click.Context, component: str, source_commit: str | None) -> None:
    """Deploy a build of COMPONENT into the first environment of its pipeline."""
    _write(ctx, promotion.deploy(component, source_commit))


@cli.command("promote")
@click.argument("component")
@click.option("--to", "environment", required=True, help="The next stage of the pipeline.")
@click.option("--branch", is_flag=True, help="Commit on promote/<project>/<component>/<env> "
              "and push that branch for a pull request instead of main.")
@click.pass_context
def promote_command(ctx: click.Context, component: str, environment: str, branch: bool) -> None:
    """Promote COMPONENT's release from the previous stage into --to.

    Refused when --to is not the next stage, the previous stage has no release, the stage
    needs a pull request and --branch is missing, the soak time has not passed, or the
    environment lacks a required configurable.
    """
    project, name = split_ref(component)
    target = f"promote/{project}/{name}/{environment}" if branch else None
    _write(ctx, promotion.promote(component, environment, branch), target_branch=target)


@cli.command("rollback")
@click.argument("component")
@click.option("--env", "environment", required=True)
@click.option("--to", "to", metavar="RELEASE", help="A source commit or image digest (prefix) "
              "released there before (default: the previous one).")
@click.pass_context
def rollback_command(ctx: click.Context, component: str, environment: str,
                     to: str | None) -> None:
    """Release again a build that Git history shows ran in ENV before (a new commit)."""
    project, name = split_ref(component)
    releases = audit_log.release_history(ctx.obj["repo"], environment, project, name)
    _write(ctx, promotion.rollback(component, environment, releases, to))


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
    _write(ctx, promotion.config_edit(component, environment, key, value))


@config.command("unset")
@click.argument("component")
@click.argument("key")
@click.option("--env", "environment", help="Only this environment (default: all).")
@click.pass_context
def config_unset(ctx: click.Context, component: str, key: str, environment: str | None) -> None:
    """Remove an environment variable from COMPONENT's config."""
    _write(ctx, promotion.config_edit(component, environment, key, None))


@config.command("list")
@click.argument("component")
@click.option("--env", "environment", help="The effective configuration in this environment.")
@_output_option
@click.pass_context
def config_list(ctx: click.Context, component: str, environment: str | None) -> None:
    """List COMPONENT's configuration and where each value comes from (secrets: names only)."""
    state = _state(ctx)
    project, name = split_ref(component)
    found = state.components.get((project, name))
    if found is None:
        raise ReconcilerError(f"unknown component {component}")
    if environment is not None and environment not in state.environments:
        raise ReconcilerError(f"unknown environment {environment!r}")
    values: dict[str, tuple[str, str]] = {
        c.name: (str(c.default), "default") for c in found.configurables
        if c.default is not None and not c.secret}
    layers = [("component", state.component_configs.get((project, name)))]
    if environment:
        layers.append((environment, state.environment_configs.get((environment, project, name))))
    for source, layer in layers:
        for key, value in (layer.env.items() if layer else ()):
            values[key] = (str(value).lower() if isinstance(value, bool) else str(value), source)
    secrets = state.secrets.get((environment, project, name)) if environment else None
    for key in secrets.keys if secrets else ():
        values[key] = ("(secret)", f"{environment} secrets")
    rows = [{"key": k, "value": v, "source": s} for k, (v, s) in sorted(values.items())]
    _print_rows(ctx, rows, ("key", "value", "source"))


@cli.command()
@click.option("--env", "environment", help="Only this environment.")
@click.option("--live", is_flag=True, help="Add each release's live health in every cluster of "
              "its environment (needs access to the clusters).")
@_KUBECONFIG
@_output_option
@click.pass_context
def status(ctx: click.Context, environment: str | None, live: bool,
           kubeconfig: Path | None) -> None:
    """The matrix of components x environments: version, short digest and age of each release,
    and with --live its health in each cluster."""
    state = _state(ctx)
    environments = _environment_order(state)
    if environment:
        if environment not in state.environments:
            raise ReconcilerError(f"unknown environment {environment!r}")
        environments = [environment]
    now = promotion.now_utc()
    healths: dict[tuple[str, str, str], dict[str, str]] = {}
    if live:
        for env in environments:
            for name in state.environments[env].clusters:
                try:
                    found = live_health(state, env, connect(state.clusters[name].context,
                                                            kubeconfig))
                except ReconcilerError as exc:
                    click.echo(f"warning: {name}: {exc}", err=True)
                    continue
                for (project, component), health in found.items():
                    healths.setdefault((env, project, component), {})[name] = health.status
    cells = []
    for (project, name) in sorted(state.components):
        for env in environments:
            release = state.releases.get((env, project, name))
            if release:
                cell: dict[str, Any] = {"component": f"{project}/{name}", "environment": env,
                                        "version": release.version, "image": release.image,
                                        "commit": release.commit,
                                        "releasedAt": release.released_at,
                                        "age": audit_log.age(release.released_at, now)}
                if live:
                    cell["health"] = healths.get((env, project, name), {})
                cells.append(cell)
    if ctx.obj["output"] in ("json", "yaml"):
        _print_data(ctx.obj["output"], cells)
        return
    table: dict[str, dict[str, str]] = {}
    for cell in cells:
        digest = cell["image"].split("@sha256:")[1][:7]
        text = f"{cell['version']} {digest} {cell['age']}"
        if live:
            states = sorted(set(cell["health"].values())) or ["Unknown"]
            text += " " + "/".join(states)
        table.setdefault(cell["component"], {})[cell["environment"]] = text
    rows = [(ref, *(table.get(ref, {}).get(env, "-") for env in environments))
            for ref in sorted(f"{p}/{c}" for p, c in state.components)]
    _print_table(("COMPONENT", *(e.upper() for e in environments)), rows)


def _environment_order(state: State) -> list[str]:
    ordered: list[str] = []
    names = sorted(state.pipelines, key=lambda n: (n != state.organization.default_pipeline, n))
    for pipeline in [state.pipelines[n] for n in names]:
        for env in pipeline.environments:
            if env not in ordered:
                ordered.append(env)
    return ordered + sorted(set(state.environments) - set(ordered))


@cli.command("history")
@click.argument("component", required=False)
@click.option("--env", "environment", help="Only writes into (or from) this environment.")
@click.option("--limit", type=int, default=0, help="At most this many (default: all).")
@_output_option
@click.pass_context
def history_command(ctx: click.Context, component: str | None, environment: str | None,
                    limit: int) -> None:
    """Every write of the tool, newest first: when, who, what, from where to where."""
    if component:
        split_ref(component)
    found = []
    for event in audit_log.events(ctx.obj["repo"], component, environment,
                                  ctx.obj["revision"] or "HEAD"):
        found.append(event.as_dict())
        if limit and len(found) >= limit:
            break
    _print_rows(ctx, found, ("time", "author", "operation", "component", "from_environment",
                             "to_environment", "image", "commit"),
                short={"commit": 12, "image": 0})


@cli.command("audit")
@click.option("--env", "environment", help="Only releases into this environment.")
@_output_option
@click.pass_context
def audit_command(ctx: click.Context, environment: str | None) -> None:
    """Prove build-once-promote over the whole history; exit 1 on any violation.

    Every digest ever released to an environment must be a registered build and must have
    been released in each earlier stage of its pipeline first; changes under environments/
    or builds/ made without the tool are reported with their commit and path.
    """
    findings = audit_log.audit(ctx.obj["repo"], environment, ctx.obj["revision"] or "HEAD")
    if ctx.obj["output"] in ("json", "yaml"):
        _print_data(ctx.obj["output"], {"ok": not findings,
                                        "findings": [f.as_dict() for f in findings]})
    for finding in findings:
        click.echo(f"error: {finding.path}:1: commit {finding.commit[:12]}: {finding.message}",
                   err=True)
    if findings:
        ctx.exit(1)
    if ctx.obj["output"] not in ("json", "yaml"):
        click.echo("audit passed: every release went through its pipeline from a registered "
                   "build")


@cli.command("codeowners")
@click.pass_context
def codeowners_command(ctx: click.Context) -> None:
    """Write CODEOWNERS from the organisation's groups and the pipelines' approvers, so the Git
    host makes the right people approve promotion pull requests into each environment."""
    _write(ctx, promotion.codeowners())


def _print_rows(ctx: click.Context, rows: list[dict[str, str]], columns: tuple[str, ...],
                short: Mapping[str, int] | None = None) -> None:
    if ctx.obj["output"] in ("json", "yaml"):
        _print_data(ctx.obj["output"], rows)
        return
    short = short or {}

    def cell(column: str, value: str) -> str:
        if column == "image" and "@sha256:" in value:
            return value.split("@sha256:")[0] + "@" + value.split("@sha256:")[1][:7]
        return value[: short[column]] if short.get(column) else value

    _print_table(tuple(c.upper() for c in columns),
                 [tuple(cell(c, str(row.get(c, ""))) or "-" for c in columns) for row in rows])


def _decryptor(ctx: click.Context, environment: str) -> Any:
    return sops.decryptor(lambda: sops.identities(ctx.obj["age_key_file"]), environment)


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
    _write(ctx, promotion.secret_set(component, environment, key, value))


@secret_group.command("unset")
@click.argument("component")
@click.argument("key")
@click.option("--env", "environment", required=True)
@click.pass_context
def secret_unset(ctx: click.Context, component: str, key: str, environment: str) -> None:
    """Remove one secret (deletes its file; needs no key)."""
    _write(ctx, promotion.secret_unset(component, environment, key))


@secret_group.command("list")
@click.argument("component")
@click.option("--env", "environment", required=True)
@_output_option
@click.pass_context
def secret_list(ctx: click.Context, component: str, environment: str) -> None:
    """The secret keys of COMPONENT in ENV: when and by whom each last changed, and the
    recipients its file is encrypted to (STALE names current recipients it is not encrypted
    to, or removed ones it still is: run `secret rotate`). Never values."""
    state = _state(ctx)
    project, name = split_ref(component)
    if (project, name) not in state.components:
        raise ReconcilerError(f"unknown component {component}")
    if environment not in state.environments:
        raise ReconcilerError(f"unknown environment {environment!r}")
    entries = audit_log.secret_entries(ctx.obj["repo"], state, project, name, environment,
                                       ctx.obj["revision"] or "HEAD")
    if ctx.obj["output"] in ("json", "yaml"):
        _print_data(ctx.obj["output"], [entry.as_dict() for entry in entries])
        return
    rows = [(e.key, e.changed or "-", e.by or "-", ", ".join(_short_key(r) for r in e.recipients),
             "; ".join([*(f"missing {_short_key(r)}" for r in e.missing),
                        *(f"removed {_short_key(r)}" for r in e.extra)]) or "-")
            for e in entries]
    _print_table(("KEY", "CHANGED", "BY", "RECIPIENTS", "STALE"), rows)


def _short_key(recipient: str) -> str:
    return f"{recipient[:10]}...{recipient[-6:]}" if len(recipient) > 20 else recipient


@secret_group.command("rotate")
@click.option("--env", "environment", required=True)
@click.pass_context
def secret_rotate(ctx: click.Context, environment: str) -> None:
    """Re-encrypt every secret of ENV to its current secretRecipients (after a key was added
    or removed) under new data keys, in one commit. Needs a key that decrypts them."""
    keys = sops.identities(ctx.obj["age_key_file"])
    _write(ctx, promotion.secret_rotate(environment, keys))


@secret_group.command("migrate")
@click.option("--env", "environment", required=True)
@click.pass_context
def secret_migrate(ctx: click.Context, environment: str) -> None:
    """Split ENV's old secrets.sops.yaml files (several secrets in one SOPS file) into one
    file per secret under secrets/, encrypted to the current secretRecipients, in one
    commit. Needs a key that decrypts the old files."""
    keys = sops.identities(ctx.obj["age_key_file"])
    _write(ctx, promotion.secret_migrate(environment, keys))


def _write_tree(out: Path, rendered: Rendered) -> None:
    if out.exists():
        if not out.is_dir():
            raise ReconcilerError(f"--out {out} is not a directory")
        if any(out.iterdir()) and not (out / RENDER_MARKER).is_file():
            raise ReconcilerError(f"--out {out} is not empty and was not written by render: "
                                  "nothing was written")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / RENDER_MARKER).write_text(f"{rendered.environment} {rendered.revision}\n")
    for obj in rendered.objects:
        metadata = obj["metadata"]
        folder = out / (metadata.get("namespace") or "_cluster")
        folder.mkdir(exist_ok=True)
        (folder / f"{obj['kind'].lower()}-{metadata['name']}.yaml").write_text(
            dump_manifests([obj]))


def _print_data(output: str, data: object) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(dump_manifests([data]), nl=False)


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    cli(prog_name="reconciler")
