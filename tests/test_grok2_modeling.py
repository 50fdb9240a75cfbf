"""Grok 2 in transformers: checked against an independent reference forward (helpers/grok2/reference.py).

The reference follows the formulas of grok2-facts.md section 4 literally (per-token expert loop, repeated KV heads,
explicit causal mask), sharing no code with modeling_grok2.py, so a mistake in either shows up as a mismatch.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import helpers  # noqa: F401  (registers Grok 2)
from helpers.grok2 import Grok2Config, Grok2ForCausalLM, unpatched_model_type
from helpers.grok2.reference import reference_logits  # the independent forward, shown in lesson 02


# Sizes and caps that exercise every branch on short sequences (the caps fire; the length temperature starts at 4),
# on top of the tiny random Grok 2 of tests/conftest.py.
EDGES = dict(vocab_size=97, intermediate_size=48, moe_intermediate_size=40, num_local_experts=4, num_experts_per_tok=2,
             max_position_embeddings=512, attn_logit_softcapping=2.0, router_logit_softcapping=1.5,
             final_logit_softcapping=3.0, attn_temperature_len=4, rope_theta=10000.0, initializer_range=0.3)


@pytest.fixture(scope="module")
def small_config(tiny_grok2_config):
    """small_config(**overrides) -> a Grok2Config: tests/conftest.py's tiny one with EDGES, then `overrides`."""
    return lambda **overrides: tiny_grok2_config(**{**EDGES, **overrides})


def build(config: Grok2Config, seed: int = 0) -> Grok2ForCausalLM:
    torch.manual_seed(seed)
    model = Grok2ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights, so that a swapped norm would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return model


# ------------------------------------------------------------------------------------------ independent reference


def test_forward_matches_independent_reference(small_config):
    model = build(small_config())
    ids = torch.randint(3, 97, (11,), generator=torch.Generator().manual_seed(1))  # 11 > attn_temperature_len
    with torch.no_grad():
        ours = model(ids[None], use_cache=False).logits[0].double()
    ref = reference_logits(model, ids)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_every_quirk_changes_the_output(small_config):
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


def test_router_weights_are_not_renormalised(small_config):
    model = build(small_config())
    x = torch.randn(5, 32)
    _, weights, _ = model.model.layers[0].block_sparse_moe.route(x)
    assert (weights.sum(-1) < 1).all()


# -------------------------------------------------------------------------------------------- cache and padding


def test_cached_decoding_equals_uncached(small_config):
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


def test_left_padded_batch_equals_single_sequences(small_config):
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


def test_temperature_uses_true_positions_with_padding(small_config):
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


def test_save_load_round_trip(tmp_path, small_config):
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


def test_git_model_type_routes_to_grok2(tmp_path, small_config):
    """The released config says model_type "git"; with helpers imported it loads as Grok 2 anyway."""
    model = build(small_config())
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "git"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert unpatched_model_type(tmp_path) == "git"
    assert type(AutoConfig.from_pretrained(tmp_path)) is Grok2Config
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)) is Grok2ForCausalLM


def test_released_config_has_269_5_billion_parameters_on_meta(grok2_config):
    config = grok2_config
    assert isinstance(config, Grok2Config) and config.hidden_size == 8192 and config.rope_theta == 208533496
    with torch.device("meta"):
        model = Grok2ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    assert total == 269_515_497_472
    assert round(total / 1e9, 1) == 269.5


def test_yarn_rope_is_supported_and_differs(small_config):
    ids = torch.arange(3, 40)[None]
    plain = build(small_config(rope_theta=10000.0))
    yarn = build(small_config(rope_theta=10000.0, rope_type="yarn", original_max_position_embeddings=8, scaling_factor=4.0))
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, yarn(ids).logits, atol=1e-4)


def test_bad_config_is_refused_with_reason(small_config):
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        small_config(num_attention_heads=5)
    with pytest.raises(ValueError, match="rope_type"):
        small_config(rope_type="dynamic")


def test_gradients_flow_for_training(small_config):
    model = build(small_config()).train()
    ids = torch.randint(3, 97, (2, 6))
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.layers[0].block_sparse_moe.experts[0].w1.weight.grad is not None or any(
        e.w1.weight.grad is not None for e in model.model.layers[0].block_sparse_moe.experts
    )
    assert model.model.layers[1].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_static_cache_generation_equals_dynamic(small_config):
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
