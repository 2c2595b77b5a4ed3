"""CronJob schedules checked as the Kubernetes API server checks them: robfig/cron v3's
standard parser (five fields or a descriptor), and no ``TZ=``/``CRON_TZ=`` prefix (the
API server wants ``timeZone`` instead). Extensions other cron dialects accept (``L``,
``W``, ``#``, a seconds field, day-of-week 7) are refused, as the API server refuses them.
"""

from __future__ import annotations

import re

_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_DAYS = {name: number for number, name in enumerate(
    ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS))
_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+(ns|us|µs|ms|s|m|h))+")


def schedule_problem(schedule: str) -> str | None:
    """Why the API server would refuse ``schedule``, or None if it accepts it."""
    if "TZ" in schedule:
        return "TZ or CRON_TZ is not allowed in a schedule (Kubernetes wants timeZone)"
    spec = schedule.strip()
    if not spec:
        return "empty schedule"
    if spec.startswith("@"):
        return _descriptor_problem(spec)
    fields = spec.split()
    if len(fields) != len(_FIELDS):
        return f"expected exactly 5 fields (minute hour day-of-month month day-of-week), found " \
               f"{len(fields)}"
    for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for expression in text.split(","):
            problem = _range_problem(expression, low, high, names)
            if problem:
                return f"{name} {expression!r}: {problem}"
    return None


def _descriptor_problem(spec: str) -> str | None:
    if spec in _DESCRIPTORS:
        return None
    if spec.startswith("@every "):
        duration = spec.removeprefix("@every ").strip()
        return None if _GO_DURATION.fullmatch(duration) else (
            f"{duration!r} is not a duration (like 90s, 5m or 1h30m)")
    return f"unknown descriptor {spec!r}"


def _range_problem(expression: str, low: int, high: int, names: dict[str, int]) -> str | None:
    range_and_step = expression.split("/")
    bounds = range_and_step[0].split("-")
    if len(range_and_step) > 2:
        return "too many slashes"
    if len(bounds) > 2:
        return "too many hyphens"
    if bounds[0] in ("*", "?"):
        start, end = low, high
    else:
        try:
            start = _number(bounds[0], names)
            end = _number(bounds[1], names) if len(bounds) == 2 else start
        except ValueError as exc:
            return str(exc)
    if len(range_and_step) == 2:
        try:
            step = _number(range_and_step[1], {})
        except ValueError as exc:
            return str(exc)
        if step == 0:
            return "step of range should be a positive number"
        if len(bounds) == 1 and bounds[0] not in ("*", "?"):
            end = high
    if start < low:
        return f"beginning of range ({start}) below minimum ({low})"
    if end > high:
        return f"end of range ({end}) above maximum ({high})"
    if start > end:
        return f"beginning of range ({start}) beyond end of range ({end})"
    return None


def _number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f"failed to parse int from {text!r}")
    number = int(text)
    if number < 0:
        raise ValueError(f"negative number ({number}) not allowed")
    return number
