"""The marketplace: every endpoint released into its pipeline is a service named
<component>-<endpoint>, shown by API major (the newest minor of each), beside the third-party
services; project-visible services only to their project (or --all, for platform roles);
search over names, labels and content; show tells how to connect; export gives Backstage
catalog entities that Backstage's own validators (@backstage/catalog-model) accept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Run, commit_all, edit, write

CHECKOUT = "projects/shop/components/checkout"
CATALOG = "projects/shop/components/catalog"
BACKSTAGE = Path(__file__).parent / "backstage"


def names(run: Run, *args: str) -> list[str]:
    result = run("marketplace", "list", "-o", "json", *args)
    assert result.exit_code == 0, result.stderr
    return [row["name"] for row in json.loads(result.stdout)]


def show(run: Run, *args: str) -> dict[str, Any]:
    result = run("marketplace", "show", "-o", "json", *args)
    assert result.exit_code == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


# --- list: what is in the marketplace ---

def test_every_released_endpoint_and_every_third_party_service_is_listed(run: Run) -> None:
    result = run("marketplace", "list", "-o", "json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"checkout-api", "auth-api", "auth-login", "gateway-edge", "storefront-web",
            "twilio"} <= set(rows)
    assert rows["checkout-api"] == {
        "name": "checkout-api", "service": "shop/checkout/api", "type": "internal",
        "visibility": "organization", "protocol": "REST", "versions": {"v1": "v1.2"},
        "labels": ["payments", "orders"], "summary": "Checkout and payment orchestration"}
    assert rows["twilio"]["type"] == "third-party"
    assert rows["twilio"]["versions"] == {"v1": "v1"}
    assert "invoice-run" not in " ".join(rows), "a component without endpoints offers nothing"


def test_the_table_names_each_service_and_its_versions(run: Run) -> None:
    table = run("marketplace", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "VISIBILITY", "PROTOCOL", "VERSIONS", "SERVICE",
                                "SUMMARY"]
    assert any(line.split()[:6] == ["checkout-api", "internal", "organization", "REST",
                                    "v1=v1.2", "shop/checkout/api"] for line in table)


def test_a_project_visible_service_is_listed_only_for_its_project_or_with_all(run: Run) -> None:
    assert "catalog-api" not in names(run)
    assert "catalog-api" in names(run, "--project", "shop")
    assert "catalog-api" not in names(run, "--project", "identity")
    assert "catalog-api" in names(run, "--all")
    assert run("marketplace", "list", "--project", "nowhere").errors == [
        "error: unknown project 'nowhere'"]
    help_text = run("marketplace", "list", "--help").stdout
    assert "--project" in help_text
    assert "platform roles" in help_text


def test_filters_by_type_visibility_and_label(run: Run) -> None:
    assert names(run, "--type", "third-party") == ["twilio"]
    assert "twilio" not in names(run, "--type", "internal")
    assert "checkout-api" in names(run, "--type", "internal")
    public = names(run, "--visibility", "public")
    assert "storefront-web" in public and "gateway-edge" in public
    assert "checkout-api" not in public
    assert names(run, "--visibility", "project") == []
    assert names(run, "--visibility", "project", "--all") == ["catalog-api"]
    assert names(run, "--label", "PAYMENTS") == ["checkout-api"]
    assert names(run, "--label", "sms", "--type", "third-party") == ["twilio"]
    assert run("marketplace", "list", "--type", "external").exit_code == 2


def new_component(repo: Path) -> None:
    """shop/ledger: a service with an endpoint, registered but never released."""
    write(repo, "projects/shop/components/ledger/component.yaml",
          "kind: Component\nname: ledger\ntype: service\n"
          "source: {repository: https://github.com/acme/shop, path: services/ledger}\n"
          "tracks: [{branch: main, version: v1.0}]\n"
          "endpoints:\n  - {name: api, port: 8080, type: REST, visibility: organization}\n"
          "health:\n  readiness: {path: /healthz, port: 8080}\n")
    write(repo, f"builds/shop/ledger/{'a' * 40}.yaml",
          f"kind: Build\ncomponent: shop/ledger\ncommit: {'a' * 40}\ntrack: main\n"
          f"image: registry.acme.example/shop/ledger@sha256:{'1' * 64}\n"
          'builtAt: "2026-11-20T10:00:00Z"\n')


def release(repo: Path, environment: str, component: str, version: str, commit: str,
            image: str, name: str = "release.yaml") -> None:
    write(repo, f"environments/{environment}/shop/{component}/{name}",
          f"kind: Release\ncomponent: shop/{component}\ncommit: {commit}\nimage: {image}\n"
          f'version: {version}\nreleasedAt: "2026-11-21T08:00:00Z"\n')


def test_a_service_enters_when_first_released_into_its_pipeline(repo: Path, run: Run) -> None:
    new_component(repo)
    assert run("validate").exit_code == 0
    assert "ledger-api" not in names(run)
    assert run("marketplace", "show", "ledger-api").errors[0].startswith(
        "error: unknown service 'ledger-api'")
    release(repo, "development", "ledger", "v1.0", "a" * 40,
            f"registry.acme.example/shop/ledger@sha256:{'1' * 64}")
    assert run("validate").exit_code == 0
    assert "ledger-api" in names(run)
    assert show(run, "ledger-api")["versions"] == [
        {"major": "v1", "version": "v1.0", "environments": {"development": "v1.0"}}]


def checkout_release_text(repo: Path, environment: str) -> str:
    return (repo / f"environments/{environment}/shop/checkout/release.yaml").read_text()


def test_each_major_shows_its_newest_minor_and_where_each_version_runs(repo: Path,
                                                                       run: Run) -> None:
    """v1 = the newest v1.x released anywhere in the pipeline; v2 beside it, side by side."""
    edit(repo, "environments/staging/shop/checkout/release.yaml", "version: v1.2",
         "version: v1.3")  # the newest v1 need not be in the first environment
    edit(repo, f"{CHECKOUT}/component.yaml", "    autoDeploy: true\n",
         "    autoDeploy: true\n  - branch: next\n    version: v2.0\n")
    v2_image = f"registry.acme.example/shop/checkout@sha256:{'2' * 64}"
    write(repo, f"builds/shop/checkout/{'b' * 40}.yaml",
          f"kind: Build\ncomponent: shop/checkout\ncommit: {'b' * 40}\ntrack: next\n"
          f'image: {v2_image}\nbuiltAt: "2026-11-22T10:00:00Z"\n')
    folder = repo / "environments/development/shop/checkout"
    (folder / "release.yaml").rename(folder / "release-v1.yaml")
    release(repo, "development", "checkout", "v2.0", "b" * 40, v2_image, "release-v2.yaml")
    assert run("validate").exit_code == 0, run("validate").stderr

    rows = {row["name"]: row for row in json.loads(run("marketplace", "list", "-o", "json").stdout)}
    assert rows["checkout-api"]["versions"] == {"v1": "v1.3", "v2": "v2.0"}
    details = show(run, "checkout-api")
    assert details["versions"] == [
        {"major": "v1", "version": "v1.3",
         "environments": {"development": "v1.2", "staging": "v1.3", "production": "v1.2"}},
        {"major": "v2", "version": "v2.0", "environments": {"development": "v2.0"}}]
    assert details["connection"]["connections"][0]["version"] == "v2", "newest major by default"

    v1 = show(run, "shop/checkout/api", "--version", "v1")
    assert [line["major"] for line in v1["versions"]] == ["v1"]
    assert v1["connection"]["connections"][0]["version"] == "v1"
    injected = {e["environment"]: e["variables"]["CHECKOUT_API_HOST"] for e in v1["injects"]}
    assert injected == {
        "development": "checkout-api-v1.shop-development.svc.cluster.local",
        "staging": "checkout-api.shop-staging.svc.cluster.local",
        "production": "checkout-api.shop-production.svc.cluster.local"}
    v2 = show(run, "checkout-api", "--version", "v2")
    assert [e["environment"] for e in v2["injects"]] == ["development"]
    assert v2["injects"][0]["variables"]["CHECKOUT_API_URL"] == \
        "http://checkout-api-v2.shop-development.svc.cluster.local:8080"
    assert run("marketplace", "show", "checkout-api", "--version", "v3").errors == [
        "error: checkout-api has no v3 (it offers v1, v2)"]

    exported = yaml.safe_load_all(run("marketplace", "export", "--format", "backstage").stdout)
    apis = {e["metadata"]["name"]: e for e in exported if e["kind"] == "API"}
    assert apis["checkout-api-v1"]["metadata"]["annotations"]["reconciler.io/version"] == "v1.3"
    assert apis["checkout-api-v2"]["spec"]["lifecycle"] == "experimental", \
        "v2 runs in no production environment yet"
    assert apis["checkout-api-v1"]["spec"]["lifecycle"] == "production"


# --- search ---

def searched(run: Run, *args: str) -> dict[str, list[str]]:
    result = run("marketplace", "search", "-o", "json", *args)
    assert result.exit_code == 0, result.stderr
    return {row["name"]: row["matched"] for row in json.loads(result.stdout)}


def test_search_in_names_labels_and_content(run: Run) -> None:
    assert searched(run, "CHECKOUT", "--in", "name") == {"checkout-api": ["name"]}
    assert searched(run, "sms", "--in", "label") == {"twilio": ["label"]}
    assert searched(run, "paid order", "--in", "content") == {"checkout-api": ["overview"]}
    assert searched(run, "openapi: 3.0.3", "--in", "content") == {"checkout-api": ["definition"]}
    assert searched(run, "payment", "--in", "content") == {"checkout-api": ["summary"]}
    assert searched(run, "paid order", "--in", "name") == {}
    assert searched(run, "sms") == {"twilio": ["label", "summary"]}, "all is the default"
    assert run("marketplace", "search", "x", "--in", "body").exit_code == 2


def test_search_respects_visibility(run: Run) -> None:
    assert "catalog-api" not in searched(run, "priceCents")
    assert searched(run, "priceCents", "--project", "shop") == {"catalog-api": ["definition"]}
    assert searched(run, "product", "--all")["catalog-api"] == [
        "label", "summary", "overview", "definition"]


# --- show ---

def test_show_prints_summary_versions_overview_definition_snippet_and_documents(
        repo: Path, run: Run) -> None:
    result = run("marketplace", "show", "checkout-api")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "Checkout and payment orchestration" in text
    assert "v1: v1.2  (development v1.2, staging v1.2, production v1.2)" in text
    assert "Takes a cart and turns it into a paid order." in text
    assert "openapi: 3.0.3" in text
    assert "service: shop/checkout/api" in text
    assert "CHECKOUT_API_URL=http://checkout-api.shop-production.svc.cluster.local:8080" in text
    assert f"{CHECKOUT}/openapi.yaml" in text and "https://github.com/acme/shop" in text

    details = show(run, "shop/checkout/api")
    assert details["overview"] == (repo / f"{CHECKOUT}/README.md").read_text()
    assert details["definition"] == {"path": f"{CHECKOUT}/openapi.yaml",
                                     "text": (repo / f"{CHECKOUT}/openapi.yaml").read_text()}
    assert {d["title"]: d["location"] for d in details["documents"]} == {
        "source": "https://github.com/acme/shop (services/checkout)",
        "component": f"{CHECKOUT}/component.yaml",
        "API definition": f"{CHECKOUT}/openapi.yaml",
        "overview": f"{CHECKOUT}/README.md"}


def test_the_connection_snippet_pasted_into_a_component_injects_what_show_said(
        repo: Path, run: Run) -> None:
    details = show(run, "checkout-api")
    snippet = details["connection"]["connections"][0]
    assert snippet == {"name": "checkout-api", "service": "shop/checkout/api", "version": "v1",
                       "env": {"url": "CHECKOUT_API_URL", "host": "CHECKOUT_API_HOST",
                               "port": "CHECKOUT_API_PORT"}}
    gateway = "projects/identity/components/gateway/component.yaml"
    edit(repo, gateway, "connections:\n", "connections:\n  - " + json.dumps(snippet) + "\n")
    assert run("validate").exit_code == 0, run("validate").stderr
    for injected in details["injects"]:
        listed = run("config", "list", "identity/gateway", "--env", injected["environment"],
                     "-o", "json")
        values = {e["key"]: e["value"] for e in json.loads(listed.stdout)}
        for name, value in injected["variables"].items():
            assert values[name] == value, (injected["environment"], name)


def test_show_a_third_party_service(run: Run) -> None:
    details = show(run, "twilio")
    assert (details["type"], details["summary"]) == ("third-party", "SMS and voice")
    assert details["connection"]["connections"][0]["service"] == "twilio"
    assert details["injects"] == [{"environment": "*", "variables": {
        "TWILIO_URL": "https://api.twilio.com", "TWILIO_HOST": "api.twilio.com",
        "TWILIO_PORT": "443"}}]
    assert details["definition"] is None and details["overview"] is None
    assert "marketplace/third-party/twilio.yaml" in [d["location"] for d in details["documents"]]
    assert "every environment:" in run("marketplace", "show", "twilio").stdout


def test_show_a_project_visible_service_needs_its_project(run: Run) -> None:
    refused = run("marketplace", "show", "catalog-api")
    assert refused.exit_code == 1
    assert refused.errors == ["error: service 'catalog-api' is visible only to project shop: "
                              "use --project shop (or --all, for platform roles)"]
    assert run("marketplace", "show", "catalog-api", "--project", "identity").exit_code == 1
    details = show(run, "catalog-api", "--project", "shop")
    assert details["visibility"] == "project"
    assert "type Query" in details["definition"]["text"]
    assert show(run, "shop/catalog/api", "--all")["name"] == "catalog-api"


def test_unknown_service_is_an_error(run: Run) -> None:
    result = run("marketplace", "show", "nope")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.errors[0].startswith("error: unknown service 'nope'")
    assert run("marketplace", "show").exit_code == 2


def test_files_are_read_from_the_revision_asked_for(repo: Path, run: Run) -> None:
    def overview(*revision: str) -> str:
        result = run(*revision, "marketplace", "show", "checkout-api", "-o", "json")
        assert result.exit_code == 0, result.stderr
        text: str = json.loads(result.stdout)["overview"]
        return text

    edit(repo, f"{CHECKOUT}/README.md", "paid order", "paid order, now with refunds")
    assert "refunds" in overview()
    assert "refunds" not in overview("--revision", "HEAD")
    commit_all(repo, "refunds")
    assert "refunds" in overview("--revision", "HEAD")


def test_yaml_output(run: Run) -> None:
    listed = yaml.safe_load(run("marketplace", "list", "-o", "yaml").stdout)
    assert "checkout-api" in [row["name"] for row in listed]
    assert yaml.safe_load(run("-o", "yaml", "marketplace", "show", "twilio").stdout)["name"] == \
        "twilio"


# --- export to Backstage ---

def backstage_errors(entities: list[dict[str, Any]]) -> list[list[str]]:
    """Backstage's own verdict on each entity: @backstage/catalog-model's envelope and
    metadata policies and its API and Component validators (tests/backstage, installed from
    npm by scripts/test)."""
    if not (BACKSTAGE / "node_modules/@backstage/catalog-model").is_dir():
        pytest.fail("Backstage's catalog-model is not installed: run `npm ci --prefix "
                    "tests/backstage` (scripts/test does)")
    checked = subprocess.run(["node", str(BACKSTAGE / "validate.cjs")], input=json.dumps(entities),
                             capture_output=True, text=True, check=True, cwd=BACKSTAGE)
    found: list[list[str]] = json.loads(checked.stdout)
    return found


def exported(run: Run, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "catalog-info.yaml"
    result = run("marketplace", "export", "--format", "backstage", "--out", str(out), *args)
    assert result.exit_code == 0, result.stderr
    return list(yaml.safe_load_all(out.read_text()))


def test_export_is_valid_backstage_entities(repo: Path, run: Run, tmp_path: Path) -> None:
    entities = exported(run, tmp_path, "--all")
    verdicts = backstage_errors(entities)
    assert {e["metadata"]["name"]: v for e, v in zip(entities, verdicts, strict=True) if v} == {}

    apis = {e["metadata"]["name"]: e for e in entities if e["kind"] == "API"}
    components = {(e["metadata"]["namespace"], e["metadata"]["name"]): e
                  for e in entities if e["kind"] == "Component"}
    assert {"checkout-api-v1", "catalog-api-v1", "twilio-v1"} <= set(apis)
    checkout = apis["checkout-api-v1"]
    assert checkout["metadata"]["namespace"] == "shop"
    assert checkout["spec"]["type"] == "openapi"
    assert checkout["spec"]["lifecycle"] == "production"
    assert checkout["spec"]["definition"] == (repo / f"{CHECKOUT}/openapi.yaml").read_text()
    assert apis["catalog-api-v1"]["spec"]["type"] == "graphql"
    assert apis["auth-api-v3"]["spec"]["type"] == "grpc"
    assert apis["auth-api-v3"]["spec"]["definition"].startswith("# identity/auth/api "), \
        "a placeholder where the endpoint has no schema"
    summary = json.loads(run("validate", "-o", "json").stdout)
    assert len(components) == summary["components"], "a Component per component"
    assert components[("shop", "storefront")]["spec"]["type"] == "website"
    assert components[("shop", "checkout")]["spec"]["providesApis"] == ["api:shop/checkout-api-v1"]
    consumed = components[("shop", "checkout")]["spec"]["consumesApis"]
    assert {"api:default/twilio-v1", "api:shop/catalog-api-v1"} <= set(consumed), \
        "project-level connections (twilio) and the component's own"
    refs = {f"api:{e['metadata']['namespace']}/{e['metadata']['name']}" for e in apis.values()}
    for component in components.values():
        assert set(component["spec"].get("consumesApis", [])) <= refs, "no dangling reference"

    without_all = exported(run, tmp_path)
    assert "catalog-api-v1" not in [e["metadata"]["name"] for e in without_all]
    standard = run("marketplace", "export", "--format", "backstage", "--all").stdout
    assert list(yaml.safe_load_all(standard)) == entities
    as_json = run("marketplace", "export", "--format", "backstage", "--all", "-o", "json")
    assert json.loads(as_json.stdout) == entities


def test_backstage_does_reject_a_broken_entity(run: Run, tmp_path: Path) -> None:
    """So that the export test above can fail: Backstage requires an API's definition, a
    valid name and nothing foreign in the envelope."""
    api = next(e for e in exported(run, tmp_path) if e["kind"] == "API")
    no_definition = json.loads(json.dumps(api))
    del no_definition["spec"]["definition"]
    bad_name = json.loads(json.dumps(api))
    bad_name["metadata"]["name"] = "not a name!"
    foreign = {**api, "extra": 1}
    verdicts = backstage_errors([api, no_definition, bad_name, foreign])
    assert verdicts[0] == []
    assert "definition" in verdicts[1][0]
    assert "metadata.name" in verdicts[2][0]
    assert "additional properties" in verdicts[3][0]
