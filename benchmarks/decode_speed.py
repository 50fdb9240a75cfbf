"""Decode speed as a share of the memory roofline: stock transformers next to helpers.fast_generation, one run.

For each model (random weights, seeded, built on the device: no download) and batch size, every decoding method
generates the same number of tokens from the same random prompt, and the record holds:
  - decode tokens/s, the roofline tokens/s (bytes every step must read / measured copy bandwidth, helpers.roofline)
    and their ratio;
  - exactness: whether the fast path's greedy tokens equal stock `model.generate`'s, and its logits at every step
    against generate's (max |difference| relative to the largest logit, up to the first token where they part).
The "grok2-layers" case builds Grok 2.5 layers at full width (hidden 8192, 8 experts x 16384, dense MLP 32768,
vocabulary 131072; as many layers as fit) and adds prefill as a share of the measured bf16 matmul rate and a
projection to the real 64-layer model on 8 GPUs. The "load" case times loading a saved model from local safetensors
against the disk's own read bandwidth.

    python benchmarks/decode_speed.py --suite gpu     # the records issue #8 asks for, one CUDA GPU (an H100/H200)
    python benchmarks/decode_speed.py --suite cpu     # small shapes on a CPU (minutes)
    python benchmarks/decode_speed.py --suite smoke   # seconds: the test suite runs it end to end

Results: benchmarks/results/decode-speed-<suite>-<device>.json, .md and .png (written after every measurement, so a
run stopped by a time limit keeps what it measured). `--budget-s` skips what would start after that many seconds.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

import helpers  # noqa: F401  (registers Grok 2)
from helpers.fast_generation import FastGenerator
from helpers.grok2 import grouped_experts
from helpers.hardware import compute_dtype, device_kind
from helpers.roofline import (count_active_experts, decode_step_bytes, machine_info, measure_ceilings,
                              roofline_tokens_per_s)
from helpers.tables import markdown_table

GENERATE_METHODS = ("generate-dynamic", "generate-static")
FAST_METHODS = ("fast-eager", "fast-cuda-graph", "fast-compile", "fast-compile-tuned")

# Shapes of real models. llama-1b: TinyLlama-1.1B. llama-7b: Llama-2-7B. grok2-medium: Grok 2's architecture at
# hidden 4096 (16 layers, 8 experts x 8192, dense 16384; ~7.6B parameters active per token, 18B in all).
SHAPES = {
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                               num_key_value_heads=4, vocab_size=32000)),
    "llama-7b": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                               num_key_value_heads=32, vocab_size=32000)),
    "grok2-medium": ("grok2", dict(hidden_size=4096, intermediate_size=16384, moe_intermediate_size=8192,
                                   num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                   vocab_size=131072)),
    "grok2-layers": ("grok2", dict()),  # the released config's widths; layers: as many as fit (see build_model)
    "llama-cpu": ("llama", dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                                num_key_value_heads=4, vocab_size=32000)),
    "grok2-cpu": ("grok2", dict(hidden_size=512, intermediate_size=1024, moe_intermediate_size=512,
                                num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                                vocab_size=8192)),
    "llama-smoke": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=512)),
    "grok2-smoke": ("grok2", dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  vocab_size=512)),
}


@dataclass
class Case:
    model: str
    batches: dict[int, tuple[str, ...]]  # batch size -> methods measured at that batch
    prompt_len: int = 128
    new_tokens: int = 64
    prefill_tokens: int = 0  # > 0: also time a prefill of this many tokens (batch 1)
    max_layers: int | None = None  # grok2-layers: an upper bound on the layers built
    dtype: str | None = None  # default: bf16 on a GPU, fp32 on a CPU


@dataclass
class Suite:
    cases: list[Case]
    load_model: str | None = None  # the shape saved and loaded for the load-time record
    repeats: int = 3
    notes: list[str] = field(default_factory=list)


# In order of importance: a run that hits its time budget keeps what matters most (batch 1 of the ~7B dense model and
# of the full-width Grok 2 layers, each next to stock generate), then the ~1B model, the medium Grok, batch 8.
BATCH8 = ("generate-dynamic", "fast-cuda-graph", "fast-compile")
SUITES = {
    "gpu": Suite(cases=[
        Case("llama-7b", {1: ("generate-dynamic", "fast-cuda-graph", "fast-compile", "fast-compile-tuned", "fast-eager",
                              "generate-static")}),
        Case("grok2-layers", {1: ("generate-dynamic", "fast-cuda-graph", "fast-compile", "fast-compile-tuned")},
             prefill_tokens=2048, max_layers=12),
        Case("llama-1b", {1: ("generate-dynamic", "fast-cuda-graph", "fast-compile", "fast-compile-tuned", "fast-eager",
                              "generate-static")}),
        Case("grok2-medium", {1: ("generate-dynamic", "fast-cuda-graph", "fast-compile")}),
        Case("llama-7b", {8: BATCH8}),
        Case("llama-1b", {8: BATCH8}),
        Case("grok2-medium", {8: BATCH8}),
    ], load_model="llama-1b", repeats=2),
    "cpu": Suite(cases=[
        Case("llama-cpu", {1: ("generate-dynamic", "generate-static", "fast-eager", "fast-compile")}, 64, 32),
        # bf16: the grouped experts' compiled form takes bf16 only (fp32 would decode eagerly)
        Case("grok2-cpu", {1: ("generate-dynamic", "fast-eager", "fast-compile"), 4: ("generate-dynamic", "fast-eager")},
             64, 32, prefill_tokens=256, dtype="bfloat16"),
    ], load_model="llama-cpu"),
    "smoke": Suite(cases=[
        Case("llama-smoke", {1: ("generate-dynamic", "generate-static", "fast-eager"), 2: ("fast-eager",)}, 16, 8),
        Case("grok2-smoke", {1: ("generate-dynamic", "fast-eager"), 2: ("generate-dynamic", "fast-eager")}, 16, 8,
             prefill_tokens=64),
    ], load_model="llama-smoke", repeats=2),
}


# ------------------------------------------------------------------------------------------------ building


def build_model(name: str, device: torch.device, dtype: torch.dtype, max_layers: int | None = None):
    """A model of the named shape with seeded random weights, built directly on the device in `dtype`."""
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from helpers.grok2 import Grok2Config, Grok2ForCausalLM
    from helpers.paths import GROK2_RELEASED_CONFIG

    arch, shape = SHAPES[name]
    if arch == "llama":
        config, cls = LlamaConfig(tie_word_embeddings=False, **shape), LlamaForCausalLM
    else:
        cls = Grok2ForCausalLM
        if name == "grok2-layers":
            config = AutoConfig.from_pretrained(GROK2_RELEASED_CONFIG)
            config.num_hidden_layers = layers_that_fit(config, device, max_layers)
        else:
            config = Grok2Config(embedding_multiplier_scale=math.sqrt(shape["hidden_size"]), **shape)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: a full-width layer in fp32 would not fit
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = 0
    return model.eval()


def layers_that_fit(config, device: torch.device, max_layers: int | None) -> int:
    """Full-width Grok 2 layers that fit next to the embeddings, LM head and working memory (8 GiB kept free)."""
    per_layer = (4 * config.hidden_size * config.head_dim * (config.num_attention_heads + config.num_key_value_heads) // 2
                 + 3 * config.hidden_size * (config.num_local_experts * config.moe_intermediate_size
                                             + config.intermediate_size)) * 2
    fixed = 2 * config.vocab_size * config.hidden_size * 2
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        import psutil
        free = psutil.virtual_memory().available
    layers = int((free - fixed - 8 * 2**30) // per_layer)
    if layers < 1:
        raise SystemExit(f"Not even one full-width Grok 2 layer ({per_layer / 1e9:.1f} GB) fits in "
                         f"{free / 1e9:.1f} GB free on {device}.")
    return min(layers, max_layers or layers)


# ------------------------------------------------------------------------------------------------- timing


class StepClock:
    """A logits processor that notes the time at each step of `generate` (after waiting for the GPU): the
    intervals are the decode steps. Stock generate waits for the GPU at every step anyway (to decide whether to
    stop), so the extra synchronisation costs little."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def __call__(self, input_ids, scores):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores

    def decode_seconds_per_step(self) -> float:
        steps = [b - a for a, b in zip(self.times, self.times[1:])]
        return sorted(steps)[len(steps) // 2]  # the median step: compilation or a stray pause do not count


def time_generate(model, ids, new_tokens: int, method: str, repeats: int) -> tuple[float, torch.Tensor]:
    """Decode tokens/s of stock `model.generate` (greedy, no early stop) and its output."""
    from transformers import LogitsProcessorList

    device = ids.device
    extra = {"cache_implementation": "static"} if method == "generate-static" else {}
    best, output = float("inf"), None
    for attempt in range(repeats + 1):  # the first run warms up (and compiles, for a static cache on a GPU)
        clock = StepClock(device)
        with torch.no_grad():
            output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                    min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                                    logits_processor=LogitsProcessorList([clock]), **extra)
        if attempt:
            best = min(best, clock.decode_seconds_per_step())
    return ids.shape[0] / best, output


