"""The checks of lesson 00's three exercises:
setup: what the planner says about Grok 2.5's GPUs, KV cache and experts."""

from __future__ import annotations

from ..units import GB
from .checking import Result, fail, grok_config, grok_plan, not_attempted, passed, whole


def check_00_starter(a100_fp8_32k) -> Result:
    """A100 40 GB GPUs that hold Grok 2.5 in FP8 plus the KV cache of one 32K-token context."""
    ex = "00 starter"
    if a100_fp8_32k is None:
        return not_attempted(ex, "Set `a100_fp8_32k` with `grok.gpus_needed(...)`: 40 GB cards, FP8, 32768 tokens.")
    answer = whole(ex, "a100_fp8_32k", a100_fp8_32k)
    grok = grok_plan()
    expected = grok.gpus_needed(40 * GB, "fp8", context_tokens=32768)
    if answer == expected:
        return passed(ex, f"{answer} GPUs of 40 GB: {grok.weight_bytes('fp8') / GB:.0f} GB of FP8 weights plus "
                           f"{grok.kv_cache_bytes(32768) / GB:.1f} GB of KV cache, 90% of each card usable.")
    if answer == grok.gpus_needed(40 * GB, "bf16", context_tokens=32768):
        fail(ex, "that is the bf16 count; the question asks for FP8 weights (precision 'fp8').")
    if answer == grok.gpus_needed(40 * 1024**3, "fp8", context_tokens=32768):
        fail(ex, "close: the course counts 40 GB as 40 x 10^9 bytes (`40 * GB` with GB from helpers.units).")
    fail(ex, f"{answer} is too {'many' if answer > expected else 'few'} GPUs. Pass the card's bytes (40 * GB), "
              "the precision 'fp8' and context_tokens=32768 to grok.gpus_needed.")


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
