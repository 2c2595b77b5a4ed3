"""References between state files are checked: every name must exist, folders must match
the names inside files, releases must come from registered builds, connections must reach
real endpoints, and each release must have its required configurables."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Run, commit_all, edit, line_of, write

CHECKOUT = "projects/shop/components/checkout/component.yaml"
STOREFRONT = "projects/shop/components/storefront/component.yaml"
STAGING = "environments/staging/shop/checkout"


def errors_after(run: Run) -> list[str]:
    result = run("validate")
    assert result.exit_code == 1, "validate should have failed"
    return result.errors


def test_pipeline_names_an_unknown_environment(repo: Path, run: Run) -> None:
    edit(repo, "pipelines/standard.yaml", "environment: staging", "environment: qa")
    line = line_of(repo, "pipelines/standard.yaml", "environment: qa")
    assert (f"error: pipelines/standard.yaml:{line}: unknown environment 'qa'"
            in errors_after(run))


def test_pipeline_lists_an_environment_twice(repo: Path, run: Run) -> None:
    edit(repo, "pipelines/standard.yaml", "environment: staging", "environment: development")
    assert any("appears more than once" in e for e in errors_after(run))


def test_environment_names_an_unknown_cluster(repo: Path, run: Run) -> None:
    edit(repo, "environments/production/environment.yaml", "prod-us]", "prod-ap]")
    line = line_of(repo, "environments/production/environment.yaml", "prod-ap")
    assert (f"error: environments/production/environment.yaml:{line}: unknown cluster 'prod-ap'"
            in errors_after(run))


def test_organization_default_pipeline_must_exist(repo: Path, run: Run) -> None:
    edit(repo, "organization.yaml", "defaultPipeline: standard", "defaultPipeline: gold")
    line = line_of(repo, "organization.yaml", "gold")
    assert f"error: organization.yaml:{line}: unknown pipeline 'gold'" in errors_after(run)


def test_project_attaches_an_unknown_pipeline(repo: Path, run: Run) -> None:
    edit(repo, "projects/shop/project.yaml", "[standard, fast-lane]", "[standard, turbo]")
    line = line_of(repo, "projects/shop/project.yaml", "turbo")
    assert f"error: projects/shop/project.yaml:{line}: unknown pipeline 'turbo'" in errors_after(run)


def test_component_pipeline_must_be_one_of_its_projects(repo: Path, run: Run) -> None:
    edit(repo, "projects/identity/components/auth/component.yaml", "type: service",
         "type: service\npipeline: fast-lane")
    assert any("pipeline 'fast-lane' is not one of project identity's pipelines: standard" in e
               for e in errors_after(run))


def test_approvers_must_be_organization_groups(repo: Path, run: Run) -> None:
    edit(repo, "pipelines/standard.yaml", "approvers: [platform]", "approvers: [release-team]")
    assert any("unknown group 'release-team'" in e for e in errors_after(run))


def test_folder_and_file_names_must_match_the_names_inside(repo: Path, run: Run) -> None:
    os.rename(repo / "clusters/prod-us.yaml", repo / "clusters/prod-ap.yaml")
    errors = errors_after(run)
    line = line_of(repo, "clusters/prod-ap.yaml", "name:")
    assert (f"error: clusters/prod-ap.yaml:{line}: name 'prod-us' does not match the file name "
            "'prod-ap'") in errors


def test_release_in_the_wrong_component_folder(repo: Path, run: Run) -> None:
    edit(repo, f"{STAGING}/release.yaml", "component: shop/checkout", "component: shop/catalog")
    assert any("component 'shop/catalog' does not match the folder 'shop/checkout'" in e
               for e in errors_after(run))


def test_release_must_name_a_registered_build(repo: Path, run: Run) -> None:
    text = (repo / f"{STAGING}/release.yaml").read_text()
    commit = next(line.split()[1] for line in text.splitlines() if line.startswith("commit:"))
    edit(repo, f"{STAGING}/release.yaml", commit, "f" * 40)
    line = line_of(repo, f"{STAGING}/release.yaml", "commit:")
    assert (f"error: {STAGING}/release.yaml:{line}: no registered build of shop/checkout for commit "
            f"{'f' * 40}") in errors_after(run)


def test_release_digest_must_equal_the_builds(repo: Path, run: Run) -> None:
    text = (repo / f"{STAGING}/release.yaml").read_text()
    digest = text.split("sha256:")[1][:64]
    edit(repo, f"{STAGING}/release.yaml", digest, "0" * 64)
    line = line_of(repo, f"{STAGING}/release.yaml", "image:")
    assert any(e.startswith(f"error: {STAGING}/release.yaml:{line}: digest differs from the "
                            "registered build") for e in errors_after(run))


def test_build_must_be_on_a_track_of_the_component(repo: Path, run: Run) -> None:
    build = next((repo / "builds/shop/catalog").iterdir())
    edit(repo, f"builds/shop/catalog/{build.name}", "track: main", "track: feature-x")
    assert any("'feature-x' is not a track of shop/catalog (tracks: main)" in e
               for e in errors_after(run))


def test_release_version_must_be_on_a_track(repo: Path, run: Run) -> None:
    release = f"{STAGING}/release.yaml"
    edit(repo, release, "version: v1.2", "version: v7.0")
    assert (f"error: {release}:{line_of(repo, release, 'version:')}: version v7.0 is not on a "
            "track of shop/checkout (tracks: v1.2)") in errors_after(run)


def test_release_in_an_environment_outside_the_pipeline(repo: Path, run: Run) -> None:
    source = repo / "environments/production/shop/reindex/release.yaml"
    write(repo, "environments/staging/shop/reindex/release.yaml",
          source.read_text(), header=False)
    assert any("environment 'staging' is not a stage of shop/reindex's pipeline 'fast-lane'" in e
               for e in errors_after(run))


def test_release_of_an_unknown_component(repo: Path, run: Run) -> None:
    source = repo / f"{STAGING}/release.yaml"
    write(repo, "environments/staging/shop/payments/release.yaml",
          source.read_text().replace("shop/checkout", "shop/payments"), header=False)
    assert ("error: environments/staging/shop/payments/release.yaml:1: unknown component "
            "shop/payments") in errors_after(run)


def test_connection_to_an_unknown_endpoint(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "service: shop/catalog/api", "service: shop/catalog/rpc")
    line = line_of(repo, CHECKOUT, "service: shop/catalog/rpc")
    assert f"error: {CHECKOUT}:{line}: shop/catalog has no endpoint 'rpc'" in errors_after(run)


def test_connection_to_an_unknown_component(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "service: shop/catalog/api", "service: shop/search/api")
    assert any("unknown component shop/search" in e for e in errors_after(run))


def test_connection_to_an_unknown_third_party_service(repo: Path, run: Run) -> None:
    edit(repo, "projects/shop/project.yaml", "service: twilio", "service: sendgrid")
    assert any(e.startswith("error: projects/shop/project.yaml:") and
               "unknown service 'sendgrid'" in e for e in errors_after(run))


def test_connection_across_projects_needs_organization_visibility(repo: Path,
                                                                   run: Run) -> None:
    edit(repo, "projects/identity/components/gateway/component.yaml",
         "service: identity/auth/api\n    version: v3",
         "service: shop/catalog/api\n    version: v1")
    assert any("shop/catalog/api is visible only inside project shop" in e
               for e in errors_after(run))


def test_connection_version_must_exist(repo: Path, run: Run) -> None:
    edit(repo, STOREFRONT, "version: v1\n    env: {url: CHECKOUT_URL", "version: v2\n    env: "
         "{url: CHECKOUT_URL")
    assert any("shop/checkout has no v2 track" in e for e in errors_after(run))


def test_connection_target_must_be_released_in_the_environment(repo: Path, run: Run) -> None:
    (repo / "environments/staging/shop/catalog/release.yaml").unlink()
    assert any(e.startswith(f"error: {STAGING}/release.yaml:1: connection 'catalog' needs "
                            "shop/catalog, which has no release in staging")
               for e in errors_after(run))


def test_missing_required_configurable_is_named(repo: Path, run: Run) -> None:
    (repo / "environments/staging/shop/checkout/config.yaml").unlink()
    assert (f"error: {STAGING}/release.yaml:1: staging lacks required configurables of "
            "shop/checkout: PAYMENT_PROVIDER_URL") in errors_after(run)


def test_required_secret_configurable_is_seen_without_decrypting(repo: Path, run: Run) -> None:
    edit(repo, CHECKOUT, "{name: PAYMENT_API_KEY, secret: true}",
         "{name: PAYMENT_API_KEY, secret: true, required: true}")
    errors = errors_after(run)
    assert any("lacks required configurables of shop/checkout: PAYMENT_API_KEY (secret)" in e
               for e in errors)
    for environment in ("staging", "production"):  # development has the example's own
        write(repo, f"environments/{environment}/shop/checkout/secrets/PAYMENT_API_KEY.sops.yaml",
              "kind: Secrets\ndata:\n  PAYMENT_API_KEY: ENC[AES256_GCM,data:cGF5,iv:aXY=,"
              "tag:dGFn,type:str]\nsops: {version: 3.9.0}\n")
    assert run("validate").exit_code == 0


def test_secret_configurable_in_plain_config_is_refused(repo: Path, run: Run) -> None:
    edit(repo, f"{STAGING}/config.yaml", "env:", "env:\n  PAYMENT_API_KEY: hunter2")
    errors = errors_after(run)
    assert any("PAYMENT_API_KEY is a secret: keep it encrypted in "
               "secrets/PAYMENT_API_KEY.sops.yaml (reconciler secret set), never in plain config"
               in e for e in errors)
    assert not any("hunter2" in e for e in errors)


def test_replicas_override_only_in_environment_config(repo: Path, run: Run) -> None:
    edit(repo, "projects/shop/components/checkout/config.yaml", "kind: Config",
         "kind: Config\nreplicas: 3")
    assert any("replicas may only be overridden in an environment's config" in e
               for e in errors_after(run))


def test_two_files_stored_under_one_configmap_key_are_refused(repo: Path, run: Run) -> None:
    component_config = "projects/shop/components/checkout/config.yaml"
    edit(repo, component_config, "  - path: /etc/checkout/app.toml",
         "  - {path: /etc/checkout.app.toml, content: a}\n"
         "  - {path: /etc/checkout.app.toml, content: b}\n"
         "  - path: /etc/checkout/app.toml")
    write(repo, f"{STAGING}/config.yaml", "kind: Config\nenv: {PAYMENT_PROVIDER_URL: x}\n"
          "files:\n  - {path: /etc/checkout/app.toml, content: override}\n"
          "  - {path: /etc/a/b, content: x}\n  - {path: /etc/a.b, content: y}\n")
    assert errors_after(run) == [
        f"error: {STAGING}/config.yaml:5: file '/etc/checkout/app.toml' and "
        f"'/etc/checkout.app.toml' of {component_config} would both be stored as "
        "'etc.checkout.app.toml': rename one",
        f"error: {STAGING}/config.yaml:7: file '/etc/a.b' and '/etc/a/b' would both be stored "
        "as 'etc.a.b': rename one",
        f"error: {component_config}:8: file '/etc/checkout.app.toml' is listed twice",
        f"error: {component_config}:9: file '/etc/checkout/app.toml' and '/etc/checkout.app.toml' "
        "would both be stored as 'etc.checkout.app.toml': rename one",
    ]


def test_two_components_whose_services_share_a_name_are_refused(repo: Path, run: Run) -> None:
    catalog = "projects/shop/components/catalog/component.yaml"
    edit(repo, catalog, "endpoints:\n", "endpoints:\n  - {name: api-v2, port: 4001, type: REST, "
         "visibility: project}\n")
    write(repo, "projects/shop/components/catalog-api/component.yaml",
          "kind: Component\nname: catalog-api\ntype: service\n"
          "source: {repository: https://github.com/acme/shop}\n"
          "tracks: [{branch: main, version: v1.0}]\n"
          "endpoints:\n  - {name: v2, port: 8080, type: REST, visibility: project}\n")
    assert errors_after(run) == [
        "error: projects/shop/components/catalog-api/component.yaml:8: Service 'catalog-api-v2' "
        "is also the Service of shop/catalog endpoint 'api-v2': rename an endpoint or a "
        "component",
        f"error: {catalog}:12: Service 'catalog-api-v2' is also the Service of shop/catalog-api "
        "endpoint 'v2': rename an endpoint or a component",
    ]


def test_api_contract_file_must_exist(repo: Path, run: Run) -> None:
    (repo / "projects/shop/components/checkout/openapi.yaml").unlink()
    assert any("API contract 'openapi.yaml' is not in projects/shop/components/checkout/" in e
               for e in errors_after(run))


def test_unexpected_files_in_the_layout_are_reported(repo: Path, run: Run) -> None:
    write(repo, f"{STAGING}/relase.yaml", "kind: Release\n")
    assert (f"error: {STAGING}/relase.yaml:1: unexpected file: not part of the state repo "
            "layout") in errors_after(run)


def test_symbolic_links_are_refused(repo: Path, run: Run) -> None:
    target = repo / f"{STAGING}/config.yaml"
    target.unlink()
    target.symlink_to("/etc/passwd")
    assert (f"error: {STAGING}/config.yaml:1: symbolic links are not allowed in a state repo"
            in errors_after(run))


def test_config_for_an_environment_that_does_not_exist(repo: Path, run: Run) -> None:
    write(repo, "environments/qa/shop/checkout/config.yaml", "kind: Config\n")
    assert any("environment 'qa' has no environment.yaml" in e for e in errors_after(run))


def test_missing_organization_file(repo: Path, run: Run) -> None:
    (repo / "organization.yaml").unlink()
    assert "error: organization.yaml:1: missing: every state repo needs one" in errors_after(run)


def test_broken_files_do_not_hide_reference_problems_elsewhere(repo: Path, run: Run) -> None:
    edit(repo, "environments/staging/environment.yaml", "name: staging", "name: Staging")
    edit(repo, "pipelines/standard.yaml", "environment: production", "environment: prod")
    errors = errors_after(run)
    assert any("environments/staging/environment.yaml" in e and "not a valid name" in e
               for e in errors)
    assert any("pipelines/standard.yaml" in e and "unknown environment 'prod'" in e
               for e in errors)
    assert not any("unknown environment 'staging'" in e or "has no environment.yaml" in e
                   for e in errors), "a broken file's name still counts as existing"


def test_broken_config_does_not_claim_missing_configurables(repo: Path, run: Run) -> None:
    edit(repo, f"{STAGING}/config.yaml", "env:", "envv:")
    errors = errors_after(run)
    assert len(errors) == 1 and "unknown key 'envv'" in errors[0]


def test_symbolic_links_in_a_commit_are_refused_too(repo: Path, run: Run) -> None:
    target = repo / "clusters/prod-us.yaml"
    target.unlink()
    target.symlink_to("prod-eu.yaml")
    commit_all(repo, "link a cluster file")
    result = run("--revision", "HEAD", "validate")
    assert "error: clusters/prod-us.yaml:1: symbolic links are not allowed in a state repo" in (
        result.errors)


def test_component_of_a_project_without_project_file(repo: Path, run: Run) -> None:
    (repo / "projects/identity/project.yaml").unlink()
    assert ("error: projects/identity/components/auth/component.yaml:1: project 'identity' has "
            "no project.yaml") in errors_after(run)
