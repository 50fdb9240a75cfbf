"""The checks of lesson 00's three exercises:
setup: Grok 2.5's GPUs by hand, its KV cache against its weights, one expert from the totals."""

from __future__ import annotations

import math

from ..memory import GPU_USABLE_FRACTION
from ..units import GB, GiB
from .checking import Result, fail, grok_config, grok_plan, not_attempted, passed, whole


# The question's machine and load: an "80 GB" H100 holds 80 GiB (helpers.accelerators). Two full conversations, so
# that forgetting the KV cache or the headroom gives another count than the right one.
STARTER_00 = dict(card_bytes=80 * GiB, precision="fp8", context_tokens=131072, conversations=2)


def check_00_starter(h100_fp8_128k) -> Result:
    """80 GB GPUs for Grok 2.5's FP8 weights plus the bf16 KV cache of two 131072-token conversations, the planner's
    share of each GPU (GPU_USABLE_FRACTION) usable: computed by hand from the plan's bytes (the check compares with the
    planner's `gpus_needed`)."""
    ex = "00 starter"
    if h100_fp8_128k is None:
        return not_attempted(ex, "Set `h100_fp8_128k`: (grok.weight_bytes('fp8') + 2 * grok.kv_cache_bytes(131072)) / "
                                  f"({GPU_USABLE_FRACTION:.0%} of 80 GiB: 80 * GiB bytes), rounded up.")
    answer = whole(ex, "h100_fp8_128k", h100_fp8_128k)
    grok = grok_plan()
    card, precision, tokens = STARTER_00["card_bytes"], STARTER_00["precision"], STARTER_00["context_tokens"]
    batch = STARTER_00["conversations"]
    expected = grok.gpus_needed(card, precision, context_tokens=tokens, batch=batch)
    weights, cache = grok.weight_bytes(precision), grok.kv_cache_bytes(tokens, batch=batch)
    usable = GPU_USABLE_FRACTION * card
    if answer == expected:
        return passed(ex, f"{answer} GPUs: {weights / GB:,.1f} GB of FP8 weights + {cache / GB:,.1f} GB of KV cache "
                           f"= {(weights + cache) / GB:,.1f} GB, over {usable / GB:.0f} GB usable per GPU. "
                           f"A tensor-parallel engine would then run {grok.tensor_parallel_size(answer)}.")
    forgot_cache = math.ceil(weights / usable)
    no_headroom = math.ceil((weights + cache) / card)
    if answer == grok.gpus_needed(card, "bf16", context_tokens=tokens, batch=batch):
        fail(ex, "that is the bf16 count; the question is about FP8 weights (1 byte each).")
    if answer in (forgot_cache, no_headroom):
        fail(ex, f"{answer} GPUs hold the weights alone, or everything with no memory kept free: add the KV cache of "
                  f"two 131072-token conversations (2 * grok.kv_cache_bytes(131072)) and keep "
                  f"{1 - GPU_USABLE_FRACTION:.0%} of every GPU free.")
    fail(ex, f"{answer} is too {'many' if answer > expected else 'few'}: add the FP8 weights and both KV caches, "
              f"divide by {GPU_USABLE_FRACTION:g} x 80 GiB (an \"80 GB\" card holds 80 x 2^30 bytes) and round up.")


def check_00_practitioner(batch_equal_to_weights) -> Result:
    """The largest batch of 8K-token requests whose bf16 KV cache does not exceed Grok 2.5's FP8 weights."""
    ex = "00 practitioner"
    if batch_equal_to_weights is None:
        return not_attempted(ex, "Set `batch_equal_to_weights` from grok.weight_bytes('fp8') and "
                                  "grok.kv_cache_bytes(8192).")
    batch = whole(ex, "batch_equal_to_weights", batch_equal_to_weights)
    grok = grok_plan()
    weights, per_request = grok.weight_bytes("fp8"), grok.kv_cache_bytes(8192)
    if batch < 1:
        fail(ex, f"a batch of {batch} requests? The answer is at least 1.")
    if grok.kv_cache_bytes(8192, batch=batch) > weights:
        fail(ex, f"at batch {batch} the KV cache ({grok.kv_cache_bytes(8192, batch=batch) / GB:.0f} GB) is already "
                  f"larger than the FP8 weights ({weights / GB:.0f} GB): round down, not up.")
    if grok.kv_cache_bytes(8192, batch=batch + 1) <= weights:
        fail(ex, f"batch {batch + 1} still fits under the weights: you want the largest such batch "
                  "(did you use the bf16 KV cache, 2 bytes per value, and 8192 tokens?).")
    return passed(ex, f"{batch} requests of 8K tokens: {batch} x {per_request / GB:.2f} GB of KV cache "
                       f"<= {weights / GB:.0f} GB of FP8 weights. At serving scale the cache, not the weights, "
                       "decides how many GPUs you need.")


def check_00_expert(one_expert) -> Result:
    """Parameters of one expert in one layer, derived from total/active parameters and the expert counts."""
    ex = "00 expert"
    if one_expert is None:
        return not_attempted(ex, "Set `one_expert` using only grok.total_params, grok.active_params, "
                                  "grok.num_experts and grok.experts_per_token (and the 64 layers).")
    answer = whole(ex, "one_expert", one_expert)
    config = grok_config()
    expected = 3 * config.hidden_size * config.moe_intermediate_size
    if answer == expected:
        return passed(ex, f"{answer:,} parameters = 3 matrices x {config.hidden_size} x "
                           f"{config.moe_intermediate_size} (w1, w3 up/gate and w2 down of a GeGLU expert).")
    if answer == expected * config.num_local_experts or answer == expected * config.num_hidden_layers:
        fail(ex, "that is several experts: divide by the number of experts *and* the number of layers.")
    if answer == expected * (config.num_local_experts - config.num_experts_per_tok) // config.num_local_experts:
        fail(ex, "close: total - active is only the 6 experts a token skips; scale it to all 8 first.")
    fail(ex, f"{answer:,} is not the size of one expert. Hint: total - active = the parameters of the experts a "
              "token does *not* use, (8 - 2) of every 8.")