def time_fast(generator: FastGenerator, ids, new_tokens: int, repeats: int) -> float:
    generator.generate(ids, max_new_tokens=new_tokens, eos_token_id=None)  # warm-up: records or compiles the step
    return max(generator.generate(ids, max_new_tokens=new_tokens, eos_token_id=None).decode_tokens_per_s
               for _ in range(repeats))


def reference_run(model, ids, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain path: stock `generate`, greedy, no early stop; its tokens and every step's logits [batch, steps,
    vocab]. Grok 2 runs its experts one by one here, as the model loads."""
    grouped_experts.disable(model)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, output_logits=True,
                             return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits, 1).float()


def check_exactness(generator: FastGenerator, ids, new_tokens: int, reference) -> dict:
    """The fast path against the plain one on the same inputs: greedy tokens, and the logits of every step up to
    the first token where they part (after it the two read different text). In fp32 the two agree to rounding; in
    bf16 they differ at bf16's precision, and random weights make near-ties common, so a token can flip."""
    reference_tokens, reference_logits = reference
    out = generator.generate(ids, max_new_tokens=new_tokens, eos_token_id=None, output_logits=True)
    new = out.sequences[:, ids.shape[1]:]
    same = new == reference_tokens[:, ids.shape[1]:]
    parted = (~same).any(0).nonzero()
    compared = int(parted[0]) + 1 if len(parted) else new.shape[1]  # the first differing step still shares inputs
    difference = (out.logits[:, :compared] - reference_logits[:, :compared]).abs().max().item()
    scale = reference_logits[:, :compared].abs().max().item()
    return {"tokens_equal_generate": bool(same.all()), "first_divergence": int(parted[0]) if len(parted) else None,
            "logits_compared_steps": compared, "logits_max_rel_diff": difference / scale if scale else 0.0}


