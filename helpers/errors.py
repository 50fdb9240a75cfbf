"""One exception type for every problem a learner can fix: it says what went wrong and what to do about it."""

from __future__ import annotations


class CourseError(RuntimeError):
    """A problem with a known fix. `str(error)` reads: what happened, then 'Fix: ...'."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\nFix: {fix}")
