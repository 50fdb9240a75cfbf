"""Every lesson parses, is committed without outputs, and has the parts a lesson must have."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from helpers.paths import REPO_ROOT

NOTEBOOKS = sorted(p for p in (REPO_ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def problems(path: Path) -> list[str]:
    found = []
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # any parse or schema error
        return [f"does not parse: {error}"]
    if notebook.metadata.get("kernelspec", {}).get("name") != "python3":
        found.append("kernelspec must be python3")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            found.append(f"cell {index} carries outputs or an execution count")
        if "TODO" in cell.source:
            found.append(f"cell {index} contains TODO")
    first = notebook.cells[0] if notebook.cells else None
    if first is None or first.cell_type != "markdown":
        found.append("the first cell must be markdown")
    else:
        for word in ("Goals", "Prerequisites", "CPU", "T4", "H100"):
            if word not in first.source:
                found.append(f"the first cell lacks {word!r}")
    headings = " ".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for heading in ("Exercises", "Troubleshooting"):
        if heading not in headings:
            found.append(f"no {heading} section")
    return found


def test_there_are_lessons():
    assert {"00_setup.ipynb", "02_loading.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_complete(path):
    assert problems(path) == []


def test_the_checker_catches_broken_and_dirty_notebooks(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    assert problems(broken)[0].startswith("does not parse")
    dirty = json.loads(NOTEBOOKS[0].read_text())
    code = next(c for c in dirty["cells"] if c["cell_type"] == "code")
    code["execution_count"] = 3
    (tmp_path / "dirty.ipynb").write_text(json.dumps(dirty))
    assert any("execution count" in p for p in problems(tmp_path / "dirty.ipynb"))
