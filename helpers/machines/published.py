"""Speeds people have published for Grok 2.5, beside the planner's bounds for the same setup: the ratio measured /
bound, and what the gap is made of.

A bound below a measurement would mean the bound is wrong (or the machine is not what it was assumed to be); a bound
more than 4x above it means the route model leaves out something that matters. Both are checked
(tests/test_machines.py). The measurements are secondary sources, recorded in docs/grok2-facts.md section 8; each
carries its public address, or says plainly that the course has none (`Measurement.url`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import accelerators as hw
from ..units import GB_PER_S
from .llama_routes import gpu_route, hybrid_route
from .machine import PUBLISHED_RIG, preset
from .planner import plan_routes
from .route import PREFILL_BATCH, Route
from .weights import gguf_weights

# Published posts give no context length: the bounds are taken at a short chat's (the KV cache then weighs little,
# and a shorter context only raises the bound).
PUBLISHED_CONTEXT = 1024
TOO_FAR = 4.0  # a bound more than this many times the measurement misses something


@dataclass(frozen=True)
class Measurement:
    setup: str
    machine: str  # a preset name
    engine: str  # "sglang" or "llama.cpp"
    quant: str | None  # the GGUF type for llama.cpp
    kind: str  # "decode" or "prefill"
    low: float  # tokens/s
    high: float
    source: str
    url: str | None = None  # the public address of the source; None: the course has no link to it

    @property
    def middle(self) -> float:
        return (self.low + self.high) / 2

    @property
    def cited(self) -> str:
        """The source with its address, or marked as unlinked."""
        return f"{self.source}: {self.url}" if self.url else f"{self.source} (UNLINKED: no public address recorded)"


# docs/grok2-facts.md section 8 names this post by its title and date only: the course has no address for it.
_SGLANG_BLOG = ("blog post 'Grok2 OnPrem Deployment via sglang', 2025-09-14 (secondary; docs/grok2-facts.md "
                "section 8)")
_UNSLOTH = "unsloth/grok-2-GGUF discussion #1 (secondary; docs/grok2-facts.md section 8)"
_UNSLOTH_URL = "https://huggingface.co/unsloth/grok-2-GGUF/discussions/1"
MEASUREMENTS = (
    Measurement("SGLang 0.5.2rc2, 8 x H100 80 GB, FP8, Triton attention, batch 1", "8 x H100 80 GB", "sglang", None,
                "decode", 93.0, 99.0, _SGLANG_BLOG, None),
    Measurement("llama.cpp IQ1_S, 3 x RTX 3090 + RTX 4090 (96 GB VRAM), 256 GB DDR5", PUBLISHED_RIG, "llama.cpp",
                "IQ1_S", "decode", 13.6, 13.6, _UNSLOTH, _UNSLOTH_URL),
    Measurement("llama.cpp IQ1_S, 3 x RTX 3090 + RTX 4090 (96 GB VRAM), 256 GB DDR5", PUBLISHED_RIG, "llama.cpp",
                "IQ1_S", "prefill", 263.0, 263.0, _UNSLOTH, _UNSLOTH_URL),
    Measurement("llama.cpp IQ4_XS, 3 x RTX 3090 + RTX 4090 (96 GB VRAM), 256 GB DDR5", PUBLISHED_RIG, "llama.cpp",
                "IQ4_XS", "decode", 7.0, 7.0, _UNSLOTH, _UNSLOTH_URL),
    Measurement("llama.cpp IQ4_XS, 3 x RTX 3090 + RTX 4090 (96 GB VRAM), 256 GB DDR5", PUBLISHED_RIG, "llama.cpp",
                "IQ4_XS", "prefill", 115.0, 115.0, _UNSLOTH, _UNSLOTH_URL),
)


def route_for(measurement: Measurement, machine=None) -> Route:
    """The planner's route for the setup of a measurement (llama.cpp: wholly on the GPUs if the file fits them,
    else the hybrid layout), at PUBLISHED_CONTEXT."""
    machine = machine or preset(measurement.machine)
    if measurement.engine == "sglang":
        return plan_routes(machine, PUBLISHED_CONTEXT).route("sglang-fp8-tp8")
    weights = gguf_weights(measurement.quant)
    on_gpus = gpu_route(machine, weights, PUBLISHED_CONTEXT)
    return on_gpus if on_gpus.fits else hybrid_route(machine, weights, PUBLISHED_CONTEXT)


def _gap(measurement: Measurement, route: Route, bound: float) -> str:
    """What the time between the bound and the measurement is made of, for this kind of route."""
    shape = route.weights.shape
    if measurement.kind == "prefill":
        return (f"the bound ({route.prefill_why}) assumes prompts of at least {PREFILL_BATCH} tokens; the post "
                "gives no prompt length. Not in it: attention over the prompt, the quantized kernels' distance from the int8 "
                "peak (they decode blocks of codes before multiplying), and the GPUs taking turns layer by layer")
    spent = 1e3 / measurement.middle
    floor = 1e3 / bound
    head = f"{spent:.1f} ms per token measured, {floor:.1f} ms of it is reading memory at datasheet speed; the rest: "
    if measurement.engine == "sglang":
        gpu = preset(measurement.machine).gpus[0]
        count = 2 * shape.layers
        latency = (f" ({count} x {gpu.all_reduce_latency * 1e6:.1f} us = {count * gpu.all_reduce_latency * 1e3:.2f} "
                   f"ms, one all-reduce as measured in {gpu.all_reduce_source.split(' ')[0]})"
                   if gpu.all_reduce_latency else "")
        return head + (f"{count} all-reduces per token (2 per layer) whose latency does not shrink with their few "
                       f"bytes{latency}, kernel launches for every layer, FP8 scaling and the MoE routing at batch 1, "
                       "and memory read below its peak")
    if route.key.startswith("llama.cpp-hybrid"):
        return head + ("the CPU multiplying the experts kept in RAM (its cores, not only the RAM, set the pace), the "
                       "RAM reading below its datasheet peak, the GPUs taking turns layer by layer, and the "
                       "activations crossing PCIe twice per offloaded layer")
    return head + (f"the {route.gpus_used} GPUs taking turns layer by layer (one works while "
                   "the others wait), unpacking IQ codes before each product, and kernel launches for every layer")


def _layout_note(m: Measurement, bound: float, offload_bound: float | None) -> str:
    if bound <= TOO_FAR * m.low or not offload_bound:
        return ""
    return (f". More than {TOO_FAR:g}x: the route model misses something, and here it is the layout: the post gives "
            f"no flags, and with every expert in RAM (--cpu-moe) the bound is {offload_bound:,.0f} tokens/s, "
            f"{m.middle / offload_bound:.2f} of it measured, in line with the other figures of the same post")


def _speed(route: Route, kind: str) -> float:
    return route.decode_tok_s if kind == "decode" else route.prefill_tok_s


def all_experts_in_ram(measurement: Measurement) -> Route | None:
    """The same llama.cpp setup with every expert in RAM (`--cpu-moe`, the one-flag offload): the layout a post that
    does not give its flags may have used. None for other engines."""
    if measurement.engine != "llama.cpp":
        return None
    machine = preset(measurement.machine)
    weights = gguf_weights(measurement.quant)
    return hybrid_route(machine, weights, PUBLISHED_CONTEXT, n_cpu_moe=weights.shape.layers)


def compare_published(measurements=MEASUREMENTS) -> list[dict]:
    """One row per published measurement: the bound for the same setup (the planner's layout, the fastest; and for
    llama.cpp the bound with every expert in RAM, since posts rarely give their flags), the ratio measured / bound,
    whether the bound holds (>= the measurement) and is close enough (<= 4x), and what the gap is made of."""
    rows = []
    for m in measurements:
        route = route_for(m)
        bound = _speed(route, m.kind)
        offload = all_experts_in_ram(m)
        offload_bound = _speed(offload, m.kind) if offload is not None and offload.fits else None
        rows.append({
            "setup": m.setup,
            "speed": "decode" if m.kind == "decode" else "prompt processing",
            "measured (tok/s)": f"{m.low:g}" if m.low == m.high else f"{m.low:g}-{m.high:g}",
            "bound (tok/s)": round(bound, 1),
            "route": f"{route.title} [{route.weights.name}]",
            "measured / bound": (f"{m.low / bound:.2f}" if m.low == m.high else
                                 f"{m.low / bound:.2f}-{m.high / bound:.2f}"),
            "bound holds": bound >= m.high,
            "within 4x": bound <= TOO_FAR * m.low,
            "bound with --cpu-moe (tok/s)": round(offload_bound, 1) if offload_bound else None,
            "measured / bound with --cpu-moe": f"{m.middle / offload_bound:.2f}" if offload_bound else None,
            "gap": _gap(m, route, bound) + _layout_note(m, bound, offload_bound),
            "source": m.cited,
        })
    return rows


def ram_check(quant: str = "IQ4_XS", measured: float = 7.0) -> list[dict]:
    """The published rig with each system-memory configuration: which ones leave the hybrid bound above the
    measurement. A bound below a measurement rules that memory out (under this route model)."""
    rig = preset(PUBLISHED_RIG)
    weights = gguf_weights(quant)
    rows = []
    for memory in hw.SYSTEM_MEMORY.values():
        machine = replace(rig, ram_bandwidth=memory.bandwidth, ram_name=memory.name)
        route = hybrid_route(machine, weights, PUBLISHED_CONTEXT)
        bound = route.decode_tok_s
        rows.append({"system memory": memory.name, "GB/s": round(memory.bandwidth / GB_PER_S, 1),
                     "decode bound (tok/s)": round(bound, 2) if bound else None,
                     "consistent with the measurement": bool(bound and bound >= measured)})
    return rows


__all__ = ["Measurement", "MEASUREMENTS", "PUBLISHED_CONTEXT", "TOO_FAR", "compare_published", "route_for",
           "ram_check"]
