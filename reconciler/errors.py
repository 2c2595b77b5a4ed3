"""The one base exception for every error a user can cause, and the problems it carries.

The CLI maps a ``ReconcilerError`` to an exit code and prints its problems, one per
line; anything else is a bug and may show a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong, located in a state repo file when it comes from one."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        if not self.path:
            return self.message
        return f"{self.path}:{self.line or 1}: {self.message}"


class ReconcilerError(Exception):
    """An expected error: bad state, a refused request, an unreachable cluster."""

    exit_code = 1

    def __init__(self, message: str, path: str = "", line: int = 0) -> None:
        super().__init__(message)
        self.problems: tuple[Problem, ...] = (Problem(path, line, message),)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class InvalidState(ReconcilerError):
    """The state repo has one or more problems; all of them are reported at once."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        found = tuple(sorted(set(problems)))
        super().__init__(found[0].message if found else "invalid state")
        self.problems = found


class UsageError(ReconcilerError):
    """The command was called wrongly (exit code 2, like click's own usage errors)."""

    exit_code = 2
