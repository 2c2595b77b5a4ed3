"""Where each kind lives in a state repo (DESIGN §3), both ways: the path of an object, and
the kind and names a path stands for. The one home of the layout: nothing else spells a
state repo path."""

from __future__ import annotations

import re

ORGANIZATION_FILE = "organization.yaml"
TEMPLATES_FOLDER = "templates/"
ENVIRONMENTS_FOLDER = "environments/"
BUILDS_FOLDER = "builds/"
STATE_FOLDERS = ("clusters/", "pipelines/", "projects/", BUILDS_FOLDER, ENVIRONMENTS_FOLDER,
                 "marketplace/")
LEGACY_SECRETS_FILE = "secrets.sops.yaml"
"""Before one file per secret, all of a component's secrets in one environment were here."""

_SEG = r"([^/]+)"
LAYOUT: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern + r"\Z"))
    for kind, pattern in (
        ("Organization", r"organization\.yaml"),
        ("Cluster", rf"clusters/{_SEG}\.yaml"),
        ("Pipeline", rf"pipelines/{_SEG}\.yaml"),
        ("Project", rf"projects/{_SEG}/project\.yaml"),
        ("Component", rf"projects/{_SEG}/components/{_SEG}/component\.yaml"),
        ("Config", rf"projects/{_SEG}/components/{_SEG}/config\.yaml"),
        ("Build", rf"builds/{_SEG}/{_SEG}/{_SEG}\.yaml"),
        ("Environment", rf"environments/{_SEG}/environment\.yaml"),
        ("Release", rf"environments/{_SEG}/{_SEG}/{_SEG}/release(?:-(v[0-9]+))?\.yaml"),
        ("Config", rf"environments/{_SEG}/{_SEG}/{_SEG}/config\.yaml"),
        ("Secrets", rf"environments/{_SEG}/{_SEG}/{_SEG}/secrets/{_SEG}\.sops\.yaml"),
        ("ThirdPartyService", rf"marketplace/third-party/{_SEG}\.yaml"),
    )
)
"""Each kind's path pattern; the groups are the names the path gives (project, component...)."""
_LEGACY_SECRETS = re.compile(rf"environments/{_SEG}/{_SEG}/{_SEG}/{re.escape(LEGACY_SECRETS_FILE)}\Z")
_COMPONENT_FOLDER_FILE = re.compile(r"projects/[^/]+/components/[^/]+/.+\Z")


def classify(path: str) -> tuple[str, tuple[str, ...]]:
    """The kind a path holds and the names it gives, or ``("", ())`` outside the layout."""
    for kind, pattern in LAYOUT:
        match = pattern.match(path)
        if match:
            return kind, tuple(group or "" for group in match.groups())
    return "", ()


def legacy_secrets(path: str) -> tuple[str, str, str] | None:
    """(environment, project, component) of an old many-secret file, else None."""
    match = _LEGACY_SECRETS.match(path)
    return (match[1], match[2], match[3]) if match else None


def is_free_file(path: str) -> bool:
    """Files the layout leaves to users: component folder contents and documentation."""
    return bool(_COMPONENT_FOLDER_FILE.match(path)) or path.endswith((".md", "/.gitkeep"))


def cluster_path(cluster: str) -> str:
    return f"clusters/{cluster}.yaml"


def pipeline_path(pipeline: str) -> str:
    return f"pipelines/{pipeline}.yaml"


def project_path(project: str) -> str:
    return f"projects/{project}/project.yaml"


def component_folder(project: str, component: str) -> str:
    return f"projects/{project}/components/{component}"


def component_path(project: str, component: str) -> str:
    return f"{component_folder(project, component)}/component.yaml"


def build_path(project: str, component: str, commit: str) -> str:
    return f"{BUILDS_FOLDER}{project}/{component}/{commit}.yaml"


def environment_path(environment: str) -> str:
    return f"{ENVIRONMENTS_FOLDER}{environment}/environment.yaml"


def release_folder(environment: str, project: str, component: str) -> str:
    return f"{ENVIRONMENTS_FOLDER}{environment}/{project}/{component}"


def release_path(environment: str, project: str, component: str, major: str = "") -> str:
    """A component's release in an environment: ``release.yaml`` while it runs one API
    major there, ``release-<major>.yaml`` per major while several run side by side."""
    name = f"release-{major}.yaml" if major else "release.yaml"
    return f"{release_folder(environment, project, component)}/{name}"


def release_paths(environment: str, project: str, component: str,
                  majors: list[str]) -> list[str]:
    """Where the releases of ``majors`` (the lines an environment runs) are kept."""
    if len(majors) == 1:
        return [release_path(environment, project, component)]
    return [release_path(environment, project, component, found) for found in majors]


def config_path(project: str, component: str, environment: str | None = None) -> str:
    """A component's configuration: for all environments, or one environment's."""
    if environment:
        return f"{release_folder(environment, project, component)}/config.yaml"
    return f"{component_folder(project, component)}/config.yaml"


def secret_path(environment: str, project: str, component: str, key: str) -> str:
    """Where one secret lives: the file is named by its key."""
    return f"{release_folder(environment, project, component)}/secrets/{key}.sops.yaml"


VERIFICATIONS_REFS = "refs/reconciler/verifications/"
"""Verification records live under this ref namespace of the state repo's remote, one ref
per cluster, never on a branch."""


def verification_ref(cluster: str) -> str:
    return f"{VERIFICATIONS_REFS}{cluster}"


def verification_path(environment: str, project: str, component: str, line: str = "") -> str:
    """A record's file in its cluster's ref: one per (environment, component), or per major
    line while several run side by side (names have no dots, so ``catalog.v1`` is free)."""
    return f"{environment}/{project}/{component}{'.' + line if line else ''}.yaml"
