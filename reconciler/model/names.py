"""The names the model gives Kubernetes objects and labels, defined once."""

from __future__ import annotations

import re

from reconciler.errors import ReconcilerError

LABEL_PREFIX = "reconciler.io"
"""The one prefix of the tool's own labels and annotations on every object it renders."""
MANAGED_BY = "reconciler"
MAJOR_LABEL = f"{LABEL_PREFIX}/major"
"""Set on the objects and pods of a release line while its component runs several API majors
side by side: each line's Services select only its own pods."""
SYSTEM_NAMESPACE = "reconciler-system"
"""The tool's own namespace in each cluster: inventories, status, task records, the Lease."""

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""An environment variable name (schemas' ``envName``): also a secret's file name."""


def namespace_name(project: str, environment: str) -> str:
    """Each (project, environment) has its own namespace."""
    return f"{project}-{environment}"


def service_name(component: str, endpoint: str, line: str = "") -> str:
    """Each endpoint is a Service, and a marketplace entry, of this name; a component that
    runs API majors side by side has one per major line (``catalog-api-v1``)."""
    name = f"{component}-{endpoint}"
    return f"{name}-{line}" if line else name


def route_path(project: str, workload: str, endpoint: str) -> str:
    """The path a public HTTP endpoint is served under on its environment's host (the
    built-in ingress template's): a major line's own while several run side by side."""
    return f"/{project}/{workload}/{endpoint}"


def workload_name(component: str, line: str = "") -> str:
    """The name of a release line's workload and its own objects: the component's name, or
    ``<component>-<major>`` for a line of a component that runs majors side by side."""
    return f"{component}-{line}" if line else component


def major(version: str) -> str:
    """The API major of ``vMAJOR.MINOR``: ``v1``."""
    return version.split(".")[0]


def major_order(name: str) -> tuple[int, str]:
    """Sorts majors by number: v2 before v10."""
    digits = name.removeprefix("v")
    return (int(digits), name) if digits.isdigit() else (-1, name)


def split_ref(ref: str) -> tuple[str, str]:
    """``PROJECT/COMPONENT`` -> (project, component)."""
    project, _, component = ref.partition("/")
    if not project or not component or "/" in component:
        raise ReconcilerError(f"{ref!r} is not a component: use PROJECT/COMPONENT")
    return project, component


def file_key(path: str) -> str:
    """The ConfigMap key a configuration file is stored under (and mounted from)."""
    return path.strip("/").replace("/", ".")