def time_prefill(model, tokens: int, device: torch.device, repeats: int) -> float:
    ids = torch.randint(3, model.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(2))
    ids = ids.to(device)

    def run():
        with torch.no_grad():
            model(ids, use_cache=False, logits_to_keep=1)

    run()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def prefill_flops(model, tokens: int) -> float:
    """Useful FLOPs of a causal prefill: 2 per active weight per token (no LM head: one position is kept), plus
    attention's QK^T and PV over the causal half."""
    config = model.config
    step = decode_step_bytes(model, batch=1, context=0)
    element = next(model.parameters()).element_size()
    head = model.get_output_embeddings().weight
    active_weights = (step.weights - head.numel() * head.element_size()) / element - config.hidden_size
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 2 * 2 * config.num_hidden_layers * config.num_attention_heads * head_dim * tokens * (tokens + 1) / 2
    return 2 * active_weights * tokens + attention


# -------------------------------------------------------------------------------------------------- records


def run_case(case: Case, device: torch.device, dtype: torch.dtype, ceilings, repeats: int, deadline: float,
             record) -> None:
    dtype = getattr(torch, case.dtype) if case.dtype else dtype
    started = time.perf_counter()
    model = build_model(case.model, device, dtype, case.max_layers)
    entry = {"model": case.model, "architecture": SHAPES[case.model][0], "layers": model.config.num_hidden_layers,
             "dtype": str(dtype).removeprefix("torch."),
             "parameters": sum(p.numel() for p in model.parameters()), "build_s": round(time.perf_counter() - started, 1),
             "prompt_len": case.prompt_len, "new_tokens": case.new_tokens, "rows": []}
    record(entry)
    context = case.prompt_len + case.new_tokens / 2  # tokens in the cache, averaged over the decode steps
    for batch, methods in case.batches.items():
        ids = torch.randint(3, model.config.vocab_size, (batch, case.prompt_len),
                            generator=torch.Generator().manual_seed(batch)).to(device)
        active = None
        if entry["architecture"] == "grok2":
            probe = FastGenerator(model, mode="eager")
            active = count_active_experts(model, lambda: probe.generate(ids, max_new_tokens=case.new_tokens,
                                                                        eos_token_id=None), batch)
            del probe
        step = decode_step_bytes(model, batch, context, active)
        roofline = roofline_tokens_per_s(step, batch, ceilings.copy_bytes_per_s)
        reference = None
        if any(m.startswith("fast") for m in methods) and time.perf_counter() < deadline:
            reference = reference_run(model, ids, case.new_tokens)
        for method in methods:
            row = {"batch": batch, "method": method, "step_bytes": step.total, "kv_bytes": step.kv_cache,
                   "active_experts_per_layer": active, "roofline_tokens_per_s": round(roofline, 1)}
            if time.perf_counter() > deadline:
                row["skipped"] = "time budget spent"
                entry["rows"].append(row)
                record(entry)
                continue
            if method.startswith("fast-cuda-graph") and device.type != "cuda":
                continue
            t0 = time.perf_counter()
            try:
                if method in GENERATE_METHODS:
                    grouped_experts.disable(model)  # stock: Grok 2's plain per-expert loop, as the model loads
                    speed, _ = time_generate(model, ids, case.new_tokens, method, repeats)
                else:
                    mode = method.removeprefix("fast-").removesuffix("-tuned")
                    generator = FastGenerator(model, mode=mode, tune=method.endswith("-tuned"))
                    speed = time_fast(generator, ids, case.new_tokens, repeats)
                    row["mode_used"] = generator.mode
                    row["notes"] = generator.notes
                    if reference is not None:
                        row.update(check_exactness(generator, ids, case.new_tokens, reference))
                    del generator
                row["tokens_per_s"] = round(speed, 2)
                row["share_of_roofline"] = round(speed / roofline, 4)
            except Exception as error:  # one failing method must not lose the others' figures
                row["error"] = f"{type(error).__name__}: {str(error)[:400]}"
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            entry["rows"].append(row)
            print({k: v for k, v in row.items() if k != "notes"}, flush=True)
            record(entry)
            torch._dynamo.reset()  # drop compiled graphs (and their CUDA graph memory pools) before the next method
            gc.collect()
    if case.prefill_tokens and time.perf_counter() < deadline:
        seconds = time_prefill(model, case.prefill_tokens, device, repeats)
        flops = prefill_flops(model, case.prefill_tokens)
        entry["prefill"] = {"tokens": case.prefill_tokens, "seconds": seconds, "flops": flops,
                            "flops_per_s": flops / seconds,
                            "share_of_matmul_rate": round(flops / seconds / ceilings.matmul_flops_per_s, 4)}
        print("prefill", entry["prefill"], flush=True)
    if case.model == "grok2-layers":
        entry["projection"] = project_full_model(model, entry, ceilings)
    record(entry)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def project_full_model(model, entry: dict, ceilings) -> dict:
    """From the measured layers to Grok 2.5's 64 layers on 8 GPUs (tensor parallel): each GPU reads 1/8 of every
    active weight per step. Assumes the share of the roofline measured here holds at 1/8 of the matrix widths, and
    leaves out the 2 all-reduces per layer that tensor parallelism adds (not measurable on one GPU)."""
    from transformers import AutoConfig

    from helpers.paths import GROK2_RELEASED_CONFIG

    full = AutoConfig.from_pretrained(GROK2_RELEASED_CONFIG)
    rows = [r for r in entry["rows"] if r["batch"] == 1 and "share_of_roofline" in r and r["method"].startswith("fast")]
    if not rows:
        return {"skipped": "no fast-path figure at batch 1"}
    best = max(rows, key=lambda r: r["share_of_roofline"])
    layers = model.config.num_hidden_layers
    fixed = decode_step_bytes(model, 1, 0).weights  # measured model: embeddings row + LM head + `layers` layers
    head = model.get_output_embeddings().weight
    per_layer = (fixed - head.numel() * head.element_size()) / layers
    full_bytes = per_layer * full.num_hidden_layers + head.numel() * head.element_size()
    per_gpu = full_bytes / 8
    step_s = per_gpu / (ceilings.copy_bytes_per_s * best["share_of_roofline"])
    return {"method": best["method"], "share_of_roofline": best["share_of_roofline"],
            "bytes_per_step_64_layers": full_bytes, "bytes_per_gpu_tp8": per_gpu,
            "projected_step_ms_tp8_no_allreduce": round(step_s * 1e3, 3),
            "projected_tokens_per_s_batch1": round(1 / step_s, 1),
            "assumptions": project_full_model.__doc__.split("\n", 1)[1].strip().replace("\n    ", " ")}


