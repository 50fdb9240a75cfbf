"""Every notebook parses, validates and is committed clean; every lesson has the parts a lesson must have.

Hygiene (all of notebooks/**): parses with nbformat and validates against the schema; no outputs, execution counts or
saved widget state; kernelspec `python3`; no "TODO".
Lesson structure (notebooks/NN_*.ipynb): the first cell is markdown with "Goals", "Prerequisites" and a time table
whose rows mention CPU, T4 and H100; a "Troubleshooting" heading and an "Exercises" heading.
Nothing is executed here: nbval does that (`bash scripts/course.sh test`).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from helpers.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
LESSON_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


def is_lesson(path: Path) -> bool:
    return path.parent == NOTEBOOK_DIR and bool(LESSON_NAME.match(path.name))


def read(path: Path):
    """The notebook as written (no version conversion); any parse or schema problem, or nbformat warning, raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. MissingIDFieldWarning: a notebook nbformat would have to repair
        notebook = nbformat.reads(path.read_text(encoding="utf-8"), as_version=nbformat.NO_CONVERT)
        nbformat.validate(notebook)
    if notebook.nbformat != 4:
        raise ValueError(f"nbformat {notebook.nbformat}, expected 4")
    return notebook


def parse_problems(path: Path) -> list[str]:
    try:
        read(path)
    except Exception as error:  # noqa: BLE001 - any parse, schema or version error
        return [f"does not parse or validate: {type(error).__name__}: {str(error)[:300]}"]
    return []


def hygiene_problems(notebook) -> list[str]:
    found = []
    if notebook.metadata.get("kernelspec", {}).get("name") != "python3":
        found.append("the kernelspec must be python3")
    if "widgets" in notebook.metadata:
        found.append("saved widget state in the notebook metadata (clear it: it is output)")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and cell.get("outputs"):
            found.append(f"cell {index} carries outputs")
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            found.append(f"cell {index} carries an execution count")
        if "TODO" in cell.source:
            found.append(f"cell {index} contains TODO")
    return found


def headings(notebook) -> list[str]:
    return [line.lstrip("#").strip() for cell in notebook.cells if cell.cell_type == "markdown"
            for line in cell.source.splitlines() if re.match(r"^#{1,6}\s", line)]


def lesson_problems(notebook) -> list[str]:
    found = []
    first = notebook.cells[0] if notebook.cells else None
    if first is None or first.cell_type != "markdown":
        found.append("the first cell must be markdown (goals, prerequisites, time table)")
    else:
        for word in ("Goals", "Prerequisites"):
            if word not in first.source:
                found.append(f"the first cell lacks {word!r}")
        table = "\n".join(line for line in first.source.splitlines() if line.lstrip().startswith("|"))
        for machine in ("CPU", "T4", "H100"):
            if machine not in table:
                found.append(f"the first cell's time table has no {machine} row")
    titles = headings(notebook)
    for section in ("Exercises", "Troubleshooting"):
        if not any(section in title for title in titles):
            found.append(f"no {section!r} heading")
    return found


def problems(path: Path) -> list[str]:
    found = parse_problems(path)
    if found:
        return found
    notebook = read(path)
    return hygiene_problems(notebook) + (lesson_problems(notebook) if is_lesson(path) else [])


# ------------------------------------------------------------------------------------------------- the notebooks


def require_notebooks():
    if not NOTEBOOKS:
        pytest.skip("no notebooks yet")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(NOTEBOOK_DIR)))
def test_notebook_parses_and_validates(path):
    found = parse_problems(path)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(NOTEBOOK_DIR)))
def test_notebook_is_committed_clean(path):
    require_notebooks()
    found = hygiene_problems(read(path))
    assert not found, "\n".join(found) + "\n(strip outputs: Kernel > Restart Kernel and Clear Outputs, then save)"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if is_lesson(p)], ids=lambda p: p.name)
def test_lesson_has_its_parts(path):
    found = lesson_problems(read(path))
    assert not found, "\n".join(found) + "\n(see CONTRIBUTING.md: notebook conventions)"


def test_lesson_names_are_numbered():
    require_notebooks()
    top_level = [p.name for p in NOTEBOOKS if p.parent == NOTEBOOK_DIR]
    assert all(LESSON_NAME.match(name) for name in top_level), top_level


# -------------------------------------------------------------------------------- the checker catches problems


def good_lesson():
    notebook = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    notebook.cells = [
        new_markdown_cell("# 99 · Example\n\n**Goals**\n- one\n\n**Prerequisites**: lesson 00.\n\n"
                          "| hardware | time |\n|---|---|\n| CPU | 1 min |\n| Colab T4 | 1 min |\n| H100 | 1 min |"),
        new_code_cell("print(1)"),
        new_markdown_cell("## Exercises\n\n**Starter**"),
        new_markdown_cell("## Troubleshooting\n\n| you see | fix |"),
    ]
    return notebook


def write(tmp_path: Path, notebook, name: str = "99_example.ipynb") -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(nbformat.writes(notebook) if not isinstance(notebook, str) else notebook, encoding="utf-8")
    return path


def lesson_and_hygiene(path: Path) -> list[str]:
    found = parse_problems(path)
    return found or hygiene_problems(read(path)) + lesson_problems(read(path))


def test_checker_accepts_a_good_lesson(tmp_path):
    assert lesson_and_hygiene(write(tmp_path, good_lesson())) == []


@pytest.mark.parametrize("text", [
    "{ not json",
    json.dumps({"cells": [], "metadata": {}}),  # no nbformat version
    json.dumps({"cells": [{"cell_type": "code", "source": "x", "metadata": {}}], "metadata": {},
                "nbformat": 4, "nbformat_minor": 5}),  # a code cell without outputs / execution_count / id
])
def test_checker_fails_a_broken_notebook(tmp_path, text):
    found = lesson_and_hygiene(write(tmp_path, text))
    assert len(found) == 1 and found[0].startswith("does not parse or validate")


def test_checker_fails_outputs_counts_todo_and_kernel(tmp_path):
    notebook = good_lesson()
    notebook.cells[1].execution_count = 3
    notebook.cells[1].outputs = [new_output("stream", name="stdout", text="1\n")]
    notebook.cells.append(new_code_cell("x = 1  # TODO finish"))
    notebook.metadata.kernelspec.name = "grok2-course"
    found = lesson_and_hygiene(write(tmp_path, notebook))
    assert any("outputs" in p for p in found) and any("execution count" in p for p in found)
    assert any("TODO" in p for p in found) and any("kernelspec" in p for p in found)


def test_checker_fails_a_lesson_without_its_parts(tmp_path):
    notebook = good_lesson()
    notebook.cells[0].source = "# 99 · Example\n\nGoals: one. Runs on a CPU, a T4 or an H100."  # no table, no prerequisites
    notebook.cells[3].source = "Troubleshooting: none."  # mentioned, but not a heading
    found = lesson_and_hygiene(write(tmp_path, notebook))
    assert "the first cell lacks 'Prerequisites'" in found
    assert {"the first cell's time table has no CPU row", "no 'Troubleshooting' heading"} <= set(found)
    notebook.cells.insert(0, new_code_cell("import helpers"))
    assert "the first cell must be markdown (goals, prerequisites, time table)" in lesson_and_hygiene(
        write(tmp_path, notebook))
