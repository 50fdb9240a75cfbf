"""The drift check's Python half: which packages to upgrade, what is installed, and the report.

`bash scripts/course.sh drift` calls it (see that script's header); on its own:

    python scripts/drift.py packages                 the pinned runtime packages the drift run upgrades (all but torch)
    python scripts/drift.py constraints              the pins the drift run keeps (torch), as a pip constraints file
    python scripts/drift.py installed                {package: version} installed in this Python, as JSON
    python scripts/drift.py report --junit J --rc N --pinned P --out F [--pip-check C] [--constraints T]
                                                     writes the Markdown report

Why torch is never upgraded: pyproject pins the release whose CPU wheel the course installs. The newest torch from
PyPI is a CUDA build that pulls several GB of nvidia-* wheels onto a machine without a GPU, and a new torch release
is a deliberate, separately tested change (the pins of bitsandbytes and the GPU benchmarks depend on it). The drift
run answers one question: does the course still work with the newest *Python* libraries on the same torch?
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from helpers.environment import pyproject_requirements

KEPT_AT_THE_PIN = ("torch",)  # see the module docstring


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    """{canonical name: version} of `[project] dependencies`, in pyproject order."""
    found = {}
    for requirement in pyproject_requirements(ROOT / "pyproject.toml"):
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*(\S+)\s*", requirement)
        if not match:
            raise SystemExit(f"not pinned with ==: {requirement!r}")
        found[canonical(match.group(1))] = match.group(2)
    return found


def upgraded_packages() -> list[str]:
    return [name for name in pins() if name not in KEPT_AT_THE_PIN]


def installed() -> dict[str, str]:
    versions = {}
    for name in pins():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def newest_on_index(name: str) -> str:
    """The newest release the package index offers (`pip index versions`); '?' when it cannot be asked."""
    try:
        result = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name], capture_output=True,
                                text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(r"^\S+ \(([^)]+)\)", result.stdout, re.MULTILINE)
    return match.group(1) if match else "?"


def why_not(name: str, version: str, constraints: str) -> str:
    """Why pip would not install name==version here: the lines of its "conflict is caused by" answer (a dry run)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", f"{name}=={version}"]
    if constraints:
        command += ["-c", constraints]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return "pip did not answer"
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    if "The conflict is caused by:" in lines:
        cause = lines[lines.index("The conflict is caused by:") + 1:]
        cause = cause[: next((i for i, line in enumerate(cause) if not line), len(cause))]
        missing = [line for line in lines if line.startswith("ERROR: No matching distribution")]
        return "; ".join(cause[:4] + (["..."] if len(cause) > 4 else []) + missing[:1])
    if result.returncode == 0:
        return "installable on its own: pip chose an older release to satisfy the other upgraded packages together"
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:") and "yanked" not in line]
    return "; ".join(errors[-1:]) if errors else f"pip exit code {result.returncode}"


def version_key(version: str):
    parts = re.findall(r"\d+|[a-z]+", version.split("+")[0].lower())
    return [(0, int(p)) if p.isdigit() else (-1, p) for p in parts]


def failures(junit: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Counts and (test id, first line of the message) of each failed or erroring test in a JUnit XML file."""
    if not junit.is_file():
        return {}, []
    root = ET.parse(junit).getroot()
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    broken = []
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            element = case.find(kind)
            if element is not None:
                test_id = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
                message = (element.get("message") or element.text or "").strip().splitlines()
                broken.append((test_id, (message[0] if message else kind)[:300]))
    return counts, broken


def report(args) -> str:
    pinned = pins()
    before = json.loads(Path(args.pinned).read_text()) if args.pinned else {}
    after = installed()
    rows = []
    changed = 0
    for name, pin in pinned.items():
        newest = newest_on_index(name)
        now = after.get(name, "?")
        if name in KEPT_AT_THE_PIN:
            status = "kept at the pin (CPU wheel; see below)"
        elif now == pin:
            status = ("no newer release" if newest in (pin, "?") else
                      f"{newest} not installable here: {why_not(name, newest, args.constraints)}".replace("|", "/"))
        elif newest not in ("?", now) and version_key(newest) > version_key(now):
            status = f"{newest} not installable here: {why_not(name, newest, args.constraints)}".replace("|", "/")
        else:
            status = "upgraded to the newest"
        changed += now != pin
        rows.append(f"| {name} | {pin} | {before.get(name, '?')} | {now} | {newest} | {status} |")
    counts, broken = failures(Path(args.junit))
    lines = [
        "# Drift report",
        "",
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bash scripts/course.sh drift` "
        f"(Python {sys.version.split()[0]}). The course was installed at its pins in `.venv-drift`, then every runtime "
        "package except torch was upgraded to the newest release pip would install beside the pinned torch, and the "
        "whole test suite (tests and every notebook, tiny profile, offline) ran against that.",
        "",
        f"**Packages:** {changed} of {len(pinned)} differ from the pins. "
        f"**Tests:** exit code {args.rc}; " + (
            f"{counts['tests']} collected, {counts['failures']} failed, {counts['errors']} errors, "
            f"{counts['skipped']} skipped." if counts else "no JUnit report was written (pytest did not get to run)."),
        "",
        "## Versions",
        "",
        "| package | pinned (pyproject.toml) | installed before upgrading | installed for the run | newest on the index | status |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "torch stays at its pin: the newest torch on PyPI is a CUDA build that downloads several GB of nvidia-* wheels "
        "onto a machine without a GPU, and moving torch is a deliberate change tested on a GPU.",
        "",
        "## Tests that broke",
        "",
    ]
    if broken:
        lines += ["| test | first line of the failure |", "|---|---|"]
        lines += [f"| `{test}` | {message.replace('|', '/')} |" for test, message in broken]
    elif counts:
        lines.append("None: every test and notebook passed with the newest packages.")
    else:
        lines.append("Unknown: the test run did not produce a report.")
    if args.pip_check and Path(args.pip_check).is_file():
        conflicts = [line for line in Path(args.pip_check).read_text().splitlines()
                     if line.strip() and "grok2-course" not in line and "No broken requirements" not in line]
        lines += ["", "## `pip check` (the course's own pins left out)", ""]
        lines += [f"- {line}" for line in conflicts] or ["No conflicts between the upgraded packages."]
    lines += ["", "To take a newer version: change its pin in `pyproject.toml` (the single source of truth), run "
              "`python scripts/colab_cells.py` (the Colab requirements follow it), then `bash scripts/course.sh test`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("packages")
    sub.add_parser("constraints")
    sub.add_parser("installed")
    r = sub.add_parser("report")
    r.add_argument("--junit", required=True)
    r.add_argument("--rc", type=int, required=True)
    r.add_argument("--pinned", default="")
    r.add_argument("--pip-check", default="")
    r.add_argument("--constraints", default="", help="the constraints file the upgrade used (torch's pin)")
    r.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "packages":
        print("\n".join(upgraded_packages()))
    elif args.command == "constraints":
        print("\n".join(f"{name}=={pins()[name]}" for name in KEPT_AT_THE_PIN))
    elif args.command == "installed":
        print(json.dumps(installed(), indent=1))
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(args), encoding="utf-8")
        print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
