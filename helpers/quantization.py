"""Quantized loading with bitsandbytes: 8-bit (LLM.int8) and 4-bit (NF4 / FP4) weights, explained and measured.

    quantization_config("nf4", torch.bfloat16)   # the settings helpers.load_model(quantization="nf4") uses
    explain_config(config)                       # one row per knob: its value and why
    quantized_footprint(model)                   # bytes bitsandbytes really stores for the matrices it quantized
    planned_bytes(footprint, "nf4")              # the planner's figure for exactly those matrices
    whole_model_bytes(model), planned_model_bytes(plan, "nf4", torch.float32)   # the same for the whole model
    quantization_support()                       # can this machine quantize, and if not, what to use instead
    quiet_harmless_bitsandbytes_notices()        # done on import: drops two bitsandbytes log lines nobody can act on

Lesson 03 uses all of them. bitsandbytes (the course pins 0.50) quantizes on CUDA GPUs and on x86/ARM CPUs; on a
Mac its Apple-GPU backend is mostly pure-PyTorch fallbacks (compiled Metal kernels only on macOS 26+). Where nothing
works, `quantization_config` - which load_model calls before loading anything - raises a CourseError naming the
alternative (GGUF with llama.cpp, MLX) instead of letting loading crash half way.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass

import torch

from .errors import CourseError
from .hardware import device_kind
from .memory import BYTES_PER_PARAM, FOUR_BIT_BYTES_PER_MATRIX
from .model_parts import KEEP_UNQUANTIZED


class _PrecisionNames(dict):
    """A dict whose missing keys raise the course's error: `load_model(quantization="int3")` is refused with the list
    of valid values wherever the name is first looked up (the planner's placement does that before loading)."""

    def __missing__(self, kind):
        check_quantization_kind(kind)


# The planner's precision name for each `quantization=` value of load_model.
QUANTIZATION_PRECISION = _PrecisionNames({None: None, "int8": "int8", "nf4": "nf4", "fp4": "fp4"})
FOUR_BIT_KINDS = ("nf4", "fp4")

# What to use where bitsandbytes cannot run (shown in errors and in lesson 03).
NO_KERNEL_ALTERNATIVE = (
    "Use a format with kernels for this machine instead: GGUF k-quants with llama.cpp (Q4_K_M, Q8_0...; it runs on "
    "CPUs and on Apple GPUs through Metal; lesson 06 exports the tiny model to GGUF), or MLX's 4-bit models on Apple "
    "Silicon. To follow this lesson as written, run it on Linux/Windows (CPU is enough for the tiny model) or Colab."
)

# Every field of transformers' BitsAndBytesConfig.to_dict(), in words. `explain_config` refuses to stay silent about a
# field missing here (a test checks it), so a transformers upgrade that adds a knob gets it explained.
KNOBS = {
    "quant_method": "which quantization library transformers hands the model to: bitsandbytes",
    "load_in_8bit": "LLM.int8: int8 weights, one absmax scale per output row; activations are quantized per row too",
    "load_in_4bit": "4-bit weights in blocks of 64, one absmax scale per block (QLoRA's format)",
    "_load_in_8bit": "(internal copy of load_in_8bit)",
    "_load_in_4bit": "(internal copy of load_in_4bit)",
    "llm_int8_threshold": "int8 only: activation columns holding a value above this (6.0) are multiplied in 16 bits; "
    "the rare large 'outlier features' of big models would otherwise wreck int8 accuracy",
    "llm_int8_skip_modules": "modules left in full precision (also used by 4-bit): here the LM head and the MoE "
    "routers - see KEEP_REASONS",
    "llm_int8_enable_fp32_cpu_offload": "allow layers that device_map puts on the CPU to stay in fp32 while the GPU "
    "part is int8; off: everything is quantized",
    "llm_int8_has_fp16_weight": "keep a 16-bit copy of the int8 weights (for int8 training); off: inference, half "
    "the memory",
    "bnb_4bit_quant_type": "the 16 levels a 4-bit code can take: 'nf4' places them at the quantiles of a normal "
    "distribution (weights are roughly normal: the usual choice); 'fp4' is a tiny float format",
    "bnb_4bit_use_double_quant": "quantize the per-block scales too (fp32 -> 8 bits, one fp32 scale per 256 blocks): "
    "4.127 instead of 4.5 bits per weight, ~0.37 bit saved for a negligible error (bitsandbytes' bf16 CPU kernel "
    "undoes it on first use: see quantized_footprint)",
    "bnb_4bit_compute_dtype": "weights are de-quantized to this dtype for each matmul: bf16 on recent GPUs, fp16 on "
    "a T4, fp32 on CPU. Storage is 4-bit, arithmetic is not",
    "bnb_4bit_quant_storage": "the container dtype holding the packed codes (uint8: two 4-bit codes per byte); "
    "changed only to shard 4-bit weights with FSDP",
}

# Why each module in KEEP_UNQUANTIZED stays in 16 bits.
KEEP_REASONS = {
    "lm_head": "its output *is* the logits: a rounding error there shifts every next-token probability directly, "
    "and it is a small share of a big model's weights",
    "block_sparse_moe.gate": "Grok 2's router (8 x hidden weights per layer: nothing to save). A small error can flip "
    "which 2 of 8 experts a token visits, changing that token's whole computation",
    "block_sparse_moe.router": "the same for Mixtral-style models that call their router `router`",
}

# Two lines bitsandbytes 0.50 logs that a learner can do nothing about, each dropped by a filter on the one logger that
# writes it. The filters are installed when this module is imported (`import helpers` imports it, before anything of
# the course imports bitsandbytes, PEFT included); every other bitsandbytes message still shows.
HARMLESS_BITSANDBYTES_NOTICES = {
    "bitsandbytes.backends.cpu.ops": (
        "Failed to load CPU gemm_4bit_forward from kernels-community",
        "on a CPU with AVX512-BF16, importing bitsandbytes looks for an optional faster 4-bit kernel on the Hub (the "
        "`kernels` package, which the course does not install); its built-in CPU kernels are used instead",
    ),
    "bitsandbytes.autograd._functions": (
        "MatMul8bitLt: inputs will be cast from",
        "LLM.int8 quantizes each matmul's activations from fp16 by design; with fp32 (CPU) or bf16 activations "
        "bitsandbytes says so again on every matmul",
    ),
}


class _DropHarmlessNotice(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def quiet_harmless_bitsandbytes_notices() -> None:
    """Drop the lines of HARMLESS_BITSANDBYTES_NOTICES (and nothing else). Idempotent; run on import."""
    for name, (start, _why) in HARMLESS_BITSANDBYTES_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmlessNotice) and f.start == start for f in logger.filters):
            logger.addFilter(_DropHarmlessNotice(start))


