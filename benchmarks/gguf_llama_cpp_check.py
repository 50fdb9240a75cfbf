"""Run the tiny Grok 2's GGUF (helpers.gguf.export_gguf) in llama.cpp's own llama-server and compare with transformers.

    python -m helpers.engine_sources build        # once per machine: llama-server from the pinned llama.cpp source
    python benchmarks/gguf_llama_cpp_check.py [--questions 40] [--max-new-tokens 48]

llama-server is the one built by helpers.engine_sources (llama.cpp vendored in the pinned llama-cpp-python, CPU only),
started by helpers.llama_cpp with the experts forced onto the CPU buffer (`--cpu-moe`) and one thread, and asked
through lesson 06's client code (helpers.engines.ask: the `openai` package, temperature 0). For the course's questions
(data/course_qa.jsonl) it compares the greedy answers of llama.cpp and of helpers.chat.generate. They need not be
equal: llama.cpp's Grok graph differs from the reference (YaRN RoPE, renormalised top-2, no attention temperature, no
router cap: helpers.engines.LLAMA_CPP_DIFFERENCES). Two files are compared: as llama.cpp's converter writes it (YaRN),
and with plain RoPE (`rope_as_converter=False`). Writes benchmarks/results/gguf-llama-cpp-check.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import helpers
import helpers.gguf
from helpers import engine_sources, llama_cpp

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, tokenizer = helpers.load_model(verbose=False), helpers.load_tokenizer()
    questions = llama_cpp.course_questions(args.questions)
    variants = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant, as_converter in (("as the converter writes it (YaRN)", True), ("plain RoPE", False)):
            path = helpers.gguf.export_gguf(model, Path(folder) / f"tiny-{as_converter}.gguf", tokenizer=tokenizer,
                                            rope_as_converter=as_converter)
            report = helpers.gguf.verify_gguf(path, model, tokenizer)
            started = time.perf_counter()
            run = llama_cpp.compare_greedy(model, tokenizer, path, questions, args.max_new_tokens, cpu_moe=True)
            variants[variant] = {"gguf_verified": report["ok"], "identical_answers": run["identical"],
                                 "seconds": round(time.perf_counter() - started, 1), "command": run["command"],
                                 "results": run["rows"]}
            print(f"{variant}: {run['identical']}/{run['questions']} identical greedy answers; "
                  f"GGUF verified: {report['ok']}")
    release = engine_sources.ENGINES["llama.cpp"]
    summary = {"date": time.strftime("%Y-%m-%d"), "questions": len(questions), "max_new_tokens": args.max_new_tokens,
               "llama_cpp": f"llama-server, llama.cpp vendored in {release.package} {release.version} (CPU build, "
                            "1 thread, --cpu-moe), asked through helpers.engines.ask",
               "variants": variants}
    (HERE / "results" / "gguf-llama-cpp-check.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


if __name__ == "__main__":
    main()
