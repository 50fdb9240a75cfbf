"""Markdown tables: rows of dicts as one Markdown table, the same cell rules wherever the course shows a table.

    markdown_table([{"precision": "nf4", "MB": 0.41468, "fits": True}])
    # | precision | MB | fits |
    # |---|---|---|
    # | nf4 | 0.4147 | yes |

In Jupyter: `display(Markdown(markdown_table(rows)))`; elsewhere print it. Lessons, benchmarks, the route planner
(`helpers.machines`) and the article's verdicts (`helpers.article`) all build their tables here.
"""

from __future__ import annotations

import math
from typing import Sequence

MISSING = "-"  # a value that is absent (None) or undefined (NaN)


def markdown_cell(value) -> str:
    """One cell: None and NaN as "-", booleans as yes / no, floats to 4 significant digits (whole numbers with
    thousands separators from 1,000 up), and the text kept on one line with its pipes escaped, so that a value can
    never split or end its row."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table, one row per dict; `columns` picks and orders them (default: the first row's keys). A key a
    row lacks shows as "-". No rows: an empty string."""
    if not rows:
        return ""
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(markdown_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["MISSING", "markdown_cell", "markdown_table"]