quiet_harmless_bitsandbytes_notices()


def check_quantization_kind(kind) -> None:
    """Raise the course's error for anything but None, "int8", "nf4" or "fp4" (what load_model accepts)."""
    if kind not in QUANTIZATION_PRECISION:
        raise CourseError(
            f"Unknown quantization {kind!r}.",
            "Use quantization=None (full precision), 'int8' (8-bit, LLM.int8), 'nf4' (4-bit, the usual choice) or "
            "'fp4' (4-bit float).",
        )


def quantization_config(kind: str | None, compute_dtype: torch.dtype, *, check_support: bool = True,
                        storage: torch.dtype = torch.uint8):
    """bitsandbytes settings for 8-bit or 4-bit loading; None for full precision.

    `check_support`: first make sure bitsandbytes works on this machine (`quantization_support`), and raise a
    CourseError naming the alternative if it does not - load_model calls this before loading anything.
    `storage`: the dtype 4-bit weights are packed into (bytes by default). FSDP shards a model's weights only if they
    share one dtype: QLoRA under FSDP packs them into the dtype of the other weights, e.g. torch.bfloat16
    (scripts/train_lora.py, PEFT's FSDP-QLoRA recipe); the bits stored are the same.
    """
    check_quantization_kind(kind)
    if kind is None:
        return None
    if check_support:
        support = quantization_support()
        if not support.available:
            raise CourseError(
                f"quantization={kind!r} needs bitsandbytes, which cannot run here: {support.message}.",
                support.alternative or NO_KERNEL_ALTERNATIVE,
            )
    from transformers import BitsAndBytesConfig

    keep = list(KEEP_UNQUANTIZED)
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0, llm_int8_skip_modules=keep)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=kind,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=storage,
        llm_int8_skip_modules=keep,
    )


