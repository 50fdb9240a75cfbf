"""The planner's figures for Grok 2.5 equal the meta-device count and the published ~270B / ~540 GB; profiles."""

from __future__ import annotations

import pytest
import torch
from transformers import GraniteMoeConfig

import helpers
from helpers.errors import CourseError
from helpers.grok2 import Grok2ForCausalLM
from helpers.memory import GB, GiB, grok2_parameter_breakdown, plan_memory


def test_total_equals_meta_device_count_and_arithmetic(grok2_config, grok2_plan):
    with torch.device("meta"):
        model = Grok2ForCausalLM(grok2_config)
    meta_count = sum(p.numel() for p in model.parameters())
    assert grok2_plan.total_params == meta_count == sum(grok2_parameter_breakdown(grok2_config).values())
    assert round(grok2_plan.total_params / 1e9) == 270  # "~270B"


def test_active_parameters_per_token(grok2_config, grok2_plan):
    breakdown = grok2_parameter_breakdown(grok2_config)
    # Everything except the 6 experts (of 8) a token does not use.
    expected = grok2_plan.total_params - breakdown["experts"] * 6 // 8
    assert grok2_plan.active_params == expected
    assert 114e9 < grok2_plan.active_params < 115e9


def test_bytes_per_precision(grok2_plan):
    assert grok2_plan.weight_bytes("bf16") == grok2_plan.total_params * 2
    assert round(grok2_plan.weight_bytes("bf16") / GB) == 539  # "~540 GB"
    assert round(grok2_plan.weight_bytes("bf16") / GiB) == 502
    fp8, nf4 = grok2_plan.weight_bytes("fp8"), grok2_plan.weight_bytes("nf4")
    assert 265 * GB < fp8 < 275 * GB  # "~270 GB in FP8"
    assert 135 * GB < nf4 < 165 * GB  # "~135-165 GB in 4-bit"
    with pytest.raises(ValueError, match="Unknown precision"):
        grok2_plan.weight_bytes("int3")


def test_kv_cache_and_gpus(grok2_plan):
    assert grok2_plan.kv_cache_bytes_per_token() == 256 * 1024  # 256 KiB per token in bf16
    assert grok2_plan.kv_cache_bytes(131072) == 32 * GiB
    from helpers.accelerators import H100_SXM, RTX_4090

    h100 = H100_SXM.memory_bytes  # an "80 GB" H100 holds 80 GiB
    assert h100 == 80 * GiB
    assert grok2_plan.gpus_needed(h100, "bf16", context_tokens=8192) == 8
    assert grok2_plan.gpus_needed(h100, "fp8", context_tokens=8192) <= 8
    # two 80 GB GPUs hold the 4-bit weights and an 8K-token cache with the planner's headroom (counted as 80e9 bytes
    # they seemed to need a third)
    assert grok2_plan.gpus_needed(h100, "nf4", context_tokens=8192) == 2 < grok2_plan.gpus_needed(80 * GB, "nf4")
    assert grok2_plan.margin_bytes(h100, 2, "nf4", 8192) > 5 * GB
    assert grok2_plan.gpus_needed(RTX_4090.memory_bytes, "nf4") > 1  # the article's single 24 GB GPU cannot hold it
    assert [row["H100_80GB_needed"] for row in grok2_plan.table()] == [
        grok2_plan.gpus_needed(h100, p) for p in ("bf16", "fp8", "int8", "nf4")]
    assert grok2_plan.tensor_parallel_size(5) == 8


def test_dense_and_moe_models_of_other_architectures():
    moe = GraniteMoeConfig(
        hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_local_experts=8, num_experts_per_tok=2, vocab_size=100,
    )
    plan = plan_memory(moe)
    assert plan.expert_params == 2 * 8 * (64 * 64 + 64 * 32)  # gate_up + down per expert, per layer
    assert plan.active_params == plan.total_params - plan.expert_params * 6 // 8
    from transformers import LlamaConfig

    dense = plan_memory(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=100))
    assert dense.active_params == dense.total_params and dense.expert_params == 0


