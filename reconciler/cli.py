"""The ``reconciler`` command: parse, call the library, format, map errors to exit codes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.example import init_state_repo
from reconciler.gitstore import GitTree, head_revision, is_dirty
from reconciler.model import Secrets, State
from reconciler.render import Rendered, render_environment
from reconciler.state import TreeReader, WorkTree, load_state
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
@click.version_option(__version__, prog_name="reconciler")
@click.pass_context
def cli(ctx: click.Context, repo: Path, revision: str | None, output: str | None) -> None:
    """GitOps reconciler and manifest renderer.

    The state repo holds organisation, clusters, environments, pipelines, projects,
    components, build records and, per environment, the released image digests with their
    configuration. This command validates it and renders each environment's Kubernetes
    manifests from it.
    """
    ctx.obj = {"repo": repo, "revision": revision, "output": output}
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
def init(path: Path, example: bool) -> None:
    """Create a new state repo (a Git repository with one commit) in PATH.

    PATH must not exist or be empty. Without --example the repo holds one organisation,
    cluster, pipeline and environment to grow from.
    """
    commit = init_state_repo(path, example)
    click.echo(f"initialised state repo {path} at {commit[:12]}")


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
    rendered = render_environment(state, environment, project=project, component=component,
                                  cluster=cluster,
                                  decrypt=_cannot_decrypt if reveal_secrets else None)
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


def _cannot_decrypt(secrets: Secrets) -> Mapping[str, str]:
    raise ReconcilerError("cannot reveal secrets: this version cannot decrypt SOPS files yet",
                          secrets.path)


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
        click.echo(dump_manifests([data]) if isinstance(data, dict) else json.dumps(data))


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    cli(prog_name="reconciler")


if __name__ == "__main__":
    main()
