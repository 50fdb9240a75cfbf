"""Quantized loading with bitsandbytes: 8-bit (LLM.int8) and 4-bit (NF4 / FP4) weights.

Lesson 03 explains every knob set here.
"""

from __future__ import annotations

import torch

from .errors import CourseError
from .memory import DEFAULT_KEEP_UNQUANTIZED

# The planner's precision name for each `quantization=` value of load_model.
QUANTIZATION_PRECISION = {None: None, "int8": "int8", "nf4": "nf4", "fp4": "fp4"}


def quantization_config(kind: str | None, compute_dtype: torch.dtype):
    """bitsandbytes settings for 8-bit or 4-bit loading (lesson 03 explains every knob)."""
    if kind is None:
        return None
    if kind not in QUANTIZATION_PRECISION:
        raise CourseError(f"Unknown quantization {kind!r}.", "Use None, 'int8', 'nf4' or 'fp4'.")
    from transformers import BitsAndBytesConfig

    keep = [name.strip(".") for name in DEFAULT_KEEP_UNQUANTIZED]
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=kind,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=keep,
    )


def quantized_module_bytes(model) -> tuple[int, int]:
    """(bytes actually stored, weights represented) for the bitsandbytes layers of a loaded model.

    4-bit: the packed weights (two per byte) plus each block's scale (absmax), which double quantization stores in
    8 bits with its own small fp32 scales and code book. 8-bit: int8 weights plus one fp32 scale per row.
    """
    import bitsandbytes as bnb

    stored, represented = 0, 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = module.weight
            state = weight.quant_state
            stored += weight.numel() * weight.element_size() + state.absmax.numel() * state.absmax.element_size()
            if state.nested and state.state2 is not None:
                stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
                stored += state.state2.code.numel() * state.state2.code.element_size() + 4  # + the fp32 offset
            stored += state.code.numel() * state.code.element_size()
            represented += module.in_features * module.out_features
        elif isinstance(module, bnb.nn.Linear8bitLt):
            weight = module.weight
            stored += weight.numel() * weight.element_size()
            scales = getattr(weight, "SCB", None)
            stored += scales.numel() * scales.element_size() if scales is not None else 0
            represented += module.in_features * module.out_features
    return stored, represented


def quantization_support() -> tuple[bool, str]:
    """Can bitsandbytes quantize here? (It runs on CUDA and, since 0.45+, on x86/ARM CPUs; Apple MPS lacks kernels.)"""
    import platform

    import torch

    if torch.cuda.is_available():
        return True, "CUDA: bitsandbytes' GPU kernels"
    if platform.system() == "Darwin":
        return False, ("macOS: bitsandbytes has no Apple-GPU kernels. Use GGUF k-quants with llama.cpp (lesson 06), "
                       "or MLX's 4-bit models, or run this lesson on CPU/Colab")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        return False, f"bitsandbytes is not importable ({error}); `pip install -e .` installs the pinned version"
    return True, "CPU: bitsandbytes' CPU kernels (slower than CUDA, same formats)"
