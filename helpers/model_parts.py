"""Which module of a (mixture-of-experts) model plays which role, by name: the routers, and the modules that stay in
16 bits when the rest is quantized. One home for these names; the planner, quantized loading, LoRA and the training
script all read them from here.

Names are matched the way the libraries match them:
- `KEEP_UNQUANTIZED` goes to bitsandbytes as `llm_int8_skip_modules`, which tests "is this entry part of the module's
  name", so an entry must not be a prefix of a layer that should be quantized (`mlp.gate` would also keep every
  `mlp.gate_proj`: that is why Qwen-style routers are not listed here).
- `ROUTER_SUFFIXES` are tested against the *end* of a module's name, so `mlp.gate` is safe there.

No torch needed.
"""

from __future__ import annotations

# Grok 2 and Mixtral call their router `block_sparse_moe.gate`, Granite MoE `block_sparse_moe.router`, Qwen-MoE and
# OLMoE `mlp.gate`, DeepSeek-style models `mlp.router`.
ROUTER_SUFFIXES = ("block_sparse_moe.gate", "block_sparse_moe.router", "mlp.gate", "mlp.router")

# Kept in 16 bits when the rest is quantized: the LM head (its errors land directly on the logits) and the MoE routers
# (tiny, and a flipped expert choice changes the whole token's computation). helpers.quantization explains each.
KEEP_UNQUANTIZED = ("lm_head", "block_sparse_moe.gate", "block_sparse_moe.router")


# The classes of a mixture-of-experts model's tensors, as the planners count, place and price them: one definition for
# helpers.memory (parameters per class), helpers.gguf (bytes per class of a GGUF file) and helpers.machines (where each
# class lives and what a decoded token reads of it). Keys, in the model's order, and how lessons and tables name them.
TENSOR_CLASSES = {
    "embeddings": "embeddings",
    "attention": "attention (q, k, v, o)",
    "dense_mlp": "dense MLP",
    "router": "routers",
    "experts": "experts",
    "norms": "norms",
    "lm_head": "LM head",
}


def is_router(module_name: str) -> bool:
    return any(module_name.endswith(suffix) for suffix in ROUTER_SUFFIXES)


def is_router_parameter(parameter_name: str) -> bool:
    return any(f"{suffix}." in parameter_name for suffix in ROUTER_SUFFIXES)


__all__ = ["ROUTER_SUFFIXES", "KEEP_UNQUANTIZED", "TENSOR_CLASSES", "is_router", "is_router_parameter"]
