"""Grok 2's forward pass in one page: the formulas of the model card's reference (SGLang `models/grok.py`, facts 4),
written out with plain tensor operations, for one unpadded sequence, in float64.

It is the course's "read it in one sitting" Grok 2, and the independent check of `modeling_grok2.py`: it shares no
code with that file (no modules, no cache, no masks, no fast paths), so a mistake in either shows up as a mismatch
(`tests/test_grok2_modeling.py`; lesson 02 runs the same comparison on the loaded model). It reads only the
released tensor names and the config's keys, so it runs on the tiny Grok 2 and, given the memory, on Grok 2.5.
Plain RoPE only (`rope_type: "original"`, what the released config says); the YaRN variant is not written here.
"""

from __future__ import annotations

import math

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:  # smooth clipping to (-cap, cap)
    return x if not cap else cap * torch.tanh(x / cap)


def gelu_exact(x: torch.Tensor) -> torch.Tensor:  # the experts' GELU (SGLang FusedMoE "gelu")
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:  # the dense MLP's GELU (SGLang GeluAndMul(approximate="tanh"))
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """NeoX-style rotary embedding over the whole head: x [heads, T, d], position t rotates pair (i, i + d/2)."""
    d = x.shape[-1]
    inverse_frequency = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = torch.arange(x.shape[1], dtype=torch.float64)[:, None] * inverse_frequency[None, :]  # [T, d/2]
    first, second = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([first * angle.cos() - second * angle.sin(), second * angle.cos() + first * angle.sin()], -1)


def reference_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits [T, vocab] of Grok 2 for one sequence of token ids [T], from `model.config` and `model.state_dict()`,
    computed on the CPU in float64 (a copy of every weight: meant for small models such as the tiny Grok 2)."""
    c = model.config
    w = {name: tensor.detach().to("cpu", torch.float64) for name, tensor in model.state_dict().items()}
    ids = ids.cpu()
    T, heads, kv_heads, d = ids.shape[0], c.num_attention_heads, c.num_key_value_heads, c.head_dim

    h = w["model.embed_tokens.weight"][ids] * c.embedding_multiplier_scale  # sqrt(hidden_size) in the release
    for layer in range(c.num_hidden_layers):
        p = f"model.layers.{layer}."

        # Attention: grouped-query heads, RoPE, scores scaled by 1/sqrt(d), capped, sharpened after a length.
        x = rms_norm(h, w[p + "pre_attn_norm.weight"], c.rms_norm_eps)
        q = (x @ w[p + "self_attn.q_proj.weight"].T).view(T, heads, d).transpose(0, 1)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).view(T, kv_heads, d).transpose(0, 1)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).view(T, kv_heads, d).transpose(0, 1)
        q, k = rope(q, c.rope_theta), rope(k, c.rope_theta)
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        scores = softcap(q @ k.transpose(-1, -2) * d**-0.5, c.attn_logit_softcapping)
        position = torch.arange(T, dtype=torch.float64)  # of each query, counted from 0
        temperature = torch.where(position > c.attn_temperature_len,
                                  torch.log2(position.clamp(min=1)) / math.log2(c.attn_temperature_len), 1.0)
        scores = (scores * temperature[:, None]).masked_fill(~torch.ones(T, T).tril().bool(), float("-inf"))
        attention = (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(T, heads * d)
        h = h + rms_norm(attention @ w[p + "self_attn.o_proj.weight"].T, w[p + "post_attn_norm.weight"], c.rms_norm_eps)

        # Mixture of experts: a capped router picks the top experts; their softmax weights are NOT renormalised.
        x = rms_norm(h, w[p + "pre_moe_norm.weight"], c.rms_norm_eps)
        router = softcap(x @ w[p + "block_sparse_moe.gate.weight"].T, c.router_logit_softcapping)
        weights, chosen = torch.softmax(router, -1).topk(c.num_experts_per_tok, -1)
        moe = torch.zeros_like(x)
        for t in range(T):
            for weight, expert in zip(weights[t], chosen[t]):
                e = f"{p}block_sparse_moe.experts.{int(expert)}."
                hidden = gelu_exact(x[t] @ w[e + "w1.weight"].T) * (x[t] @ w[e + "w3.weight"].T)
                moe[t] += weight * (hidden @ w[e + "w2.weight"].T)

        # The dense "residual" MLP runs on every token, beside the experts; the sum is scaled by 1/sqrt(2).
        if c.residual_moe:
            dense = gelu_tanh(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)
            moe = (moe + dense @ w[p + "mlp.down_proj.weight"].T) / math.sqrt(2)
        h = h + rms_norm(moe, w[p + "post_moe_norm.weight"], c.rms_norm_eps)

    logits = rms_norm(h, w["model.norm.weight"], c.rms_norm_eps) @ w["lm_head.weight"].T
    return softcap(logits * c.output_multiplier_scale, c.final_logit_softcapping)  # scale, then cap (SGLang's order)
