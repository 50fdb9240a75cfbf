"""Grok 2 in transformers: checked against an independent reference forward written out below.

The reference follows the formulas of grok2-facts.md section 4 literally (per-token expert loop, repeated KV heads,
explicit causal mask), sharing no code with helpers/grok2, so a mistake in either shows up as a mismatch.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import helpers  # noqa: F401  (registers Grok 2)
from helpers.grok2 import Grok2Config, Grok2ForCausalLM, unpatched_model_type
from helpers.paths import GROK2_RELEASED_CONFIG


def small_config(**overrides) -> Grok2Config:
    values = dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_local_experts=4,
        num_experts_per_tok=2,
        embedding_multiplier_scale=math.sqrt(32),
        max_position_embeddings=512,
        # Tiny caps and temperature length so that every branch is exercised on short sequences.
        attn_logit_softcapping=2.0,
        router_logit_softcapping=1.5,
        final_logit_softcapping=3.0,
        attn_temperature_len=4,
        rope_theta=10000.0,
        initializer_range=0.3,
    )
    values.update(overrides)
    return Grok2Config(**values)


def build(config: Grok2Config, seed: int = 0) -> Grok2ForCausalLM:
    torch.manual_seed(seed)
    model = Grok2ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights, so that a swapped norm would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return model


# ------------------------------------------------------------------------------------------ independent reference


def reference_logits(model: Grok2ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """Literal transcription of grok2-facts.md section 4 for one unpadded sequence [T]."""
    c = model.config
    w = {k: v.double() for k, v in model.state_dict().items()}
    T = ids.shape[0]

    def rms(x, weight):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + c.rms_norm_eps) * weight

    def cap(x, limit):
        return limit * torch.tanh(x / limit)

    def gelu_exact(x):
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    def gelu_tanh(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    def rope(x):  # x [heads, T, d], plain NeoX RoPE
        d = x.shape[-1]
        inv = [1.0 / (c.rope_theta ** (2 * i / d)) for i in range(d // 2)]
        out = torch.empty_like(x)
        for t in range(T):
            for i in range(d // 2):
                a = t * inv[i]
                x1, x2 = x[:, t, i], x[:, t, i + d // 2]
                out[:, t, i] = x1 * math.cos(a) - x2 * math.sin(a)
                out[:, t, i + d // 2] = x2 * math.cos(a) + x1 * math.sin(a)
        return out

    h = w["model.embed_tokens.weight"][ids] * c.embedding_multiplier_scale
    for layer in range(c.num_hidden_layers):
        p = f"model.layers.{layer}."
        x = rms(h, w[p + "pre_attn_norm.weight"])
        q = (x @ w[p + "self_attn.q_proj.weight"].T).view(T, c.num_attention_heads, c.head_dim).transpose(0, 1)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).view(T, c.num_key_value_heads, c.head_dim).transpose(0, 1)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).view(T, c.num_key_value_heads, c.head_dim).transpose(0, 1)
        q, k = rope(q), rope(k)
        group = c.num_attention_heads // c.num_key_value_heads
        k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        s = cap((q @ k.transpose(-1, -2)) * c.head_dim**-0.5, c.attn_logit_softcapping)
        pos = torch.arange(T, dtype=torch.float64)
        temp = torch.where(pos > c.attn_temperature_len, torch.log2(pos.clamp(min=1)) / math.log2(c.attn_temperature_len), 1.0)
        s = s * temp[:, None]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        attn = torch.softmax(s.masked_fill(~causal, float("-inf")), -1) @ v
        attn = attn.transpose(0, 1).reshape(T, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = h + rms(attn, w[p + "post_attn_norm.weight"])

        x = rms(h, w[p + "pre_moe_norm.weight"])
        router = cap(x @ w[p + "block_sparse_moe.gate.weight"].T, c.router_logit_softcapping)
        probs = torch.softmax(router, -1)
        moe = torch.zeros_like(x)
        for t in range(T):
            top = torch.topk(probs[t], c.num_experts_per_tok)
            for weight, e in zip(top.values, top.indices):  # NOT renormalised
                e_ = f"{p}block_sparse_moe.experts.{int(e)}."
                hidden = gelu_exact(x[t] @ w[e_ + "w1.weight"].T) * (x[t] @ w[e_ + "w3.weight"].T)
                moe[t] += weight * (hidden @ w[e_ + "w2.weight"].T)
        dense = gelu_tanh(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)
        dense = dense @ w[p + "mlp.down_proj.weight"].T
        h = h + rms((moe + dense) / math.sqrt(2), w[p + "post_moe_norm.weight"])
    h = rms(h, w["model.norm.weight"])
    logits = (h @ w["lm_head.weight"].T) * c.output_multiplier_scale
    return cap(logits, c.final_logit_softcapping)


def test_forward_matches_independent_reference():
    model = build(small_config())
    ids = torch.randint(3, 97, (11,), generator=torch.Generator().manual_seed(1))  # 11 > attn_temperature_len
    with torch.no_grad():
        ours = model(ids[None], use_cache=False).logits[0].double()
    ref = reference_logits(model, ids)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_every_quirk_changes_the_output():
    """Each Grok-specific feature is live: switching it off changes the logits (so the reference test means something)."""
    base = small_config()
    ids = torch.randint(3, 97, (1, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = build(base)(ids).logits
        for change in [
            dict(attn_logit_softcapping=None),
            dict(router_logit_softcapping=None),
            dict(final_logit_softcapping=None),
            dict(attn_temperature_len=1024),
            dict(residual_moe=False),
            dict(output_multiplier_scale=1.0),
        ]:
            other = build(small_config(**change))(ids).logits
            assert not torch.allclose(reference, other, atol=1e-4), change


def test_router_weights_are_not_renormalised():
    model = build(small_config())
    x = torch.randn(5, 32)
    _, weights, _ = model.model.layers[0].block_sparse_moe.route(x)
    assert (weights.sum(-1) < 1).all()


# -------------------------------------------------------------------------------------------- cache and padding


def test_cached_decoding_equals_uncached():
    model = build(small_config())
    prompt = torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        # Uncached: recompute the whole sequence for each new token.
        seq = prompt
        for _ in range(8):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], -1)
        assert torch.equal(out, seq)
        # And the logits of a cached step equal the uncached logits at that position.
        first = model(out[:, :10], use_cache=True)
        step = model(out[:, 10:11], past_key_values=first.past_key_values, use_cache=True).logits[:, -1]
        full = model(out[:, :11], use_cache=False).logits[:, -1]
        torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_equals_single_sequences():
    model = build(small_config())
    gen = torch.Generator().manual_seed(4)
    short, long = torch.randint(3, 97, (4,), generator=gen), torch.randint(3, 97, (9,), generator=gen)
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0, 5:], batch[1] = short, long
    mask = (torch.arange(9) >= 5).long()[None].repeat(2, 1)
    mask[1] = 1
    with torch.no_grad():
        batched = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        for row, seq in enumerate([short, long]):
            alone = model.generate(seq[None], max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
            assert torch.equal(batched[row, -6:], alone[0, -6:])
        # Logits too, not only the argmax: position 5 of the padded row is position 0 of the short sequence.
        padded_logits = model(batch, attention_mask=mask, use_cache=False).logits[0, 5:]
        alone_logits = model(short[None], use_cache=False).logits[0]
        torch.testing.assert_close(padded_logits, alone_logits, atol=1e-5, rtol=1e-5)


def test_temperature_uses_true_positions_with_padding():
    """With attn_temperature_len=4, positions > 4 are sharpened: padding must not shift where that starts."""
    model = build(small_config())
    seq = torch.randint(3, 97, (8,), generator=torch.Generator().manual_seed(5))
    padded = torch.cat([torch.zeros(3, dtype=torch.long), seq])[None]
    mask = torch.cat([torch.zeros(3), torch.ones(8)]).long()[None]
    with torch.no_grad():
        a = model(padded, attention_mask=mask).logits[0, 3:]
        b = model(seq[None]).logits[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------- saving and the Auto path


def test_save_load_round_trip(tmp_path):
    model = build(small_config())
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["Grok1ForCausalLM"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is Grok2ForCausalLM
    ids = torch.randint(3, 97, (1, 6))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())  # bit for bit
    with torch.no_grad():  # logits to float32 rounding: the same weights at another memory alignment
        torch.testing.assert_close(model(ids).logits, loaded(ids).logits, atol=1e-5, rtol=0)
    names = {k for k in loaded.state_dict()}
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in names
    assert "lm_head.weight" in names and "model.layers.1.post_moe_norm.weight" in names


def test_git_model_type_routes_to_grok2(tmp_path):
    """The released config says model_type "git"; with helpers imported it loads as Grok 2 anyway."""
    model = build(small_config())
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "git"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert unpatched_model_type(tmp_path) == "git"
    assert type(AutoConfig.from_pretrained(tmp_path)) is Grok2Config
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)) is Grok2ForCausalLM


def test_released_config_has_269_5_billion_parameters_on_meta():
    config = AutoConfig.from_pretrained(GROK2_RELEASED_CONFIG)
    assert isinstance(config, Grok2Config) and config.hidden_size == 8192 and config.rope_theta == 208533496
    with torch.device("meta"):
        model = Grok2ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    assert total == 269_515_497_472
    assert round(total / 1e9, 1) == 269.5


def test_yarn_rope_is_supported_and_differs():
    ids = torch.arange(3, 40)[None]
    plain = build(small_config(rope_theta=10000.0))
    yarn = build(small_config(rope_theta=10000.0, rope_type="yarn", original_max_position_embeddings=8, scaling_factor=4.0))
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, yarn(ids).logits, atol=1e-4)


def test_bad_config_is_refused_with_reason():
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        small_config(num_attention_heads=5)
    with pytest.raises(ValueError, match="rope_type"):
        small_config(rope_type="dynamic")


def test_gradients_flow_for_training():
    model = build(small_config()).train()
    ids = torch.randint(3, 97, (2, 6))
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.layers[0].block_sparse_moe.experts[0].w1.weight.grad is not None or any(
        e.w1.weight.grad is not None for e in model.model.layers[0].block_sparse_moe.experts
    )
    assert model.model.layers[1].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_static_cache_generation_equals_dynamic():
    """A static (pre-allocated) KV cache - the basis of compiled decoding - gives the same tokens."""
    model = build(small_config())
    prompt = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(prompt)
    mask[0, :2] = 0
    settings = dict(max_new_tokens=7, do_sample=False, pad_token_id=0, eos_token_id=None, attention_mask=mask)
    with torch.no_grad():
        dynamic = model.generate(prompt, **settings)
        static = model.generate(prompt, cache_implementation="static", **settings)
    assert torch.equal(dynamic, static)
