"""The route planner: every way to run Grok 2.5 on one machine, in one table, with the highest decode bound among the
routes that fit, or a clear "no route" saying what would be needed.

    plan = plan_routes("24 GB GPU + 128 GB DDR5")     # a preset, "this machine", or a Machine
    plan.table(gpu_hour_price=2.0)                     # one row per route
    print(plan.verdict())
    plan.best                                          # the route in the table with the highest decode bound that fits
    plan.fastest_files                                 # per llama.cpp route, the quantization with the highest bound

Each llama.cpp route is listed at the most precise GGUF that fits it (`best_llama_cpp`), which is not its fastest: a
smaller file reads fewer bytes per token. `fastest_files` keeps the fastest one per route, and the verdict names both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import math

from .. import engines
from ..errors import CourseError
from ..units import MiB, format_bytes
from .gpu_routes import sglang_mem_fraction_static, sglang_route, transformers_route, two_node_route, vllm_route
from .llama_routes import FAMILIES, hybrid_split, llama_cpp_options
from .machine import Machine, how_to_describe, preset
from .route import GPU_USABLE, RAM_USABLE, Route, gb
from .weights import engine_weights, gguf_quants, gguf_weights, grok2_shape

DEFAULT_CONTEXT = 8192


@dataclass
class RoutePlan:
    machine: Machine
    context: int
    routes: list[Route]
    fastest_files: dict[str, Route] = field(default_factory=dict)  # llama.cpp family -> its fastest fitting file

    @property
    def fitting(self) -> list[Route]:
        return sorted((r for r in self.routes if r.fits), key=lambda r: -(r.decode_tok_s or 0.0))

    @property
    def best(self) -> Route | None:
        return self.fitting[0] if self.fitting else None

    def route(self, key_start: str) -> Route:
        """The route whose key starts with `key_start` ("sglang", "llama.cpp-hybrid", "transformers-nf4")."""
        for r in self.routes:
            if r.key.startswith(key_start):
                return r
        raise KeyError(f"no route {key_start!r} in this plan: {[r.key for r in self.routes]}")

    def table(self, gpu_hour_price: float | None = None, machine_hour_price: float | None = None,
              all_routes: bool = False) -> list[dict]:
        """Rows for display; routes this kind of machine cannot run at all are left out unless `all_routes`."""
        return [r.row(gpu_hour_price, machine_hour_price) for r in self.routes if all_routes or r.applicable]

    def verdict(self) -> str:
        best = self.best
        if best is not None:
            text = (f"{self.machine.name}: {len(self.fitting)} route(s) fit. Highest decode bound in the table: "
                    f"{best.title} [{best.weights.name}], at most {_pace(best.decode_tok_s)} (batch 1, a "
                    f"{self.context:,}-token context; a bound, limited by {best.limited_by.name}).")
            faster = [f"{route.title} [{route.weights.name}] {_pace(route.decode_tok_s)}"
                      for family, route in self.fastest_files.items()
                      if route.key != self.route(f"llama.cpp-{family}").key]
            if faster:
                text += (" The table lists each llama.cpp route at the most precise file that fits; the fastest file "
                         "per route: " + "; ".join(faster) + ".")
            return text
        return f"{self.machine.name}: no route runs Grok 2.5 here.\n" + "\n".join(
            f"- {line}" for line in what_would_be_needed(self.context))

    def require(self) -> Route:
        """The best route, or the course's error saying that none fits and what would be needed."""
        if self.best is None:
            raise CourseError(f"No route runs Grok 2.5 on {self.machine.name} ({'; '.join(self.machine.describe())}).",
                              "What would be needed: " + "; ".join(what_would_be_needed(self.context)) + ".")
        return self.best


def _pace(speed: float) -> str:
    return f"{speed:,.1f} tokens/s" if speed >= 1 else f"{1 / speed:,.1f} s per token"


def what_would_be_needed(context: int = DEFAULT_CONTEXT) -> list[str]:
    """The least machine of each kind that runs Grok 2.5, from the smallest GGUF and the FP8 weights. Sizes in both
    units (helpers.units.format_bytes): the decimal GB of the arithmetic and the GiB that memory is sold in."""
    quants = sorted(gguf_quants(), key=lambda q: gguf_weights(q).total)
    small = gguf_weights(quants[0])
    kv = grok2_shape().kv_bytes(context)
    counted = small.sized_for_fit(small.total)  # an approximate size counts with its margin, as the routes do
    always_on = small.sized_for_fit(small.always_on - small.bytes_by_class["embeddings"]) + kv
    ram = small.sized_for_fit(small.experts + small.bytes_by_class["embeddings"])
    sized = "" if small.exact else f", counted as {gb(counted)}: its size is approximate"
    return [
        f"CPU only (llama.cpp): {format_bytes((counted + kv) / RAM_USABLE)} of RAM for the smallest GGUF "
        f"({small.name}, {gb(small.total)}{sized}, with the KV cache of {context:,} tokens), at {RAM_USABLE:.0%} "
        "usable",
        f"a GPU plus RAM (llama.cpp hybrid, {small.name}): {format_bytes(always_on / GPU_USABLE)} of GPU memory for "
        f"the always-on part and {format_bytes(ram / RAM_USABLE)} of RAM for the experts and the embeddings",
        f"a Mac (Metal): {format_bytes((counted + kv) / RAM_USABLE)} of unified memory ({small.name})",
        f"the official route (SGLang {engines.SGLANG_VERSION}, FP8): 8 GPUs with {format_bytes(least_sglang_gpu(context))} "
        "or more each (it holds each GPU's bf16 slice while loading, then the FP8 weights and the KV cache within its "
        "default --mem-fraction-static)",
    ]


