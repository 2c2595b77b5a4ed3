"""Load and render a new commit in a child process, so the daemon keeps only the result.

Loading and rendering 10,000 objects makes and drops hundreds of thousands of small Python
objects. Done in the daemon, they sit among the objects it keeps, and Python's allocator can
hand back none of the arenas that hold both: a daemon that had applied 10,008 objects stayed
near 270 MiB. So a fresh interpreter of this installation does that work (with the
daemon's ``sys.path``; a request on stdin, the answer on stdout) and exits, and its memory
goes with it. What comes back is only what a pass needs for each environment of the
cluster: the packed render, the verification targets, the task components and the
problems, plus the caches that keep the next commit's load and render incremental.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
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
TIMEOUT = 900.0
"""Seconds a load and render may take before the child is killed and the pass fails."""


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
        prepared = _prepare_environment(state, environment, cluster, age_key_file, cache)
        environments[environment] = prepared
        if prepared.rendered is not None:  # a render cut short keeps the cache it had
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
    except Exception as exc:  # a bug: only its type, a message may hold secrets
        return PreparedEnvironment(environment, None, f"rendering {environment} failed "
                                   f"unexpectedly ({type(exc).__name__}); nothing was applied")
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
                     caches: Mapping[str, bytes], cancelled: Callable[[], bool] = lambda: False,
                     timeout: float = TIMEOUT) -> Prepared:
    """``prepare`` in a fresh interpreter of this installation. Its errors are raised here as
    the same message; a child that dies, hangs past ``timeout`` or is ``cancelled`` (checked
    every second) is killed and reported. The child has a session of its own, so a Ctrl-C
    meant for the daemon reaches the daemon only."""
    request = pickle.dumps(_Request(repo, commit, cluster, age_key_file, caches))
    try:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, *sys.path],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 start_new_session=True)
    except OSError as exc:
        raise ReconcilerError(f"cannot start a process to load {commit[:12]}: {exc}") from None
    deadline = time.monotonic() + timeout
    pending: bytes | None = request
    while True:
        try:
            output, _ = child.communicate(pending, timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            pending = None  # already handed over: communicate keeps feeding it
            if cancelled() or time.monotonic() > deadline:
                child.kill()
                child.communicate()
                raise ReconcilerError(
                    f"stopped loading {commit[:12]}" if cancelled() else
                    f"loading {commit[:12]} took more than {timeout:.0f} s; stopped") from None
    try:
        outcome = pickle.loads(output) if child.returncode == 0 else None
    except Exception:  # garbage on the pipe is a failed child, never a crash
        outcome = None
    if isinstance(outcome, Prepared):
        return outcome
    if isinstance(outcome, str):
        raise ReconcilerError(outcome)
    how = (f"was killed by signal {-child.returncode}" if child.returncode < 0 else
           f"exited with status {child.returncode}")
    raise ReconcilerError(f"the process loading {commit[:12]} {how} (see the daemon's stderr)")


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
    except Exception as exc:  # a bug: only its type, a message may hold secrets
        outcome = f"loading {request.commit[:12]} failed unexpectedly ({type(exc).__name__})"
    answer.write(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    answer.flush()
