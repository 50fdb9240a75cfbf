"""tests/bad_inputs.md lists the bad inputs the course answers: every test it names exists, every item of the attack
report (issue #18, items 1-20) has its rows, every bad-input test is listed, and the list only grows."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TABLE = TESTS / "bad_inputs.md"
# The number of rows. Raise it when you add rows, never lower it (a removed row is a bad input nobody checks any
# more); the test wants it exact, so that adding a row without raising it fails too.
ROWS = 107
ISSUE_18_ITEMS = range(1, 21)


def rows() -> list[tuple[str, str, str, str]]:
    """(#18 item or "", input, answer, test) for every row of the table."""
    found = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 4 and cells[3] not in ("test", "---") and not set(cells[3]) <= {"-"}:
            found.append(tuple(cells))
    return found


def test_every_row_names_a_test_that_exists():
    missing = []
    for _item, _input, answer, test in rows():
        path, _, name = test.partition("::")
        file = TESTS.parent / path
        name = name.split("[")[0]
        if not file.exists() or not re.search(rf"^\s*(async )?def {re.escape(name)}\(", file.read_text(), re.M):
            missing.append(test)
        assert answer, f"{test}: say what the answer is"
    assert not missing, f"tests named in {TABLE.name} that do not exist: {missing}"


def test_the_table_only_grows_and_has_no_duplicates():
    table = rows()
    assert len(table) >= ROWS, f"{TABLE.name} has {len(table)} rows, fewer than {ROWS}: a bad input lost its test"
    assert len(table) == ROWS, f"{TABLE.name} has {len(table)} rows: raise ROWS in {Path(__file__).name} to {len(table)}"
    inputs = [row[1] for row in table]
    assert len(set(inputs)) == len(inputs), "the same bad input is listed twice"


def test_every_item_of_the_attack_report_has_its_rows():
    items = [row[0] for row in rows()]
    assert all(item == "" or (item.isdigit() and int(item) in ISSUE_18_ITEMS) for item in items), set(items)
    missing = [n for n in ISSUE_18_ITEMS if str(n) not in items]
    assert not missing, f"items of issue #18 with no row in {TABLE.name}: {missing}"


def test_every_bad_input_test_is_in_the_table():
    """The other way round: the test files named after bad input (test_*bad_input*.py) hold no test the table misses."""
    listed = {row[3].split("[")[0] for row in rows()}
    unlisted = []
    for file in sorted(TESTS.glob("test_*bad_input*.py")):
        if file.name == Path(__file__).name:
            continue
        for name in re.findall(r"^def (test_\w+)\(", file.read_text(), re.M):
            if f"tests/{file.name}::{name}" not in listed:
                unlisted.append(f"{file.name}::{name}")
    assert not unlisted, f"bad-input tests missing from {TABLE.name}: {unlisted}"
