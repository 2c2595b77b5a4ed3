"""``reconciler marketplace``: browse, search and describe the services teams can connect
to, and export them to a developer portal (Backstage). The logic is
``reconciler.queries.marketplace``; this module parses and formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reconciler.cli.base import cli, output_of, output_option, print_data, print_rows, reader
from reconciler.load.loader import load_state
from reconciler.load.readers import TreeReader
from reconciler.model.kinds import State
from reconciler.queries import marketplace as market
from reconciler.yamlio import dump_manifests

_VISIBILITY_HELP = ("Project-visible services are shown only with --project of their own "
                    "project, or with --all.")
_COLUMNS = ("name", "type", "visibility", "protocol", "versions", "service", "summary")


def _viewer(command: Any) -> Any:
    """--project and --all: whose view of the marketplace."""
    command = click.option(
        "--all", "everything", is_flag=True,
        help="Every service, project-visible ones of all projects included: for platform "
             "roles (admins, platform engineers).")(command)
    return click.option("--project", metavar="P",
                        help="Browse as a member of project P: its project-visible services "
                             "are shown too.")(command)


def _load(ctx: click.Context) -> tuple[State, TreeReader]:
    source = reader(ctx)
    return load_state(source), source


def _row(ctx: click.Context, service: market.Service) -> dict[str, Any]:
    """A service as data, or (for a table) with its versions on one line."""
    row = service.as_row()
    if output_of(ctx) not in ("json", "yaml"):
        row["versions"] = " ".join(f"{m}={v}" for m, v in row["versions"].items())
    return row


@cli.group()
def marketplace() -> None:
    """The services of the organisation and third-party services, by API major version.

    Every endpoint of a component released into its pipeline is a service named
    <component>-<endpoint> (also reachable as PROJECT/COMPONENT/ENDPOINT); each major
    version (v1, v2) shows the newest minor released in any environment of its pipeline.
    Project-visible services are shown only with --project of that project, or with --all
    (for platform roles: admins and platform engineers).
    """


@marketplace.command("list", short_help="List the services, newest version per major.")
@click.option("--type", "service_type", type=click.Choice(market.SERVICE_TYPES),
              help="Only internal (platform) or third-party services.")
@click.option("--visibility", type=click.Choice(market.VISIBILITIES),
              help="Only services of this network visibility (third-party services count as "
                   "organization).")
@click.option("--label", metavar="L", help="Only services with this label.")
@_viewer
@output_option
@click.pass_context
def list_command(ctx: click.Context, service_type: str | None, visibility: str | None,
                 label: str | None, project: str | None, everything: bool) -> None:
    """The services you can connect to, with their newest version per major.

    Project-visible services are shown only with --project of their own project, or with
    --all (for platform roles: admins and platform engineers)."""
    state, _ = _load(ctx)
    found = market.filtered(market.catalogue(state, project, everything),
                            service_type, visibility, label)
    print_rows(ctx, [_row(ctx, s) for s in found], _COLUMNS, short={"summary": 50})


@marketplace.command("search", short_help="Search names, labels, overviews and API definitions.")
@click.argument("text")
@click.option("--in", "where", type=click.Choice(market.SEARCH_FIELDS), default="all",
              show_default=True, help="Search names, labels, content (summary, overview and "
              "API definition text), or all of them.")
@_viewer
@output_option
@click.pass_context
def search_command(ctx: click.Context, text: str, where: str, project: str | None,
                   everything: bool) -> None:
    """Services whose name, labels, summary, overview or API definition contain TEXT (any
    case), with what matched.

    Project-visible services are shown only with --project of their own project, or with
    --all (for platform roles: admins and platform engineers)."""
    state, source = _load(ctx)
    found = market.search(state, source, text, where, project, everything)
    rows = []
    for service, matched in found:
        row = _row(ctx, service)
        row["matched"] = list(matched) if output_of(ctx) in ("json", "yaml") \
            else ",".join(matched)
        rows.append(row)
    print_rows(ctx, rows, ("name", "type", "visibility", "versions", "matched", "summary"),
               short={"summary": 50})


@marketplace.command("show", short_help="How to connect to a service, and its docs.")
@click.argument("service")
@click.option("--version", metavar="vN", help="Only this major version (default: all, the "
              "connection snippet for the newest).")
@_viewer
@output_option
@click.pass_context
def show_command(ctx: click.Context, service: str, version: str | None, project: str | None,
                 everything: bool) -> None:
    """Everything about SERVICE (<component>-<endpoint>, PROJECT/COMPONENT/ENDPOINT or a
    third-party name): summary, versions and where each runs, overview, API definition, the
    connection snippet to paste into a component.yaml, the variables it injects, and related
    documents.

    Project-visible services are shown only with --project of their own project, or with
    --all (for platform roles: admins and platform engineers)."""
    state, source = _load(ctx)
    found = market.find(state, service, project, everything)
    details = market.describe(state, source, found, version)
    if output_of(ctx) in ("json", "yaml"):
        print_data(output_of(ctx), details)
        return
    _print_details(details)


def _print_details(details: dict[str, Any]) -> None:
    def heading(title: str) -> None:
        click.echo(f"\n{title}")

    click.echo(f"{details['name']}  ({details['service']}, {details['type']}, "
               f"{details['visibility']}{', ' + details['protocol'] if details['protocol'] else ''})")
    if details["summary"]:
        click.echo(details["summary"])
    if details["labels"]:
        click.echo("labels: " + ", ".join(details["labels"]))
    heading("Versions")
    for line in details["versions"]:
        where = ", ".join(f"{env} {version}" for env, version in line["environments"].items())
        click.echo(f"  {line['major']}: {line['version']}" + (f"  ({where})" if where else ""))
    heading("Overview")
    click.echo(_indent(details["overview"] or "(none)"))
    heading("API definition" + (f" ({details['definition']['path']})"
                                if details["definition"] else ""))
    click.echo(_indent(details["definition"]["text"] if details["definition"]
                       else "(none)"))
    heading("Use it: add to your component.yaml")
    click.echo(_indent(dump_manifests([details["connection"]])))
    heading("Injects")
    for entry in details["injects"]:
        where = "every environment" if entry["environment"] == "*" else entry["environment"]
        click.echo(f"  {where}:")
        for name, value in entry["variables"].items():
            click.echo(f"    {name}={value}")
    heading("Documents")
    for document in details["documents"]:
        click.echo(f"  {document['title']}: {document['location']}")


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else "" for line in text.rstrip("\n").splitlines())


@marketplace.command("export", short_help="Export Backstage catalog entities.")
@click.option("--format", "export_format", type=click.Choice(["backstage"]), required=True,
              help="backstage: catalog entities (an API per service and major version, a "
                   "Component per component) as a multi-document YAML.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@_viewer
@output_option
@click.pass_context
def export_command(ctx: click.Context, export_format: str, out: Path | None,
                   project: str | None, everything: bool) -> None:
    """Export the marketplace for a developer portal: Backstage catalog entities (an API per
    service and major version, with its definition; a Component per component, with the
    APIs it provides and consumes), ready for a catalog Location.

    Project-visible services are exported only with --project of their own project, or
    with --all (for platform roles: admins and platform engineers). YAML documents, or
    with -o json one JSON list of the entities."""
    state, source = _load(ctx)
    entities = market.backstage_entities(state, source, project, everything)
    as_json = output_of(ctx) == "json"
    text = json.dumps(entities, indent=2) + "\n" if as_json else dump_manifests(entities)
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text)
    click.echo(f"wrote {out}", err=True)
