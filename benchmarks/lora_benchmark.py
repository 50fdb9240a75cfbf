"""Lesson 05's measurements - LoRA and QLoRA training - on a Grok-2-shaped model large enough to mean something.

Builds Grok 2's architecture (helpers.grok2, every feature of the released config) at a chosen size with random
weights (seeded, no download), saves it once in bf16, then for each mode loads it with `helpers.load_model`, wraps it
with LoRA on attention + dense MLP + experts (router frozen) through `helpers.finetune.apply_lora`, and trains with
`helpers.finetune.train` on the course's French FAQ set (tokenized with the tiny tokenizer, packed into
`--seq-len`-token sequences). Per mode it records:
  - memory: the weights' bytes next to the planner's figure (finetune.plan_lora), on CUDA the memory allocated
    after loading, before training, and the peak during training (torch.cuda.max_memory_allocated), plus the
    planner's activation estimate; on CPU the process's resident memory before and after;
  - time: median seconds per optimizer step, tokens/s (first steps excluded as warm-up);
  - the answer loss on the held-out packs before and after (random weights: shows that training works, nothing
    about language quality);
  - the optimizer actually used (bitsandbytes' paged AdamW on CUDA).
Writes benchmarks/results/lora-<size>-<device>.json and .md with the command, machine and versions.

    # the record the course wants, on one CUDA GPU (an H100): ~4.3B-parameter Grok-2-shaped model, bf16 LoRA vs QLoRA
    python benchmarks/lora_benchmark.py --size grok2-4b
    # CPU run (a 19M-parameter model of the same shape; a few minutes on a busy 2-core machine)
    python benchmarks/lora_benchmark.py --size grok2-cpu --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import helpers
from helpers import finetune
from helpers.grok2 import Grok2Config, Grok2ForCausalLM
from helpers.hardware import machine_info
from helpers.paths import REPO_ROOT as REPO
from helpers.units import GB

# Grok 2's proportions: 8 query heads per KV head, head_dim 128 (64 on CPU), dense MLP 4 x hidden, experts 2 x hidden.
SIZES = {
    "grok2-4b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=2, head_dim=128,
                     intermediate_size=8192, moe_intermediate_size=4096, vocab_size=32768),
    "grok2-cpu": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=1, head_dim=32,
                      intermediate_size=1024, moe_intermediate_size=512, vocab_size=4096),
    # seconds, for the test suite: checks the script end to end, measures nothing worth keeping
    "grok2-smoke": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        intermediate_size=128, moe_intermediate_size=64, vocab_size=1024),
}
DEFAULTS = {  # steps, batch, seq_len, rank, gradient checkpointing
    "grok2-4b": (30, 4, 1024, 16, True),
    "grok2-cpu": (12, 2, 256, 16, False),
    "grok2-smoke": (3, 2, 64, 4, False),
}


def build_model(size: str, folder: Path, device: str) -> Grok2Config:
    shape = SIZES[size]
    config = Grok2Config(num_local_experts=8, num_experts_per_tok=2, residual_moe=True,
                         embedding_multiplier_scale=shape["hidden_size"] ** 0.5, max_position_embeddings=4096,
                         original_max_position_embeddings=256, attn_temperature_len=1024, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Grok2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return config


def pack(examples: list[finetune.Example], seq_len: int, seed: int = 0) -> list[finetune.Example]:
    """Concatenate conversations (in a seeded order) into sequences of at most `seq_len` tokens; labels stay on the
    answers. (No attention mask between packed conversations: fine for a speed and memory benchmark.)"""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    packed, ids, labels = [], [], []
    for index in order * 8:  # enough repetitions to fill long sequences from a small set
        example = examples[index]
        if len(ids) + len(example.input_ids) > seq_len:
            packed.append(finetune.Example(tuple(ids), tuple(labels), len(packed) + 1))
            ids, labels = [], []
        ids += example.input_ids
        labels += example.labels
    return packed


def machine(device: str) -> dict:
    """Where it was measured (helpers.hardware.machine_info) and the versions of the libraries that did the work."""
    import accelerate
    import bitsandbytes
    import peft
    import transformers

    info = machine_info(device)
    info.update(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                accelerate=accelerate.__version__, bitsandbytes=bitsandbytes.__version__)
    return info


def run_mode(mode: str, folder: Path, config, train_set, heldout_set, args, device: str) -> dict:
    quantization = "nf4" if mode == "qlora" else None
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = helpers.load_model(folder, quantization=quantization, verbose=True)
    loaded = finetune.memory_snapshot(model)
    lora = finetune.LoraSettings(rank=args.rank, alpha=2.0 * args.rank, dropout=0.0)
    model = finetune.apply_lora(model, lora, seed=0, gradient_checkpointing=args.gradient_checkpointing)
    trainable, total = finetune.count_parameters(model)
    precision = "nf4" if quantization else ("fp32" if model.dtype == torch.float32 else "bf16")
    plan = finetune.plan_lora(config, lora, precision=precision, batch_size=args.batch_size, seq_len=args.seq_len,
                              gradient_checkpointing=args.gradient_checkpointing)
    settings = finetune.TrainSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                                      warmup_steps=2, seed=0, eval_every=args.steps, save_every=0)
    optimizer_name = type(finetune.make_optimizer([torch.nn.Parameter(torch.zeros(1, device=model.device))],
                                                  settings, model.device)).__name__
    before = finetune.memory_snapshot(model)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = finetune.train(model, train_set, settings, heldout=heldout_set, progress=True)
    speed = finetune.throughput(result.history, skip_first=min(3, args.steps - 1))
    held = result.heldout_losses
    record = {
        "mode": mode, "quantization": quantization, "dtype": str(model.dtype).removeprefix("torch."),
        "optimizer": optimizer_name, "trainable_params": trainable, "total_params": total,
        "plan": {"precision": precision, "lora_params": plan.lora_params, "base_weight_GB": plan.base_weight_bytes / GB,
                 "training_state_GB": plan.training_state_bytes / GB, "activation_GB_estimate": plan.activation_bytes / GB,
                 "total_GB": plan.total_bytes / GB},
        "memory_after_load": loaded, "memory_before_training": before, "memory_after_training": result.memory,
        "median_step_seconds": speed.get("median_step_seconds"), "tokens_per_second": speed.get("tokens_per_second"),
        "heldout_answer_loss": {"before": held[0][1], "after": held[-1][1]} if held else None,
        "train_loss_first_last": [result.history[1]["loss"], result.history[-1]["loss"]],
        "seconds": result.seconds,
    }
    assert trainable == plan.lora_params, (trainable, plan.lora_params)
    del model, result
    if device == "cuda":
        torch.cuda.empty_cache()
    return record


def size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= 0.1 * GB else f"{n / 1e6:,.1f} MB"


def markdown(report: dict) -> str:
    lines = [f"# LoRA benchmark: {report['size']} on {report['machine'].get('gpu', report['device'])}", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}  ",
             f"Model: Grok 2 architecture, {report['params'] / 1e6:,.1f}M parameters (random weights), "
             f"batch {report['batch_size']} x {report['seq_len']} tokens, LoRA r={report['rank']} on attention, "
             f"dense MLP and experts; gradient checkpointing {'on' if report['gradient_checkpointing'] else 'off'}.", "",
             "| mode | weights (planner) | trainable | optimizer | memory after load | peak while training | s/step | tokens/s | held-out loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["modes"]:
        after = r["memory_after_training"]
        peak = after.get("cuda_peak_allocated", after.get("process_rss", 0))
        loaded = r["memory_after_load"].get("cuda_allocated", r["memory_after_load"].get("process_rss", 0))
        held = r["heldout_answer_loss"] or {}
        lines.append(
            f"| {r['mode']} | {size(r['plan']['base_weight_GB'] * GB)} | {r['trainable_params'] / 1e6:.2f}M | "
            f"{r['optimizer']} | {size(loaded)} | {size(peak)} | {r['median_step_seconds']:.3f} | {r['tokens_per_second']:,.0f} | "
            f"{held.get('before', float('nan')):.3f} -> {held.get('after', float('nan')):.3f} |")
    lines += ["", "Memory columns: CUDA allocator figures on a GPU (the peak is reset before each mode); on CPU the "
              "process's resident memory (RSS), which the modes share (the second starts with what the first left).",
              "Weights (planner): finetune.plan_lora's figure for the frozen base in that mode's precision.",
              "Machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items())]
    if report.get("note"):
        lines += ["", f"Note: {report['note']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="grok2-4b")
    parser.add_argument("--modes", default="lora,qlora", help="comma-separated: lora (16-bit base), qlora (4-bit base)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--note", default="", help="context written into the report (e.g. 'machine shared with other jobs')")
    args = parser.parse_args(argv)
    steps, batch, seq_len, rank, checkpointing = DEFAULTS[args.size]
    args.steps = args.steps or steps
    args.batch_size = args.batch_size or batch
    args.seq_len = args.seq_len or seq_len
    args.rank = args.rank or rank
    args.gradient_checkpointing = checkpointing if args.gradient_checkpointing is None else args.gradient_checkpointing
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    modes = [m for m in args.modes.split(",") if m]
    if "qlora" in modes and not helpers.quantization.quantization_support().available:
        modes.remove("qlora")

    tokenizer = helpers.load_tokenizer(profile="tiny")
    data = REPO / "data" / "finetune"
    train_set = pack(finetune.encode_dataset(tokenizer, finetune.load_chat_jsonl(data / "faq_fr_train.jsonl"), 4096),
                     args.seq_len)
    heldout_set = pack(finetune.encode_dataset(tokenizer, finetune.load_chat_jsonl(data / "faq_fr_heldout.jsonl"), 4096),
                       args.seq_len)[:8]
    with tempfile.TemporaryDirectory(prefix="lora-benchmark-") as tmp:
        folder = Path(tmp) / "model"
        started = time.perf_counter()
        config = build_model(args.size, folder, device)
        print(f"built {args.size} in {time.perf_counter() - started:.0f}s")
        params = helpers.plan_memory(config).total_params
        records = [run_mode(mode, folder, config, train_set, heldout_set, args, device) for mode in modes]
    report = {"size": args.size, "device": device, "params": params, "batch_size": args.batch_size,
              "seq_len": args.seq_len, "rank": args.rank, "steps": args.steps,
              "gradient_checkpointing": args.gradient_checkpointing, "modes": records, "machine": machine(device),
              "note": args.note,
              "command": "python benchmarks/lora_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"lora-{args.size}-{device}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
