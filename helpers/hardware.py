"""What this machine has, read once, in one place: its GPUs (memory, compute capability, so bf16 or not), RAM, free
disk, CPU threads, and a short description for benchmark records.

    hw = hardware_summary()        # device kind, GPUs, RAM, free disk at the workspace
    hw.supports_bf16                # every GPU can compute in bf16 (compute capability >= 8.0)
    device_kind()                  # "cuda", "mps" or "cpu", without reading every GPU's properties
    compute_dtype("cuda")          # bf16 where the GPU has it, fp16 on a T4 / V100 and on MPS, fp32 on a CPU
    use_few_threads_for_tiny_models(profile)   # lessons: steady timings for a 675k-parameter model on a shared CPU
    machine_info("cuda")           # where a benchmark figure was measured

The setup check (`helpers.environment`), `load_model`'s dtype choice, the roofline and the benchmarks all read the
machine through this module. Works without torch and without psutil (download-only machines): what cannot be read is
reported as absent, never as a crash.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .paths import workspace_dir

# Ampere (A100, RTX 30xx) and newer compute in bf16; a T4 (7.5) and a V100 (7.0) do not, so the course uses fp16 there.
BF16_MIN_CAPABILITY = (8, 0)


def capability_supports_bf16(capability: tuple[int, int]) -> bool:
    return tuple(capability) >= BF16_MIN_CAPABILITY


def compute_dtype(device="cpu", bf16: bool | None = None):
    """The dtype to compute in on `device` ("cuda", "cuda:1", "mps", "cpu" or a torch.device): bf16 on a GPU that has
    it, fp16 on an older GPU and on Apple MPS, fp32 on a CPU (CPUs are slow at bf16 matmuls). `bf16`: whether the
    GPU(s) compute in bf16, when already known (a `Hardware`'s `supports_bf16`); else the CUDA device is asked."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        if bf16 is None:
            bf16 = capability_supports_bf16(torch.cuda.get_device_capability(device))
        return torch.bfloat16 if bf16 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]

    @property
    def supports_bf16(self) -> bool:
        return capability_supports_bf16(self.capability)


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda", "mps" or "cpu"
    gpus: list[GPU] = field(default_factory=list)
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    disk_free_bytes: int = 0

    @property
    def supports_bf16(self) -> bool:
        """Every GPU computes in bf16 (a model spread over a T4 and an A100 must use what both can)."""
        return bool(self.gpus) and all(gpu.supports_bf16 for gpu in self.gpus)


def torch_or_none():
    """torch, or None where it is not installed (download-only machines)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _cuda_gpus(torch) -> list[GPU]:
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        try:
            free, total = torch.cuda.mem_get_info(index)
        except RuntimeError:  # e.g. a GPU in exclusive mode used by another process
            free, total = 0, props.total_memory
        gpus.append(GPU(index, props.name, int(total), int(free), (props.major, props.minor)))
    return gpus


def mps_available(torch=None) -> bool:
    torch = torch or torch_or_none()
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    return bool(mps is not None and mps.is_available())


def ram_bytes() -> tuple[int, int]:
    """(total, available) bytes of RAM; psutil where installed, else what the OS says directly."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except ImportError:
        pass
    try:  # Linux without psutil
        values = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        kib = {key: int(value.split()[0]) * 1024 for key, value in values.items() if value.split()}
        return kib.get("MemTotal", 0), kib.get("MemAvailable", kib.get("MemFree", 0))
    except (OSError, ValueError):
        return 0, 0


def device_kind(torch=None) -> str:
    """Where a model runs here: "cuda" (a CUDA GPU is visible), "mps" (Apple silicon) or "cpu". Cheap: no GPU's
    properties or free memory are read (`hardware_summary` does that)."""
    torch = torch or torch_or_none()
    if torch is None:
        return "cpu"
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return "cuda"
    return "mps" if mps_available(torch) else "cpu"


def hardware_summary() -> Hardware:
    """The device kind, each GPU with its free memory and compute capability, RAM, and free disk at the workspace."""
    torch = torch_or_none()
    device = device_kind(torch)
    gpus = _cuda_gpus(torch) if device == "cuda" else []
    ram_total, ram_available = ram_bytes()
    return Hardware(
        device=device,
        gpus=gpus,
        ram_total_bytes=ram_total,
        ram_available_bytes=ram_available,
        disk_free_bytes=shutil.disk_usage(workspace_dir()).free,
    )


# ------------------------------------------------------------------------------------------------------ threads


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity where the OS tells, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_few_threads_for_tiny_models(profile) -> int:
    """For the tiny profile, compute on one thread and return 1; otherwise leave PyTorch's choice and return it.

    A 675k-parameter model's matrices are too small to split across cores: more threads only add synchronisation,
    and on a machine shared with other work (a workshop laptop, a CI runner) they make timings jump. Real models
    need every core, so they keep PyTorch's default."""
    import torch

    if getattr(profile, "name", profile) == "tiny":
        torch.set_num_threads(1)
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------- for the records


def cpu_name() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device="cpu") -> dict:
    """Where a figure was measured: OS, CPU, cores, torch threads, and the GPU if there is one."""
    import torch

    device = torch.device(device)
    info = {"device": device.type, "platform": platform.platform(), "python": platform.python_version(),
            "cpu_cores": cpu_cores(), "torch_threads": torch.get_num_threads(), "cpu": cpu_name()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_GiB=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


__all__ = ["BF16_MIN_CAPABILITY", "torch_or_none", "capability_supports_bf16", "compute_dtype", "GPU", "Hardware",
           "device_kind", "hardware_summary", "mps_available", "ram_bytes", "cpu_cores", "use_few_threads_for_tiny_models",
           "cpu_name", "machine_info"]
