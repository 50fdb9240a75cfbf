"""What every exercise check shares: the three outcomes (passed, not attempted, skipped) and the failure, how each is
shown, the number checks, and Grok 2.5's plan and config (expected values are computed from them, never typed in)."""

from __future__ import annotations

import math
from dataclasses import dataclass

PASSED, NOT_ATTEMPTED, SKIPPED = "passed", "not attempted", "skipped"


class ExerciseFailed(AssertionError):
    """A wrong answer. The message starts with ❌ and says what is wrong."""


@dataclass(frozen=True)
class Result:
    exercise: str
    status: str  # "passed", "not attempted" or "skipped"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def ok(self) -> bool:
        """Passed, or skipped because this machine cannot run it (what a solution notebook requires)."""
        return self.status in (PASSED, SKIPPED)

    def _ipython_display_(self) -> None:
        """Shown as the last line of a cell: nothing more, the check has already printed its line."""

    def __str__(self) -> str:
        mark = {PASSED: "✅", NOT_ATTEMPTED: "⏳", SKIPPED: "⏭"}[self.status]
        return f"{mark} {self.exercise}: {self.message}"


def report(exercise: str, status: str, message: str) -> Result:
    result = Result(exercise, status, message)
    print(result)
    return result


def passed(exercise: str, message: str) -> Result:
    return report(exercise, PASSED, message)


def not_attempted(exercise: str, hint: str) -> Result:
    return report(exercise, NOT_ATTEMPTED, f"not attempted yet. {hint}")


def skipped(exercise: str, why: str) -> Result:
    return report(exercise, SKIPPED, f"skipped: {why}")


def fail(exercise: str, what: str) -> None:
    raise ExerciseFailed(f"❌ {exercise}: {what}")


def number(exercise: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        fail(exercise, f"`{name}` should be a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        fail(exercise, f"`{name}` is {value}; expected a finite number.")
    return value


def whole(exercise: str, name: str, value) -> int:
    as_number = number(exercise, name, value)
    if as_number != int(as_number):
        fail(exercise, f"`{name}` = {value} is not a whole number (a count of GPUs/parameters/requests is).")
    return int(as_number)


def grok_plan():
    """The released Grok 2.5's memory plan: helpers.memory's one cached copy (read it, do not change it)."""
    from ..memory import grok2_released_plan

    return grok2_released_plan()


def grok_config():
    """The released Grok 2.5 config (the copy shipped in data/): helpers.memory's one cached copy."""
    from ..memory import grok2_released_config

    return grok2_released_config()
