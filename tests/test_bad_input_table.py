"""tests/bad_inputs.md lists the bad inputs the course answers: every test it names exists, and the list only grows."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TABLE = TESTS / "bad_inputs.md"
# Raise this when you add rows; never lower it (a removed row is a bad input nobody checks any more).
AT_LEAST = 59


def rows() -> list[tuple[str, str, str]]:
    found = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 3 and cells[2] not in ("test", "---") and not set(cells[2]) <= {"-"}:
            found.append(tuple(cells))
    return found


def test_every_row_names_a_test_that_exists():
    missing = []
    for _input, answer, test in rows():
        path, _, name = test.partition("::")
        file = TESTS.parent / path
        name = name.split("[")[0]
        if not file.exists() or not re.search(rf"^\s*(async )?def {re.escape(name)}\(", file.read_text(), re.M):
            missing.append(test)
        assert answer, f"{test}: say what the answer is"
    assert not missing, f"tests named in {TABLE.name} that do not exist: {missing}"


def test_the_table_only_grows_and_has_no_duplicates():
    table = rows()
    assert len(table) >= AT_LEAST, f"{TABLE.name} has {len(table)} rows, fewer than {AT_LEAST}: a bad input lost its test"
    inputs = [row[0] for row in table]
    assert len(set(inputs)) == len(inputs), "the same bad input is listed twice"
