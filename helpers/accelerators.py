"""Datasheet facts about accelerators the course plans for, in one place: memory, memory bandwidth, dense bf16 rate,
FP8 support and the GPU-to-GPU link, each with its public source.

    H100_SXM.memory_bytes / GB          # 80.0
    ACCELERATORS["H200"].memory_bandwidth  # bytes/s, as the datasheet states it

These are the vendors' peak figures: what a machine *could* do. What a machine really does is measured
(`helpers.roofline.measure_ceilings`), and speed bounds computed from these figures are labelled as bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .units import GB

TB_PER_S = 1e12  # datasheets give bandwidth in decimal TB/s and GB/s
GB_PER_S = 1e9
TFLOPS = 1e12


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: float  # as sold, decimal GB
    memory_bandwidth: float  # bytes/s, peak
    bf16_flops: float  # dense 16-bit matrix rate (no sparsity), per second, peak: bf16, or fp16 where there is no bf16
    fp8: str  # "native": FP8 tensor cores; "weight-only": FP8 weights dequantized in the kernel (W8A16); "none"
    link: str  # how GPUs of this kind talk to each other in one server
    link_bandwidth: float  # bytes/s per GPU, one direction
    source: str

    def __post_init__(self):
        if self.fp8 not in ("native", "weight-only", "none"):
            raise ValueError(f"fp8 must be native, weight-only or none, not {self.fp8!r}")


H100_SXM = Accelerator(
    "H100 SXM 80GB", 80 * GB, 3.35 * TB_PER_S, 989 * TFLOPS, "native", "NVLink 4", 450 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM: 80 GB HBM3, 3.35 TB/s, BF16 1,979 TFLOPS with "
    "sparsity = 989 dense, NVLink 900 GB/s bidirectional)")
H200_SXM = Accelerator(
    "H200 SXM 141GB", 141 * GB, 4.8 * TB_PER_S, 989 * TFLOPS, "native", "NVLink 4", 450 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/h200/ (141 GB HBM3e, 4.8 TB/s, BF16 1,979 TFLOPS with sparsity, "
    "NVLink 900 GB/s)")
A100_SXM_80 = Accelerator(
    "A100 SXM 80GB", 80 * GB, 2.039 * TB_PER_S, 312 * TFLOPS, "weight-only", "NVLink 3", 300 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/a100/ (80 GB HBM2e, 2,039 GB/s, BF16 312 TFLOPS dense, NVLink 600 GB/s); "
    "FP8 weight-only (W8A16, FP8 Marlin) from compute capability 7.5: https://docs.vllm.ai/en/stable/features/quantization/fp8/")
A100_SXM_40 = Accelerator(
    "A100 SXM 40GB", 40 * GB, 1.555 * TB_PER_S, 312 * TFLOPS, "weight-only", "NVLink 3", 300 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/a100/ (40 GB HBM2, 1,555 GB/s)")
T4 = Accelerator(
    "Tesla T4 16GB", 16 * GB, 320 * GB_PER_S, 65 * TFLOPS, "weight-only", "PCIe 3.0 x16", 16 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/tesla-t4/ (16 GB GDDR6, 320 GB/s, 65 TFLOPS FP16 mixed precision; "
    "no bf16: compute capability 7.5, so the 16-bit rate is FP16); FP8 weight-only from 7.5: "
    "https://docs.vllm.ai/en/stable/features/quantization/fp8/")

ACCELERATORS: dict[str, Accelerator] = {
    "H100": H100_SXM,
    "H200": H200_SXM,
    "A100-80GB": A100_SXM_80,
    "A100-40GB": A100_SXM_40,
    "T4": T4,
}

__all__ = ["Accelerator", "ACCELERATORS", "H100_SXM", "H200_SXM", "A100_SXM_80", "A100_SXM_40", "T4", "TB_PER_S",
           "GB_PER_S", "TFLOPS"]
