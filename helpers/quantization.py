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
