"""Lesson 03's measurements on a model large enough to mean something, on whatever device is here.

Builds a Llama-shaped model with random weights locally (no download), saves it once, then loads it in each precision
with helpers.load_model and records: memory footprint, the quantized matrices' bytes vs the planner, prefill and
decode tokens/s. Writes benchmarks/results/quantization-<device>.json and .md with the machine and versions.

    python benchmarks/quantization_benchmark.py --size 1b      # on a CUDA GPU (the H100 record)
    python benchmarks/quantization_benchmark.py --size tiny    # a CPU smoke run (minutes)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import helpers  # noqa: E402
from helpers.evaluation import measure_speed  # noqa: E402
from helpers.quantization import quantized_module_bytes  # noqa: E402

SIZES = {  # Llama-shaped: hidden, intermediate, layers, heads, kv heads
    "tiny": (256, 704, 4, 4, 2),  # bitsandbytes CPU kernels need widths divisible by 32
    "1b": (2048, 5632, 22, 32, 4),
}


def build_model(size: str, folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, intermediate, layers, heads, kv = SIZES[size]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=32000, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {
        "command": " ".join(["python", *sys.argv]),
        "machine": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine(),
        "versions": {name: __import__(name).__version__ for name in ("torch", "transformers", "bitsandbytes")},
        "size": args.size,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        build_model(args.size, Path(folder))
        from transformers import AutoConfig

        plan = helpers.plan_memory(AutoConfig.from_pretrained(folder), name=f"llama-{args.size}")
        for kind in (None, "int8", "nf4"):
            model = helpers.load_model(folder, quantization=kind, dtype="bfloat16" if device == "cuda" else "float32", verbose=False)
            stored, _ = quantized_module_bytes(model)
            speed = measure_speed(model, prompt_len=args.prompt_len, new_tokens=args.new_tokens, repeats=3)
            results["rows"].append({
                "precision": kind or ("bf16" if device == "cuda" else "fp32"),
                "footprint_bytes": model.get_memory_footprint(),
                "quantized_matrix_bytes": stored or None,
                "planner_matrix_bytes": plan.quantized_matrix_bytes(kind) if kind else None,
                "prefill_tokens_per_s": round(speed.prefill_tokens_per_s, 1),
                "decode_tokens_per_s": round(speed.decode_tokens_per_s, 2),
            })
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    out = REPO / "benchmarks" / "results" / f"quantization-{args.size}-{device}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Quantization, {args.size} Llama-shaped model ({plan.total_params / 1e9:.2f}B params), {results['machine']}",
             "", f"`{results['command']}` - versions {results['versions']}", "",
             "| precision | footprint MB | quantized matrices MB | planner MB | prefill tok/s | decode tok/s |", "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        mb = lambda v: f"{v / 1e6:.1f}" if v else "-"  # noqa: E731
        lines.append(f"| {row['precision']} | {mb(row['footprint_bytes'])} | {mb(row['quantized_matrix_bytes'])} | "
                     f"{mb(row['planner_matrix_bytes'])} | {row['prefill_tokens_per_s']} | {row['decode_tokens_per_s']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