def explain_config(config) -> list[dict]:
    """One row per field of a BitsAndBytesConfig: knob, value, what it does. Unknown fields say so."""
    rows = []
    for knob, value in config.to_dict().items():
        if knob.startswith("_"):
            continue
        rows.append({"knob": knob, "value": str(value), "why": KNOBS.get(knob, "(not explained by the course yet)")})
    return rows


# ----------------------------------------------------------------------------------------------- measured bytes


@dataclass(frozen=True)
class QuantizedFootprint:
    """What bitsandbytes stores for the matrices it quantized in one loaded model."""

    kind: str | None  # "int8", "nf4", "fp4", or None when nothing is quantized
    matrices: int  # quantized Linear layers
    weights: int  # weights they represent (in_features x out_features, summed)
    packed_bytes: int  # the int8 / packed 4-bit codes
    scale_bytes: int  # int8: one fp32 scale per row; 4-bit: block absmax (8-bit with double quant) + its fp32 scales
    codebook_bytes: int  # 4-bit: NF4/FP4 levels, the double quantization's code book and offset, per matrix
    cpu_repacked: int = 0  # 4-bit matrices re-packed for bitsandbytes' CPU bf16 kernel (see quantized_footprint)

    @property
    def stored_bytes(self) -> int:
        return self.packed_bytes + self.scale_bytes + self.codebook_bytes

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.stored_bytes / self.weights if self.weights else float("nan")


def _nbytes(tensor) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def quantized_footprint(model) -> QuantizedFootprint:
    """Add up, byte by byte, what the model's bitsandbytes layers store now (not what `get_memory_footprint` sees:
    it counts the packed codes but misses the scales and code books held in each weight's quant_state).

    "Now" matters on CPUs with AVX512-BF16: there bitsandbytes 0.50 re-packs each 4-bit matrix the first time it runs
    (for its bf16 CPU kernel), undoing double quantization - the block scales become bf16, 2 bytes per 64 weights,
    4.25 bits per weight in all - and counted in `cpu_repacked`. Measure right after loading to compare with the
    planner, whose figure is the format as loaded (4.127 bits per weight)."""
    try:
        import bitsandbytes as bnb
    except ImportError:  # then nothing can be quantized
        return QuantizedFootprint(None, 0, 0, 0, 0, 0)

    kinds, matrices, weights, packed, scales, codebooks, repacked = set(), 0, 0, 0, 0, 0, 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            kinds.add(state.quant_type)
            repacked += bool(getattr(state, "packing_format_for_cpu", False))
            packed += _nbytes(module.weight)
            scales += _nbytes(state.absmax)
            codebooks += _nbytes(state.code)
            if state.nested and getattr(state, "state2", None) is not None:
                scales += _nbytes(state.state2.absmax)
                codebooks += _nbytes(state.state2.code) + _nbytes(torch.as_tensor(state.offset, dtype=torch.float32))
        elif isinstance(module, bnb.nn.Linear8bitLt):
            kinds.add("int8")
            packed += _nbytes(module.weight)
            # the row scales live on the weight until the first forward pass moves them to the layer's state
            row_scales = getattr(module.weight, "SCB", None)
            scales += _nbytes(row_scales if row_scales is not None else getattr(module.state, "SCB", None))
        else:
            continue
        matrices += 1
        weights += module.in_features * module.out_features
    if len(kinds) > 1:
        raise ValueError(f"Mixed quantization kinds in one model: {sorted(kinds)}")
    return QuantizedFootprint(next(iter(kinds), None), matrices, weights, packed, scales, codebooks, repacked)


def planned_bytes(footprint: QuantizedFootprint, kind: str) -> float:
    """The memory planner's figure for exactly the matrices in `footprint`: its bytes per weight for `kind` times the
    weights they hold, plus its fixed 4-bit code books per matrix. Same count as `MemoryPlan.quantized_matrix_bytes`
    when the model quantized exactly the matrices the planner expects (lesson 03 checks that too)."""
    precision = QUANTIZATION_PRECISION[kind]
    overhead = footprint.matrices * FOUR_BIT_BYTES_PER_MATRIX if kind in FOUR_BIT_KINDS else 0
    return footprint.weights * BYTES_PER_PARAM[precision] + overhead


def whole_model_bytes(model) -> int:
    """The model's weights as stored: `get_memory_footprint()` (parameters and buffers) plus the scales and code books
    bitsandbytes keeps outside the parameters."""
    footprint = quantized_footprint(model)
    return model.get_memory_footprint() + footprint.scale_bytes + footprint.codebook_bytes


