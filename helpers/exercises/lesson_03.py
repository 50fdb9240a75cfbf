"""The checks of lesson 03's three exercises:
quantized inference: 4-bit on an H100, experts kept unquantized, double quantization."""

from __future__ import annotations

import math

from ..units import GB
from .checking import Result, fail, grok_plan, not_attempted, number, passed, skipped, whole


def check_03_starter(h100_nf4_128k) -> Result:
    """H100 80 GB GPUs for Grok 2.5 in nf4 plus one 128K-token conversation."""
    ex = "03 starter"
    if h100_nf4_128k is None:
        return not_attempted(ex, "Set `h100_nf4_128k` with grok.gpus_needed(80 * GB, 'nf4', context_tokens=...).")
    answer = whole(ex, "h100_nf4_128k", h100_nf4_128k)
    grok = grok_plan()
    expected = grok.gpus_needed(80 * GB, "nf4", context_tokens=131072)
    if answer == expected:
        return passed(ex, f"{answer} x H100: {grok.weight_bytes('nf4') / GB:.0f} GB of 4-bit weights plus "
                           f"{grok.kv_cache_bytes(131072) / GB:.1f} GB of KV cache for 131072 tokens.")
    if answer == grok.gpus_needed(80 * GB, "nf4"):
        fail(ex, "that is the count for the default 8K context; the question asks for 128K (131072 tokens).")
    if answer == grok.gpus_needed(80 * GB, "nf4", context_tokens=128000):
        fail(ex, "128K means 131072 tokens (2^17), not 128000.")
    fail(ex, f"{answer} is too {'many' if answer > expected else 'few'}: nf4 weights + the bf16 KV cache of 131072 "
              "tokens, 90% of 80 GB usable per card.")


def check_03_practitioner(experts_kept) -> Result:
    """A BitsAndBytesConfig that quantizes everything to NF4 except the experts (kept in full precision)."""
    ex = "03 practitioner"
    if experts_kept is None:
        return not_attempted(ex, "Set `experts_kept` to a BitsAndBytesConfig(load_in_4bit=True, ..., "
                                  "llm_int8_skip_modules=[...]) that leaves the experts unquantized.")
    from transformers import BitsAndBytesConfig

    if not isinstance(experts_kept, BitsAndBytesConfig):
        fail(ex, f"`experts_kept` should be a transformers.BitsAndBytesConfig, got {type(experts_kept).__name__}.")
    if not experts_kept.load_in_4bit or experts_kept.bnb_4bit_quant_type != "nf4":
        fail(ex, "the rest of the model should be NF4: load_in_4bit=True, bnb_4bit_quant_type='nf4'.")
    from ..quantization import quantization_support

    if not quantization_support().available:
        return skipped(ex, "bitsandbytes cannot run on this machine (lesson 03, section 1).")
    from ..loading import load_model

    model = load_model(quantization_config=experts_kept, verbose=False)
    quantized, experts_quantized, experts_full = [], [], []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind == "Linear4bit":
            quantized.append(name)
            if ".experts." in name:
                experts_quantized.append(name)
        elif kind == "Linear" and ".experts." in name:
            experts_full.append(name)
    del model
    if experts_quantized:
        fail(ex, f"{len(experts_quantized)} expert matrices are still 4-bit, e.g. {experts_quantized[0]}. "
                  "llm_int8_skip_modules entries match from the start of a module's name or as its suffix: "
                  "'experts' matches nothing; a regular expression such as r'.*\\.experts\\..*' does.")
    if not experts_full:
        fail(ex, "this model has no expert linear layers to keep (use the tiny or grok-2 profile).")
    if not quantized:
        fail(ex, "nothing was quantized: the skip list catches every layer; only the experts should stay.")
    return passed(ex, f"{len(experts_full)} expert matrices kept in full precision, {len(quantized)} other "
                       "matrices in NF4.")


def _double_quant_prediction(weights: int) -> int:
    blocks = math.ceil(weights / 64)
    return 3 * blocks - 4 * math.ceil(blocks / 256) - 1028


def check_03_expert(double_quant_saving, measure: bool = True) -> Result:
    """`double_quant_saving(w)`: bytes double quantization saves on one NF4 matrix of w weights.

    Checked against the layout's arithmetic on several sizes and, where bitsandbytes runs (`measure=True`), against
    the bytes actually stored by the profile's model loaded with and without double quantization.
    """
    ex = "03 expert"
    if double_quant_saving is None:
        return not_attempted(ex, "Define `def double_quant_saving(weights): ...` returning the bytes saved on one "
                                  "matrix of that many weights.")
    if not callable(double_quant_saving):
        fail(ex, f"`double_quant_saving` should be a function of the matrix's weight count, got "
                  f"{type(double_quant_saving).__name__}.")
    for weights in (64 * 64, 64 * 256, 64 * 1000 + 5, 8192 * 1024, 8192 * 16384):
        want = _double_quant_prediction(weights)
        try:
            got = double_quant_saving(weights)
        except Exception as error:  # noqa: BLE001 - the learner's code
            fail(ex, f"double_quant_saving({weights}) raised {type(error).__name__}: {error}")
        got = number(ex, f"double_quant_saving({weights})", got)
        if got != want:
            blocks = math.ceil(weights / 64)
            fail(ex, f"for a matrix of {weights:,} weights ({blocks:,} blocks of 64) you predict {got:,.0f} bytes "
                      f"saved. Per block: 4 bytes without, 1 with; plus 4 bytes per 256 blocks (round up) and 1,028 "
                      "bytes per matrix with double quantization.")
    break_even = next(w for w in range(64, 10**7, 64) if _double_quant_prediction(w) > 0)
    if not measure:
        return passed(ex, f"the arithmetic holds; it pays off from about {break_even:,} weights per matrix.")
    from ..quantization import quantization_support

    if not quantization_support().available:
        return skipped(ex, "the arithmetic holds, but bitsandbytes cannot run here to measure it.")
    saved, sizes = _measured_double_quant_saving()
    predicted = sum(int(double_quant_saving(w)) for w in sizes)
    if predicted != saved:
        fail(ex, f"on this model double quantization saves {saved:,} bytes, your function predicts {predicted:,}.")
    effect = f"saves {saved:,} bytes" if saved >= 0 else f"costs {-saved:,} bytes (matrices this small lose)"
    return passed(ex, f"on this model double quantization {effect} over {len(sizes)} matrices of {min(sizes):,} to "
                       f"{max(sizes):,} weights, exactly as predicted; it pays off from about {break_even:,} weights "
                       "per matrix (Grok 2.5's smallest quantized matrix has 8,388,608).")


def _measured_double_quant_saving() -> tuple[int, list[int]]:
    from transformers import BitsAndBytesConfig

    from ..loading import load_model
    from ..quantization import quantized_footprint

    stored, sizes = {}, []
    for double in (True, False):
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double)
        model = load_model(quantization_config=config, verbose=False)
        stored[double] = quantized_footprint(model).stored_bytes
        if not double:
            sizes = [m.in_features * m.out_features for m in model.modules() if type(m).__name__ == "Linear4bit"]
        del model
    return stored[False] - stored[True], sizes