def measure_load(name: str, device: torch.device, dtype: torch.dtype) -> dict:
    """Load time of a saved model (safetensors, local disk) against the disk's read bandwidth, both from a cold page
    cache when this machine lets us drop it (root), else both warm (and then said so)."""
    from transformers import AutoModelForCausalLM

    folder = Path(tempfile.mkdtemp(prefix="decode-speed-load-"))
    try:
        model = build_model(name, device, dtype)
        model.save_pretrained(folder)
        del model
        gc.collect()
        files = sorted(folder.glob("*.safetensors"))
        size = sum(f.stat().st_size for f in files)

        def drop_caches() -> bool:
            try:
                os.sync()
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
                return True
            except OSError:
                return False

        cold = drop_caches()
        started = time.perf_counter()
        for f in files:
            with open(f, "rb", buffering=0) as handle:
                while handle.read(64 * 2**20):
                    pass
        read_s = time.perf_counter() - started
        cold = drop_caches() and cold
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=str(device))
        # On a CPU the weights may stay memory-mapped, read only when first used: touch every one, so that the
        # time includes reading them (on a GPU they were copied to the device already; the sums cost microseconds).
        touched = sum(float(p.detach().float().sum()) for p in loaded.parameters())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        load_s = time.perf_counter() - started
        del loaded
        return {"model": name, "bytes": size, "page_cache": "cold" if cold else "warm (could not drop it)",
                "checksum": touched,
                "disk_read_bytes_per_s": size / read_s, "load_s": round(load_s, 3),
                "load_bytes_per_s": size / load_s, "share_of_disk_read": round(read_s / load_s, 4)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def markdown(results: dict) -> str:
    m, c = results["machine"], results["ceilings"]
    where = (f"{m['gpu']} ({m['gpu_memory_GiB']} GiB, CUDA {m['cuda']})" if m["device"] == "cuda"
             else f"CPU only: {m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch thread(s)")
    lines = [
        f"# Decode speed against the memory roofline ({results['suite']} suite)",
        "",
        f"- **Where**: {where}; {m['platform']}",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"- **Command**: `{results['command']}` ({results['date']})",
        f"- **Ceilings measured in this run**: copy {c['copy_bytes_per_s'] / 1e9:,.0f} GB/s (read + write), "
        f"{c['matmul_dtype']} matmul {c['matmul_flops_per_s'] / 1e12:,.1f} TFLOP/s",
        "- **Roofline** = tokens/s if each step took (active weight bytes + KV bytes read) / copy bandwidth; "
        "random weights, greedy decoding, no early stop.",
        "",
    ]
    for entry in results["cases"]:
        if entry.get("skipped"):
            lines += [f"## {entry['model']}: skipped ({entry['skipped']})", ""]
            continue
        lines += [f"## {entry['model']}: {entry['parameters'] / 1e9:.3g}B parameters, {entry['layers']} layers, "
                  f"{entry.get('dtype', results['dtype'])}, prompt {entry['prompt_len']}, {entry['new_tokens']} new "
                  "tokens", ""]
        rows = [{
            "batch": r["batch"], "method": r["method"] + (
                f" (ran {r['mode_used']})" if r.get("mode_used") and r["mode_used"] != r["method"].removeprefix(
                    "fast-").removesuffix("-tuned") else ""),
            "tokens/s": r.get("tokens_per_s"), "roofline tokens/s": r["roofline_tokens_per_s"],
            "share of roofline": f"{r['share_of_roofline']:.1%}" if "share_of_roofline" in r else
            (r.get("skipped") or r.get("error", "")[:80]),
            "MB per step": round(r["step_bytes"] / 1e6, 1),
            "experts read per layer": r["active_experts_per_layer"] and round(r["active_experts_per_layer"], 2),
            "logits vs generate (max rel diff)": f"{r['logits_max_rel_diff']:.1e}" if "logits_max_rel_diff" in r else "",
            "tokens = generate": {True: "yes", False: f"from step {r.get('first_divergence')}"}.get(
                r.get("tokens_equal_generate"), ""),
            "wall s": r.get("wall_s"),
        } for r in entry["rows"]]
        lines += [markdown_table(rows), ""]
        if "prefill" in entry:
            p = entry["prefill"]
            lines += [f"Prefill of {p['tokens']} tokens: {p['seconds'] * 1e3:.1f} ms, {p['flops_per_s'] / 1e12:.1f} "
                      f"TFLOP/s = {p['share_of_matmul_rate']:.1%} of the measured matmul rate.", ""]
        if "projection" in entry and "projected_tokens_per_s_batch1" in entry["projection"]:
            p = entry["projection"]
            lines += [f"Projection to Grok 2.5 (64 layers, 8 GPUs, tensor parallel), from {p['method']} at "
                      f"{p['share_of_roofline']:.1%} of the roofline: {p['bytes_per_gpu_tp8'] / 1e9:.2f} GB read "
                      f"per GPU per step, {p['projected_step_ms_tp8_no_allreduce']} ms per step, "
                      f"{p['projected_tokens_per_s_batch1']} tokens/s at batch 1. {p['assumptions']}", ""]
    if results.get("load"):
        ld = results["load"]
        lines += ["## Loading from local safetensors", "",
                  f"{ld['model']}: {ld['bytes'] / 1e9:.2f} GB in {ld['load_s']} s = {ld['load_bytes_per_s'] / 1e9:.2f} "
                  f"GB/s; reading the same files: {ld['disk_read_bytes_per_s'] / 1e9:.2f} GB/s "
                  f"({ld['page_cache']} page cache): loading runs at {ld['share_of_disk_read']:.0%} of the disk.", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{e['model']}\nbatch {r['batch']}", r["method"], r["share_of_roofline"])
            for e in results["cases"] for r in e["rows"] if "share_of_roofline" in r]
    if not bars:
        return
    groups = list(dict.fromkeys(b[0] for b in bars))
    methods = list(dict.fromkeys(b[1] for b in bars))
    width = 0.8 / len(methods)
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 3.6))
    for index, method in enumerate(methods):
        xs = [groups.index(g) + index * width - 0.4 + width / 2 for g, m, _ in bars if m == method]
        axis.bar(xs, [v for _, m, v in bars if m == method], width=width, label=method)
    axis.set_xticks(range(len(groups)), groups, fontsize=8)
    axis.set_ylabel("share of memory roofline")
    axis.set_ylim(0, 1)
    axis.axhline(0.75, color="grey", linestyle=":", linewidth=1)
    where = results["machine"].get("gpu") or "CPU"
    axis.set_title(f"Decode speed / roofline, {where} (random weights)", fontsize=10)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="gpu")
    parser.add_argument("--only", nargs="*", help="run only these cases (model names)")
    parser.add_argument("--budget-s", type=float, default=None, help="start nothing new after this many seconds")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--no-load", action="store_true", help="skip the load-time record")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    deadline = started + (args.budget_s or float("inf"))
    device = torch.device("cuda" if device_kind() == "cuda" else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.suite == "gpu" and device.type != "cuda":
        raise SystemExit("--suite gpu needs a CUDA GPU; use --suite cpu or --suite smoke here.")
    dtype = compute_dtype(device)
    suite = SUITES[args.suite]
    ceilings = measure_ceilings(device)
    import transformers

    results = {
        "suite": args.suite,
        "command": " ".join(["python", "benchmarks/decode_speed.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "dtype": str(dtype).removeprefix("torch."),
        "ceilings": vars(ceilings),
        "cases": [],
    }
    if device.type == "cuda":
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                              "--format=csv,noheader"], capture_output=True, text=True)
        results["machine"]["nvidia_smi"] = smi.stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"decode-speed-{args.suite}-{device.type}"

    def record(entry=None) -> None:
        if entry is not None and all(case is not entry for case in results["cases"]):
            results["cases"].append(entry)
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        stem.with_suffix(".md").write_text(markdown(results) + "\n")

    print(f"ceilings: copy {ceilings.copy_bytes_per_s / 1e9:.0f} GB/s, matmul "
          f"{ceilings.matmul_flops_per_s / 1e12:.1f} TFLOP/s", flush=True)
    record()
    if suite.load_model and not args.no_load:
        results["load"] = measure_load(suite.load_model, device, dtype)
        print("load", results["load"], flush=True)
        record()
    for case in suite.cases:
        if args.only and case.model not in args.only:
            continue
        if time.perf_counter() > deadline:
            results["cases"].append({"model": case.model, "skipped": "time budget spent", "rows": [],
                                     "parameters": 0, "layers": 0, "prompt_len": 0, "new_tokens": 0})
            continue
        run_case(case, device, dtype, ceilings, suite.repeats, deadline, record)
    record()
    plot(results, stem.with_suffix(".png"))
    print(markdown(results))
    return stem


if __name__ == "__main__":
    main()
