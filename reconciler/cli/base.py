"""The ``reconciler`` group, its global options, and what every command shares: reading the
state, running a write, printing rows, mapping expected errors to exit codes."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from reconciler import __version__, sops
from reconciler.cache import Cache
from reconciler.errors import ReconcilerError, UsageError
from reconciler.git.store import GitTree, head_revision, is_dirty
from reconciler.load.loader import load_state
from reconciler.load.readers import TreeReader, WorkTree
from reconciler.model.kinds import State
from reconciler.operations.common import Operation, run
from reconciler.render.engine import Decrypt
from reconciler.yamlio import dump_manifests

_OUTPUT_CHOICE = click.Choice(["table", "json", "yaml"])


def output_option(command: Any) -> Any:
    """``-o`` after the subcommand too, as kubectl users expect; it wins over the global one."""

    def remember(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        if value:
            ctx.ensure_object(dict)["output"] = value

    return click.option("-o", "--output", type=_OUTPUT_CHOICE, expose_value=False,
                        callback=remember, help="Output format.")(command)


KUBECONFIG = click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
                          help="Kubeconfig file (default: $KUBECONFIG or ~/.kube/config); the "
                               "context is the cluster file's `context`.")


COMMAND_MODULES = {
    "apply": "clusters", "diff": "clusters", "run": "clusters",
    "audit": "views", "history": "views", "status": "views",
    "build": "releases", "deploy": "releases", "promote": "releases", "retire": "releases",
    "rollback": "releases",
    "codeowners": "repo", "init": "repo", "render": "repo", "validate": "repo",
    "config": "config", "marketplace": "marketplace", "secret": "secrets", "task": "tasks",
}
"""Which module of reconciler.cli defines each command: imported only when it runs, so
`reconciler render` does not pay for the Kubernetes client."""


class _Group(click.Group):
    """Turns every expected error into ``error: ...`` lines on stderr and its exit code;
    imports a command's module when the command is asked for."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(f"reconciler.cli.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

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
    configuration and secrets. This command validates it, renders each environment's
    Kubernetes manifests, promotes releases through Git and applies them to clusters.
    """
    ctx.obj = {"repo": repo, "revision": revision, "output": output, "age_key_file": age_key_file}
    # A subcommand's own -o is parsed later and overwrites ctx.obj["output"].


def reader(ctx: click.Context, labelled: bool = True) -> TreeReader:
    """The files to read: --revision's tree, else the work tree. ``labelled``: the work
    tree's revision names HEAD (with ``-dirty`` when files differ from it, which costs a
    ``git status``); else it is ``worktree``, for output that never shows it."""
    repo: Path = ctx.obj["repo"]
    if ctx.obj["revision"]:
        return GitTree(repo, ctx.obj["revision"])
    head = head_revision(repo) if labelled and repo.is_dir() else None
    if head is None:
        return WorkTree(repo)
    return WorkTree(repo, head + ("-dirty" if is_dirty(repo) else ""))


def state_of(ctx: click.Context, labelled: bool = True) -> State:
    cache = Cache.at_home("state")
    try:
        return load_state(reader(ctx, labelled), cache)
    finally:
        cache.save()


def revision_of(ctx: click.Context) -> str:
    """The revision history is read from: --revision, else HEAD."""
    return str(ctx.obj["revision"] or "HEAD")


def output_of(ctx: click.Context, default: str = "table") -> str:
    return str(ctx.obj["output"] or default)


def age_keys(ctx: click.Context) -> list[Any]:
    return sops.identities(ctx.obj["age_key_file"])


def decryptor(ctx: click.Context, environment: str) -> Decrypt:
    """Decryption of ENV's secrets; the key is read only when a secret needs it."""
    return sops.decryptor(lambda: age_keys(ctx), environment)


def write(ctx: click.Context, operation: Operation, target_branch: str | None = None,
          replace: bool = False) -> None:
    """Run a write operation on the newest tip of main and report what it did."""
    if ctx.obj["revision"]:
        raise UsageError("--revision reads an old commit; writes always go to the newest tip")
    result = run(ctx.obj["repo"], operation, target_branch=target_branch, replace=replace)
    click.echo(result.summary)
    written = result.written
    if written is not None:
        where = f"pushed {written.branch} to origin" if written.pushed else f"on {written.branch}"
        click.echo(f"commit {written.commit[:12]} {where}")
        if written.warning:
            click.echo(f"warning: {written.warning}", err=True)
    if result.remaining:
        click.echo(f"warning: {written.branch if written else 'main'} still has "
                   f"{len(result.remaining)} problem(s), none new:", err=True)
        for problem in result.remaining:
            click.echo(f"warning: {problem}", err=True)


def print_data(output: str, data: object) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(dump_manifests([data]), nl=False)


def print_table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_rows(ctx: click.Context, rows: Sequence[Mapping[str, Any]], columns: tuple[str, ...],
               short: Mapping[str, int] | None = None) -> None:
    """Rows as a table (a column per name), or as data with -o json|yaml."""
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), list(rows))
        return
    widths = short or {}

    def cell(column: str, value: str) -> str:
        if column == "image" and "@sha256:" in value:
            return value.split("@sha256:")[0] + "@" + value.split("@sha256:")[1][:7]
        return value[: widths[column]] if widths.get(column) else value

    print_table(tuple(c.upper() for c in columns),
                [tuple(cell(c, str(row.get(c, ""))) or "-" for c in columns) for row in rows])
