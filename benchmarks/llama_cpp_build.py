"""How long building llama-server (and llama-quantize) from the pinned llama.cpp source takes, on this machine.

    python -m helpers.engine_sources build        # the build itself (what `bash scripts/course.sh test` runs)
    python benchmarks/llama_cpp_build.py          # records the time that build measured

The build writes its own measurement into `<cache>/llama.cpp-<version>/bin/build-info.json` (wall-clock seconds of
CMake's configure + build, the number of jobs). This script copies it, with the machine it ran on, into
benchmarks/results/llama-cpp-build.json, which `helpers.engine_sources` quotes before every build ("about N minutes").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from helpers import engine_sources
from helpers.errors import CourseError
from helpers.hardware import cpu_cores, cpu_name

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    args = parser.parse_args(argv)
    info_path = engine_sources.llama_cpp_home() / "bin" / "build-info.json"
    if not info_path.is_file():
        raise CourseError("No measured build on this machine.", "run `python -m helpers.engine_sources build` first")
    info = json.loads(info_path.read_text())
    cores = cpu_cores()
    record = {"date": time.strftime("%Y-%m-%d", time.localtime(info_path.stat().st_mtime)),
              "minutes": round(info["seconds"] / 60, 1), "seconds": info["seconds"], "jobs": info["jobs"],
              "targets": info["targets"], "llama_cpp_python": info["llama_cpp_python"],
              "machine": f"{cores} CPU cores ({cpu_name()})", "compiler": info["compiler"],
              "generator": info["generator"],
              "cpu_seconds": info.get("cpu_seconds"), "load_average_at_start": info.get("load_average_at_start"),
              "note": "measured by helpers.engine_sources.build_llama_cpp from a cold cache (nothing compiled "
                      f"before). {args.note}".strip()}
    (HERE / "results" / "llama-cpp-build.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
