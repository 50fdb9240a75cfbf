"""A machine, described for the route planner: its GPUs, system RAM and its bandwidth, disk, Apple unified memory, the
network to a second node. The presets, a custom machine from names and numbers, and "this machine", measured.

    preset("24 GB GPU + 128 GB DDR5")
    describe_machine(gpu="RTX 4090", gpus=2, ram_gib=192, ram="DDR5-5600, 2 channels (desktop, 2 DIMMs)")
    describe_machine(gpu=custom_gpu("my card", memory_gib=48, bandwidth_gb_s=864, bf16_tflops=181), ram_gib=256)
    this_machine()          # GPUs and RAM from helpers.hardware, bandwidths measured with helpers.roofline

Every figure of a preset comes from `helpers.accelerators` (datasheets, with sources); what a preset assumes beyond
the datasheets (how much RAM, which disk) is in its `notes`. Memory is given as sold and counts in binary units: the
"128 GB" of two 64 GB DIMMs and the "48 GB" of a GPU are GiB (`ram_gib=128`, `memory_gib=48`; see
`helpers.accelerators`); disks count in decimal TB (`disk_tb`), bandwidths in decimal GB/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import accelerators as hw
from ..errors import CourseError
from ..units import GB_PER_S, TB, GiB, MiB, format_bytes

MAX_GPUS = 64  # per node: larger lists are refused before any work
MAX_MEMORY_GIB = 100_000  # about 100 TB of RAM is far beyond any single machine
MAX_DISK_TB = 100
PUBLISHED_RIG = "3 x RTX 3090 + RTX 4090, 256 GB DDR5"


@dataclass(frozen=True)
class Machine:
    name: str
    gpus: tuple[hw.Accelerator, ...] = ()  # one entry per GPU; mixed kinds allowed (llama.cpp splits layers)
    ram_bytes: float = 0.0
    ram_bandwidth: float = 0.0  # bytes/s
    ram_name: str = ""
    disk_bytes: float = 0.0  # free space for checkpoints
    disk_bandwidth: float | None = None  # bytes/s, sequential read; None: not known
    disk_name: str = ""
    unified: hw.UnifiedMemoryChip | None = None  # Apple: CPU and GPU share ram_bytes at the chip's bandwidth
    network: hw.Network | None = None  # to a second node like this one
    cpu_flops: float | None = None  # measured (this machine) or None: CPU prefill bounds need it
    measured: bool = False
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def gpu_memory(self) -> float:
        return sum(g.memory_bytes for g in self.gpus)

    @property
    def homogeneous(self) -> bool:
        return len({g.name for g in self.gpus}) <= 1

    @property
    def apple(self) -> bool:
        return self.unified is not None

    def gpu_summary(self) -> str:
        if self.apple:
            return f"{self.unified.name} GPU ({self.unified.gpu_cores} cores), unified memory"
        if not self.gpus:
            return "no GPU"
        counts: dict[str, int] = {}
        for gpu in self.gpus:
            counts[gpu.name] = counts.get(gpu.name, 0) + 1
        return " + ".join(f"{n} x {name}" for name, n in counts.items())

    def describe(self) -> list[str]:
        ram = f"{format_bytes(self.ram_bytes)} RAM"
        if self.ram_bandwidth:
            ram += f" at {self.ram_bandwidth / GB_PER_S:,.0f} GB/s ({self.ram_name or 'bandwidth given'})"
        disk = f"{format_bytes(self.disk_bytes, binary=False)} disk"
        if self.disk_bandwidth:
            disk += f" at {self.disk_bandwidth / GB_PER_S:,.1f} GB/s ({self.disk_name})"
        lines = [self.gpu_summary(), ram, disk]
        if self.network:
            lines.append(f"to a second node: {self.network.name}")
        return lines + list(self.notes)


# ---------------------------------------------------------------------------------------------- building one


def _positive(name: str, value, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise CourseError(f"{name} must be a number >= 0, got {value!r}.", f"Give {name} as a plain number, e.g. 128.")
    if value > limit:
        raise CourseError(f"{name} = {value:g} is beyond any single machine (limit {limit:g}).",
                          f"Give {name} in the unit its name says (GiB of memory, TB of disk, GB/s, TFLOPS).")
    return float(value)


def _normal(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def how_to_describe() -> str:
    return ("describe your machine with helpers.machines.describe_machine(gpu=<a known name>, gpus=<count>, "
            "ram_gib=<RAM as sold: 128 for 128 GB of DIMMs>, ram=<a name from SYSTEM_MEMORY> or "
            "ram_bandwidth_gb_s=<GB/s>, disk_tb=<free disk>); for a GPU the course does not know, pass "
            "gpu=custom_gpu('name', memory_gib=<its \"GB\", which are GiB>, bandwidth_gb_s=..., bf16_tflops=..., "
            "fp8='native'|'weight-only'|'none') with the figures from its datasheet")


def find_accelerator(name: str) -> hw.Accelerator:
    """A GPU by its short name ("H100", "RTX 4090", "A100-80GB") or its full name, case and punctuation ignored."""
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise CourseError(f"A GPU name must be a short string, got {str(name)[:100]!r}.", how_to_describe() + ".")
    wanted = _normal(name)
    for key, accelerator in hw.ACCELERATORS.items():
        if wanted in (_normal(key), _normal(accelerator.name)):
            return accelerator
    known = ", ".join(hw.ACCELERATORS)
    raise CourseError(
        f"Unknown GPU {name!r}. The course knows: {known}. Machines it has presets for: {', '.join(PRESETS)}.",
        f"Pick one of those names or a preset (helpers.machines.preset(name)), or {how_to_describe()}.")


def custom_gpu(name: str, *, memory_gib: float, bandwidth_gb_s: float, bf16_tflops: float, fp8: str = "none",
               host_link: str = "PCIe 4.0 x16", int8_tops: float | None = None,
               fp8_tflops: float | None = None) -> hw.Accelerator:
    """A GPU from its datasheet, for one the course does not list: memory as sold (its "GB" are GiB: a 48 GB card is
    memory_gib=48), bandwidth in GB/s, rates in TFLOPS (dense, without sparsity). Rates not given count as the 16-bit
    rate."""
    if fp8 not in ("native", "weight-only", "none"):
        raise CourseError(f"fp8 must be 'native', 'weight-only' or 'none', not {fp8!r}.",
                          "native: FP8 tensor cores (compute capability 8.9+); weight-only: 7.5-8.6; none: older.")
    if host_link not in hw.PCIE:
        raise CourseError(f"host_link {host_link!r} is not a PCIe generation the course knows.",
                          f"Use one of: {', '.join(hw.PCIE)}.")
    memory = _positive("memory_gib", memory_gib, 10_000) * GiB
    bandwidth = _positive("bandwidth_gb_s", bandwidth_gb_s, 100_000) * hw.GB_PER_S
    flops = _positive("bf16_tflops", bf16_tflops, 100_000) * hw.TFLOPS
    if not (memory and bandwidth and flops):
        raise CourseError("A GPU needs memory, bandwidth and a matrix rate above zero.",
                          "Copy them from its datasheet (dense figures, without sparsity).")
    int8 = _positive("int8_tops", int8_tops, 1e6) * hw.TFLOPS if int8_tops else None
    fp8_rate = _positive("fp8_tflops", fp8_tflops, 1e6) * hw.TFLOPS if fp8_tflops else None
    return hw.Accelerator(name, memory, bandwidth, flops, fp8, "PCIe", hw.PCIE[host_link], "given by you",
                          fp8_flops=fp8_rate, int8_ops=int8, host_link=host_link, datacenter=False)


def describe_machine(name: str = "your machine", *, gpu: str | hw.Accelerator | None = None, gpus: int = 1,
                     gpu_list: list | tuple | None = None, ram_gib: float = 0, ram: str | hw.SystemMemory | None = None,
                     ram_bandwidth_gb_s: float | None = None, disk_tb: float = 2.0,
                     disk: hw.Drive | None = hw.NVME_GEN4, apple: str | hw.UnifiedMemoryChip | None = None,
                     network: hw.Network | None = None) -> Machine:
    """A machine from names and numbers. `gpu` x `gpus`, or `gpu_list` for mixed GPUs; `apple` ("M2 Ultra", "M3 Ultra")
    for a Mac (then ram_gib is its unified memory). `ram_gib`: the RAM as sold, whose "GB" are GiB (two 64 GB DIMMs:
    128). RAM bandwidth from `ram` (a SystemMemory or its name) or given."""
    if gpu_list is not None and (not isinstance(gpu_list, (list, tuple)) or len(gpu_list) > MAX_GPUS):
        raise CourseError(f"gpu_list must be a list of at most {MAX_GPUS} GPUs.", how_to_describe() + ".")
    if gpu_list is None:
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_GPUS:
            raise CourseError(f"gpus must be a whole number from 0 to {MAX_GPUS}, got {gpus!r}.",
                              "Count the GPUs of one node; a second node is planned by the two-node route.")
        gpu_list = [gpu] * gpus if gpu is not None else []
    chosen = tuple(g if isinstance(g, hw.Accelerator) else find_accelerator(g) for g in gpu_list)
    ram_bytes = _positive("ram_gib", ram_gib, MAX_MEMORY_GIB) * GiB
    disk_bytes = _positive("disk_tb", disk_tb, MAX_DISK_TB) * TB
    chip = None
    if apple is not None:
        if isinstance(apple, hw.UnifiedMemoryChip):
            chip = apple
        elif apple in hw.APPLE_CHIPS:
            chip = hw.APPLE_CHIPS[apple]
        else:
            raise CourseError(f"Unknown Apple chip {apple!r}.", f"Use one of: {', '.join(hw.APPLE_CHIPS)}.")
        if chosen:
            raise CourseError("A Mac has no separate GPUs to list.", "Pass apple=... and ram_gib=..., without gpu.")
        if ram_bytes > chip.memory_bytes:
            raise CourseError(f"{chip.name} is sold with at most {chip.memory_bytes / GiB:.0f} GB (GiB) of memory.",
                              f"Give ram_gib <= {chip.memory_bytes / GiB:.0f}.")
    memory = None
    if chip is not None:
        bandwidth, ram_name = chip.memory_bandwidth, f"{chip.name} unified memory"
    elif ram_bandwidth_gb_s is not None:
        bandwidth, ram_name = _positive("ram_bandwidth_gb_s", ram_bandwidth_gb_s, 100_000) * hw.GB_PER_S, "given"
    else:
        memory = ram if isinstance(ram, hw.SystemMemory) else hw.SYSTEM_MEMORY.get(ram or hw.DDR5_5600_2CH.name)
        if memory is None:
            raise CourseError(f"Unknown memory configuration {ram!r}.",
                              f"Use one of: {'; '.join(hw.SYSTEM_MEMORY)}; or give ram_bandwidth_gb_s.")
        bandwidth, ram_name = memory.bandwidth, memory.name
    sources = tuple(dict.fromkeys([g.source for g in chosen] + ([chip.source] if chip else [])
                                  + ([memory.source] if memory else []) + ([disk.source] if disk else [])))
    return Machine(name, chosen, ram_bytes, bandwidth, ram_name, disk_bytes,
                   disk.read_bandwidth if disk else None, disk.name if disk else "", chip, network, sources=sources)


# -------------------------------------------------------------------------------------------------- presets


def _with_notes(machine: Machine, *notes: str) -> Machine:
    from dataclasses import replace

    return replace(machine, notes=tuple(notes))


def _presets() -> dict[str, Machine]:
    desktop = "a desktop: one consumer GPU, two memory channels, a PCIe 4.0 NVMe drive"
    presets = [
        _with_notes(describe_machine("24 GB GPU + 64 GB DDR5", gpu="RTX 4090", ram_gib=64, ram=hw.DDR5_5600_2CH.name),
                    desktop + " (2 x 32 GB at the CPU's rated DDR5-5600)"),
        _with_notes(describe_machine("24 GB GPU + 128 GB DDR5", gpu="RTX 4090", ram_gib=128, ram=hw.DDR5_5600_2CH.name),
                    desktop + " (2 x 64 GB at the CPU's rated DDR5-5600)"),
        _with_notes(describe_machine("24 GB GPU + 256 GB DDR5", gpu="RTX 4090", ram_gib=256, ram=hw.DDR5_3600_2CH.name),
                    desktop + " (4 x 64 GB: with four DIMMs the CPU is rated for DDR5-3600 only)"),
        _with_notes(describe_machine("Mac Studio M2 Ultra 192 GB", apple="M2 Ultra", ram_gib=192, disk_tb=2, disk=None),
                    "Mac Studio (2023), the largest M2 Ultra configuration"),
        _with_notes(describe_machine("Mac Studio M3 Ultra 512 GB", apple="M3 Ultra", ram_gib=512, disk_tb=4, disk=None),
                    "Mac Studio (2025), the largest M3 Ultra configuration"),
        _with_notes(describe_machine("1 x H200", gpu="H200", ram_gib=256, ram=hw.DDR5_4800_8CH.name, disk_tb=4,
                                     network=hw.INFINIBAND_NDR_8),
                    "one H200 SXM (a cloud instance) with 256 GB of RAM on one socket's 8 channels"),
        _with_notes(describe_machine("2 x H100 80 GB", gpu="H100", gpus=2, ram_gib=512, ram=hw.DDR5_4800_8CH.name,
                                     disk_tb=4, network=hw.INFINIBAND_NDR_8),
                    "two H100 SXM (a cloud instance) with 512 GB of RAM on one socket's 8 channels"),
        _with_notes(describe_machine("8 x A100 80 GB", gpu="A100-80GB", gpus=8, ram_gib=2048, ram=hw.DDR4_3200_16CH.name,
                                     disk_tb=15, network=hw.INFINIBAND_HDR_8),
                    "a DGX A100 640GB: 2 TB of DDR4, 15 TB of NVMe (one drive's read rate is used)"),
        _with_notes(describe_machine("8 x H100 80 GB", gpu="H100", gpus=8, ram_gib=2048, ram=hw.DDR5_4800_16CH.name,
                                     disk_tb=30, network=hw.INFINIBAND_NDR_8),
                    "a DGX H100: 2 TB of DDR5, 30 TB of NVMe (one drive's read rate is used)"),
        _with_notes(describe_machine(PUBLISHED_RIG, gpu_list=["RTX 3090"] * 3 + ["RTX 4090"], ram_gib=256,
                                     ram=hw.DDR5_5200_8CH.name),
                    "the rig of a published llama.cpp measurement (unsloth/grok-2-GGUF discussion #1): it gives 96 GB "
                    "of VRAM and 256 GB of DDR5, not the board; four GPUs point to a workstation, and the bound takes "
                    "8 channels of DDR5-5200, the most such a board has, so it holds whatever board it was"),
    ]
    return {machine.name: machine for machine in presets}


PRESETS: dict[str, Machine] = {}
PRESETS.update(_presets())


def preset(name: str) -> Machine:
    """A preset machine by name (helpers.machines.PRESETS lists them); "this machine" measures the one you are on."""
    if isinstance(name, str) and _normal(name) == _normal("this machine"):
        return this_machine()
    for key, machine in PRESETS.items():
        if isinstance(name, str) and _normal(name) == _normal(key):
            return machine
    raise CourseError(f"No preset machine called {str(name)[:100]!r}. Presets: {', '.join(PRESETS)}, this machine.",
                      f"Use one of those names, or {how_to_describe()}.")


# ---------------------------------------------------------------------------------------------- this machine


def _known_gpu(name: str, memory: float) -> hw.Accelerator | None:
    """The datasheet entry for a CUDA device name such as 'NVIDIA H100 80GB HBM3' (None when the course has none)."""
    text = _normal(name)
    for key, accelerator in hw.ACCELERATORS.items():
        short = _normal(key.split("-")[0])
        if short in text and abs(accelerator.memory_bytes - memory) <= 0.15 * accelerator.memory_bytes:
            return accelerator
    return None


RAM_PROBE_BYTES = GiB  # one buffer of the RAM copy: far beyond any CPU cache (L3 is tens of MiB)


def ram_copy_bandwidth(available_bytes: float, size_bytes: int | None = None, repeats: int = 3) -> float:
    """Bytes per second of a large RAM-to-RAM copy (each byte read and written): helpers.roofline's copy on the CPU,
    with buffers of `size_bytes` (default RAM_PROBE_BYTES, 1 GiB), at most an eighth of the free RAM each so the rest
    stays free, filled with a constant (drawing 1 GiB of random numbers takes seconds), one untimed copy first, the
    median of `repeats`. A 128 MiB copy would partly run in the caches of a big CPU; 1 GiB does not."""
    from ..roofline import measure_copy_bandwidth

    return measure_copy_bandwidth("cpu", size_bytes or RAM_PROBE_BYTES, repeats, free_bytes=available_bytes,
                                  fill="constant", warmups=1)


def this_machine(measure_cpu_compute: bool = True) -> Machine:
    """This machine: GPUs and RAM from helpers.hardware; RAM bandwidth measured by a 1 GiB copy (`ram_copy_bandwidth`)
    and unknown GPUs' by helpers.roofline.measure_copy_bandwidth, CPU matrix rate measured too. Takes a second or two
    on a CPU."""
    from ..hardware import hardware_summary
    from ..roofline import measure_copy_bandwidth, measure_matmul_rate

    summary = hardware_summary()
    notes = ["measured here, now: bandwidths are a copy's (bytes read + written per second), not a datasheet's"]
    gpus = []
    for gpu in summary.gpus[:MAX_GPUS]:
        known = _known_gpu(gpu.name, gpu.total_bytes)
        if known is None:
            bandwidth = measure_copy_bandwidth(f"cuda:{gpu.index}")
            flops = measure_matmul_rate(f"cuda:{gpu.index}")
            known = hw.Accelerator(gpu.name, gpu.total_bytes, bandwidth, flops,
                                   "native" if gpu.capability >= (8, 9) else "weight-only", "PCIe", hw.PCIE[
                                       "PCIe 4.0 x16"], "measured here", datacenter=False)
            notes.append(f"{gpu.name}: not in helpers.accelerators, its bandwidth and bf16 rate were measured")
        gpus.append(known)
    ram_bandwidth = ram_copy_bandwidth(summary.ram_available_bytes or summary.ram_total_bytes)
    cpu_flops = measure_matmul_rate("cpu", n=512, repeats=5) if measure_cpu_compute else None
    unified = None
    if summary.device == "mps":
        unified = hw.UnifiedMemoryChip("this Mac", summary.ram_total_bytes, measure_copy_bandwidth("mps"), 0,
                                       "measured here")
    return Machine("this machine", tuple(gpus), float(summary.ram_total_bytes), ram_bandwidth, "measured copy",
                   float(summary.disk_free_bytes), None, "free space at the workspace (read rate not measured)",
                   unified, None, cpu_flops, True, tuple(notes))


__all__ = ["Machine", "PRESETS", "preset", "describe_machine", "custom_gpu", "find_accelerator", "this_machine",
           "how_to_describe", "ram_copy_bandwidth", "MAX_GPUS", "PUBLISHED_RIG"]
