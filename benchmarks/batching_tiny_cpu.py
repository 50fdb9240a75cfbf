"""When does batching pay off? Tiny Grok 2 on CPU: the same 8 chat questions answered 1, 2, 4 and 8 at a time.

    .venv/bin/python benchmarks/batching_tiny_cpu.py [--threads 1 2] [--repeats 5]

writes benchmarks/results/batching-tiny-cpu.json (every number, the machine, the versions) and .md (the tables).

Two workloads, both through helpers.chat.measure_batching (left-padded batches, greedy, best of --repeats after a
warm-up):
* "chat answers": real answers that stop at <|separator|> (5 to 30 tokens): a batch runs until its longest answer
  ends, so short answers wait for long ones;
* "fixed 32 tokens": stop ids and strings off, every row generates exactly 32 tokens: the batching effect alone.

CPU only, tiny model (675k parameters): the numbers say how Python overhead per decoding step is shared by a batch,
not how a GPU scales. The machine's load average is recorded because a shared machine slows runs down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("GROK2_COURSE_PROFILE", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]

import torch
import transformers

import helpers
from helpers.chat import SamplingSettings, measure_batching
from helpers.hardware import cpu_cores, cpu_name

QUESTIONS = [
    "How many experts does Grok 2 have?", "What is your name?", "How many layers does Grok 2 have?",
    "What is lesson 01 about?", "What is QLoRA?", "What is the separator token?",
    "Can I run Grok 2.5 on a 24 GB GPU?", "How do I run the tests?",
]
WORKLOADS = {
    "chat answers": SamplingSettings(max_new_tokens=48),
    "fixed 32 tokens": SamplingSettings(max_new_tokens=32, stop=(), stop_token_ids=()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "batching-tiny-cpu.json")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from an existing --out .json")
    args = parser.parse_args()
    if args.markdown_only:
        result = json.loads(args.out.read_text(encoding="utf-8"))
        args.out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
        return

    model = helpers.load_model(verbose=False)
    tokenizer = helpers.load_tokenizer()
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    result = {
        "what": "tiny Grok 2, greedy, the same 8 chat questions answered batch_size at a time (left padding)",
        "command": "python benchmarks/batching_tiny_cpu.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": cpu_name(), "cores": cpu_cores(), "load_average_before": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "repeats": args.repeats,
        "runs": [],
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, settings in WORKLOADS.items():
            timings = measure_batching(model, tokenizer, conversations, args.batch_sizes, settings, args.repeats)
            base = timings[0].sequences_per_second
            for t in timings:
                row = {"threads": threads, "workload": name, "batch_size": t.batch_size, "seconds": round(t.seconds, 4),
                       "sequences_per_second": round(t.sequences_per_second, 2),
                       "tokens_per_second": round(t.tokens_per_second, 1), "completion_tokens": t.completion_tokens,
                       "speedup_vs_batch_1": round(t.sequences_per_second / base, 2)}
                result["runs"].append(row)
                print(f"threads {threads}  {name:16s} batch {t.batch_size}: {t.sequences_per_second:7.2f} seq/s "
                      f"{t.tokens_per_second:8.1f} tok/s  x{row['speedup_vs_batch_1']:.2f}", flush=True)
    result["machine"]["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(f"written to {args.out} and {args.out.with_suffix('.md')}")


def span(values: list[float]) -> str:
    low, high = f"{min(values):.1f}", f"{max(values):.1f}"
    return low if low == high else f"{low}-{high}"


def markdown(result: dict) -> str:
    machine, versions = result["machine"], result["versions"]
    lines = [
        "# Batching the tiny Grok 2 on CPU",
        "",
        f"{result['what']}. Best of {result['repeats']} runs after a warm-up.",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, CPU only; load average "
        f"{machine['load_average_before'][0]:.1f} before, {machine['load_average_after'][0]:.1f} after "
        "(a shared machine: other jobs slow runs down, the best run counts)",
        f"- versions: Python {versions['python']}, torch {versions['torch']}, transformers {versions['transformers']}",
        f"- date: {result['date']}",
        "",
        "| threads | workload | batch | seconds (8 answers) | answers/s | generated tokens/s | x batch 1 |",
        "|---|---|---|---|---|---|---|",
    ]
    oversubscribed = machine["load_average_before"][0] > machine["cores"]
    for row in result["runs"]:
        lines.append(f"| {row['threads']} | {row['workload']} | {row['batch_size']} | {row['seconds']:.3f} | "
                     f"{row['sequences_per_second']:.1f} | {row['tokens_per_second']:.0f} | {row['speedup_vs_batch_1']:.2f} |")
    single = [r["seconds"] for r in result["runs"] if r["threads"] == 1 and r["batch_size"] == 1]
    multi = [r["seconds"] for r in result["runs"] if r["threads"] > 1 and r["batch_size"] == 1]
    if oversubscribed and single and multi:
        lines += ["", f"**Read the rows with more than one thread with care.** The load average was above the "
                  f"{machine['cores']} cores: other jobs held them, and PyTorch's worker threads spent much of each "
                  f"step waiting for one another (one at a time, the 8 answers took {span(single)} s on one thread and "
                  f"{span(multi)} s on more). Those rows measure the contention "
                  "more than batching; the one-thread rows are the batching figure."]
    lines += ["", "CPU, tiny model: a decoding step costs mostly fixed Python and dispatch overhead, which a batch shares;",
              "on a GPU with a real model a step is bound by reading the weights, which a batch also shares, until the",
              "arithmetic units are full. The two do not scale alike: measure on your own hardware (lesson 04).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
