"""8-bit and 4-bit loading on CPU: footprints match the planner, quality is close to (not equal to) full precision."""

from __future__ import annotations

import pytest

import helpers
from helpers.errors import CourseError
from helpers.evaluation import agreement, measure_speed, perplexity
from helpers.quantization import quantization_config, quantization_support, quantized_module_bytes

TEXTS = (helpers.paths.DATA_DIR / "heldout_course_text.txt").read_text().splitlines()


@pytest.fixture(scope="module")
def base():
    return helpers.load_model(verbose=False)


@pytest.fixture(scope="module")
def tokenizer():
    return helpers.load_tokenizer()


@pytest.mark.parametrize("kind, tolerance", [("nf4", 0.15), ("fp4", 0.15), ("int8", 0.15)])
def test_measured_footprint_matches_the_planner(kind, tolerance):
    model = helpers.load_model(quantization=kind, verbose=False)
    stored, represented = quantized_module_bytes(model)
    plan = helpers.plan_profile("tiny")
    assert represented == plan.quantizable_params
    assert abs(stored / plan.quantized_matrix_bytes(kind) - 1) < tolerance


def test_router_and_lm_head_stay_in_full_precision():
    import bitsandbytes as bnb

    model = helpers.load_model(quantization="nf4", verbose=False)
    layer = model.model.layers[0]
    assert type(layer.block_sparse_moe.gate).__name__ == "Linear" and type(model.lm_head).__name__ == "Linear"
    assert isinstance(layer.block_sparse_moe.experts[0].w1, bnb.nn.Linear4bit)
    assert isinstance(layer.mlp.gate_proj, bnb.nn.Linear4bit)  # "gate_proj" is not the router


def test_quantized_model_is_close_but_not_identical(base, tokenizer):
    model = helpers.load_model(quantization="nf4", verbose=False)
    close = agreement(base, model, tokenizer, TEXTS)
    assert close.top1 > 0.7 and 0 < close.kl < 1.0
    base_ppl, nf4_ppl = perplexity(base, tokenizer, TEXTS), perplexity(model, tokenizer, TEXTS)
    assert nf4_ppl != base_ppl and abs(nf4_ppl / base_ppl - 1) < 0.5


def test_speed_is_measured(base):
    speed = measure_speed(base, prompt_len=16, new_tokens=4, repeats=1)
    assert speed.prefill_tokens_per_s > 0 and speed.decode_tokens_per_s > 0


def test_settings_and_errors():
    config = quantization_config("nf4", compute_dtype=__import__("torch").bfloat16)
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_quant_type == "nf4"
    assert "lm_head" in config.llm_int8_skip_modules and "block_sparse_moe.gate" in config.llm_int8_skip_modules
    with pytest.raises(CourseError, match="Unknown quantization"):
        quantization_config("int3", None)


def test_macos_gets_an_alternative_instead_of_a_crash(monkeypatch):
    import platform

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    supported, message = quantization_support()
    assert not supported and "GGUF" in message
