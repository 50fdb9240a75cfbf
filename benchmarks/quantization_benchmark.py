"""Lesson 03's measurements on a model large enough to mean something, on whatever device is here.

Builds a model of a real architecture with random weights locally (no download, seeded), saves it once, then loads it
in each precision with `helpers.load_model(quantization=...)` and records per precision:
  - memory: `get_memory_footprint()`, the bytes bitsandbytes stores for the matrices it quantized next to the memory
    planner's figure for the same matrices (and the planner's own expectation of which matrices get quantized),
    and on CUDA the memory allocated after loading and the peak while running;
  - speed: prefill and decode tokens/s (helpers.evaluation.measure_speed);
  - numerical fidelity: top-1 agreement and KL divergence of next-token distributions against the full-precision
    model on the same random prompts (random weights: this measures rounding, not language quality).
Writes benchmarks/results/quantization-<model>-<device>.json and .md with the command, machine and versions.

    # the record the course wants, on one CUDA GPU (an H100; results in benchmarks/results/quantization-*-cuda.md)
    python benchmarks/quantization_benchmark.py --model llama-1b
    python benchmarks/quantization_benchmark.py --model granitemoe-3b
    # CPU runs (small shapes of the same architectures; 1-2 minutes each on a busy 2-core machine)
    python benchmarks/quantization_benchmark.py --model llama-cpu --threads 1
    python benchmarks/quantization_benchmark.py --model granitemoe-cpu --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

import helpers
from helpers.evaluation import agreement, measure_speed, next_token_logprobs
from helpers.quantization import (
    planned_bytes, quantized_footprint, unquantized_matrices, whole_model_bytes)
from helpers.roofline import machine_info
from helpers.tables import markdown_table

# Shapes of real models (random weights). Llama: TinyLlama-1.1B's shape. GraniteMoE: the course's `small` profile
# (Granite 3.1 3B-A800M, data/configs/), whose experts are 3D tensors in transformers v5.
MODELS = {
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                               num_key_value_heads=4, vocab_size=32000)),
    "llama-cpu": ("llama", dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                                num_key_value_heads=4, vocab_size=32000)),
    "granitemoe-3b": ("granitemoe", dict(hidden_size=1536, intermediate_size=512, num_hidden_layers=32,
                                         num_attention_heads=24, num_key_value_heads=8, num_local_experts=40,
                                         num_experts_per_tok=8, vocab_size=49155)),
    "granitemoe-cpu": ("granitemoe", dict(hidden_size=512, intermediate_size=256, num_hidden_layers=8,
                                          num_attention_heads=8, num_key_value_heads=4, num_local_experts=40,
                                          num_experts_per_tok=8, vocab_size=49155)),
    # seconds, for the test suite: checks the script end to end, measures nothing worth keeping
    "llama-smoke": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=512)),
}


def build_model(name: str, folder: Path, device: str) -> None:
    from transformers import GraniteMoeConfig, GraniteMoeForCausalLM, LlamaConfig, LlamaForCausalLM

    arch, shape = MODELS[name]
    if arch == "llama":
        config, cls = LlamaConfig(tie_word_embeddings=False, **shape), LlamaForCausalLM
    else:
        config, cls = GraniteMoeConfig(tie_word_embeddings=True, **shape), GraniteMoeForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="llama-1b")
    parser.add_argument("--prompt-len", type=int, default=None, help="default: 512 on CUDA, 128 on CPU")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 64 on CUDA, 16 on CPU")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fidelity-prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (1 avoids oversubscription on a busy CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    prompt_len = args.prompt_len or (512 if device == "cuda" else 128)
    new_tokens = args.new_tokens or (64 if device == "cuda" else 16)
    # LLM.int8 quantizes activations from fp16; with fp32 activations (CPU) bitsandbytes logs a cast on every matmul.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    full = "bf16" if device == "cuda" else "fp32"
    results = {
        "command": " ".join(["python", "benchmarks/quantization_benchmark.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "versions": {name: __import__(name).__version__ for name in ("torch", "transformers", "bitsandbytes")},
        "model": args.model,
        "architecture": MODELS[args.model][0],
        "shape": MODELS[args.model][1],
        "prompt_len": prompt_len, "new_tokens": new_tokens, "batch": args.batch,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        build_model(args.model, Path(folder), device)
        results["build_s"] = round(time.perf_counter() - started, 1)
        from transformers import AutoConfig

        plan = helpers.plan_memory(AutoConfig.from_pretrained(folder), name=args.model)
        results["parameters"] = plan.total_params
        results["planner"] = {"quantizable_params": plan.quantizable_params,
                              "quantizable_matrices": plan.quantizable_matrices}
        generator = torch.Generator().manual_seed(1)
        vocab = MODELS[args.model][1]["vocab_size"]
        prompts = [torch.randint(3, vocab, (prompt_len,), generator=generator) for _ in range(args.fidelity_prompts)]
        reference = None
        for kind in (None, "int8", "nf4", "fp4"):
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            model = helpers.load_model(folder, quantization=kind, dtype="bfloat16" if device == "cuda" else "float32",
                                       verbose=False)
            load_s = time.perf_counter() - started
            allocated = torch.cuda.memory_allocated() if device == "cuda" else None
            footprint, whole_at_load = quantized_footprint(model), whole_model_bytes(model)
            if reference is None:
                reference = next_token_logprobs(model, None, prompts)
                fidelity = None
            else:
                fidelity = agreement(reference, model, None, prompts)
            speed = measure_speed(model, prompt_len=prompt_len, new_tokens=new_tokens, batch=args.batch,
                                  repeats=args.repeats)
            left = unquantized_matrices(model) if kind else {}
            results["rows"].append({
                "precision": kind or full,
                "load_s": round(load_s, 1),
                "footprint_bytes": model.get_memory_footprint(),  # parameters and buffers, as transformers counts
                # ... plus the scales and code books bitsandbytes keeps outside the parameters (quant_state, SCB),
                # as loaded and after the runs (on AVX512-BF16 CPUs bitsandbytes re-packs 4-bit layers on first use)
                "whole_model_bytes": whole_at_load,
                "whole_model_bytes_after_use": whole_model_bytes(model),
                "cuda_allocated_bytes": allocated,
                "cuda_peak_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
                "quantized_matrices": footprint.matrices,
                "quantized_weights": footprint.weights,
                "quantized_stored_bytes": footprint.stored_bytes or None,
                "planner_bytes_same_matrices": planned_bytes(footprint, kind) if kind else None,
                "planner_bytes_expected_matrices": plan.quantized_matrix_bytes(kind) if kind else None,
                "bits_per_weight": round(footprint.bits_per_weight, 3) if kind else None,
                "unquantized_matrix_weights": sum(left.values()) if kind else None,
                "prefill_tokens_per_s": round(speed.prefill_tokens_per_s, 1),
                "decode_tokens_per_s": round(speed.decode_tokens_per_s, 2),
                "top1_agreement": round(fidelity.top1, 4) if fidelity else None,
                "kl_nats": fidelity.kl if fidelity else None,
            })
            print(results["rows"][-1], flush=True)
            del model
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"quantization-{args.model}-{device}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return out


def markdown(results: dict) -> str:
    m, mb = results["machine"], (lambda v: round(v / 1e6, 1) if v else None)  # noqa: E731
    where = (f"{m['gpu']} ({m['gpu_memory_GiB']} GiB, CUDA {m['cuda']})" if m["device"] == "cuda"
             else f"CPU only: {m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch thread(s)")
    rows = [{
        "precision": r["precision"],
        "whole model MB": mb(r["whole_model_bytes"]),
        "after use MB": mb(r["whole_model_bytes_after_use"]),
        **({"CUDA allocated MB": mb(r["cuda_allocated_bytes"]), "CUDA peak MB": mb(r["cuda_peak_bytes"])}
           if m["device"] == "cuda" else {}),
        "quantized matrices MB (measured)": mb(r["quantized_stored_bytes"]),
        "planner, same matrices MB": mb(r["planner_bytes_same_matrices"]),
        "planner, expected matrices MB": mb(r["planner_bytes_expected_matrices"]),
        "left unquantized (M weights)": round(r["unquantized_matrix_weights"] / 1e6, 1)
        if r["unquantized_matrix_weights"] else None,
        "prefill tok/s": r["prefill_tokens_per_s"],
        "decode tok/s": r["decode_tokens_per_s"],
        "top-1 vs full": r["top1_agreement"],
        "KL vs full (nats)": r["kl_nats"],
    } for r in results["rows"]]
    return "\n".join([
        f"# Quantization benchmark: {results['model']} ({results['architecture']}-shaped, random weights, "
        f"{results['parameters'] / 1e9:.3f}B parameters)",
        "",
        f"- **Where**: {where}; {m['platform']}",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"- **Command**: `{results['command']}` ({results['date']})",
        f"- **Workload**: prompt {results['prompt_len']} tokens, {results['new_tokens']} new tokens, batch "
        f"{results['batch']}; speed = best of several runs; fidelity on random prompts (random weights: rounding, "
        "not language quality)",
        "",
        markdown_table(rows),
    ])


if __name__ == "__main__":
    main()
