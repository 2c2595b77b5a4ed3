"""Load and render a new commit in a child process, so the daemon keeps only the result.

Loading and rendering 10,000 objects makes and drops hundreds of thousands of small Python
objects. Done in the daemon, they sit among the objects it keeps, and Python's allocator can
hand back none of the arenas that hold both: a daemon that had applied 10,008 objects stayed
near 270 MiB. So a fresh interpreter of this installation does that work (with the daemon's
``sys.path``; a request on stdin, the answer on stdout) and exits, and its memory goes with it. What comes
back is only what a pass needs for each environment of the cluster: the packed render, the
verification targets, the task components and the problems, plus the caches that keep the
next commit's load and render incremental.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import sops
from reconciler.cache import Cache
from reconciler.errors import ReconcilerError
from reconciler.git.store import GitTree
from reconciler.load.loader import load_state_and_problems
from reconciler.model.kinds import TASK_TYPES, Component, State
from reconciler.model.paths import classify
from reconciler.render.engine import PackedRender, render_environment
from reconciler.render.workloads import VerificationTarget, verification_targets

STATE_CACHE = "state"


@dataclass(frozen=True)
class PreparedEnvironment:
    """One environment of the cluster at one commit, ready to apply (or why it is not)."""

    environment: str
    rendered: PackedRender | None
    error: str = ""
    """Why there is no render: the first of its problems, or the render's error."""
    problems: tuple[str, ...] = ()
    targets: tuple[VerificationTarget, ...] = ()
    tasks: tuple[Component, ...] = ()


@dataclass(frozen=True)
class Prepared:
    """A commit as the daemon applies it."""

    commit: str
    environments: dict[str, PreparedEnvironment] = field(default_factory=dict)
    """Every environment that includes the cluster, by name."""
    problems: tuple[str, ...] = ()
    """Problems of files every environment uses: then nothing is applied."""
    caches: dict[str, bytes] = field(default_factory=dict)
    """The state and render caches after this commit, for the next (``Cache.restored``)."""

    @property
    def failed(self) -> bool:
        """Whether an environment could not be rendered: worth preparing again (a key file
        mounted late), where a clean result of the same commit is kept."""
        return any(prepared.error and not prepared.problems
                   for prepared in self.environments.values())


def _environment_of(path: str) -> str:
    """The environment a problem's file belongs to ('' for files every environment uses)."""
    kind, names = classify(path)
    return names[0] if kind in ("Environment", "Release", "Config", "Secrets") and \
        path.startswith("environments/") else ""


def _render_cache(environment: str) -> str:
    return f"render/{environment}"


def prepare(repo: Path, commit: str, cluster: str, age_key_file: Path | None,
            caches: Mapping[str, bytes]) -> Prepared:
    """Load ``commit`` and render each environment of ``cluster``, in this process."""
    files = Cache.restored(STATE_CACHE, caches.get(STATE_CACHE))
    state, problems = load_state_and_problems(GitTree(repo, commit), files)
    exported = {**caches, STATE_CACHE: files.export()}  # a render cache unused: kept as is
    by_environment: dict[str, list[str]] = {}
    for problem in problems:
        by_environment.setdefault(_environment_of(problem.path), []).append(str(problem))
    if by_environment.get(""):
        return Prepared(commit, problems=tuple(by_environment[""]), caches=exported)
    environments = {}
    for environment in sorted(name for name, env in state.environments.items()
                              if cluster in env.clusters):
        own = tuple(by_environment.get(environment, ()))
        if own:
            environments[environment] = PreparedEnvironment(environment, None, own[0], own)
            continue
        cache = Cache.restored("render", caches.get(_render_cache(environment)))
        environments[environment] = _prepare_environment(state, environment, cluster,
                                                         age_key_file, cache)
        exported[_render_cache(environment)] = cache.export()
    return Prepared(commit, environments, caches=exported)


def _prepare_environment(state: State, environment: str, cluster: str,
                         age_key_file: Path | None, cache: Cache) -> PreparedEnvironment:
    try:
        rendered = render_environment(
            state, environment, cluster=cluster,
            decrypt=sops.decryptor(lambda: sops.identities(age_key_file), environment),
            cache=cache, documents=False)
    except ReconcilerError as exc:
        return PreparedEnvironment(environment, None, str(exc))
    tasks = tuple({component.ref: component
                   for release in state.releases_in(environment)
                   if (component := state.components.get((release.project,
                                                          release.component))) is not None
                   and component.type in TASK_TYPES}.values())
    return PreparedEnvironment(environment, rendered.pack(),
                               targets=verification_targets(state, environment), tasks=tasks)


@dataclass(frozen=True)
class _Request:
    repo: Path
    commit: str
    cluster: str
    age_key_file: Path | None
    caches: Mapping[str, bytes]


def prepare_in_child(repo: Path, commit: str, cluster: str, age_key_file: Path | None,
                     caches: Mapping[str, bytes]) -> Prepared:
    """``prepare`` in a fresh interpreter of this installation. Its errors are raised here as
    the same message; a child that dies says how."""
    request = pickle.dumps(_Request(repo, commit, cluster, age_key_file, caches))
    try:
        child = subprocess.run([sys.executable, "-c", _CHILD, *sys.path], input=request,
                               stdout=subprocess.PIPE, check=False)
    except OSError as exc:
        raise ReconcilerError(f"cannot start a process to load {commit[:12]}: {exc}") from None
    try:
        outcome = pickle.loads(child.stdout) if child.returncode == 0 else None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        outcome = None
    if isinstance(outcome, Prepared):
        return outcome
    if isinstance(outcome, str):
        raise ReconcilerError(outcome)
    raise ReconcilerError(f"the process loading {commit[:12]} exited with status "
                          f"{child.returncode} (its error is on stderr)")


_CHILD = ("import sys; sys.path[:] = sys.argv[1:]; "
          "from reconciler.daemon.prepare import main; main()")
"""The child's program: the daemon's module path, so the same code loads and renders."""


def main() -> None:
    """The child: a request on stdin, the pickled answer on stdout (anything else a library
    prints goes to stderr, so it can't garble the answer)."""
    answer = sys.stdout.buffer
    sys.stdout = sys.stderr
    request = pickle.loads(sys.stdin.buffer.read())
    try:
        outcome: Prepared | str = prepare(request.repo, request.commit, request.cluster,
                                          request.age_key_file, request.caches)
    except ReconcilerError as exc:
        outcome = str(exc)
    answer.write(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    answer.flush()
