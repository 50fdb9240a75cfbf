"""The course's notebooks as files, for the scripts that write parts of them (scripts/colab_cells.py,
scripts/lesson_outline.py): find them, read them, and change them with one locked, atomic read-modify-write each.

Several people (and tools) may edit the same notebook at once, so a script never writes back a copy it read earlier:
`edit(path)` takes an exclusive lock on the notebook (a file `nbedit-<name>.lock` in the temporary folder, which other
editing tools can take too), reads it, lets the caller change it, and writes it to a temporary file renamed over the
original (a killed script leaves the old notebook or the new one, never half of one). The format is the repository's:
JSON with an indent of 1, non-ASCII characters as they are, a final newline, each cell's source as a list of lines.
Nothing is written when nothing changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
LESSON_NAME = re.compile(r"^(?P<number>\d\d)_[a-z0-9_]+\.ipynb$")
SOLUTION_NAME = re.compile(r"^(?P<number>\d\d)_[a-z0-9_]+_solutions\.ipynb$")

try:
    import fcntl
except ModuleNotFoundError:  # Windows: no advisory locks; the write itself stays atomic
    fcntl = None


def lessons(folder: Path | None = None) -> list[Path]:
    """notebooks/NN_topic.ipynb, in course order."""
    folder = folder or NOTEBOOK_DIR
    return sorted(p for p in folder.glob("*.ipynb") if LESSON_NAME.match(p.name))


def solutions(folder: Path | None = None) -> list[Path]:
    """notebooks/solutions/NN_topic_solutions.ipynb, in course order."""
    folder = (folder or NOTEBOOK_DIR) / "solutions"
    return sorted(p for p in folder.glob("*.ipynb") if SOLUTION_NAME.match(p.name))


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return text if isinstance(text, str) else "".join(text)


def set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def dump(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def edit(path: Path):
    """with edit(path) as notebook: change the dict; it is written back (atomically, under the lock) if it changed."""
    path = Path(path).resolve()
    lock_path = Path(tempfile.gettempdir()) / f"nbedit-{path.name}.lock"
    with open(lock_path, "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        before = path.read_text(encoding="utf-8")
        notebook = json.loads(before)
        yield notebook
        for cell in notebook["cells"]:
            if isinstance(cell.get("source"), str):
                set_source(cell, cell["source"])
        after = dump(notebook)
        if after != before:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(after)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