def planned_model_bytes(plan, kind: str | None, dtype: torch.dtype) -> float:
    """The planner's figure for the whole model as `load_model(quantization=kind, dtype=dtype)` stores it: the
    quantizable matrices at `kind` and everything else at `dtype` (`plan.weight_bytes` assumes bf16 for the rest)."""
    rest_bytes = torch.finfo(dtype).bits // 8
    if kind is None:
        return plan.total_params * rest_bytes
    precision = QUANTIZATION_PRECISION[kind]
    return plan.quantized_matrix_bytes(precision) + (plan.total_params - plan.quantizable_params) * rest_bytes


def unquantized_matrices(model, min_params: int = 0) -> dict[str, int]:
    """Weight matrices (2D, or 3D expert stacks) left in 16/32 bits, with their sizes: embeddings, the modules kept on
    purpose, and anything bitsandbytes cannot convert (it only replaces `nn.Linear`; transformers v5 MoEs store their
    experts as 3D tensors, which therefore stay unquantized)."""
    try:
        import bitsandbytes as bnb

        layers = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        layers = ()
    quantized = {id(m.weight) for m in model.modules() if layers and isinstance(m, layers)}
    left = {}
    for name, param in model.named_parameters():
        if param.ndim >= 2 and id(param) not in quantized and param.numel() >= min_params:
            left[name] = param.numel()
    return left


# -------------------------------------------------------------------------------------------- platform support


@dataclass(frozen=True)
class QuantizationSupport:
    available: bool  # bitsandbytes quantized and de-quantized a test matrix on `device`
    device: str  # where load_model would put the model: cuda, mps or cpu
    message: str  # what runs here, in words
    alternative: str = ""  # what to use instead (always set on a Mac, and whenever unavailable)


@functools.lru_cache(maxsize=None)
def _probe(device: str) -> str | None:
    """Quantize and de-quantize one small matrix in 4 and 8 bits on `device`; None if it worked, else the error."""
    try:
        import bitsandbytes.functional as F

        matrix = torch.randn(128, 64, generator=torch.Generator().manual_seed(0)).to(device)
        codes, state = F.quantize_4bit(matrix, blocksize=64, quant_type="nf4")
        error = (F.dequantize_4bit(codes, state).float() - matrix).abs().max().item()
        int8, row_scales, _ = F.int8_vectorwise_quant(matrix.half())
        if not (error < 0.5 and int8.dtype == torch.int8 and row_scales.numel() == 128):
            return f"a test matrix came back wrong (max error {error:.3g})"
        return None
    except Exception as failure:  # noqa: BLE001 - any failure means "no usable kernel here"
        return f"{type(failure).__name__}: {str(failure).splitlines()[0][:200] if str(failure) else ''}"


def quantization_support(device: str | None = None) -> QuantizationSupport:
    """Can bitsandbytes quantize on this machine? Tested, not guessed: a small matrix goes through 4- and 8-bit."""
    device = device or device_kind(torch)
    system = platform.system()
    try:
        import bitsandbytes
    except ImportError as error:
        return QuantizationSupport(
            False, device, f"bitsandbytes is not importable ({error})",
            "`pip install -e .` in the course folder installs the pinned bitsandbytes; " + NO_KERNEL_ALTERNATIVE,
        )
    failure = _probe(device)
    version = getattr(bitsandbytes, "__version__", "?")
    if failure is not None:
        where = "macOS" if system == "Darwin" else f"{system} ({device})"
        return QuantizationSupport(
            False, device, f"bitsandbytes {version} has no working kernel on {where}: {failure}", NO_KERNEL_ALTERNATIVE
        )
    if system == "Darwin":
        return QuantizationSupport(
            True, device,
            f"macOS ({device}): bitsandbytes {version} works here through fallbacks - its Apple-GPU backend uses "
            "compiled Metal kernels only on macOS 26+ with the `kernels` package, and pure PyTorch otherwise: correct "
            "formats, slow. Fine for the tiny model",
            NO_KERNEL_ALTERNATIVE,
        )
    if device == "cuda":
        return QuantizationSupport(True, device, f"CUDA: bitsandbytes {version}'s GPU kernels")
    return QuantizationSupport(
        True, device, f"CPU: bitsandbytes {version}'s CPU kernels - the same formats as on a GPU, much slower"
    )
