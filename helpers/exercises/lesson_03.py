"""The checks of lesson 03's three exercises:
quantized inference: which precisions fit 4 x H100, experts kept unquantized, double quantization."""

from __future__ import annotations

import math

from ..memory import GPU_USABLE_FRACTION
from ..units import GB, GiB
from .checking import Result, fail, grok_plan, not_attempted, number, passed, skipped


# An "80 GB" H100 holds 80 GiB (helpers.accelerators). Two full conversations, so that the KV cache decides: FP8
# weights fit 4 x H100 alone, not with two 131072-token caches.
STARTER_03 = dict(gpus=4, card_bytes=80 * GiB, context_tokens=131072, conversations=2,
                  precisions=("bf16", "fp8", "int8", "nf4"))


def check_03_starter(precisions_that_fit) -> Result:
    """The precisions at which Grok 2.5 and two 131072-token conversations fit on 4 x H100 80 GB, the planner's share
    of each (GPU_USABLE_FRACTION) usable."""
    ex = "03 starter"
    if precisions_that_fit is None:
        return not_attempted(ex, "Set `precisions_that_fit` to the list of precisions among 'bf16', 'fp8', 'int8', "
                                  f"'nf4' whose weights + the KV cache of two 131072-token conversations fit in 4 x "
                                  f"{GPU_USABLE_FRACTION:.0%} "
                                  "of 80 GiB (80 * GiB bytes).")
    if isinstance(precisions_that_fit, str) or not hasattr(precisions_that_fit, "__iter__"):
        fail(ex, f"`precisions_that_fit` should be a list of names such as ['nf4'], got "
                  f"{type(precisions_that_fit).__name__} {precisions_that_fit!r}.")
    answer = {str(p).lower() for p in precisions_that_fit}
    unknown = answer - set(STARTER_03["precisions"])
    if unknown:
        fail(ex, f"unknown precision(s) {sorted(unknown)}: choose among {', '.join(STARTER_03['precisions'])}.")
    grok = grok_plan()
    gpus, card, tokens = STARTER_03["gpus"], STARTER_03["card_bytes"], STARTER_03["context_tokens"]
    batch = STARTER_03["conversations"]
    margins = {p: grok.margin_bytes(card, gpus, p, tokens, batch=batch) for p in STARTER_03["precisions"]}
    expected = {p for p, margin in margins.items() if margin >= 0}
    if answer == expected:
        shown = ", ".join(f"{p} {margins[p] / GB:+,.1f} GB" for p in STARTER_03["precisions"])
        return passed(ex, f"{sorted(answer)}. Margins on 4 x H100 with two 131072-token caches: {shown}.")
    cache, usable = grok.kv_cache_bytes(tokens, batch=batch), GPU_USABLE_FRACTION * gpus * card
    weights_only = {p for p in STARTER_03["precisions"] if grok.weight_bytes(p) <= usable}
    if answer == weights_only:
        fail(ex, f"those weights fit alone, but two 131072-token conversations add {cache / GB:,.1f} GB of KV cache: "
                  "count it too.")
    extra, missing = sorted(answer - expected), sorted(expected - answer)
    if extra:
        p = extra[0]
        fail(ex, f"{p} does not fit: {grok.weight_bytes(p) / GB:,.1f} GB of weights + {cache / GB:,.1f} GB of KV "
                  f"cache > {usable / GB:.0f} GB usable.")
    fail(ex, f"{missing[0]} fits too: compare each precision's weights + KV cache with 4 x {GPU_USABLE_FRACTION:.0%} of "
              "80 GB.")


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
    from ..paths import TINY_MODEL_DIR
    from ..profiles import get_profile

    # Checked on the tiny Grok 2 whatever the profile: its experts are nn.Linear modules named exactly like Grok 2.5's
    # (model.layers.N.block_sparse_moe.experts.E.w1), and it loads in a second. (The small profile's Granite stores
    # its experts as 3-D tensors, which bitsandbytes never quantizes: there the question has no answer to measure.)
    model = load_model(TINY_MODEL_DIR, quantization_config=experts_kept, verbose=False)
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
    if not quantized:
        fail(ex, "nothing was quantized: the skip list catches every layer; only the experts should stay.")
    where = "" if get_profile().name == "tiny" else " (checked on the tiny Grok 2, whose expert names are Grok 2.5's)"
    return passed(ex, f"{len(experts_full)} expert matrices kept in full precision, {len(quantized)} other "
                       f"matrices in NF4{where}.")


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
