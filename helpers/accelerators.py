"""Datasheet facts about the hardware the course plans for, in one place, each with its public source: GPUs (memory,
memory bandwidth, dense matrix rates, FP8 support, links), Apple's unified-memory chips, system-memory configurations
(DDR4/DDR5 channels x transfer rate), PCIe generations, NVMe drives and the networks between nodes.

    H100_SXM.memory_bytes / GiB         # 80.0: an "80 GB" H100 holds 80 GiB
    ACCELERATORS["H200"].memory_bandwidth  # bytes/s, as the datasheet states it
    DDR5_5600_2CH.bandwidth              # 89.6e9: 2 channels x 8 bytes x 5600 MT/s
    PCIE["PCIe 4.0 x16"]                 # bytes/s, one direction

**Memory sizes are binary.** HBM, GDDR and LPDDR chips are built in powers of two, so the "GB" of a GPU's or a Mac's
memory on a datasheet is a GiB (2**30 bytes): an "80 GB" H100 has 80 GiB, 85.9e9 bytes. The course's own H100 shows
it: its CUDA driver reported 85.0e9 bytes in all (`gpu_memory_GB` in benchmarks/results/lora-grok2-4b-cuda.json),
79.2 GiB, a little under 80 GiB because the driver keeps some; 80e9 bytes would be less than the card has. Likewise an
H200's 141 GB are 141 GiB (its driver reports about 140 GiB). Counted as 80e9, two H100s looked too small for 4-bit
Grok 2.5 with an 8K-token KV cache; at their real size they hold it. Bandwidths and matrix rates, by contrast, are
decimal (TB/s, GB/s, TFLOPS: `helpers.units`), like disks and file sizes.

These are the vendors' peak figures: what a machine *could* do. What a machine really does is measured
(`helpers.roofline.measure_ceilings`), and speed bounds computed from these figures are labelled as bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .units import GB_PER_S, TB_PER_S, TFLOPS, GiB  # noqa: F401  (the rate units are re-exported from here)

# PCIe, one direction, x16: transfer rate (GT/s) x 16 lanes x line-code efficiency / 8 bits. Gen 3-5 use 128b/130b.
# Source: PCI-SIG, https://pcisig.com/specifications (PCIe 3.0: 8 GT/s, 4.0: 16 GT/s, 5.0: 32 GT/s per lane).
PCIE: dict[str, float] = {
    f"PCIe {gen}.0 x16": rate * 1e9 * 16 * 128 / 130 / 8 for gen, rate in ((3, 8), (4, 16), (5, 32))
}
PCIE_SOURCE = "https://pcisig.com/specifications (8 / 16 / 32 GT/s per lane for PCIe 3.0 / 4.0 / 5.0, 128b/130b)"


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_bytes: float  # as sold: the datasheet's "GB" of memory are GiB (see the module docstring)
    memory_bandwidth: float  # bytes/s, peak
    bf16_flops: float  # dense 16-bit matrix rate (no sparsity), per second, peak: bf16, or fp16 where there is no bf16
    fp8: str  # "native": FP8 tensor cores; "weight-only": FP8 weights dequantized in the kernel (W8A16); "none"
    link: str  # how GPUs of this kind talk to each other in one server
    link_bandwidth: float  # bytes/s per GPU, one direction
    source: str
    fp8_flops: float | None = None  # dense FP8 matrix rate where the tensor cores have FP8 (fp8 == "native")
    int8_ops: float | None = None  # dense INT8 matrix rate (llama.cpp's quantized kernels multiply in int8 on CUDA)
    host_link: str = "PCIe 4.0 x16"  # to the CPU and system RAM: a key of PCIE
    datacenter: bool = True  # False: a consumer card (one per desktop, or a few on PCIe)
    # One small all-reduce (16 KiB: 8,192 bf16 values) across 8 such GPUs of one server, seconds, as measured in public
    # (None: no public figure in the course). Tensor parallelism pays it twice per layer for every decoded token.
    all_reduce_latency: float | None = None
    all_reduce_source: str = ""

    def __post_init__(self):
        if self.fp8 not in ("native", "weight-only", "none"):
            raise ValueError(f"fp8 must be native, weight-only or none, not {self.fp8!r}")
        if self.host_link not in PCIE:
            raise ValueError(f"host_link must be one of {', '.join(PCIE)}, not {self.host_link!r}")

    @property
    def host_link_bandwidth(self) -> float:
        return PCIE[self.host_link]

    def matrix_rate(self, operands: str) -> float:
        """Peak dense matrix rate for `operands` "bf16", "fp8" or "int8", falling back to the 16-bit rate where the
        chip has no faster path for them."""
        faster = {"fp8": self.fp8_flops if self.fp8 == "native" else None, "int8": self.int8_ops}.get(operands)
        return max(self.bf16_flops, faster or 0.0)


H100_SXM = Accelerator(
    "H100 SXM 80GB", 80 * GiB, 3.35 * TB_PER_S, 989 * TFLOPS, "native", "NVLink 4", 450 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM: 80 GB HBM3, 3.35 TB/s, BF16 1,979 TFLOPS with "
    "sparsity = 989 dense, FP8 3,958 with sparsity = 1,979 dense, INT8 3,958 TOPS with sparsity, NVLink 900 GB/s "
    "bidirectional, PCIe Gen5)",
    fp8_flops=1979 * TFLOPS, int8_ops=1979 * TFLOPS, host_link="PCIe 5.0 x16", all_reduce_latency=5.7e-6,
    all_reduce_source="https://github.com/sgl-project/sglang/pull/2904 (8 x H100, one all-reduce of 4,096 fp32 "
    "values = 16 KiB, without CUDA graphs: 5.7 us with SGLang's custom all-reduce, 9.3 us with vLLM's)")
H200_SXM = Accelerator(
    "H200 SXM 141GB", 141 * GiB, 4.8 * TB_PER_S, 989 * TFLOPS, "native", "NVLink 4", 450 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/h200/ (141 GB HBM3e, 4.8 TB/s, BF16 1,979 TFLOPS with sparsity, "
    "FP8 3,958 with sparsity, NVLink 900 GB/s, PCIe Gen5)",
    fp8_flops=1979 * TFLOPS, int8_ops=1979 * TFLOPS, host_link="PCIe 5.0 x16")
A100_SXM_80 = Accelerator(
    "A100 SXM 80GB", 80 * GiB, 2.039 * TB_PER_S, 312 * TFLOPS, "weight-only", "NVLink 3", 300 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/a100/ (80 GB HBM2e, 2,039 GB/s, BF16 312 TFLOPS dense, INT8 624 TOPS "
    "dense, NVLink 600 GB/s, PCIe Gen4); FP8 weight-only (W8A16, FP8 Marlin) from compute capability 7.5: "
    "https://docs.vllm.ai/en/stable/features/quantization/fp8/",
    int8_ops=624 * TFLOPS)
A100_SXM_40 = Accelerator(
    "A100 SXM 40GB", 40 * GiB, 1.555 * TB_PER_S, 312 * TFLOPS, "weight-only", "NVLink 3", 300 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/a100/ (40 GB HBM2, 1,555 GB/s)",
    int8_ops=624 * TFLOPS)
T4 = Accelerator(
    "Tesla T4 16GB", 16 * GiB, 320 * GB_PER_S, 65 * TFLOPS, "weight-only", "PCIe 3.0 x16", 16 * GB_PER_S,
    "https://www.nvidia.com/en-us/data-center/tesla-t4/ (16 GB GDDR6, 320 GB/s, 65 TFLOPS FP16 mixed precision, "
    "130 INT8 TOPS; no bf16: compute capability 7.5, so the 16-bit rate is FP16); FP8 weight-only from 7.5: "
    "https://docs.vllm.ai/en/stable/features/quantization/fp8/",
    int8_ops=130 * TFLOPS, host_link="PCIe 3.0 x16")
RTX_4090 = Accelerator(
    "GeForce RTX 4090 24GB", 24 * GiB, 1008 * GB_PER_S, 165.2 * TFLOPS, "native", "PCIe 4.0 x16 (no NVLink)",
    PCIE["PCIe 4.0 x16"],
    "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf (RTX 4090: 24 GB "
    "GDDR6X, 1,008 GB/s; dense BF16 with FP32 accumulate 165.2 TFLOPS, FP8 660.6, INT8 660.6 TOPS; PCIe Gen4 x16)",
    fp8_flops=660.6 * TFLOPS, int8_ops=660.6 * TFLOPS, datacenter=False)
RTX_3090 = Accelerator(
    "GeForce RTX 3090 24GB", 24 * GiB, 936 * GB_PER_S, 71 * TFLOPS, "weight-only", "PCIe 4.0 x16", PCIE["PCIe 4.0 x16"],
    "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf (RTX 3090: 24 GB "
    "GDDR6X, 936 GB/s; dense BF16 with FP32 accumulate 71 TFLOPS, INT8 284 TOPS; PCIe Gen4 x16); compute capability "
    "8.6: FP8 weight-only, https://docs.vllm.ai/en/stable/features/quantization/fp8/",
    int8_ops=284 * TFLOPS, datacenter=False)

ACCELERATORS: dict[str, Accelerator] = {
    "H100": H100_SXM,
    "H200": H200_SXM,
    "A100-80GB": A100_SXM_80,
    "A100-40GB": A100_SXM_40,
    "T4": T4,
    "RTX 4090": RTX_4090,
    "RTX 3090": RTX_3090,
}


# ------------------------------------------------------------------------------------------- Apple unified memory


@dataclass(frozen=True)
class UnifiedMemoryChip:
    """An Apple chip whose CPU and GPU share one memory (Metal reads the weights where they lie)."""

    name: str
    memory_bytes: float  # the largest configuration sold (its "GB" are GiB, as for GPUs)
    memory_bandwidth: float  # bytes/s
    gpu_cores: int
    source: str
    gpu_flops: float | None = None  # Apple publishes no matrix rate for these GPUs: measure it (helpers.roofline)


M2_ULTRA = UnifiedMemoryChip(
    "Apple M2 Ultra", 192 * GiB, 800 * GB_PER_S, 76,
    "https://www.apple.com/newsroom/2023/06/apple-introduces-m2-ultra/ (up to 192 GB of unified memory, "
    "800 GB/s, up to 76 GPU cores)")
M3_ULTRA = UnifiedMemoryChip(
    "Apple M3 Ultra", 512 * GiB, 819 * GB_PER_S, 80,
    "https://www.apple.com/mac-studio/specs/ (M3 Ultra: up to 512 GB of unified memory, 819 GB/s, up to 80 GPU cores)")
APPLE_CHIPS: dict[str, UnifiedMemoryChip] = {"M2 Ultra": M2_ULTRA, "M3 Ultra": M3_ULTRA}
# By default macOS lets the GPU wire about 75% of unified memory (Metal's recommendedMaxWorkingSetSize: 48 GiB on a
# 64 GiB Mac); `sudo sysctl iogpu.wired_limit_mb=<MiB>` raises it until the next reboot.
METAL_DEFAULT_WORKING_SET = 0.75
METAL_WORKING_SET_SOURCE = ("https://github.com/ggml-org/llama.cpp/issues/1870 (recommendedMaxWorkingSetSize "
                            "49152 MiB on a 64 GB M1 Max), https://github.com/gpustack/gpustack/issues/1375 (75% of RAM; "
                            "iogpu.wired_limit_mb)")


# -------------------------------------------------------------------------------------------------- system RAM


@dataclass(frozen=True)
class SystemMemory:
    """A DRAM configuration: bandwidth = channels x 8 bytes (a 64-bit channel) x transfer rate."""

    name: str
    kind: str  # "DDR4" or "DDR5"
    channels: int
    megatransfers: int  # MT/s
    source: str

    @property
    def bandwidth(self) -> float:
        return self.channels * 8 * self.megatransfers * 1e6


_JEDEC = {"DDR4": "https://www.jedec.org/standards-documents/docs/jesd79-4a (DDR4, 64-bit channel, up to 3200 MT/s)",
          "DDR5": "https://www.jedec.org/standards-documents/docs/jesd79-5c (DDR5, two 32-bit subchannels per DIMM)"}
DDR5_5600_2CH = SystemMemory(
    "DDR5-5600, 2 channels (desktop, 2 DIMMs)", "DDR5", 2, 5600,
    _JEDEC["DDR5"] + "; https://www.amd.com/en/products/processors/desktops/ryzen/9000-series/amd-ryzen-9-9950x.html "
    "(max memory speed 2x1R / 2x2R DDR5-5600)")
DDR5_3600_2CH = SystemMemory(
    "DDR5-3600, 2 channels (desktop, 4 DIMMs)", "DDR5", 2, 3600,
    _JEDEC["DDR5"] + "; https://www.amd.com/en/products/processors/desktops/ryzen/9000-series/amd-ryzen-9-9950x.html "
    "(max memory speed with four DIMMs, 4x1R / 4x2R: DDR5-3600)")
DDR5_5200_8CH = SystemMemory(
    "DDR5-5200, 8 channels (workstation, Threadripper PRO 7000)", "DDR5", 8, 5200,
    _JEDEC["DDR5"] + "; https://www.amd.com/en/products/processors/workstations/ryzen-threadripper.html "
    "(Threadripper PRO 7000 WX: 8 channels of DDR5-5200)")
DDR5_4800_8CH = SystemMemory(
    "DDR5-4800, 8 channels (one Xeon 4th-gen socket)", "DDR5", 8, 4800,
    _JEDEC["DDR5"] + "; Intel Xeon Platinum 8480+ on https://ark.intel.com (8 memory channels of DDR5-4800)")
DDR5_4800_16CH = SystemMemory(
    "DDR5-4800, 2 x 8 channels (two Xeon 8480C, DGX H100)", "DDR5", 16, 4800,
    _JEDEC["DDR5"] + "; https://www.nvidia.com/en-us/data-center/dgx-h100/ (2 TB, dual Xeon Platinum 8480C); "
    "Intel Xeon Platinum 8480+ / 8480C on https://ark.intel.com (8 memory channels of DDR5-4800 per socket)")
DDR4_3200_16CH = SystemMemory(
    "DDR4-3200, 2 x 8 channels (two EPYC 7742, DGX A100)", "DDR4", 16, 3200,
    _JEDEC["DDR4"] + "; https://www.nvidia.com/en-us/data-center/dgx-a100/ (dual AMD Rome 7742, 1-2 TB); "
    "AMD EPYC 7742 on https://www.amd.com/en/products/processors/server/epyc/7002-series.html (8 channels of "
    "DDR4-3200 per socket)")
SYSTEM_MEMORY: dict[str, SystemMemory] = {m.name: m for m in
                                          (DDR5_5600_2CH, DDR5_3600_2CH, DDR5_5200_8CH, DDR5_4800_8CH,
                                           DDR5_4800_16CH, DDR4_3200_16CH)}


# ------------------------------------------------------------------------------------------------- disks, networks


@dataclass(frozen=True)
class Drive:
    name: str
    read_bandwidth: float  # bytes/s, sequential
    source: str


NVME_GEN4 = Drive("NVMe SSD, PCIe 4.0 x4 (Samsung 990 PRO)", 7.45 * GB_PER_S,
                  "https://semiconductor.samsung.com/consumer-storage/internal-ssd/990-pro/ (sequential read up to "
                  "7,450 MB/s)")


@dataclass(frozen=True)
class Network:
    name: str
    bandwidth: float  # bytes/s per node, one direction, all its ports together
    source: str


INFINIBAND_NDR_8 = Network("8 x InfiniBand NDR 400 Gb/s (ConnectX-7, one per GPU)", 8 * 50 * GB_PER_S,
                           "https://www.nvidia.com/en-us/data-center/dgx-h100/ (8 x single-port ConnectX-7, "
                           "400 Gb/s InfiniBand/Ethernet)")
INFINIBAND_HDR_8 = Network("8 x InfiniBand HDR 200 Gb/s (ConnectX-6, one per GPU)", 8 * 25 * GB_PER_S,
                           "https://www.nvidia.com/en-us/data-center/dgx-a100/ (8 x single-port ConnectX-6, "
                           "200 Gb/s HDR InfiniBand)")
ETHERNET_100G = Network("100 Gb Ethernet", 12.5 * GB_PER_S,
                        "IEEE 802.3 100GBASE (100 Gb/s = 12.5 GB/s per direction), "
                        "https://www.ieee802.org/3/ba/")

__all__ = ["Accelerator", "ACCELERATORS", "H100_SXM", "H200_SXM", "A100_SXM_80", "A100_SXM_40", "T4", "RTX_4090",
           "RTX_3090", "TB_PER_S", "GB_PER_S", "TFLOPS", "PCIE", "PCIE_SOURCE", "UnifiedMemoryChip", "M2_ULTRA",
           "M3_ULTRA", "APPLE_CHIPS", "METAL_DEFAULT_WORKING_SET", "METAL_WORKING_SET_SOURCE", "SystemMemory",
           "DDR5_5600_2CH", "DDR5_3600_2CH", "DDR5_5200_8CH", "DDR5_4800_8CH", "DDR5_4800_16CH", "DDR4_3200_16CH", "SYSTEM_MEMORY",
           "Drive", "NVME_GEN4", "Network", "INFINIBAND_NDR_8", "INFINIBAND_HDR_8", "ETHERNET_100G"]
