"""A lesson's own checks: one short, named step that says what a result shows, and stops the lesson when it does not.

    expect(report.ok, "every downloaded file matches its pointer's sha256")
    ✓ every downloaded file matches its pointer's sha256

A lesson uses `expect` where a test would use `assert`: the verification stays (a run on CI fails when the claim is
false), but it reads as a step of the lesson. When the claim does not hold, it raises `LessonCheckFailed` (an
`AssertionError`), whose message repeats the claim and adds what was found, so the learner knows which result to
look at. Exercise answers are checked by `helpers.exercises`, not here.
"""

from __future__ import annotations


class LessonCheckFailed(AssertionError):
    """A lesson's claim did not hold on this run. The message starts with ✗ and names the claim."""


def expect(condition, shows: str, found=None) -> None:
    """Print "✓ <shows>" when `condition` is true; otherwise raise LessonCheckFailed naming the claim and `found`.

    `shows` is what the result shows, written for the learner ("the two updates are the same"); `found` (optional) is
    what was seen instead, printed only when the check fails.
    """
    if not isinstance(shows, str) or not shows.strip():
        raise TypeError("expect(condition, shows): `shows` says what the check shows, as a sentence")
    if condition:
        print(f"✓ {shows}")
        return
    message = f"✗ expected: {shows}"
    if found is not None:
        message += f"\n  found: {found}"
    message += ("\n  (Run the lesson again from the top: Kernel > Restart Kernel and Run All Cells. If it fails again, "
                "see the lesson's troubleshooting table.)")
    raise LessonCheckFailed(message)
