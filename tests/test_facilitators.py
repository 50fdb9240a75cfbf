"""docs/facilitators.md states measured figures and commands: the figures must be the recorded ones, the commands must
work, and what was not measured must say so."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from helpers.paths import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "facilitators.md"
RESULTS = REPO_ROOT / "benchmarks" / "results"
LESSONS = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def timing_rows() -> dict[str, list[str]]:
    """{lesson stem: the table row's cells} of the guide's timing table."""
    rows = {}
    for line in GUIDE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| \[\d\d · [^\]]+\]\(\.\./notebooks/(?P<stem>\d\d_\w+)\.ipynb\) \|(?P<rest>.*)\|$", line)
        if match:
            rows[match["stem"]] = [cell.strip() for cell in match["rest"].split("|")]
    return rows


def seconds(cell: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?) (s|min)", cell)
    assert match, f"not a time: {cell!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_every_lesson_has_a_timing_row_with_the_recorded_cpu_time():
    recorded = json.loads((RESULTS / "lesson-timings-tiny-cpu.json").read_text())
    by_lesson = {run["notebook"]: run for run in recorded["runs"]}
    rows = timing_rows()
    assert sorted(rows) == LESSONS
    for stem, cells in rows.items():
        run = by_lesson.get(f"notebooks/{stem}.ipynb")
        if run is None:  # a lesson newer than the record
            assert cells[0].startswith("not measured yet"), f"{stem}: no recorded run, the guide says {cells[0]!r}"
            continue
        assert run["error"] is None, f"the recorded run of {stem} failed"
        assert round(run["seconds"]) == seconds(cells[0]), f"{stem}: guide says {cells[0]}, recorded {run['seconds']} s"


def test_the_totals_are_the_recorded_sums():
    recorded = json.loads((RESULTS / "lesson-timings-tiny-cpu.json").read_text())
    text = GUIDE.read_text(encoding="utf-8")
    lessons = sum(r["seconds"] for r in recorded["runs"] if "/solutions/" not in r["notebook"])
    solutions = sum(r["seconds"] for r in recorded["runs"] if "/solutions/" in r["notebook"])
    measured = {r["notebook"] for r in recorded["runs"]}
    missing = [stem for stem in LESSONS if f"notebooks/{stem}.ipynb" not in measured]
    note = f" (without {', '.join(stem[:2] for stem in missing)}: not measured yet)" if missing else ""
    assert f"| all lessons{note} | {lessons / 60:.1f} min |" in text
    assert f"| the solution notebooks | {solutions / 60:.1f} min |" in text


def test_gpu_columns_say_not_measured_unless_a_record_exists():
    for column, pattern in ((1, "lesson-timings-*t4*.json"), (2, "lesson-timings-*h100*.json")):
        if list(RESULTS.glob(pattern)):
            continue  # a record exists: the column may then quote it
        for stem, cells in timing_rows().items():
            assert cells[column].startswith("not measured"), f"{stem}: {cells[column]!r} with no {pattern} record"


def test_the_kit_command_of_the_guide_works(tmp_path):
    text = GUIDE.read_text(encoding="utf-8")
    (command,) = re.findall(r"^\s*bash scripts/course.sh workshop (.*)$", text, re.MULTILINE)
    args = command.split()
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "course.sh"), "workshop", *args, "--dry-run",
                             "--out", str(tmp_path / "kit")], capture_output=True, text=True, timeout=120,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "kit").iterdir()) == ["README.txt", "install.sh", "requirements.txt"]


def test_the_guide_is_linked_from_the_readme_and_its_screenshot_exists():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/facilitators.md)" in readme
    assert (REPO_ROOT / "docs" / "images" / "04-chat-widget-in-jupyterlab.png").stat().st_size > 10_000


def run(notebook: str, seconds: float) -> dict:
    return {"notebook": notebook, "seconds": seconds, "code_cells": 1, "slowest_cells": [], "error": None}


def test_a_partial_measurement_replaces_its_rows_and_keeps_the_others(repo_script):
    time_lessons = repo_script("time_lessons")
    machine = {"cpu": "Xeon", "cores": 2}
    old = {"label": "tiny-cpu", "date": "day 1", "command": "python scripts/time_lessons.py --solutions",
           "machine": machine, "runs": [run("notebooks/00_a.ipynb", 5.0), run("notebooks/01_b.ipynb", 9.0)]}
    new = {"label": "tiny-cpu", "date": "day 2", "command": "python scripts/time_lessons.py --only 01",
           "machine": machine, "runs": [dict(run("notebooks/01_b.ipynb", 7.0), date="day 2")]}
    merged = time_lessons.merge(old, new, ["notebooks/00_a.ipynb", "notebooks/01_b.ipynb"])
    assert [(r["notebook"], r["seconds"], r["date"]) for r in merged["runs"]] == [
        ("notebooks/00_a.ipynb", 5.0, "day 1"), ("notebooks/01_b.ipynb", 7.0, "day 2")]
    assert "(measured day 1)" in time_lessons.markdown(dict(merged, repeats=1, profile="tiny", load_before=[0],
                                                            load_after=[0], machine=dict(machine, memory_GB=1,
                                                                                         python="3")))
    elsewhere = dict(new, machine={"cpu": "another CPU", "cores": 8})
    with pytest.raises(SystemExit, match="measured on another machine"):
        time_lessons.merge(old, elsewhere, [])


def test_the_readme_course_map_quotes_the_recorded_cpu_times():
    """The README's course map has a CPU column too: the same recorded seconds, or 'not measured yet'."""
    recorded = json.loads((RESULTS / "lesson-timings-tiny-cpu.json").read_text())
    by_lesson = {run["notebook"]: run["seconds"] for run in recorded["runs"]}
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for stem in LESSONS:
        match = re.search(rf"^\| \[`{stem}`\]\(notebooks/{stem}\.ipynb\) \|.*\| ([^|]+?) \|$", readme, re.M)
        assert match, f"README.md's course map has no row for {stem}"
        if f"notebooks/{stem}.ipynb" not in by_lesson:
            assert match[1].startswith("not measured yet"), f"{stem}: no recorded run, the README says {match[1]!r}"
        else:
            assert round(by_lesson[f"notebooks/{stem}.ipynb"]) == seconds(match[1]), f"{stem}: README says {match[1]}"


def test_the_timing_record_is_of_the_lessons_as_they_are():
    """A record taken before a lesson gained or lost cells times another lesson: re-run scripts/time_lessons.py after
    changing a lesson's cells, so that every time the course quotes is of the notebooks as they are."""
    recorded = json.loads((RESULTS / "lesson-timings-tiny-cpu.json").read_text())
    stale = []
    for run in recorded["runs"]:
        cells = json.loads((REPO_ROOT / run["notebook"]).read_text(encoding="utf-8"))["cells"]
        now = sum(cell["cell_type"] == "code" for cell in cells)
        if now != run["code_cells"]:
            stale.append(f"{run['notebook']}: {run['code_cells']} code cells when timed, {now} now")
    assert not stale, "re-time these with `python scripts/time_lessons.py --only ...`:\n" + "\n".join(stale)
