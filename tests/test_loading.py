"""load_model / load_tokenizer: right dtype and placement per machine, and clear refusals with the fix."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, GraniteMoeConfig

import helpers
from helpers.errors import CourseError
from helpers.loading import check_local_folder, choose_dtype, load_config, plan_placement
from helpers.hardware import GPU, Hardware
from helpers.memory import plan_memory
from helpers.units import GB


def fake_hardware(device="cpu", gpus=(), ram_gb=16.0):
    return Hardware(
        device=device,
        gpus=[GPU(i, n, int(t * GB), int(t * GB), c) for i, (n, c, t) in enumerate(gpus)],
        ram_total_bytes=int(ram_gb * GB),
        ram_available_bytes=int(ram_gb * GB),
    )


T4 = ("Tesla T4", (7, 5), 15.0)
H100 = ("NVIDIA H100 80GB HBM3", (9, 0), 80.0)


@pytest.fixture(scope="module")
def grok2_plan():
    return plan_memory(AutoConfig.from_pretrained(helpers.GROK2_RELEASED_CONFIG), "xai-org/grok-2")


@pytest.fixture(scope="module")
def granite_plan():
    config = GraniteMoeConfig(
        hidden_size=1536, intermediate_size=512, num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8,
        num_local_experts=40, num_experts_per_tok=8, vocab_size=49155, tie_word_embeddings=True,
    )
    return plan_memory(config, "granite-3b-a800m")


def test_dtype_follows_the_hardware(granite_plan):
    assert choose_dtype("auto", fake_hardware("cuda", [T4]), granite_plan) == torch.float16  # T4 has no bf16
    assert choose_dtype("auto", fake_hardware("cuda", [H100]), granite_plan) == torch.bfloat16
    assert choose_dtype("auto", fake_hardware("cpu", ram_gb=64), granite_plan) == torch.float32
    assert choose_dtype("auto", fake_hardware("cpu", ram_gb=20), granite_plan) == torch.bfloat16
    assert choose_dtype("float16", fake_hardware(), granite_plan) == torch.float16


def test_small_profile_fits_one_t4(granite_plan):
    placement = plan_placement(granite_plan, fake_hardware("cuda", [T4]), torch.float16, None, "auto", None)
    assert placement.device_map == {"": 0}


def test_grok2_is_refused_on_a_24gb_gpu_with_numbers_and_alternatives(grok2_plan):
    rtx4090 = ("RTX 4090", (8, 9), 24.0)
    with pytest.raises(CourseError) as error:
        plan_placement(grok2_plan, fake_hardware("cuda", [rtx4090], ram_gb=64), torch.bfloat16, None, "auto", None)
    message = str(error.value)
    assert "539.0 GB" in message and "269.5B" in message and "Nothing was downloaded" in message
    assert "x 80 GB GPUs" in message and "Fix:" in message


def test_grok2_bf16_spreads_over_eight_h100s_and_nf4_over_two(grok2_plan):
    eight = fake_hardware("cuda", [H100] * 8, ram_gb=1000)
    placement = plan_placement(grok2_plan, eight, torch.bfloat16, None, "auto", None)
    assert placement.device_map == "auto" and len(placement.max_memory) == 8
    two = fake_hardware("cuda", [H100] * 2, ram_gb=64)
    assert plan_placement(grok2_plan, two, torch.bfloat16, "nf4", "auto", None).device_map == "auto"
    with pytest.raises(CourseError):
        plan_placement(grok2_plan, two, torch.bfloat16, None, "auto", None)


def test_cpu_machine_suggests_quantization_when_that_fits():
    from transformers import LlamaConfig

    # TinyLlama-1.1B's shape: 2.2 GB in bf16, ~0.76 GB in 4-bit (measured on an H100, benchmarks/results).
    llama = plan_memory(LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                    num_attention_heads=32, num_key_value_heads=4, vocab_size=32000), "llama-1b")
    with pytest.raises(CourseError, match='quantization="nf4"'):
        plan_placement(llama, fake_hardware("cpu", ram_gb=1.5), torch.bfloat16, None, "auto", None)


def test_bitsandbytes_leaves_stacked_experts_in_16_bit(granite_plan):
    # transformers v5 stores a MoE layer's experts as one 3D tensor; bitsandbytes only quantizes nn.Linear, so 4-bit
    # hardly shrinks Granite 3B-A800M (6.6 -> 6.3 GB, measured on an H100) while FP8 engines halve it.
    assert granite_plan.stacked_expert_params > 0.9 * granite_plan.expert_params
    assert granite_plan.weight_bytes("nf4") > 0.9 * granite_plan.weight_bytes("bf16")
    assert granite_plan.weight_bytes("fp8") < 0.55 * granite_plan.weight_bytes("bf16")
    with pytest.raises(CourseError, match="Even 4-bit needs"):
        plan_placement(granite_plan, fake_hardware("cpu", ram_gb=3.5), torch.bfloat16, None, "auto", None)


def test_lfs_pointer_is_caught_before_loading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 8924160\n"
    )
    with pytest.raises(CourseError, match="Git LFS pointers") as error:
        check_local_folder(tmp_path)
    assert "git lfs pull" in str(error.value)


def test_missing_config_and_bad_ids(tmp_path):
    with pytest.raises(CourseError, match="No config.json"):
        load_config(str(tmp_path))
    with pytest.raises(CourseError, match="neither an existing folder nor a hub id"):
        load_config("no/such/folder/here")


def test_unknown_hub_id_offline_is_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CourseError, match="hub") as error:
        load_config("nobody-at-all/no-such-model-xyz")
    assert "HF_HUB_OFFLINE" in str(error.value) or "GROK2_COURSE_PROFILE=tiny" in str(error.value)


def test_released_grok2_config_plans_offline():
    config = load_config("xai-org/grok-2")
    assert isinstance(config, helpers.grok2.Grok2Config) and config.num_hidden_layers == 64


def test_refuses_grok2_here_before_downloading():
    """On this CPU machine the real Grok 2.5 is refused from its config alone."""
    with pytest.raises(CourseError, match="does not fit"):
        helpers.load_model(profile="grok-2")


def test_loads_the_tiny_model_for_the_profile():
    model = helpers.load_model(verbose=False)
    tokenizer = helpers.load_tokenizer()
    assert type(model).__name__ == "Grok2ForCausalLM" and not model.training
    assert model.dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == 0
