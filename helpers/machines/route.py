"""One way to run Grok 2.5 on one machine, and its arithmetic: does it fit and why, where each tensor class lives,
what a decoded token reads from each memory, the speed bound that follows, the disk it needs and what it costs.

The decode bound is a *bound*, not a promise: per token, the sum over the memories a route reads of
bytes read / bandwidth (datasheet peaks), so no engine can decode faster on that machine with that layout. What it
leaves out (kernel launches, communication latency, dequantization, the CPU's arithmetic, scheduling) only slows a
real run down. Prefill is bounded where it matters by arithmetic (2 x active parameters per token at the peak matrix
rate) or by the weights that must cross PCIe; where no matrix rate is known (a CPU or a Mac that was not measured)
the prefill bound is left out rather than taken from the weight reads alone.

Each place a route keeps bytes is listed by tensor class (`Placement.kind`: a key of
`helpers.model_parts.TENSOR_CLASSES`, or "kv_cache"), and what a decoded token reads from each memory follows from
those classes (`read_share`): every weight once, except the experts its router did not pick and all but one row of
the embedding table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..memory import GPU_USABLE_FRACTION, RAM_USABLE_FRACTION
from ..units import GB_PER_S, format_bytes

# The share of each GPU a plan may fill (the rest is for the CUDA context, activations and fragmentation) and of system
# RAM (the OS, the engine and the page cache need the rest): helpers.memory's rules, the ones the course loads by.
GPU_USABLE = GPU_USABLE_FRACTION
RAM_USABLE = RAM_USABLE_FRACTION
PREFILL_BATCH = 512  # tokens per prefill step: llama.cpp's default --ubatch-size; SGLang's chunks are larger


def gb(n: float) -> str:
    """Bytes in decimal GB, one decimal: the unit of every fit line (helpers.units.format_bytes, fixed unit)."""
    return format_bytes(n, unit="GB", decimals=1)


@dataclass(frozen=True)
class Memory:
    """A memory (or link) a route stores weights in or moves them through while decoding."""

    name: str
    kind: str  # "gpu", "unified", "ram", "disk", "pcie", "nvlink", "network"
    bandwidth: float  # bytes/s the route can read it at (all devices that read in parallel together)
    read_per_token: float  # bytes per decoded token
    used: float = 0.0  # bytes placed in it (0 for links)
    capacity: float | None = None  # bytes the route may fill (None for links)

    @property
    def seconds_per_token(self) -> float:
        return self.read_per_token / self.bandwidth if self.read_per_token else 0.0


@dataclass(frozen=True)
class Placement:
    what: str  # a tensor class ("experts, layers 0-40"), or the KV cache
    where: str  # the name of a Memory
    bytes: float
    kind: str = ""  # the class: a key of helpers.model_parts.TENSOR_CLASSES, or "kv_cache"

    def read_per_token(self, shape) -> float:
        """Bytes of this placement one decoded token reads (see read_share)."""
        return self.bytes * read_share(self.kind, shape)


def read_share(kind: str, shape) -> float:
    """The share of a class's bytes one decoded token reads: the experts its router picks (top-k of the experts),
    one row of the embedding table, everything else (KV cache included) whole."""
    if kind == "experts":
        return shape.expert_fraction
    if kind == "embeddings":
        return 1.0 / shape.vocab
    if not kind:
        raise ValueError("a placement without a class cannot be priced per token")
    return 1.0


@dataclass(frozen=True)
class Cost:
    gpu_hours_per_hour: float
    per_hour: float | None  # $ per hour of the machine (None without a price)
    per_million_tokens: float | None  # $ per million decoded tokens at the bound, batch 1: the least it can cost


@dataclass
class Route:
    key: str
    engine: str  # "SGLang", "vLLM 0.24.x", "transformers", "llama.cpp"
    title: str
    weights: object  # helpers.machines.weights.Weights
    fits: bool
    why: list[str]  # the arithmetic, one line per step
    placement: list[Placement] = field(default_factory=list)
    memories: list[Memory] = field(default_factory=list)
    gpus_used: int = 0
    nodes: int = 1
    context: int = 8192
    prefill_tok_s: float | None = None
    prefill_why: str = ""
    disk_bytes: float = 0.0
    disk_why: str = ""
    command: object = None  # an engines.EngineCommand, a list of them (one per node), or None
    needs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applicable: bool = True  # False: this kind of machine cannot run this engine at all (SGLang on a Mac)
    capacities: dict = field(default_factory=dict)  # where -> bytes that may be filled there (the picture's line)
    layout: dict = field(default_factory=dict)  # the engine's own numbers: {"tp": 8}, {"n_cpu_moe": 41, ...}

    def not_applicable(self, why: str) -> "Route":
        self.fits, self.applicable = False, False
        self.why.append(why)
        return self

    @property
    def seconds_per_token(self) -> float | None:
        """The decode bound's time per token: the sum over memories of bytes read / bandwidth (None if no fit)."""
        if not self.fits or not self.memories:
            return None
        return sum(m.seconds_per_token for m in self.memories)

    @property
    def decode_tok_s(self) -> float | None:
        seconds = self.seconds_per_token
        return 1.0 / seconds if seconds else None

    @property
    def limited_by(self) -> Memory | None:
        if not self.fits or not self.memories:
            return None
        return max(self.memories, key=lambda m: m.seconds_per_token)

    def stores(self) -> list[tuple[str, list[Placement], float | None]]:
        """(where, what lives there, how much may be filled there) for each place the route keeps bytes."""
        order = list(dict.fromkeys(p.where for p in self.placement))
        return [(w, [p for p in self.placement if p.where == w], self.capacities.get(w)) for w in order]

    def bytes_read_per_token(self) -> float:
        return sum(m.read_per_token for m in self.memories if m.kind in ("gpu", "unified", "ram", "disk"))

    def cost(self, gpu_hour_price: float | None = None, machine_hour_price: float | None = None) -> Cost:
        """$ per hour from a price per GPU-hour (GPU routes) or per machine-hour (CPU, Mac), and $ per million tokens
        at the decode bound (batch 1; a real run decodes slower, so it costs at least this)."""
        for name, value in (("gpu_hour_price", gpu_hour_price), ("machine_hour_price", machine_hour_price)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a number of dollars >= 0, got {value!r}")
        gpu_hours = self.gpus_used * self.nodes if self.gpus_used else 0
        if gpu_hours and gpu_hour_price is not None:
            per_hour = gpu_hours * gpu_hour_price
        elif machine_hour_price is not None:
            per_hour = machine_hour_price * self.nodes
        else:
            per_hour = None
        speed = self.decode_tok_s
        per_million = per_hour / (speed * 3600) * 1e6 if per_hour is not None and speed else None
        return Cost(gpu_hours, per_hour, per_million)

    def row(self, gpu_hour_price: float | None = None, machine_hour_price: float | None = None) -> dict:
        """The route as one row of the planner's table (numbers rounded for reading)."""
        cost = self.cost(gpu_hour_price, machine_hour_price)
        speed, limit = self.decode_tok_s, self.limited_by
        return {
            "route": self.title,
            "weights": self.weights.name,
            "fits": "yes" if self.fits else "no",
            "decode bound (tok/s)": float(f"{speed:.3g}") if speed else None,
            "s/token (bound)": float(f"{1 / speed:.3g}") if speed else None,
            "limited by": limit.name if limit else "",
            "prefill bound (tok/s)": round(self.prefill_tok_s) if self.fits and self.prefill_tok_s else None,
            "disk": format_bytes(self.disk_bytes, binary=False) if self.disk_bytes else "",
            "$/hour": round(cost.per_hour, 2) if cost.per_hour is not None else None,
            "$/M tokens (at the bound)": round(cost.per_million_tokens, 2) if cost.per_million_tokens else None,
            "why": self.why[-1] if self.why else "",
        }

    def reads(self, where: str) -> float:
        """Bytes a decoded token reads from the place `where`, from what is placed there, class by class."""
        shape = self.weights.shape
        return sum(p.read_per_token(shape) for p in self.placement if p.where == where)

    def commands(self) -> list:
        """The route's engine commands (one per node), [] without one."""
        if self.command is None:
            return []
        return list(self.command) if isinstance(self.command, (list, tuple)) else [self.command]

    def command_text(self) -> str:
        """Each command ready to paste, after the engine version it was checked against."""
        return "\n\n".join(f"# checked against {c.checked_against}\n{c.shell()}" for c in self.commands())

    def summary(self) -> str:
        """Several lines: fit and why, placement, reads per token, bounds, disk, needs."""
        lines = [f"{self.title} [{self.weights.name}]: {'fits' if self.fits else 'does not fit'}"]
        lines += [f"  - {line}" for line in self.why]
        if self.fits:
            lines.append("  where the bytes live:")
            lines += [f"    {p.what:<34s} {gb(p.bytes):>12s}  in {p.where}" for p in self.placement]
            lines.append("  read per decoded token (bound = sum of bytes / bandwidth):")
            for m in self.memories:
                lines.append(f"    {m.name:<48s} {gb(m.read_per_token):>10s} / {m.bandwidth / GB_PER_S:>8,.1f} GB/s "
                             f"= {m.seconds_per_token * 1e3:8.2f} ms")
            speed = self.decode_tok_s
            pace = f"{speed:,.1f} tokens/s" if speed >= 1 else f"{1 / speed:,.1f} s per token"
            lines.append(f"  decode bound: {pace} at batch 1, with a {self.context:,}-token context (a bound, not a "
                         "promise)")
            if self.prefill_tok_s:
                lines.append(f"  prefill bound: {self.prefill_tok_s:,.0f} tokens/s ({self.prefill_why})")
            elif self.prefill_why:
                lines.append(f"  prefill bound: not given ({self.prefill_why})")
        if self.disk_bytes:
            lines.append(f"  disk: {format_bytes(self.disk_bytes, binary=False)} ({self.disk_why})")
        lines += [f"  needs: {n}" for n in self.needs]
        lines += [f"  note: {n}" for n in self.notes]
        for c in self.commands()[:1]:  # every node runs the same release
            install = "" if c.install.startswith(c.checked_against) else f" ({c.install})"
            lines.append(f"  command checked against {c.checked_against}{install}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def store_kind(where: str) -> str:
    """The colour family of a place bytes live in: gpu, unified, ram or disk."""
    text = where.lower()
    return "unified" if "unified" in text else "gpu" if "gpu" in text else "disk" if "nvme" in text else "ram"


def spread_time(nbytes: float, devices: list[tuple[float, float]]) -> float:
    """Seconds to read `nbytes` spread over devices (usable bytes, bandwidth) in proportion to their memory, one
    device after the other (layers split over GPUs run in sequence)."""
    total = sum(capacity for capacity, _ in devices)
    return sum(nbytes * capacity / total / bandwidth for capacity, bandwidth in devices)


def sequential_bandwidth(devices: list[tuple[float, float]]) -> float:
    """The bandwidth at which a layer-split model reads its bytes: the weighted harmonic mean of the devices'."""
    return 1.0 / spread_time(1.0, devices)


__all__ = ["Memory", "Placement", "Route", "Cost", "GPU_USABLE", "RAM_USABLE", "PREFILL_BATCH", "gb", "read_share",
           "spread_time", "store_kind", "sequential_bandwidth"]