def least_sglang_gpu(context: int = DEFAULT_CONTEXT, tp: int = 8) -> float:
    """The smallest GPU memory (bytes, in 1 MiB steps) on which the SGLang route fits at tensor parallelism `tp`:
    each GPU's bf16 slice within GPU_USABLE while loading, then its FP8 slice and KV cache within SGLang's default
    --mem-fraction-static (helpers.engine_memory.sglang_mem_fraction_static, which depends on the memory itself)."""
    shape = grok2_shape()
    serving = engine_weights("fp8").total / tp + shape.kv_bytes(context) / min(tp, shape.kv_heads)
    memory = math.ceil(engine_weights("bf16").total / tp / GPU_USABLE / MiB) * MiB
    for _ in range(200_000):  # at most ~200 GiB above the loading bound: far beyond any reserve SGLang keeps
        if serving <= sglang_mem_fraction_static(memory, tp) * memory:
            return memory
        memory += MiB
    raise AssertionError("no GPU size fits SGLang's reserve: sglang_mem_fraction_static is wrong")


def _machine(machine) -> Machine:
    if isinstance(machine, Machine):
        return machine
    if isinstance(machine, str):
        return preset(machine)
    raise CourseError(f"plan_routes takes a machine, not {type(machine).__name__}.",
                      f"Pass a preset name (helpers.machines.PRESETS), 'this machine', or {how_to_describe()}.")


def plan_routes(machine: Machine | str, context: int = DEFAULT_CONTEXT) -> RoutePlan:
    """Every route for Grok 2.5 on `machine` at a `context`-token KV cache (one sequence)."""
    machine = _machine(machine)
    limit = grok2_shape().max_context
    if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= limit:
        raise CourseError(f"context must be a whole number of tokens from 1 to {limit:,}, got {context!r}.",
                          f"Grok 2.5's context is {limit:,} tokens; 8192 is the course's default.")
    routes = [sglang_route(machine, context), vllm_route(machine, context)]
    two_nodes = two_node_route(machine, context, routes[0])
    if two_nodes is not None:
        routes.append(two_nodes)
    routes += [transformers_route(machine, precision, context) for precision in ("bf16", "int8", "nf4")]
    fastest = {}
    for family in FAMILIES:  # best_llama_cpp and fastest_llama_cpp, from one pass over the quantizations
        options = llama_cpp_options(machine, family, context)
        fitting = [r for r in options if r.fits]
        routes.append(fitting[-1] if fitting else options[0])
        if fitting:
            fastest[family] = max(fitting, key=lambda r: r.decode_tok_s)
    return RoutePlan(machine, context, routes, fastest)


def hybrid_table(machine: Machine | str, context: int = DEFAULT_CONTEXT) -> list[dict]:
    """llama.cpp's hybrid layout at every GGUF quantization: does the always-on part fit the GPU, the smallest
    --n-cpu-moe, the bytes kept in RAM and the RAM a machine needs for them (RAM_USABLE of it usable), and the decode
    bound. Memory sizes in GB and in the GiB that memory is sold in."""
    from .llama_routes import hybrid_route

    machine = _machine(machine)
    rows = []
    for quant in sorted(gguf_quants(), key=lambda q: gguf_weights(q).total):
        weights = gguf_weights(quant)
        split = hybrid_split(machine, weights, context) if machine.gpus else None
        route = hybrid_route(machine, weights, context)
        rows.append({
            "quant": quant,
            "file": gb(weights.total) + ("" if weights.exact else " (approximate)"),
            "always-on part": format_bytes(split["always_on"]) if split else "",
            "always-on fits the GPU": ("yes" if split["always_on_fits"] else "no") if split else "",
            "flags": _flags(split) if split else "",
            "in RAM": format_bytes(split["ram_bytes"]) if split else "",
            "RAM needed": format_bytes(_ram_needed(weights, split)) if split else "",
            "fits": "yes" if route.fits else "no",
            "decode bound (tok/s)": round(route.decode_tok_s, 2) if route.decode_tok_s else None,
        })
    return rows


def _ram_needed(weights, split: dict) -> float:
    """The RAM a machine must have (as sold) for the hybrid layout: what it keeps there, counted as the route counts
    it (an approximate size with its margin), over the share of RAM a plan may fill."""
    return (weights.sized_for_fit(split["ram_bytes"] - split["ram_kv"]) + split["ram_kv"]) / RAM_USABLE


def _flags(split: dict) -> str:
    if not split["always_on_fits"]:
        return f"--cpu-moe -ngl {split['gpu_layers']}"
    n = split["n_cpu_moe"]
    layers = grok2_shape().layers
    return "none (all on the GPU)" if n == 0 else "--cpu-moe" if n == layers else f"--n-cpu-moe {n}"


__all__ = ["RoutePlan", "plan_routes", "hybrid_table", "what_would_be_needed", "least_sglang_gpu", "DEFAULT_CONTEXT"]
