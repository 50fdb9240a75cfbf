"""helpers.tables: the one Markdown table formatter (lessons, benchmarks, route plans, the article's verdicts)."""

from __future__ import annotations

from helpers import article, evaluation, machines
from helpers.tables import markdown_table


def test_cells_are_formatted_one_way():
    table = markdown_table([{"precision": "nf4", "MB": 0.41468, "ok": None, "fits": True, "bytes": 539_032_000.0,
                             "ratio": float("nan"), "count": 7}])
    assert table.splitlines() == ["| precision | MB | ok | fits | bytes | ratio | count |", "|---|---|---|---|---|---|---|",
                                  "| nf4 | 0.4147 | - | yes | 539,032,000 | - | 7 |"]


def test_a_cell_can_never_break_its_row():
    rows = [{"a|b": "x|y", "note": "two\nlines"}, {"a|b": "z"}]  # the second row lacks "note"
    assert markdown_table(rows).splitlines() == ["| a\\|b | note |", "|---|---|", "| x\\|y | two lines |", "| z | - |"]
    assert markdown_table(rows, ["note"]).splitlines()[2] == "| two lines |"
    assert markdown_table([]) == ""


def test_every_table_of_the_package_is_this_one():
    assert machines.markdown_table is markdown_table and evaluation.format_table is markdown_table
    verdicts = article.verdict_table()
    assert verdicts.splitlines()[:2] == ["| the article says | verdict | evidence | lesson |", "|---|---|---|---|"]
    assert all(line.count(" | ") == 3 for line in verdicts.splitlines()[2:])  # pipes inside quotes are escaped
