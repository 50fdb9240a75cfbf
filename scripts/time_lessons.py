"""How long does each lesson take on this machine? Runs every lesson (and, with --solutions, every solution notebook) top
to bottom in a fresh kernel, in course order, as "Restart & Run All" does, and records the wall time of each.

    python scripts/time_lessons.py                       # the tiny profile, a fresh scratch workspace
    GROK2_COURSE_PROFILE=small python scripts/time_lessons.py --label t4
    python scripts/time_lessons.py --only 04_prompting --repeats 3

Writes benchmarks/results/lesson-timings-<label>.{json,md} (label: the profile and the device, e.g. tiny-cpu), with
the machine (CPU, cores, load average before and after, GPU), the versions and the command. docs/facilitators.md
quotes these files; tests/test_facilitators.py checks that its table matches them. Facilitators: run it on one of the
room's laptops before the workshop (it needs no network on the tiny profile).

The lessons share one workspace, in order, as for a learner who goes through the course (lesson 06 serves the adapter
lesson 05 trained). Nothing of the learner's is used: the workspace is a new folder under workspace/lesson-timings/.

With --only, the lessons named are measured again and their rows replace the old ones in the existing record of
the same label (each row keeps its own date); a record made on another machine is refused, not mixed.

The lessons quote the record benchmarks/results/lesson-timings-tiny-cpu.json in their time tables: when that record
is written, this script then runs scripts/lesson_outline.py, which rewrites each lesson's CPU row from it (no hand
edits; tests/test_notebooks_static.py fails when a row and the record disagree).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RESULTS = ROOT / "benchmarks" / "results"
LESSON_RECORD = RESULTS / "lesson-timings-tiny-cpu.json"  # quoted by every lesson's time table


def lessons(solutions: bool, only: list[str]) -> list[Path]:
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if solutions:
        found += sorted((NOTEBOOKS / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))
    if only:
        found = [p for p in found if any(p.stem == o or p.stem.startswith(o) for o in only)]
        if not found:
            raise SystemExit(f"no lesson matches {only}: use names like 04_prompting")
    return found


def machine() -> dict:
    """Where the lessons ran: helpers.hardware's description (the one the benchmarks record), under the keys the lesson
    records have always used ("cores", "memory_GB": lesson_outline.py and docs/facilitators.md read them), with the
    versions of the packages the lessons time."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from helpers.hardware import device_kind, machine_info, ram_bytes

    described = machine_info(device_kind())
    info = {"platform": described["platform"], "python": described["python"], "cores": described["cpu_cores"],
            "memory_GB": round(ram_bytes()[0] / 1e9, 1), "cpu": described["cpu"], "torch": torch.__version__}
    if "gpu" in described:
        info.update(gpu=described["gpu"], gpu_count=torch.cuda.device_count())
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "nbclient"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:  # not installed is fine here
            pass
    return info


