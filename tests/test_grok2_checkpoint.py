"""The released layout (TP-sharded experts, separate lm_head, model_type "git") loads to the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import helpers
from helpers.grok2 import Grok2Config, Grok2ForCausalLM
from helpers.grok2.checkpoint import (
    convert_released_checkpoint,
    is_released_layout,
    iter_released_tensors,
    load_released_checkpoint,
    save_in_released_layout,
)


@pytest.fixture(scope="module")
def model(tiny_grok2_config):  # tests/conftest.py
    torch.manual_seed(0)
    return Grok2ForCausalLM(tiny_grok2_config()).eval()


@pytest.fixture(scope="module")
def released(model, tmp_path_factory):
    return save_in_released_layout(model, tmp_path_factory.mktemp("released") / "grok-2")


def test_layout_matches_the_release(released):
    names = sorted(p.name for p in released.glob("*.safetensors"))
    assert len(names) == 15 + 3 * 8  # 39 safetensors, as derived for the real checkpoint
    assert "pytorch_model-00000-TP-common.safetensors" in names and "pytorch_model-00008-TP-007.safetensors" in names
    config = json.loads((released / "config.json").read_text())
    assert config["model_type"] == "git" and config["architectures"] == ["Grok1ForCausalLM"]
    assert list(config) == list(json.loads(helpers.GROK2_RELEASED_CONFIG.read_text()))
    assert is_released_layout(released)


def test_expert_slices_are_stitched_in_rank_order(model, released):
    tensors = dict(iter_released_tensors(released))
    state = model.state_dict()
    assert tensors.keys() == state.keys()
    for name in ("model.layers.1.block_sparse_moe.experts.5.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight"):
        assert torch.equal(tensors[name], state[name])


def test_released_layout_gives_the_same_logits_as_the_plain_save(model, released, tmp_path):
    model.save_pretrained(tmp_path / "plain")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    streamed = load_released_checkpoint(released, dtype=torch.float32)
    via_helpers = helpers.load_model(released, verbose=False)
    ids = torch.randint(3, 120, (2, 9), generator=torch.Generator().manual_seed(1))
    for loaded in (streamed, via_helpers):
        # Bit-equal weights; logits to float32 rounding (tensors mmapped at other alignments take other SIMD paths).
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in plain.state_dict().items())
    with torch.no_grad():
        reference = plain(ids).logits
        torch.testing.assert_close(streamed(ids).logits, reference, rtol=0, atol=1e-5)
        torch.testing.assert_close(via_helpers(ids).logits, reference, rtol=0, atol=1e-5)


def test_conversion_to_plain_shards(model, released, tmp_path):
    converted = convert_released_checkpoint(released, tmp_path / "converted", max_shard_bytes=200_000)
    assert len(list(converted.glob("model-*-of-*.safetensors"))) > 1
    loaded = AutoModelForCausalLM.from_pretrained(converted).eval()
    ids = torch.arange(3, 13)[None]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():  # logits to float32 rounding: same weights, other memory alignment
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_missing_slice_is_reported(released, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(released, broken)
    (broken / "pytorch_model-00007-TP-003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        list(iter_released_tensors(broken))


@pytest.fixture(scope="module")
def wider(tmp_path_factory, tiny_grok2_config):
    """A model whose matrices are at least one 4-bit block (64 weights) wide, as bitsandbytes' CPU kernels need."""
    torch.manual_seed(0)
    config = tiny_grok2_config(hidden_size=64, intermediate_size=128, moe_intermediate_size=64, head_dim=16)
    model = Grok2ForCausalLM(config).eval()
    return model, save_in_released_layout(model, tmp_path_factory.mktemp("released64") / "grok-2")


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_released_layout_quantizes_on_the_fly_like_from_pretrained(wider, tmp_path, kind):
    import bitsandbytes as bnb

    model, released = wider
    model.save_pretrained(tmp_path / "plain")
    streamed = helpers.load_model(released, quantization=kind, verbose=False)
    reference = helpers.load_model(tmp_path / "plain", quantization=kind, verbose=False)
    quantized = bnb.nn.Linear4bit if kind == "nf4" else bnb.nn.Linear8bitLt
    layer = streamed.model.layers[1]
    assert isinstance(layer.block_sparse_moe.experts[5].w2, quantized) and isinstance(layer.self_attn.q_proj, quantized)
    # the router and the LM head stay in full precision, as with from_pretrained
    assert type(layer.block_sparse_moe.gate) is torch.nn.Linear and type(streamed.lm_head) is torch.nn.Linear
    ids = torch.randint(3, 120, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want, full = streamed(ids).logits, reference(ids).logits, model(ids).logits
    assert torch.equal(got, want)  # the same bytes as transformers' own quantized loading
    error = (got - full).abs().mean() / full.abs().mean()
    assert 0 < error < 0.3, error  # close to, not equal to, full precision


def test_quantized_device_map_prices_4_bit_layers(released):
    from helpers.grok2.checkpoint import empty_model, plan_device_map
    from helpers.quantization import quantization_config

    config = Grok2Config.from_pretrained(released)
    empty = empty_model(config)
    full_bytes = sum(p.numel() for p in empty.parameters()) * 4
    # Two fake GPUs that each hold ~40% of the fp32 model: fp32 must spill to the CPU, 4-bit must not.
    budget = {0: int(0.4 * full_bytes), 1: int(0.4 * full_bytes), "cpu": 10 * full_bytes}
    fp32_map = plan_device_map(empty, budget, torch.float32, None)
    assert "cpu" in set(fp32_map.values())
    nf4 = quantization_config("nf4", torch.float32)
    empty4 = empty_model(config, nf4)
    nf4_map = plan_device_map(empty4, budget, torch.float32, nf4)
    assert set(nf4_map.values()) <= {0, 1}  # all on the GPUs
