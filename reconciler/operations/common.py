"""What every write shares: one commit per operation, with the trailers of DESIGN §4, made
by ``run`` on the newest tip of the branch.

An operation is a function of the state at the tip that either refuses with a
``ReconcilerError`` or returns an ``Outcome``: one commit's worth of file changes (or none)
and a summary. The state after the change is validated in full before anything is
committed, and ``run`` re-runs the operation on a newer tip when the remote moved.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import InvalidState, Problem
from reconciler.git.store import GitTree, Write, Written, transact
from reconciler.load.loader import load_state_and_problems
from reconciler.load.readers import Overlay, TreeReader
from reconciler.model.kinds import State

API_VERSION = "reconciler/v1"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def commit_message(subject: str, fields: Mapping[str, str]) -> str:
    lines = [f"{key}: {value}" for key, value in fields.items() if value]
    return f"{subject}\n\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Outcome:
    """What an operation decided, for the command's output, and the problems the state
    still has after it (none new: a write that fixes or rolls back a broken main)."""

    write: Write | None
    summary: str
    remaining: tuple[Problem, ...] = ()


def base_state(tree: TreeReader) -> State:
    """The state at the branch tip, with its problems if it has any: a write that fixes
    main, or only doesn't make it worse (a rollback), must not be refused because main is
    broken."""
    return load_state_and_problems(tree)[0]


def checked(tree: TreeReader, changes: Mapping[str, bytes | None],
            before: tuple[Problem, ...] = ()) -> State:
    """The state after ``changes``; refuses (nothing written) if it would have a problem
    that ``before`` did not have."""
    state, after = load_state_and_problems(Overlay(tree, changes))
    known = {(p.path, p.message) for p in before}
    new = [p for p in after if (p.path, p.message) not in known]
    if new:
        raise InvalidState(new)
    return state


Operation = Callable[[GitTree], Outcome]


@dataclass(frozen=True)
class Result:
    """What ``run`` did: the operation's summary, the commit if it made one, and the
    problems main still has after it (a write may leave a broken main no worse)."""

    summary: str
    written: Written | None
    remaining: tuple[Problem, ...] = ()


def run(repo: Path, operation: Operation, target_branch: str | None = None,
        replace: bool = False) -> Result:
    """Run a write on the newest tip of main and commit (and push) what it returns; with
    ``target_branch``, commit there instead (a pull request's branch, which an unmerged
    different pull request holds unless ``replace``)."""
    outcomes: list[Outcome] = []

    def attempt(tree: GitTree) -> Write | None:
        outcome = operation(tree)
        outcomes[:] = [outcome]
        return outcome.write

    written = transact(repo, attempt, target_branch=target_branch, replace=replace)
    if not outcomes:
        return Result("nothing to do", written)
    return Result(outcomes[-1].summary, written,
                  outcomes[-1].remaining if written is not None else ())

