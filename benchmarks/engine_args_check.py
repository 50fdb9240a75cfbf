"""Check the engine commands helpers.engines generates against the engines' own argument parsers.

SGLang and vLLM are multi-GB CUDA installs; their argument parsers, though, import on a CPU machine from the wheels
unpacked without dependencies plus a few light packages. How this file was run (Python 3.11, 2 CPU cores, no GPU):

    pip download --no-deps sglang==0.5.23 vllm==0.33.0 -d wheels
    unzip wheels/sglang-*.whl -d sgl && unzip wheels/vllm-*.whl -d vll
    # then `pip install --no-deps --target deps <pkg>` for each import that failed, until the parsers import:
    #   sglang: pybase64 triton msgspec aiohttp multidict yarl propcache aiohappyeyeballs aiosignal frozenlist
    #   vllm:   cachetools cbor2 cloudpickle py-cpuinfo openai-harmony uvloop apache-tvm-ffi llguidance ...
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 && tar xzf llama_cpp_python-0.3.36.tar.gz
    VLLM_TARGET_DEVICE=cpu PYTHONPATH=sgl:vll:deps python benchmarks/engine_args_check.py \
        --llama-cpp llama_cpp_python-0.3.36/vendor/llama.cpp

Writes benchmarks/results/engine-args-check.json. Without the engines installed every check falls back to the documented
flags, and the file records that instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from helpers import engines

HERE = Path(__file__).resolve().parent


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-cpp", default=None, help="a llama.cpp source tree (for common/arg.cpp)")
    args = parser.parse_args()
    released = engines.plan_deployment(gpu_memory_gb=80, gpus=8)
    converted = engines.plan_deployment(gpu_memory_gb=141, gpus=8, released_layout=False)
    commands = {
        "sglang: official, 8 x 80 GB": engines.sglang_command(released),
        "sglang: + LoRA adapter, API key, context": engines.sglang_command(
            released, adapters={"course-lora": "/local/adapters/course"}, api_key_placeholder="$SGLANG_API_KEY",
            context_length=8192),
        "vllm: converted checkpoint, 8 x 141 GB": engines.vllm_command(converted, "/local/grok-2-converted"),
        "vllm: + LoRA adapter, API key": engines.vllm_command(
            converted, "/local/grok-2-converted", adapters={"course-lora": "/local/adapters/course"},
            api_key_placeholder="$VLLM_API_KEY"),
        "llama.cpp: Q4_K_M": engines.llama_cpp_command("/local/grok-2/grok-2-Q4_K_M.gguf", threads=32,
                                                       api_key_placeholder="$LLAMA_API_KEY"),
    }
    checks = []
    for name, command in commands.items():
        check = engines.check_arguments(command, llama_cpp_source=args.llama_cpp)
        checks.append({"command": name, "engine": command.engine, "argv": command.argv, "ok": check.ok,
                       "checked_with": check.checked_with, "problems": check.problems, "notes": check.notes,
                       "parsed": {k: str(v) for k, v in check.parsed.items()}})
        print(f"{name:45s} ok={check.ok} ({check.checked_with}) {check.problems} {check.notes}")
    report = {"date": time.strftime("%Y-%m-%d"), "command": "benchmarks/engine_args_check.py (see its docstring)",
              "engines": "sglang 0.5.23 and vllm 0.33.0 wheels (parsers only, no CUDA); llama.cpp as vendored in "
                         "llama-cpp-python 0.3.36",
              "checks": checks}
    (HERE / "results" / "engine-args-check.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
