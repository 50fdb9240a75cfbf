"""The checks of lesson 02's three exercises:
loading: expert weights, the router's choices, the attention temperature."""

from __future__ import annotations

import math

from ..units import GB
from .checking import Result, fail, grok_config, grok_plan, not_attempted, number, passed, skipped, whole


def check_02_starter(expert_gb) -> Result:
    """Gigabytes of Grok 2.5's expert weights in bf16."""
    ex = "02 starter"
    if expert_gb is None:
        return not_attempted(ex, "Set `expert_gb` from grok.expert_params (2 bytes each in bf16, GB = 10^9 bytes).")
    answer = number(ex, "expert_gb", expert_gb)
    from ..memory import grok2_parameter_breakdown

    expected = grok2_parameter_breakdown(grok_config())["experts"] * 2 / GB
    if abs(answer - expected) < 0.1:
        return passed(ex, f"{answer:.1f} GB of experts in bf16, of {grok_plan().weight_bytes('bf16') / GB:.0f} GB in all.")
    if abs(answer - expected / 2) < 0.1:
        fail(ex, "that is one byte per parameter; bf16 takes 2 bytes.")
    if abs(answer - expected * 1e9 / 1024**3) < 0.1:
        fail(ex, "that is GiB (2^30 bytes); the question asks for GB (10^9 bytes).")
    if abs(answer - expected * 1e9) < 1e8:
        fail(ex, "that is bytes: divide by 1e9 for GB.")
    fail(ex, f"{answer:.3g} GB is not it: expert parameters x 2 bytes / 1e9.")


def _layer0_routing(model, tokenizer, prompt: str):
    import torch

    moe = model.model.layers[0].block_sparse_moe
    grab = {}
    handle = moe.register_forward_hook(lambda module, args, output: grab.update(x=args[0]))
    try:
        inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    _, _, chosen = moe.route(grab["x"].reshape(-1, grab["x"].shape[-1]))
    return torch.bincount(chosen.flatten().cpu(), minlength=len(moe.experts))


def check_02_practitioner(busiest_expert, model, tokenizer, prompt: str) -> Result:
    """The expert of layer 0 that received the most tokens of `prompt` (ties: any of the busiest)."""
    ex = "02 practitioner"
    if busiest_expert is None:
        return not_attempted(ex, "Route your prompt through layer 0 (a forward hook on block_sparse_moe, then "
                                  "moe.route) and set `busiest_expert`.")
    layer = getattr(getattr(getattr(model, "model", None), "layers", [None])[0], "block_sparse_moe", None)
    if layer is None or not hasattr(layer, "route"):
        return skipped(ex, "this profile's model routes differently (no Grok 2 `route`); use the tiny or grok-2 "
                            "profile.")
    if not isinstance(prompt, str) or not prompt.strip():
        fail(ex, "pass the prompt you routed (a non-empty string) as the last argument.")
    answer = whole(ex, "busiest_expert", busiest_expert)
    counts = _layer0_routing(model, tokenizer, prompt)
    if not 0 <= answer < len(counts):
        fail(ex, f"expert {answer} does not exist: layer 0 has experts 0 to {len(counts) - 1}.")
    if counts[answer] != counts.max():
        fail(ex, f"expert {answer} got {int(counts[answer])} token slots, but expert {int(counts.argmax())} got "
                  f"{int(counts.max())}. Count every (token, chosen expert) pair: torch.bincount over all top-2 "
                  "choices.")
    return passed(ex, f"expert {answer} took {int(counts[answer])} of {int(counts.sum())} token slots "
                       f"(tokens per expert: {counts.tolist()}).")


def check_02_expert(last_position_multiplier) -> Result:
    """Grok 2's attention-temperature multiplier at the last position of a 131072-token context."""
    ex = "02 expert"
    if last_position_multiplier is None:
        return not_attempted(ex, "Set `last_position_multiplier` with attention_temperature(torch.tensor([...]), "
                                  "1024).")
    answer = number(ex, "last_position_multiplier", last_position_multiplier)
    expected = math.log2(131071) / math.log2(1024)
    # 4e-7: float32 rounding passes, the off-by-one position (1.1e-6 away) does not
    if abs(answer - expected) < 4e-7:
        return passed(ex, f"x{answer:.3f}: at the end of a full context the attention scores are sharpened by "
                           f"{(answer - 1) * 100:.0f}%.")
    if abs(answer - math.log2(131072) / 10) < 4e-7:
        fail(ex, "off by one: positions count from 0, so the last of 131072 tokens is at position 131071.")
    if abs(answer - 1.0) < 1e-6:
        fail(ex, "1.0 is the multiplier up to position 1024; the last position is far beyond it.")
    fail(ex, f"{answer:.4g} is not it: log2(p) / log2(1024) at the last position.")
