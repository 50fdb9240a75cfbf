"""How fast *could* this run? The two ceilings of a machine, and what decoding a token must move through memory.

Decoding at small batch is limited by memory, not arithmetic: each step reads every active weight once, plus the KV
cache of every sequence. So the fastest possible step takes

    bytes read per step / memory bandwidth            (the roofline)

and a decoder's quality is the share of that it reaches: tokens/s x bytes per token / bandwidth. Prefill is the
opposite: thousands of tokens share each weight read, so it is limited by matrix arithmetic (FLOP/s).

    ceilings = measure_ceilings("cuda")              # copy bandwidth and bf16 matmul rate, measured here, now
    step = decode_step_bytes(model, batch=1, context=600)
    step.total / ceilings.copy_bytes_per_s           # the fastest possible step, in seconds

Measured ceilings, not datasheet ones: a device-to-device copy (bytes read + bytes written, the way a decoder reads
weights and writes activations) and a large bf16 matrix product. benchmarks/decode_speed.py uses them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from torch import nn

from .hardware import compute_dtype
from .hardware import machine_info  # noqa: F401  (benchmarks record where they ran)

_EXPERT = re.compile(r"^(?P<layer>.*)\.experts\.(?P<index>\d+)\.")


@dataclass(frozen=True)
class Ceilings:
    device: str
    copy_bytes_per_s: float  # a large device-to-device copy: bytes read + bytes written, per second
    matmul_flops_per_s: float  # a large matrix product in `matmul_dtype`
    matmul_dtype: str


def _timed(function, device: torch.device, repeats: int, warmups: int = 2) -> float:
    """Median seconds of `function()` after `warmups` warm-up runs (CUDA events on a GPU, a wall clock elsewhere)."""
    for _ in range(warmups):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


COPY_FILLS = ("random", "constant")


def measure_copy_bandwidth(device: str | torch.device, size_bytes: int | None = None, repeats: int = 10, *,
                           free_bytes: float | None = None, fill: str = "random", warmups: int = 2) -> float:
    """Bytes per second moved by `dst.copy_(src)`, counting each byte read and each byte written: the median of
    `repeats` copies after `warmups` untimed ones (the first touches every page of the target).

    The buffers are far larger than any cache (1 GiB each on a GPU, 256 MiB on a CPU; `size_bytes` sets another size).
    `free_bytes`: the memory free on the device; each buffer is then at most an eighth of it (and at least 1 MiB), so
    the probe leaves the rest free. `fill`: "random" data, or a "constant" (a copy's speed does not depend on the
    values, and drawing a GiB of random numbers on a CPU takes seconds)."""
    if fill not in COPY_FILLS:
        raise ValueError(f"fill must be one of {COPY_FILLS}, not {fill!r}")
    for name, value in (("repeats", repeats), ("warmups", warmups)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000 or (name == "repeats"
                                                                                              and value == 0):
            raise ValueError(f"{name} must be a whole number from {int(name == 'repeats')} to 1000, not {value!r}")
    device = torch.device(device)
    size_bytes = int(size_bytes or (2**30 if device.type == "cuda" else 2**28))
    if free_bytes is not None:
        size_bytes = int(max(2**20, min(size_bytes, free_bytes // 8)))
    if fill == "random":
        src = torch.randint(0, 255, (size_bytes,), dtype=torch.uint8, device=device)
    else:
        src = torch.full((size_bytes,), 1, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = _timed(lambda: dst.copy_(src), device, repeats, warmups)
    return 2 * size_bytes / seconds


def measure_matmul_rate(device: str | torch.device, n: int | None = None, dtype: torch.dtype | None = None,
                        repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product on random data (8192 on a GPU; 1024 on a CPU), by default in the dtype
    the device computes in (`helpers.hardware.compute_dtype`: bf16 on a GPU that has it, fp16 on a T4, fp32 on a CPU)."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    dtype = dtype or compute_dtype(device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    seconds = _timed(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds


def measure_ceilings(device: str | torch.device) -> Ceilings:
    device = torch.device(device)
    dtype = compute_dtype(device)
    return Ceilings(str(device), measure_copy_bandwidth(device), measure_matmul_rate(device, dtype=dtype),
                    str(dtype).removeprefix("torch."))


# -------------------------------------------------------------------------------------------- bytes per step


@dataclass(frozen=True)
class StepBytes:
    weights: int  # active weights read once per step (shared by every sequence of the batch)
    kv_cache: int  # keys and values read, all sequences together
    active_experts_per_layer: float | None  # None for a dense model

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


def kv_bytes_per_token(model: nn.Module) -> int:
    """Bytes of keys + values one token occupies in the cache, all layers (the cache in the model's dtype)."""
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def decode_step_bytes(model: nn.Module, batch: int, context: float,
                      active_experts_per_layer: float | None = None) -> StepBytes:
    """The fewest bytes one decode step must read: every weight a token uses, once, plus each sequence's cache.

    - Embedding table: only the batch's rows are read, not the table (unless it is tied to the LM head, which reads
      it all).
    - Mixture of experts: per layer, only the experts some token of the batch chose. At batch 1 that is top-k; at
      larger batches pass the measured average (`count_active_experts`). Experts are recognised by their names
      (`...experts.<n>....`, as Grok 2 and Mixtral-style checkpoints name them) or as 3D [experts, ...] tensors.
    - `context`: tokens in each sequence's cache, averaged over the steps timed.
    Quantized weights count at their packed size (their scales are left out).
    """
    config = model.config.get_text_config()
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    top_k = getattr(config, "num_experts_per_tok", None)
    active = active_experts_per_layer if active_experts_per_layer is not None else top_k
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    weights = 0
    for name, param in model.named_parameters():
        size = param.numel() * param.element_size()
        if param is embedding and not tied:
            size = batch * param.shape[-1] * param.element_size()
        elif experts and active is not None and (_EXPERT.match(name) or (param.dim() == 3 and param.shape[0] == experts)):
            size = size * min(active, experts) / experts
        weights += size
    kv = int(batch * context * kv_bytes_per_token(model))
    return StepBytes(int(weights), kv, active if experts else None)


def count_active_experts(model: nn.Module, run, tokens_per_step: int | None = None) -> float:
    """Average number of distinct experts used per MoE layer per forward pass while `run()` executes.

    Hooks every Grok 2 router (`route`); the batch's tokens together pick these experts in each step. With
    `tokens_per_step` (the batch size, when decoding), only passes over that many tokens count: the prompt's pass,
    which routes every prompt token at once, does not."""
    from .grok2 import grouped_experts

    counts: list[int] = []
    blocks = grouped_experts.moe_blocks(model)  # plain or grouped, every block routes through `route`
    originals = {block: block.route for block in blocks}

    def recording(block):
        def route(x):
            logits, weights, chosen = originals[block](x)
            if tokens_per_step is None or x.shape[0] == tokens_per_step:
                counts.append(int(torch.unique(chosen).numel()))
            return logits, weights, chosen
        return route

    try:
        for block in blocks:
            block.route = recording(block)
        run()
    finally:
        for block in blocks:
            del block.route  # the class method again
    if not counts:
        raise ValueError("no mixture-of-experts router ran: is this a Grok 2 model?")
    return sum(counts) / len(counts)


def roofline_tokens_per_s(step: StepBytes, batch: int, copy_bytes_per_s: float) -> float:
    """Tokens/s if every step took exactly its bytes / bandwidth (the batch makes `batch` tokens per step)."""
    return batch * copy_bytes_per_s / step.total


__all__ = ["Ceilings", "StepBytes", "COPY_FILLS", "measure_copy_bandwidth", "measure_matmul_rate", "measure_ceilings",
           "kv_bytes_per_token", "decode_step_bytes", "count_active_experts", "roofline_tokens_per_s", "machine_info"]
