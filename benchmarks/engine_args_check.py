"""Check lesson 06's engine commands against the files of the engine releases they name, and read the release after
vLLM's last Grok one to show why the course stops at vLLM 0.24.0.

    python benchmarks/engine_args_check.py                      # downloads what is missing (pip, no dependencies)
    python benchmarks/engine_args_check.py --vllm-later path/to/vllm-0.25.0-*.whl

Nothing is installed: `helpers.engines.check_command` reads each pinned wheel (sdist for llama.cpp) from the cache of
`helpers.engine_sources` — the model registry, the tokenizer loader, the option definitions. The release after
vLLM 0.24.0 is downloaded into a temporary folder the same way (`pip download --no-deps`) and its registry read.
Writes benchmarks/results/engine-args-check.json; tests/test_engines.py checks that the record is of today's commands.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers import engine_files, engine_sources, engines

HERE = Path(__file__).resolve().parent
LATER_VLLM = "0.25.0"  # the first vLLM release after the last one that serves Grok 2


def commands() -> dict[str, engines.EngineCommand]:
    released = engines.plan_deployment(gpu_memory_gib=80, gpus=8)
    converted = engines.plan_deployment(gpu_memory_gib=141, gpus=8, released_layout=False)
    return {
        "sglang: official, 8 x 80 GB": engines.sglang_command(released),
        "sglang: + LoRA adapter, API key, context": engines.sglang_command(
            released, adapters={"course-lora": "/local/adapters/course"}, api_key_placeholder="$SGLANG_API_KEY",
            context_length=8192),
        "sglang: two nodes of 4 GPUs, node 1": engines.sglang_command(
            released, nnodes=2, node_rank=1, dist_init_addr="10.0.0.1:5000"),
        "vllm: converted checkpoint, 8 x 141 GB": engines.vllm_command(converted, "/local/grok-2-converted"),
        "vllm: + LoRA adapter, API key": engines.vllm_command(
            converted, "/local/grok-2-converted", adapters={"course-lora": "/local/adapters/course"},
            api_key_placeholder="$VLLM_API_KEY"),
        "llama.cpp: Q4_K_M": engines.llama_cpp_command("/local/grok-2/grok-2-Q4_K_M.gguf", threads=32,
                                                       api_key_placeholder="$LLAMA_API_KEY"),
        "llama.cpp: 24 GB GPU + RAM, experts of 40 layers in RAM": engines.llama_cpp_command(
            "/local/grok-2-GGUF/grok-2-UD-Q2_K_XL-00001-of-00003.gguf", gpu_layers="all", n_cpu_moe=40),
        "llama.cpp: every expert in RAM": engines.llama_cpp_command("/local/grok-2.gguf", gpu_layers="all",
                                                                    cpu_moe=True),
    }


def later_vllm(path: str | None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        if path is None:
            spec = engine_sources.ENGINES["vllm"]
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--timeout", "60",
                            *spec.pip_options, "--dest", folder, f"vllm=={LATER_VLLM}"], check=True, timeout=1800)
            path = str(next(Path(folder).glob("vllm-*.whl")))
        files = engine_sources.EngineFiles("vllm", Path(path))
        registry = engine_files.served(files)
        return {"version": files.version, "wheel": Path(path).name, "serves_grok2": registry.ok,
                "evidence": registry.evidence}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vllm-later", default=None, help=f"a vLLM {LATER_VLLM} wheel (default: download it)")
    args = parser.parse_args(argv)
    checks = []
    for name, command in commands().items():
        check = engines.check_command(command, download=True)
        checks.append({"command": name, "engine": command.engine, "version": command.version, "argv": command.argv,
                       "ok": check.ok, "checked_with": check.checked_with, "serves_grok2": check.serves_grok2,
                       "tokenizer": check.tokenizer, "problems": check.problems, "notes": check.notes})
        print(f"{name:58s} ok={check.ok} ({check.checked_with}) {check.problems} {check.notes}")
    later = later_vllm(args.vllm_later)
    print(f"vllm {later['version']}: serves Grok 2: {later['serves_grok2']} ({later['evidence']})")
    report = {"date": time.strftime("%Y-%m-%d"), "command": "benchmarks/engine_args_check.py (see its docstring)",
              "engines": {e: f"{s.package}=={s.version}" for e, s in engine_sources.ENGINES.items()},
              "checks": checks, "later_releases": {"vllm": later}}
    (HERE / "results" / "engine-args-check.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
