"""Every notebook parses, validates and is committed clean; every lesson has the parts a lesson must have.

Hygiene (all of notebooks/**): parses with nbformat and validates against the schema; no outputs, execution counts or
saved widget state; kernelspec `python3`; no "TODO".
Lesson structure (notebooks/NN_*.ipynb): the first cell is markdown with "Goals", "Prerequisites" and a time table
whose rows mention CPU, T4 and H100; a "Troubleshooting" heading and an "Exercises" heading.
The mechanical parts (the outline scripts/lesson_outline.py writes and scripts/colab_cells.py's setup cell):
- every heading opens its own markdown cell (all notebooks);
- the Colab setup cell is a few lines (it calls scripts/colab_setup.py);
- the CPU row of each lesson's time table is the measured record's (benchmarks/results/lesson-timings-tiny-cpu.json,
  read here independently of the script), or says "not measured yet" when the record has no run of that lesson;
- a table of contents right after the first cell links every `##` heading's anchor, in order, and the last cell is
  a recap whose last line links to the next lesson (the last lesson: back to the README).
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
TIMINGS = REPO_ROOT / "benchmarks" / "results" / "lesson-timings-tiny-cpu.json"
COLAB_CELL_MAX_LINES = 12
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(NOTEBOOK_DIR)))
def test_every_heading_opens_its_own_cell(repo_script, path):
    found = repo_script("lesson_outline").buried_headings(json.loads(path.read_text(encoding="utf-8")))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if is_lesson(p) or p.parent.name == "solutions"],
                         ids=lambda p: str(p.relative_to(NOTEBOOK_DIR)))
def test_the_colab_cell_is_a_few_lines(path):
    cells = [cell for cell in read(path).cells if cell.cell_type == "code"]
    assert cells and cells[0].get("id") == "colab-setup", f"{path.name}: the first code cell is not the Colab setup"
    lines = len(cells[0].source.splitlines())
    assert lines <= COLAB_CELL_MAX_LINES, f"{path.name}: the Colab cell has {lines} lines (scripts/colab_setup.py does the work)"


def recorded_time(seconds: float) -> str:
    return f"{round(seconds)} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if is_lesson(p)], ids=lambda p: p.name)
def test_the_lesson_time_is_the_measured_one(path):
    record = json.loads(TIMINGS.read_text(encoding="utf-8"))
    runs = {run["notebook"]: run for run in record["runs"]}
    first = read(path).cells[0].source
    rows = [line for line in first.splitlines() if line.startswith("|") and "CPU" in line.split("|")[1]]
    assert len(rows) == 1, f"{path.name}: expected one CPU row in the time table, found {rows}"
    run = runs.get(path.relative_to(REPO_ROOT).as_posix())
    fix = "run `python scripts/lesson_outline.py` (it writes the row from the record)"
    if run is None:
        assert "not measured yet" in rows[0], f"{path.name}: the record has no run of it, the row says {rows[0]!r}"
        return
    assert run["error"] is None, f"{path.name}: its recorded run failed; measure again (scripts/time_lessons.py)"
    match = re.search(r"\| (\d+(?:\.\d+)? (?:s|min)), measured", rows[0])
    assert match and match[1] == recorded_time(run["seconds"]), (
        f"{path.name}: the time table says {rows[0]!r}, the record {run['seconds']} s: {fix}")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if is_lesson(p)], ids=lambda p: p.name)
def test_the_lesson_has_contents_recap_and_next_link(repo_script, path):
    outline = repo_script("lesson_outline")
    notebook = json.loads(path.read_text(encoding="utf-8"))
    found = outline.problems(notebook, path, outline.load_record())
    assert not found, "\n".join(found) + "\n(run `python scripts/lesson_outline.py`; write a recap by hand)"
    cells = read(path).cells
    toc = cells[1].source
    titles = [line[3:].strip() for cell in cells for line in cell.source.splitlines()[:2]
              if cell.cell_type == "markdown" and line.startswith("## ")]
    links = re.findall(r"^- \[(.+)\]\(#([a-z0-9-]+)\)$", toc, re.MULTILINE)
    assert [title for title, _ in links] == titles, f"{path.name}: the contents do not list the headings in order"
    ids = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', "\n".join(c.source for c in cells if c.cell_type == "markdown")))
    assert {anchor for _, anchor in links} <= ids, f"{path.name}: a contents link points to no anchor"
    recap = cells[-1].source
    assert "## Recap" in recap and recap.count("\n- ") >= 3, f"{path.name}: the recap needs a few bullets"
    target = re.search(r"\*\*Next:\*\*.*\]\(([^)]+)\)", recap.splitlines()[-1])
    assert target and (path.parent / target[1]).resolve().is_file(), f"{path.name}: the Next: link is broken"
    later = [p for p in NOTEBOOKS if is_lesson(p) and p.name > path.name]
    assert (path.parent / target[1]).resolve() == (later[0] if later else REPO_ROOT / "README.md")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if is_lesson(p) or p.parent.name == "solutions"],
                         ids=lambda p: str(p.relative_to(NOTEBOOK_DIR)))
def test_no_bare_assert_in_a_lesson_or_solution(path):
    """A lesson verifies with `helpers.expect(condition, "what it shows")`: a named step a learner can read."""
    for index, cell in enumerate(read(path).cells):
        if cell.cell_type == "code":
            bare = re.findall(r"^\s*assert\b.*$", cell.source, re.MULTILINE)
            assert not bare, (f"{path.name} cell {index}: {bare[0].strip()!r}: use helpers.expect(condition, "
                              "'what it shows')")


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


# ------------------------------------------------------------------ the outline checker and writer catch problems


def outline_lesson(title: str, cpu_row: str, sections=("1 · First", "2 · Exercises", "3 · Troubleshooting")) -> dict:
    cells = [new_markdown_cell(f"# {title}\n\n**Goals**\n\n| hardware | this notebook |\n|---|---|\n{cpu_row}\n"
                               "| Colab T4 | not measured |"),
             new_code_cell("print(1)")]
    cells += [new_markdown_cell(f"## {name}\n\nText.") for name in sections]
    cells.append(new_markdown_cell("## Recap\n\n- one\n- two\n- three\n\n**Next:** wherever"))
    cells[-1]["id"] = "recap"
    return json.loads(nbformat.writes(new_notebook(cells=cells)))


def test_the_outline_writer_fills_in_what_follows_and_the_checker_then_passes(tmp_path, repo_script):
    outline = repo_script("lesson_outline")
    folder = tmp_path / "notebooks"
    folder.mkdir()
    first, second = folder / "98_first.ipynb", folder / "99_second.ipynb"
    record = {"profile": "tiny", "machine": {"cores": 2},
              "runs": [{"notebook": "notebooks/98_first.ipynb", "seconds": 64.4, "error": None}]}
    notebooks = {first: outline_lesson("98 · First", "| CPU laptop | 40-70 s |"),
                 second: outline_lesson("99 · Second", "| CPU laptop | about a minute |")}
    for path, notebook in notebooks.items():
        path.write_text(json.dumps(notebook), encoding="utf-8")
    found = outline.problems(notebooks[first], first, record)
    assert any("no table of contents" in p for p in found) and any("has no anchor" in p for p in found)
    assert any("CPU time row is not the measured record's" in p for p in found)
    assert any("last line is not the link to the next lesson" in p for p in found)
    for path, notebook in notebooks.items():
        outline.update(notebook, path, record)
        assert outline.problems(notebook, path, record) == [], path.name
    def text(path, index):
        return "".join(notebooks[path]["cells"][index]["source"])

    assert "| CPU (2 cores), `tiny` profile | 64 s, measured" in text(first, 0)
    assert text(first, 1).splitlines()[2] == "- [1 · First](#first)"
    assert text(first, -1).endswith("**Next:** [99 · Second](99_second.ipynb)")
    assert "not measured yet" in text(second, 0)  # the record has no run of it
    assert text(second, -1).endswith("[course overview](../README.md).")
    again = json.loads(json.dumps(notebooks[first]))
    outline.update(again, first, record)
    assert again == notebooks[first], "a second run changes nothing"
    # A re-measurement changes the row; the checker says so until the writer runs.
    record["runs"][0]["seconds"] = 12.2
    assert any("CPU time row" in p for p in outline.problems(notebooks[first], first, record))


def test_the_outline_checker_fails_a_buried_heading_and_a_missing_recap(repo_script):
    outline = repo_script("lesson_outline")
    notebook = outline_lesson("98 · First", "| CPU | 1 s |")
    notebook["cells"][2]["source"] = ["## 1 · First\n", "\n", "Text.\n", "\n", "## 2 · Buried\n", "\n", "More."]
    notebook["cells"].pop()  # no recap
    found = outline.problems(notebook, Path("notebooks/98_first.ipynb"), None)
    assert any("'## 2 · Buried' is in the middle of a cell" in p for p in found)
    assert any(p.startswith("no recap") for p in found)
    code = ["```python\n", "# a comment, not a heading\n", "```"]
    assert outline.buried_headings({"cells": [{"cell_type": "markdown", "source": ["Text\n"] + code}]}) == []
