"""The names the model gives Kubernetes objects and labels, defined once."""

from __future__ import annotations

import re

from reconciler.errors import ReconcilerError

LABEL_PREFIX = "reconciler.io"
"""The one prefix of the tool's own labels and annotations on every object it renders."""
MANAGED_BY = "reconciler"
SYSTEM_NAMESPACE = "reconciler-system"
"""The tool's own namespace in each cluster: inventories, status, task records, the Lease."""

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""An environment variable name (schemas' ``envName``): also a secret's file name."""


def namespace_name(project: str, environment: str) -> str:
    """Each (project, environment) has its own namespace."""
    return f"{project}-{environment}"


def service_name(component: str, endpoint: str) -> str:
    """Each endpoint is a Service, and a marketplace entry, of this name."""
    return f"{component}-{endpoint}"


def major(version: str) -> str:
    """The API major of ``vMAJOR.MINOR``: ``v1``."""
    return version.split(".")[0]


def split_ref(ref: str) -> tuple[str, str]:
    """``PROJECT/COMPONENT`` -> (project, component)."""
    project, _, component = ref.partition("/")
    if not project or not component or "/" in component:
        raise ReconcilerError(f"{ref!r} is not a component: use PROJECT/COMPONENT")
    return project, component


def file_key(path: str) -> str:
    """The ConfigMap key a configuration file is stored under (and mounted from)."""
    return path.strip("/").replace("/", ".")
