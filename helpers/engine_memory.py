"""How much GPU memory an engine needs for Grok 2.5, read in the engines' own code at the versions the course pins:
SGLang's default share of each GPU (`--mem-fraction-static`) and its peak while it loads, vLLM's peak. One home for
both users: `helpers.engines.plan_deployment` (the TP of a command) and the machine planner's routes
(`helpers.machines.gpu_routes`).

    sglang_mem_fraction_static(80 * GiB, 8)   # 0.795 of an "80 GB" H100 for weights + KV cache at TP 8
    sglang_loading_bytes(plan, 8)             # bytes per GPU while SGLang loads: the bf16 slice (it quantizes after)

SGLang 0.5.23 with `--quantization fp8` on the bf16 checkpoint builds every weight in bf16 on the GPU and quantizes
them to FP8 only once all are loaded (`layers/quantization/fp8.py`: `create_weights` takes the checkpoint's dtype
unless the checkpoint is already FP8; `model_loader/loader.py`: `DefaultModelLoader.load_weights_and_postprocess`
loads every weight, then runs `process_weights_after_loading` module by module), so each GPU must first hold its bf16
slice. vLLM 0.24.0 materialises and quantizes its FP8 weights layer by layer (`Fp8PerTensorOnlineMoEMethod`, meta
device), so its peak is the FP8 size. Read in the wheels, not run on GPUs.
"""

from __future__ import annotations

import math

from .engine_sources import ENGINES
from .units import MiB

# SGLang's default --mem-fraction-static, as sglang/srt/arg_groups/memory_hook.py (handle_gpu_memory_settings) of the
# pinned wheel computes it, for a model like Grok 2 (no MLA, no DP attention, no DeepEP, CUDA graphs on): by the
# GPU's memory in MiB (nvidia-smi's memory.total; the course counts the memory as sold, a little above what the driver
# reports) a chunked-prefill size and a largest decode CUDA-graph batch (below 4 ranks / from 4 ranks on), then a
# reserve in MiB for activations and graphs, and fraction = (memory - reserve) / memory, rounded to 3 decimals.
# (upper bound in GiB, chunked_prefill_size, decode max_bs at TP < 4, at TP >= 4)
SGLANG_MEMORY_TIERS = ((20, 2048, 8, 8), (35, 4096, 48, 160), (60, 4096, 32, 160), (90, 8192, 256, 512),
                       (160, 8192, 256, 512), (math.inf, 16384, 512, 512))
SGLANG_MEMORY_SOURCE = (f"sglang {ENGINES['sglang'].version}: sglang/srt/arg_groups/memory_hook.py, "
                        "handle_gpu_memory_settings")


def _sglang_prefill_graph_sizes(chunk: int) -> int:
    """How many prefill batch sizes SGLang captures in CUDA graphs up to `chunk` tokens (breakable prefill graphs,
    on by default on CUDA: arg_groups/cuda_graph_hook.py, generate_prefill_cuda_graph_batch_sizes)."""
    sizes = [*range(4, 33, 4), *range(48, 257, 16), *range(288, 513, 32), *range(576, 1025, 64),
             *range(1280, 4097, 256), *range(4608, chunk + 1, 512)]
    return sum(size <= chunk for size in sizes)


def sglang_mem_fraction_static(gpu_memory_bytes: float, tp: int) -> float:
    """The share of each GPU SGLang fills with weights and KV cache by default (`--mem-fraction-static`), for a GPU of
    `gpu_memory_bytes` at tensor parallelism `tp`: the pinned SGLang's own heuristic (SGLANG_MEMORY_SOURCE names
    the file and the version). The reserve
    is 512 MiB + 1.5 MiB per token of the chunked prefill (at least 2,048 tokens) + 1 GiB per 8 ranks + 2 MiB per
    decode graph batch + 8 MiB per prefill graph size, and at least 10 GiB on a GPU above 60 GiB."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tp must be a whole number >= 1, got {tp!r}")
    if not gpu_memory_bytes > 0:
        raise ValueError(f"gpu_memory_bytes must be above 0, got {gpu_memory_bytes!r}")
    mib = gpu_memory_bytes / MiB
    _, chunk, small_tp, large_tp = next(tier for tier in SGLANG_MEMORY_TIERS if mib < tier[0] * 1024)
    decode_batch = small_tp if tp < 4 else large_tp
    reserve = (512 + 1.5 * max(chunk, 2048) + tp / 8 * 1024 + 2 * decode_batch
               + 8 * _sglang_prefill_graph_sizes(chunk))
    if mib > 60 * 1024:
        reserve = max(reserve, 10 * 1024)
    return round((mib - reserve) / mib, 3)



def sglang_loading_bytes(plan, tp: int) -> float:
    """Bytes on each GPU while SGLang loads Grok 2.5 for `--quantization fp8` from the bf16 checkpoint: its bf16
    slice (`plan`: the model's MemoryPlan), which must fit before the FP8 weights replace it."""
    return plan.weight_bytes("bf16") / tp


__all__ = ["sglang_mem_fraction_static", "sglang_loading_bytes", "SGLANG_MEMORY_TIERS", "SGLANG_MEMORY_SOURCE"]
