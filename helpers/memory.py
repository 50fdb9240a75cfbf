"""The memory planner: from a config alone - no weights downloaded - how big a model is and what it needs.

Parameters are counted by building the model on PyTorch's "meta" device: every tensor has a shape but no storage,
so even Grok 2.5's 269.5 billion parameters are "instantiated" in about a second with no memory. The count is
therefore exact for any architecture transformers (or helpers.grok2) can build.

Mixture of experts: only `num_experts_per_tok` of `num_local_experts` experts run for each token, so the parameters
*touched per token* (active) are far fewer than the parameters *stored* (total). Memory is set by the total; speed by
the active.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .accelerators import H100_SXM
from .model_parts import KEEP_UNQUANTIZED, TENSOR_CLASSES
from .units import GB, GiB, format_bytes  # noqa: F401  (re-exported: lessons call helpers.format_bytes)

# Bytes per weight for each storage precision. nf4/fp4 (bitsandbytes): 4 bits + one fp32 absmax per 64 weights, and
# with double quantization (the default here) that absmax is itself stored in 8 bits with one fp32 scale per 256
# blocks: 4 + 8/64 + 32/(64*256) = 4.127 bits. int8 (LLM.int8): 8 bits + one fp32 scale per output row (ignored here:
# < 0.1% for rows of thousands of weights).
BYTES_PER_PARAM = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "nf4": (4 + 8 / 64 + 32 / (64 * 256)) / 8,
    "fp4": (4 + 8 / 64 + 32 / (64 * 256)) / 8,
}
QUANTIZED_PRECISIONS = ("fp8", "int8", "nf4", "fp4")
# Per quantized matrix, bitsandbytes' 4-bit format also keeps its code books: 256 fp32 values for the double
# quantization of the scales, the 16 fp32 levels of NF4/FP4, and an fp32 offset. Nothing for a 270B model; most of
# the overhead for a toy one.
FOUR_BIT_BYTES_PER_MATRIX = 256 * 4 + 16 * 4 + 4
# The share of a GPU's memory a plan may fill, the one rule every plan of the course uses (one model, LoRA training,
# whole machines, load_model's placement): the rest is for the CUDA context, activations, allocator fragmentation and
# communication buffers. SGLang computes its own share from the GPU's memory and TP (a little less than this on 40-80
# GiB GPUs): its routes and engines.plan_deployment use that instead (helpers.engine_memory).
GPU_USABLE_FRACTION = 0.9
# The share of RAM a plan may fill: the operating system, the notebook and the loader's buffers need the rest.
RAM_USABLE_FRACTION = 0.8



def _build_on_meta(config):
    from transformers import AutoModelForCausalLM

    from .grok2 import Grok2Config, Grok2ForCausalLM

    with torch.device("meta"):
        if isinstance(config, Grok2Config):
            return Grok2ForCausalLM(config)
        return AutoModelForCausalLM.from_config(config)


def _is_expert_parameter(name: str, param: torch.Tensor, num_experts: int) -> bool:
    # Grok 2 / Mixtral-v4 style: one module per expert (`...experts.3.w1.weight`); transformers v5 MoEs: one 3D tensor
    # per layer whose first dimension is the expert index (`...experts.gate_up_proj`).
    return ".experts." in name or (num_experts > 1 and param.ndim == 3 and param.shape[0] == num_experts)


def _is_quantizable(name: str, param: torch.Tensor, keep: tuple[str, ...]) -> bool:
    # bitsandbytes quantizes the weight matrices of nn.Linear layers, nothing else: embeddings, norms, the modules in
    # `keep` and the 3D expert tensors of transformers v5 MoEs (`experts.gate_up_proj`, not a Linear) stay in 16 bits.
    if param.ndim != 2 or "embed" in name or any(k in name for k in keep):
        return False
    return True


def _is_stacked_expert_tensor(name: str, param: torch.Tensor, keep: tuple[str, ...]) -> bool:
    # One 3D tensor holding every expert of a layer. FP8 engines (SGLang/vLLM --quantization fp8) quantize these too;
    # bitsandbytes does not.
    return param.ndim == 3 and "embed" not in name and not any(k in name for k in keep)


@dataclass(frozen=True)
class MemoryPlan:
    """Sizes of one model, from its config. All counts are exact; bytes follow from them."""

    model_name: str
    total_params: int
    active_params: int  # touched per token: everything but the experts that are not chosen
    expert_params: int
    embedding_params: int
    quantizable_params: int  # weights of the 2D matrices bitsandbytes' 8/4-bit shrinks (see KEEP_UNQUANTIZED)
    quantizable_matrices: int
    num_layers: int
    kv_heads: int
    head_dim: int
    num_experts: int
    experts_per_token: int
    # 3D expert tensors (transformers v5 MoEs): bitsandbytes leaves them in 16 bits, FP8 engines quantize them
    stacked_expert_params: int = 0

    def weight_bytes(self, precision: str = "bf16") -> float:
        """Weights at `precision`. Quantized precisions keep embeddings, norms, router and LM head in 16 bits; the
        bitsandbytes ones (int8/nf4/fp4) also keep 3D stacked expert tensors in 16 bits, FP8 quantizes them."""
        if precision not in BYTES_PER_PARAM:
            raise ValueError(f"Unknown precision {precision!r}; choose from {', '.join(BYTES_PER_PARAM)}.")
        if precision not in QUANTIZED_PRECISIONS:
            return self.total_params * BYTES_PER_PARAM[precision]
        if precision == "fp8":
            shrunk = self.quantizable_params + self.stacked_expert_params
            return shrunk * BYTES_PER_PARAM["fp8"] + (self.total_params - shrunk) * BYTES_PER_PARAM["bf16"]
        rest = self.total_params - self.quantizable_params
        return self.quantized_matrix_bytes(precision) + rest * BYTES_PER_PARAM["bf16"]

    def quantized_matrix_bytes(self, precision: str) -> float:
        """Bytes of the 2D matrices bitsandbytes quantizes, alone, at `precision` (what lesson 03 measures)."""
        overhead = self.quantizable_matrices * FOUR_BIT_BYTES_PER_MATRIX if precision in ("nf4", "fp4") else 0
        return self.quantizable_params * BYTES_PER_PARAM[precision] + overhead

    def kv_cache_bytes_per_token(self, bytes_per_value: float = 2.0) -> float:
        """Keys and values of one token in every layer: 2 x layers x kv_heads x head_dim values."""
        return 2 * self.num_layers * self.kv_heads * self.head_dim * bytes_per_value

    def kv_cache_bytes(self, context_tokens: int, batch: int = 1, bytes_per_value: float = 2.0) -> float:
        return self.kv_cache_bytes_per_token(bytes_per_value) * context_tokens * batch

    def gpus_needed(
        self,
        gpu_memory_bytes: float,
        precision: str = "bf16",
        context_tokens: int = 8192,
        batch: int = 1,
        usable_fraction: float = GPU_USABLE_FRACTION,
    ) -> int:
        """GPUs of `gpu_memory_bytes` needed to hold the weights plus the KV cache for `context_tokens` x `batch`.

        `usable_fraction` (default `GPU_USABLE_FRACTION`) leaves room for the CUDA context, activations and allocator
        fragmentation. Engines also need the GPU count to divide the head counts
        (tensor parallelism): see `tensor_parallel_size`.
        """
        needed = self.weight_bytes(precision) + self.kv_cache_bytes(context_tokens, batch)
        return max(1, math.ceil(needed / (gpu_memory_bytes * usable_fraction)))

    def margin_bytes(self, gpu_memory_bytes: float, gpus: int, precision: str = "bf16", context_tokens: int = 8192,
                     batch: int = 1, usable_fraction: float = GPU_USABLE_FRACTION) -> float:
        """What `gpus` GPUs have left by the rule of `gpus_needed` (negative: what they lack): >= 0 exactly when
        `gpus_needed(...) <= gpus`. One plan, one margin: the lessons print this rather than a second rule."""
        needed = self.weight_bytes(precision) + self.kv_cache_bytes(context_tokens, batch)
        return gpus * gpu_memory_bytes * usable_fraction - needed

    def tensor_parallel_size(self, gpus: int) -> int:
        """The smallest power of two >= `gpus` (what tensor-parallel engines accept for a model like this)."""
        return 1 << max(0, (gpus - 1).bit_length())

    def table(self, context_tokens: int = 8192) -> list[dict]:
        """Rows for a lesson: one per precision, sizes in GB and GiB."""
        rows = []
        for precision in ("bf16", "fp8", "int8", "nf4"):
            weights = self.weight_bytes(precision)
            rows.append(
                {
                    "precision": precision,
                    "weights_GB": round(weights / GB, 2),
                    "weights_GiB": round(weights / GiB, 2),
                    f"kv_cache_{context_tokens}_GiB": round(self.kv_cache_bytes(context_tokens) / GiB, 3),
                    # an "80 GB" H100 holds 80 GiB (helpers.accelerators)
                    "H100_80GB_needed": self.gpus_needed(H100_SXM.memory_bytes, precision, context_tokens),
                }
            )
        return rows


def plan_memory(config, name: str | None = None) -> MemoryPlan:
    """Count a model's parameters from its config (built on the meta device: no memory, no download)."""
    model = _build_on_meta(config)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_experts = int(getattr(text_config, "num_local_experts", 0) or getattr(text_config, "num_experts", 0) or 0)
    top_k = int(getattr(text_config, "num_experts_per_tok", 0) or 0)
    total = expert = embedding = quantizable = matrices = stacked = 0
    seen: set[int] = set()
    for param_name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:  # tied embeddings count once
            continue
        seen.add(id(param))
        n = param.numel()
        total += n
        if num_experts and _is_expert_parameter(param_name, param, num_experts):
            expert += n
        if "embed" in param_name:
            embedding += n
        if _is_quantizable(param_name, param, KEEP_UNQUANTIZED):
            quantizable += n
            matrices += 1
        elif _is_stacked_expert_tensor(param_name, param, KEEP_UNQUANTIZED):
            stacked += n
    active = total - expert + (expert * top_k // num_experts if num_experts else 0)
    num_heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // num_heads
    return MemoryPlan(
        model_name=name or getattr(config, "_name_or_path", "") or type(model).__name__,
        total_params=total,
        active_params=active,
        expert_params=expert,
        embedding_params=embedding,
        quantizable_params=quantizable,
        quantizable_matrices=matrices,
        num_layers=text_config.num_hidden_layers,
        kv_heads=getattr(text_config, "num_key_value_heads", None) or num_heads,
        head_dim=head_dim,
        num_experts=num_experts,
        experts_per_token=top_k,
        stacked_expert_params=stacked,
    )


def grok2_parameter_breakdown(config) -> dict[str, int]:
    """Grok 2's parameters by tensor class (`helpers.model_parts.TENSOR_CLASSES`: the keys every planner uses), by
    arithmetic on the config (the lesson checks it against `plan_memory`)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    attention = h * q_out + 2 * h * kv_out + q_out * h
    dense_mlp = 3 * h * config.intermediate_size if config.residual_moe else 0
    one_expert = 3 * h * config.moe_intermediate_size
    router = h * config.num_local_experts
    norms = 4 * h
    parts = {
        "embeddings": config.vocab_size * h,
        "attention": layers * attention,
        "dense_mlp": layers * dense_mlp,
        "router": layers * router,
        "experts": layers * config.num_local_experts * one_expert,
        "norms": layers * norms + h,
        "lm_head": config.vocab_size * h,
    }
    assert tuple(parts) == tuple(TENSOR_CLASSES)  # one list of classes for every planner
    return parts


@functools.lru_cache(maxsize=1)
def grok2_released_config():
    """The released Grok 2.5 config.json (the copy shipped in data/), as helpers.grok2's Grok2Config: read once.
    Shared by every planner: do not modify it."""
    from transformers import AutoConfig

    from . import grok2  # noqa: F401  (registers Grok 2 with AutoConfig)
    from .paths import GROK2_RELEASED_CONFIG

    return AutoConfig.from_pretrained(GROK2_RELEASED_CONFIG)


@functools.lru_cache(maxsize=1)
def grok2_released_plan() -> MemoryPlan:
    """The memory plan of the released Grok 2.5 (`plan_memory` of `grok2_released_config()`), built once on the meta
    device and shared by the engines, the machine planner and the exercises."""
    return plan_memory(grok2_released_config(), name="xai-org/grok-2")
