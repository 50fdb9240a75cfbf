"""Run the tiny Grok 2's GGUF (helpers.engines.export_gguf) in llama.cpp itself and compare with transformers.

    python benchmarks/gguf_llama_cpp_check.py --llama-simple /path/to/llama.cpp/build/bin/llama-simple

llama.cpp was built from the copy vendored in llama-cpp-python 0.3.36 (`pip download --no-deps --no-binary :all:
llama-cpp-python==0.3.36`, then `cmake -S vendor/llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
-DLLAMA_CURL=OFF && ninja -C build llama-simple`, ~10 min on 2 busy cores; llama-simple was then recompiled from
examples/simple/simple.cpp with `ctx_params.n_threads = ctx_params.n_threads_batch = 1`, since its default threads
spin against other work on a busy 2-core machine - 60 s instead of 0.15 s per answer). For the course's questions
(data/course_qa.jsonl) it compares the greedy answers of llama.cpp and of helpers.chat.generate. They need not be equal:
llama.cpp's Grok graph differs from the reference (YaRN RoPE, renormalised top-2, no attention temperature, no router
cap: helpers.engines.LLAMA_CPP_DIFFERENCES). Two files are compared: as llama.cpp's converter writes it (YaRN), and
with plain RoPE (`rope_as_converter=False`). Writes benchmarks/results/gguf-llama-cpp-check.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import helpers
from helpers import engines
from helpers.chat import SamplingSettings, generate, render

HERE = Path(__file__).resolve().parent


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-simple", required=True)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = helpers.load_model(verbose=False), helpers.load_tokenizer()
    rows = [json.loads(line) for line in (helpers.paths.DATA_DIR / "course_qa.jsonl").read_text().splitlines()]
    questions = [r["messages"][0]["content"] for r in rows if r["messages"][0]["role"] == "user"][: args.questions]
    variants = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant, as_converter in (("as the converter writes it (YaRN)", True), ("plain RoPE", False)):
            path = engines.export_gguf(model, Path(folder) / f"tiny-{as_converter}.gguf", tokenizer=tokenizer,
                                       rope_as_converter=as_converter)
            report = engines.verify_gguf(path, model, tokenizer)
            results = []
            for question in questions:
                prompt = render(tokenizer, [{"role": "user", "content": question}])
                n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
                ours = generate(model, tokenizer, [{"role": "user", "content": question}],
                                SamplingSettings(max_new_tokens=args.max_new_tokens)).text
                # llama-simple's -n counts the prompt too; it prints prompt + answer, stopping at an end-of-turn id
                out = subprocess.run([args.llama_simple, "-m", str(path), "-n", str(n_prompt + args.max_new_tokens),
                                      prompt], capture_output=True, text=True, timeout=120).stdout
                theirs = (out[out.index(prompt) + len(prompt):] if prompt in out else out).rstrip("\n")
                results.append({"question": question, "transformers": ours, "llama.cpp": theirs,
                                "same": theirs.strip() == ours.strip()})
            same = sum(r["same"] for r in results)
            variants[variant] = {"gguf_verified": report["ok"], "identical_answers": same, "results": results}
            print(f"{variant}: {same}/{len(results)} identical greedy answers; GGUF verified: {report['ok']}")
    summary = {"date": time.strftime("%Y-%m-%d"), "questions": len(questions),
               "llama_cpp": "vendored in llama-cpp-python 0.3.36 (examples/simple, CPU, 1 thread)",
               "variants": variants}
    (HERE / "results" / "gguf-llama-cpp-check.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


if __name__ == "__main__":
    main()
