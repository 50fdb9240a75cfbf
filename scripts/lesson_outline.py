"""Writes the parts of every lesson that follow from something else, so that they cannot drift from it:

- an anchor (`<a id="..."></a>`) on every `##` heading, kept once written (links to it stay valid when a heading
  is reworded);
- the table of contents (the markdown cell with id `toc`, right after the lesson's first cell): one link per `##`
  heading, in order;
- the CPU row of the time table in the lesson's first cell, from the measured record
  benchmarks/results/lesson-timings-tiny-cpu.json (written by `python scripts/time_lessons.py`, which runs this
  script's update when it records that file);
- the "Next:" line at the end of the recap (the last cell, id `recap`): a link to the next lesson, by its title.

    python scripts/lesson_outline.py            write them (only lessons whose parts change are rewritten)
    python scripts/lesson_outline.py --check    change nothing; exit 1 and say what is out of date

What it cannot write, it reports: a heading buried in the middle of a cell (each heading opens its own markdown cell),
a lesson without its recap (the recap's bullets are written by hand; the script only keeps its "Next:" line). Notebooks
are changed through scripts/notebook_files.py (locked, atomic). tests/test_notebooks_static.py runs the same checks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import notebook_files

ROOT = notebook_files.ROOT
NOTEBOOK_DIR = notebook_files.NOTEBOOK_DIR
RECORD = ROOT / "benchmarks" / "results" / "lesson-timings-tiny-cpu.json"
TOC_ID, RECAP_ID = "toc", "recap"
TOC_TITLE = "**In this lesson**"
NEXT_PREFIX = "**Next:**"
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*$")
ANCHOR = re.compile(r'^<a id="(?P<id>[a-z0-9-]+)"></a>\s*$')
CPU_ROW = re.compile(r"^\|[^|\n]*\bCPU\b[^|\n]*\|.*\|\s*$", re.MULTILINE)


def slug(title: str) -> str:
    """ "2 · Size it before you download it" -> "size-it-before-you-download-it"."""
    title = re.sub(r"^\d+\s*·\s*", "", title)
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"[`*_\[\]()'’]", "", title).lower()).strip("-") or "section"


def split_heading_cell(text: str) -> tuple[str | None, int | None, str | None, list[str]]:
    """(anchor, level, title, lines) of a markdown cell whose first line, after an optional anchor, is a heading."""
    lines = text.split("\n")
    anchor = None
    rest = lines
    if rest and ANCHOR.match(rest[0]):
        anchor, rest = ANCHOR.match(rest[0])["id"], rest[1:]
    match = HEADING.match(rest[0]) if rest else None
    if not match:
        return anchor, None, None, lines
    return anchor, len(match["hashes"]), match["title"], lines


def buried_headings(notebook: dict) -> list[str]:
    """Headings that do not open their cell (the lesson's title, in the first cell under the badge, excepted)."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        lines = notebook_files.source(cell).split("\n")
        start = 1 if lines and ANCHOR.match(lines[0]) else 0
        in_code = False
        for number, line in enumerate(lines):
            if line.lstrip().startswith("```"):
                in_code = not in_code
            match = not in_code and HEADING.match(line)
            if not match or number == start:
                continue
            if index == 0 and len(match["hashes"]) == 1:
                continue  # the title, after the badge
            found.append(f"cell {index}: the heading {line.strip()!r} is in the middle of a cell: give it its own "
                         "markdown cell")
    return found


def sections(notebook: dict) -> list[tuple[int, str, str | None]]:
    """(cell index, title, anchor or None) of every `##` heading that opens a cell."""
    found = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "markdown":
            anchor, level, title, _ = split_heading_cell(notebook_files.source(cell))
            if level == 2:
                found.append((index, title, anchor))
    return found


def anchors(notebook: dict) -> dict[int, str]:
    """{cell index: anchor} for every `##` section: the one it has, else a new one unique in the lesson."""
    taken = {anchor for _, _, anchor in sections(notebook) if anchor}
    chosen = {}
    for index, title, anchor in sections(notebook):
        if anchor is None:
            anchor, n = slug(title), 2
            while anchor in taken:
                anchor, n = f"{slug(title)}-{n}", n + 1
            taken.add(anchor)
        chosen[index] = anchor
    return chosen


def toc_source(notebook: dict) -> str:
    chosen = anchors(notebook)
    items = [f"- [{title}](#{chosen[index]})" for index, title, _ in sections(notebook)]
    return "\n".join([TOC_TITLE, ""] + items)


def title_of(path: Path) -> str:
    """The lesson's title: its first `# ` line ("01 · Getting the weights: ...")."""
    for line in notebook_files.source(notebook_files.read(path)["cells"][0]).split("\n"):
        match = HEADING.match(line)
        if match and len(match["hashes"]) == 1:
            return match["title"]
    raise SystemExit(f"{path.name}: no `# NN · Title` line in the first cell")


def next_line(path: Path) -> str:
    lessons = notebook_files.lessons(path.parent)
    later = [p for p in lessons if p.name > path.name]
    if later:
        return f"{NEXT_PREFIX} [{title_of(later[0])}]({later[0].name})"
    return f"{NEXT_PREFIX} this was the last lesson. Back to the [course overview](../README.md)."


def load_record(path: Path = RECORD) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def format_seconds(seconds: float) -> str:
    return f"{round(seconds)} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def time_row(path: Path, record: dict | None) -> str:
    """The CPU row of the lesson's time table, from the record (or saying that it is not measured yet)."""
    link = f"[record](../{RECORD.with_suffix('.md').relative_to(ROOT).as_posix()})"
    relative = f"{path.parent.name}/{path.name}"  # as the record names it: notebooks/NN_topic.ipynb
    runs = {run["notebook"]: run for run in (record or {}).get("runs", [])}
    run = runs.get(relative)
    if record is None or run is None:
        return ("| CPU, `tiny` profile | not measured yet: `python scripts/time_lessons.py --solutions` measures it "
                "and writes this row |")
    label = f"| CPU ({record['machine']['cores']} cores), `{record['profile']}` profile |"
    if run.get("error"):
        return f"{label} not measured: the recorded run failed ({link}) |"
    return f"{label} {format_seconds(run['seconds'])}, measured: the whole notebook in a fresh kernel ({link}) |"


def cpu_row(notebook: dict) -> str | None:
    match = CPU_ROW.search(notebook_files.source(notebook["cells"][0]))
    return match.group(0).rstrip() if match else None


def recap_index(notebook: dict) -> int | None:
    cells = notebook["cells"]
    return len(cells) - 1 if cells and cells[-1].get("id") == RECAP_ID else None


def problems(notebook: dict, path: Path, record: dict | None) -> list[str]:
    """Everything out of date or missing (empty when the lesson is as this script writes it)."""
    found = buried_headings(notebook)
    cells = notebook["cells"]
    for index, title, anchor in sections(notebook):
        if anchor is None:
            found.append(f"cell {index}: the heading {title!r} has no anchor")
    toc = [i for i, cell in enumerate(cells) if cell.get("id") == TOC_ID]
    if toc != [1] or cells[1]["cell_type"] != "markdown":
        found.append("no table of contents (a markdown cell with id 'toc') right after the first cell")
    elif notebook_files.source(cells[1]) != toc_source(notebook):
        found.append("the table of contents does not list the lesson's `##` headings")
    row = cpu_row(notebook)
    if row is None:
        found.append("the first cell's time table has no CPU row")
    elif row != time_row(path, record):
        found.append(f"the CPU time row is not the measured record's: {row!r}")
    recap = recap_index(notebook)
    if recap is None:
        found.append("no recap: the last cell must be a markdown cell with id 'recap' (## Recap, a few bullets, then "
                     "the Next: line)")
    else:
        text = notebook_files.source(cells[recap]).rstrip("\n")
        if split_heading_cell(text)[1:3] != (2, "Recap"):
            found.append("the recap cell must open with the heading `## Recap`")
        if text.split("\n")[-1] != next_line(path):
            found.append("the recap's last line is not the link to the next lesson")
    return found


def update(notebook: dict, path: Path, record: dict | None) -> dict:
    """Write the anchors, the table of contents, the CPU time row and the Next: line into a lesson; returns it."""
    cells = notebook["cells"]
    for index, anchor in anchors(notebook).items():
        text = notebook_files.source(cells[index])
        if not ANCHOR.match(text.split("\n")[0]):
            notebook_files.set_source(cells[index], f'<a id="{anchor}"></a>\n{text}')
    toc = next((i for i, cell in enumerate(cells) if cell.get("id") == TOC_ID), None)
    if toc is not None and toc != 1:
        cells.insert(1, cells.pop(toc))
    elif toc is None:
        cells.insert(1, {"cell_type": "markdown", "id": TOC_ID, "metadata": {}, "source": []})
    notebook_files.set_source(cells[1], toc_source(notebook))
    row = cpu_row(notebook)
    if row is not None and row != time_row(path, record):
        first = notebook_files.source(cells[0])
        notebook_files.set_source(cells[0], first.replace(row, time_row(path, record), 1))
    recap = recap_index(notebook)
    if recap is not None:
        lines = notebook_files.source(cells[recap]).rstrip("\n").split("\n")
        if lines[-1].startswith(NEXT_PREFIX):
            lines = lines[:-1]
        while lines and not lines[-1].strip():
            lines.pop()
        notebook_files.set_source(cells[recap], "\n".join(lines + ["", next_line(path)]))
    return notebook


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; fail if a lesson is out of date")
    args = parser.parse_args(argv)
    record = load_record()
    failed = False
    for path in notebook_files.lessons(NOTEBOOK_DIR):
        if args.check:
            found = problems(notebook_files.read(path), path, record)
        else:
            with notebook_files.edit(path) as notebook:  # locked: others may be editing the rest of it
                if problems(notebook, path, record):
                    update(notebook, path, record)
                found = problems(notebook, path, record)
        for problem in found:
            print(f"{path.relative_to(ROOT)}: {problem}")
        failed |= bool(found)
    if not failed:
        print("Every lesson's outline is up to date.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
