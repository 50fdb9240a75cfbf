"""helpers.expect, the lessons' own checks: a true claim prints one ✓ line; a false one stops the lesson with a
message that names the claim and what was found; a check without a claim is refused."""

from __future__ import annotations

import pytest

import helpers
from helpers.lesson_checks import LessonCheckFailed


def test_a_true_claim_prints_one_line(capsys):
    assert helpers.expect(2 + 2 == 4, "two and two make four") is None
    assert capsys.readouterr().out == "✓ two and two make four\n"


def test_a_false_claim_stops_with_the_claim_and_what_was_found(capsys):
    with pytest.raises(LessonCheckFailed) as failure:
        helpers.expect([], "the list has items", found="an empty list")
    message = str(failure.value)
    assert message.startswith("✗ expected: the list has items\n  found: an empty list")
    assert "Restart Kernel and Run All Cells" in message and isinstance(failure.value, AssertionError)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("shows", ["", "   ", None, 3])
def test_a_check_must_say_what_it_shows(shows):
    with pytest.raises(TypeError, match="says what the check shows"):
        helpers.expect(True, shows)