def run_one(path: Path, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    cells = []
    original = client.async_execute_cell

    async def timed(cell, index, **kwargs):  # record each code cell's time, as the lesson's reader waits on it
        start = time.perf_counter()
        try:
            return await original(cell, index, **kwargs)
        finally:
            if cell.cell_type == "code":
                cells.append((index, time.perf_counter() - start))

    client.async_execute_cell = timed
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as failure:
        error = str(failure).splitlines()[-1][:300] if str(failure) else "a cell raised"
    seconds = time.perf_counter() - start
    slowest = sorted(cells, key=lambda c: -c[1])[:3]
    return {"notebook": path.relative_to(ROOT).as_posix(), "seconds": round(seconds, 1), "code_cells": len(cells),
            "slowest_cells": [{"cell": i, "seconds": round(s, 1)} for i, s in slowest], "error": error,
            "date": now()}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def same_machine(a: dict, b: dict) -> bool:
    return all(a.get(key) == b.get(key) for key in ("cpu", "cores", "gpu", "gpu_count"))


def merge(previous: dict | None, record: dict, order: list[str]) -> dict:
    """The new runs in place of the same notebooks' old ones, the other old runs kept, in course order."""
    if previous is None:
        return record
    if not same_machine(previous["machine"], record["machine"]):
        raise SystemExit(f"The record {record['label']} was measured on another machine ({previous['machine']['cpu']}, "
                         f"{previous['machine']['cores']} cores): measure every lesson here (no --only), or pick "
                         "another --label.")
    runs = {run["notebook"]: dict(run, date=run.get("date", previous["date"])) for run in previous["runs"]}
    runs.update({run["notebook"]: run for run in record["runs"]})
    rank = {name: i for i, name in enumerate(order)}
    merged = dict(record, runs=sorted(runs.values(), key=lambda r: (rank.get(r["notebook"], len(rank)), r["notebook"])))
    merged["command"] = f"{previous['command']}; then {record['command']}"
    return merged


def _other_day(row: dict, record: dict) -> bool:
    """A row measured on another day than the record (--only replaced some rows): the table says when."""
    return row.get("date", record["date"])[:10] != record["date"][:10]


def markdown(record: dict) -> str:
    m = record["machine"]
    lines = [f"# Lesson timings: {record['label']} (profile {record['profile']})", "",
             f"Each lesson run top to bottom in a fresh kernel (\"Restart & Run All\"), in course order, in one fresh "
             f"workspace; wall time of the whole notebook, kernel start included. Best of {record['repeats']}.", "",
             f"- command: `{record['command']}`",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_GB']} GB"
             + (f", {m['gpu']} x{m.get('gpu_count', 1)}" if m.get("gpu") else ", no GPU")
             + f"; load average {record['load_before']} before, {record['load_after']} after",
             f"- versions: Python {m['python']}, torch {m.get('torch')}, transformers {m.get('transformers')}, "
             f"peft {m.get('peft')}, bitsandbytes {m.get('bitsandbytes')}",
             f"- date: {record['date']}"
             + (" (rows measured on other days say so)" if any(_other_day(r, record) for r in record["runs"]) else ""),
             "",
             "| notebook | minutes | seconds | code cells | slowest cells (index: s) |", "|---|---|---|---|---|"]
    for row in record["runs"]:
        slow = ", ".join(f"{c['cell']}: {c['seconds']}" for c in row["slowest_cells"])
        status = f" **failed: {row['error']}**" if row["error"] else ""
        if _other_day(row, record):
            status += f" (measured {row['date']})"
        lines.append(f"| `{row['notebook']}`{status} | {row['seconds'] / 60:.1f} | {row['seconds']} | "
                     f"{row['code_cells']} | {slow} |")
    total = sum(r["seconds"] for r in record["runs"])
    lines += ["", f"Total: {total / 60:.1f} minutes ({total:.0f} s)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solutions", action="store_true", help="also time the solution notebooks")
    parser.add_argument("--only", nargs="*", default=[], help="lesson names (or prefixes) to time")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each lesson; the best counts")
    parser.add_argument("--label", default=None, help="the result's name: default <profile>-<cpu|cuda>")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may take")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    profile = os.environ.setdefault("GROK2_COURSE_PROFILE", "tiny")
    if profile == "tiny":
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(name, "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    info = machine()
    label = args.label or f"{profile}-{'cuda' if info.get('gpu') else 'cpu'}"
    scratch = ROOT / "workspace" / "lesson-timings" / label
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    os.environ["GROK2_COURSE_WORKSPACE"] = str(scratch)  # the kernels inherit it

    load_before = [round(x, 2) for x in os.getloadavg()]
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for path in lessons(args.solutions, args.only):
            row = run_one(path, args.timeout)
            print(f"[{repeat + 1}/{args.repeats}] {row['notebook']}: {row['seconds']} s"
                  + (f"  FAILED: {row['error']}" if row["error"] else ""), flush=True)
            kept = best.get(row["notebook"])
            if kept is None or (row["error"] is None and (kept["error"] or row["seconds"] < kept["seconds"])):
                best[row["notebook"]] = row
    record = {"label": label, "profile": profile, "repeats": args.repeats,
              "command": "python scripts/time_lessons.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": now(), "machine": info,
              "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
              "runs": list(best.values())}
    record["command"] = record["command"].strip()
    target = args.out / f"lesson-timings-{label}.json"
    if args.only:
        previous = json.loads(target.read_text()) if target.is_file() else None
        order = [p.relative_to(ROOT).as_posix() for p in lessons(True, [])]
        record = merge(previous, record, order)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(target, json.dumps(record, indent=2) + "\n")
    write_atomically(target.with_suffix(".md"), markdown(record))
    print(f"wrote {target.with_suffix('.md')}")
    if target.resolve() == LESSON_RECORD.resolve():  # the record the lessons quote: their time tables follow it
        import lesson_outline

        lesson_outline.main([])
    return 1 if any(r["error"] for r in record["runs"]) else 0


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
