"""Run a lesson top to bottom inside this Python process with IPython: no Jupyter server, no kernel, no browser.

For machines that have PyTorch but no Jupyter, such as a bare GPU box reached over ssh: the code cells run in order
in one IPython shell, as "Restart & Run All" runs them, from the notebook's own folder, and the run stops at the first
cell that raises (exit code 1). The notebook file is not modified. With --record, each cell's time and outputs
(printed text, displayed Markdown tables, figures as PNG) are written with the machine and versions:

    GROK2_COURSE_PROFILE=small GROK2_COURSE_MODEL=workspace/course-llama-1b \\
        python scripts/run_notebook_inprocess.py notebooks/03_quantized_inference.ipynb \\
        --record benchmarks/results/lesson-03-course-llama-1b-cuda

writes lesson-03-course-llama-1b-cuda.md / .json (+ -figure1.png ...). In CI the notebooks run under nbval instead.
`import helpers` must work: install the course into this Python first (`pip install -e .`; on a GPU machine without
the network, scripts/gpu_checks.sh installs it offline before it runs this).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path


def versions() -> dict:
    import importlib.metadata

    found = {}
    for name in ("torch", "transformers", "accelerate", "bitsandbytes", "peft", "ipython"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def run(notebook: Path, record: Path | None = None, echo: bool = True) -> dict:
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are saved, not shown
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
    cells = [c for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    shell = InteractiveShell.instance()
    previous_dir = Path.cwd()
    os.chdir(notebook.resolve().parent)  # Jupyter starts a notebook's kernel in the notebook's folder
    report = {"notebook": str(notebook), "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "environment": {k: v for k, v in os.environ.items() if k.startswith("GROK2_COURSE")},
        "cells": [], "ok": True}
    figures = 0
    started = time.perf_counter()
    try:
        for number, cell in enumerate(cells, start=1):
            source = "".join(cell["source"])
            cell_started = time.perf_counter()
            with capture_output() as captured:
                result = shell.run_cell(source, store_history=True)
            entry = {"cell": number, "seconds": round(time.perf_counter() - cell_started, 2),
                     "stdout": captured.stdout, "stderr": captured.stderr[-4000:],
                     "markdown": [o.data["text/markdown"] for o in captured.outputs if "text/markdown" in o.data],
                     "figures": []}
            if record is not None:
                import matplotlib.pyplot as plt

                for figure_number in plt.get_fignums():
                    figures += 1
                    path = record.with_name(f"{record.name}-figure{figures}.png")
                    plt.figure(figure_number).savefig(path, dpi=100, bbox_inches="tight")
                    entry["figures"].append(path.name)
                plt.close("all")
            report["cells"].append(entry)
            if echo:
                print(f"--- cell {number}/{len(cells)} ({entry['seconds']} s)", flush=True)
                print(captured.stdout, end="", flush=True)
                for table in entry["markdown"]:
                    print(table, flush=True)
            if not result.success:
                report["ok"] = False
                error = result.error_in_exec or result.error_before_exec
                report["error"] = f"cell {number}: {type(error).__name__}: {error}"
                print(captured.stderr[-4000:], file=sys.stderr)
                break
    finally:
        os.chdir(previous_dir)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["versions"] = versions()
    if record is not None:
        write_record(report, record)
    return report


def write_record(report: dict, record: Path) -> None:
    from helpers.hardware import device_kind, machine_info

    device = device_kind()
    report["machine"] = machine_info(device)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    where = (f"{m['gpu']} ({m['gpu_memory_GiB']} GiB, CUDA {m['cuda']})" if device == "cuda"
             else f"CPU only: {m['cpu']}, {m['cpu_cores']} cores")
    lines = [f"# {Path(report['notebook']).name}, run in-process ({'completed' if report['ok'] else 'FAILED'})", "",
             f"- **Where**: {where}; {m['platform']}",
             "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v),
             "- **Settings**: " + (", ".join(f"{k}={v}" for k, v in report["environment"].items()) or "defaults"),
             f"- **Command**: `python scripts/run_notebook_inprocess.py {report['notebook']}` ({report['started']}); "
             f"{len(report['cells'])} code cells in {report['seconds']} s", ""]
    if not report["ok"]:
        lines += [f"**Stopped at {report['error']}**", ""]
    for cell in report["cells"]:
        if not (cell["stdout"].strip() or cell["markdown"] or cell["figures"]):
            continue
        lines.append(f"### cell {cell['cell']} ({cell['seconds']} s)")
        if cell["stdout"].strip():
            lines += ["```", cell["stdout"].rstrip(), "```"]
        lines += [table + "\n" for table in cell["markdown"]]
        lines += [f"![figure]({name})" for name in cell["figures"]]
        lines.append("")
    record.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--record", type=Path, help="write <RECORD>.md and .json (and figures) here")
    parser.add_argument("--quiet", action="store_true", help="do not echo each cell's output")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        print(f"No notebook at {args.notebook}.", file=sys.stderr)
        return 2
    record = args.record.resolve() if args.record else None
    report = run(args.notebook, record, echo=not args.quiet)
    print(f"{'completed' if report['ok'] else 'FAILED: ' + report['error']} in {report['seconds']} s")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