def test_profiles(monkeypatch):
    monkeypatch.setenv(helpers.PROFILE_ENV_VAR, "small")
    assert helpers.get_profile().name == "small"
    assert helpers.get_profile("grok-2").model_id == "xai-org/grok-2"
    monkeypatch.delenv(helpers.PROFILE_ENV_VAR)
    assert helpers.get_profile().name == "tiny"
    assert helpers.get_profile().offline
    with pytest.raises(helpers.CourseError, match="tiny, small, grok-2"):
        helpers.get_profile("huge")
    tiny, small = helpers.get_profile("tiny").sizes, helpers.get_profile("small").sizes
    # The tiny profile trains more steps (its steps are cheap) but on fewer tokens in all than the small one.
    def training_tokens(sizes):
        return sizes.train_steps * sizes.train_batch_size * sizes.grad_accum_steps * sizes.max_seq_len

    assert training_tokens(tiny) < training_tokens(small) and tiny.max_seq_len <= small.max_seq_len


def test_the_model_source_is_resolved_in_one_place(tmp_path):
    from helpers import loading, profiles

    assert loading.resolve_source is profiles.resolve_source  # load_model, the server and the scripts ask here
    assert profiles.resolve_source(None) == helpers.get_profile().model_id
    assert profiles.resolve_source(None, "grok-2") == "xai-org/grok-2"
    assert profiles.resolve_source(tmp_path, "grok-2") == str(tmp_path)  # a path given wins over the profile
    grok = helpers.get_profile("grok-2")
    assert profiles.resolve_tokenizer_source(None, "grok-2") == grok.tokenizer_id
    assert profiles.resolve_tokenizer_source(grok.model_id, "grok-2") == grok.tokenizer_id
    assert profiles.resolve_tokenizer_source(tmp_path, "grok-2") == str(tmp_path)


def test_model_override_keeps_the_profile_sizes_and_plans_from_the_folder(monkeypatch, tmp_path):
    from helpers.profiles import PROFILES, get_profile

    model = helpers.load_model(helpers.TINY_MODEL_DIR, verbose=False)
    folder = tmp_path / "my-copy"
    model.save_pretrained(folder)
    helpers.load_tokenizer(helpers.TINY_MODEL_DIR).save_pretrained(folder)
    monkeypatch.setenv("GROK2_COURSE_MODEL", str(folder))
    monkeypatch.setenv("GROK2_COURSE_PROFILE", "small")
    profile = get_profile("small")
    assert get_profile() == profile
    assert profile.model_id == profile.tokenizer_id == str(folder.resolve())
    assert profile.sizes == PROFILES["small"].sizes and profile.offline
    assert profile.planning_config == str(folder.resolve() / "config.json")
    assert helpers.plan_profile("small").total_params == sum(p.numel() for p in model.parameters())
    loaded = helpers.load_model(profile="small", verbose=False)
    assert type(loaded) is type(model) and loaded.config.hidden_size == model.config.hidden_size
    assert PROFILES["small"].model_id.startswith("ibm-granite/")  # the registry itself is untouched
    # Only the profile in use is replaced: Grok 2.5's own plan (lesson 03, section 8) stays Grok 2.5's.
    assert get_profile("grok-2") == PROFILES["grok-2"] and get_profile("tiny") == PROFILES["tiny"]
    assert helpers.plan_profile("grok-2").total_params == 269_515_497_472


def test_model_override_refuses_a_folder_without_a_model_and_the_tiny_profile(monkeypatch, tmp_path):
    from helpers.profiles import get_profile

    monkeypatch.setenv("GROK2_COURSE_MODEL", str(tmp_path))
    monkeypatch.setenv("GROK2_COURSE_PROFILE", "tiny")
    with pytest.raises(CourseError, match="tiny profile always uses the built-in"):
        get_profile()
    monkeypatch.setenv("GROK2_COURSE_PROFILE", "small")
    with pytest.raises(CourseError, match="not a model folder"):
        get_profile("small")
    monkeypatch.setenv("GROK2_COURSE_MODEL", "someone/another-model")
    hub = get_profile("small")
    assert hub.model_id == "someone/another-model" and not hub.offline and hub.planning_config == "someone/another-model"
