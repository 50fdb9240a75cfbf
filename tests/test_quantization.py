"""8-bit and 4-bit loading on CPU: footprints match the planner, quality is close to (not equal to) full precision,
every knob is explained, and machines without bitsandbytes kernels get a clear error naming the alternative."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch

import helpers
from helpers import quantization as quant
from helpers.errors import CourseError
from helpers.evaluation import (
    agreement,
    kl_divergence,
    measure_speed,
    next_token_logprobs,
    perplexity,
)
from helpers.paths import DATA_DIR

HELDOUT = (DATA_DIR / "heldout_course_text.txt").read_text().splitlines()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tokenizer too: tests/conftest.py


@pytest.fixture(scope="module", autouse=True)
def quiet_int8_cast_notice():
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)  # int8's fp32 -> fp16 cast notice


@pytest.fixture(scope="module")
def loaded():
    """Each precision's model, with its footprint measured right after loading (a forward pass can re-pack it)."""
    out = {}
    for kind in (None, "int8", "nf4", "fp4"):
        model = helpers.load_model(quantization=kind, verbose=False)
        out[kind] = (model, quant.quantized_footprint(model))
    return out


@pytest.fixture(scope="module")
def models(loaded):
    return {kind: model for kind, (model, _) in loaded.items()}


@pytest.fixture(scope="module")
def course_qa(tokenizer):
    lines = (DATA_DIR / "course_qa.jsonl").read_text().splitlines()[:16]
    return [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False) for line in lines]


# ----------------------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize("kind", ["int8", "nf4", "fp4"])
def test_measured_footprint_matches_the_planner(loaded, kind):
    model, footprint = loaded[kind]
    plan = helpers.plan_profile("tiny")
    # Same matrices as the planner counts: the comparison below compares like with like ...
    assert footprint.kind == kind
    assert (footprint.matrices, footprint.weights) == (plan.quantizable_matrices, plan.quantizable_params)
    assert quant.planned_bytes(footprint, kind) == pytest.approx(plan.quantized_matrix_bytes(kind))
    # ... and the bytes really stored (codes + scales + code books) are within 15% of the planner's figure.
    assert abs(footprint.stored_bytes / plan.quantized_matrix_bytes(kind) - 1) < 0.15
    # The whole model, counted the same way on both sides (the rest at the load dtype, fp32 here).
    whole = quant.whole_model_bytes(model) if footprint.cpu_repacked == 0 else None
    if whole is not None:
        assert abs(whole / quant.planned_model_bytes(plan, kind, torch.float32) - 1) < 0.15


def test_four_bit_bytes_add_up(loaded):
    footprint = loaded["nf4"][1]
    assert footprint.packed_bytes == footprint.weights // 2  # two 4-bit codes per byte
    assert footprint.scale_bytes >= footprint.weights // 64  # >= one 8-bit absmax per block of 64 (double quant)
    assert footprint.codebook_bytes == footprint.matrices * quant.FOUR_BIT_BYTES_PER_MATRIX
    assert 4.1 < footprint.bits_per_weight < 6.5  # 4.127 + the per-matrix code books, heavy on a toy model


def test_footprint_follows_what_a_forward_pass_changes():
    from bitsandbytes.functional import has_avx512bf16

    int8, nf4 = (helpers.load_model(quantization=kind, verbose=False) for kind in ("int8", "nf4"))
    before = {kind: quant.quantized_footprint(m) for kind, m in (("int8", int8), ("nf4", nf4))}
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        int8(ids), nf4(ids)
    after = {kind: quant.quantized_footprint(m) for kind, m in (("int8", int8), ("nf4", nf4))}
    assert after["int8"] == before["int8"]  # the row scales moved from the weight to the layer's state: still counted
    if has_avx512bf16():  # the matrices that ran were re-packed for the bf16 CPU kernel: no more double quantization
        assert 0 < after["nf4"].cpu_repacked <= after["nf4"].matrices
        assert after["nf4"].packed_bytes == before["nf4"].packed_bytes
        assert after["nf4"].codebook_bytes < before["nf4"].codebook_bytes  # second-level code books gone
    else:
        assert after["nf4"] == before["nf4"]


def test_full_precision_footprint_matches_the_planner(models):
    planned = quant.planned_model_bytes(helpers.plan_profile("tiny"), None, torch.float32)
    assert quant.whole_model_bytes(models[None]) == pytest.approx(planned, rel=0.01)  # + a few buffers


def test_router_and_lm_head_stay_in_full_precision(models):
    import bitsandbytes as bnb

    model = models["nf4"]
    layer = model.model.layers[0]
    assert type(layer.block_sparse_moe.gate) is torch.nn.Linear and type(model.lm_head) is torch.nn.Linear
    assert isinstance(layer.block_sparse_moe.experts[0].w1, bnb.nn.Linear4bit)
    assert isinstance(layer.mlp.gate_proj, bnb.nn.Linear4bit)  # "gate_proj" is not the router
    left = quant.unquantized_matrices(model)
    assert set(left) == {"model.embed_tokens.weight", "lm_head.weight"} | {
        f"model.layers.{i}.block_sparse_moe.gate.weight" for i in range(model.config.num_hidden_layers)}


def test_moe_experts_stored_as_3d_tensors_stay_unquantized(tmp_path):
    """bitsandbytes (through transformers) replaces nn.Linear layers only: a transformers v5 MoE such as Granite keeps
    its experts in one 3D tensor per layer, which therefore stays 16-bit. Grok 2's experts are nn.Linear: quantized."""
    from transformers import GraniteMoeConfig, GraniteMoeForCausalLM

    config = GraniteMoeConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=256)
    torch.manual_seed(0)
    GraniteMoeForCausalLM(config).save_pretrained(tmp_path)
    model = helpers.load_model(tmp_path, quantization="nf4", verbose=False)
    left = quant.unquantized_matrices(model)
    assert any(name.endswith("experts.gate_up_proj") for name in left)
    assert quant.quantized_footprint(model).matrices == 2 * 4  # q, k, v, o per layer


# ---------------------------------------------------------------------------------------------------- quality


def test_quantized_model_is_close_but_not_identical(models, tokenizer, course_qa):
    base = models[None]
    for texts in (HELDOUT, course_qa):
        reference = next_token_logprobs(base, tokenizer, texts)
        int8, nf4 = (agreement(reference, models[kind], tokenizer, texts) for kind in ("int8", "nf4"))
        assert nf4.top1 > 0.6 and 0 < nf4.kl < 0.5, nf4  # close, not identical ...
        assert int8.top1 > 0.9 and 0 < int8.kl < nf4.kl, (int8, nf4)  # ... and 8 bits are closer than 4
        base_ppl, nf4_ppl = perplexity(base, tokenizer, texts), perplexity(models["nf4"], tokenizer, texts)
        assert nf4_ppl != base_ppl and abs(nf4_ppl / base_ppl - 1) < 0.2


def test_agreement_with_itself_is_perfect(models, tokenizer):
    same = agreement(models[None], models[None], tokenizer, HELDOUT[:3])
    assert same.top1 == 1.0 and same.kl == 0.0 and same.positions > 0


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            return type("Output", (), {"logits": torch.zeros(*ids.shape, 50)})()

    texts = [[1, 2, 3, 4], [5, 6, 7]]
    assert perplexity(Uniform(), None, texts) == pytest.approx(50)
    p = torch.tensor([[0.5, 0.5]]).log()
    assert kl_divergence(p, p).item() == 0 and kl_divergence(p, torch.tensor([[0.9, 0.1]]).log()).item() > 0


def test_speed_is_measured(models):
    speed = measure_speed(models[None], prompt_len=16, new_tokens=4, repeats=1)
    assert speed.prefill_tokens_per_s > 0 and speed.decode_tokens_per_s > 0
    assert speed.decode_s_per_token == pytest.approx(1 / speed.decode_tokens_per_s)


# ------------------------------------------------------------------------------------------- settings, errors


def test_settings_and_every_knob_explained():
    config = quant.quantization_config("nf4", compute_dtype=torch.bfloat16)
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_quant_storage == torch.uint8  # FSDP-QLoRA (scripts/train_lora.py) packs into bf16 instead:
    fsdp = quant.quantization_config("nf4", torch.bfloat16, check_support=False, storage=torch.bfloat16)
    assert fsdp.bnb_4bit_quant_storage == torch.bfloat16 and fsdp.to_dict() | {"bnb_4bit_quant_storage": "uint8"} == \
        config.to_dict()
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert "lm_head" in config.llm_int8_skip_modules and "block_sparse_moe.gate" in config.llm_int8_skip_modules
    assert set(config.llm_int8_skip_modules) <= set(quant.KEEP_REASONS)
    assert quant.quantization_config(None, torch.float32) is None
    for kind in ("int8", "nf4"):
        rows = quant.explain_config(quant.quantization_config(kind, torch.float32))
        assert rows and all("not explained" not in row["why"] for row in rows), rows


def test_unknown_quantization_is_a_course_error():
    with pytest.raises(CourseError, match="Unknown quantization"):
        quant.quantization_config("int3", None)
    with pytest.raises(CourseError, match="'nf4'"):
        helpers.load_model(quantization="4bit", verbose=False)  # refused by the planner, before any loading


def test_this_machine_can_quantize():
    support = quant.quantization_support()
    assert support.available and support.device == "cpu" and "CPU" in support.message


def test_macos_without_a_kernel_gets_the_alternative_instead_of_a_crash(monkeypatch):
    monkeypatch.setattr(quant.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(quant, "_probe", lambda device: "RuntimeError: no kernel for mps")
    support = quant.quantization_support("mps")
    assert not support.available and "macOS" in support.message
    assert "GGUF" in support.alternative and "llama.cpp" in support.alternative and "MLX" in support.alternative
    with pytest.raises(CourseError, match="cannot run here") as error:
        quant.quantization_config("nf4", torch.float16)
    assert "GGUF" in error.value.fix
    with pytest.raises(CourseError, match="GGUF"):
        helpers.load_model(quantization="nf4", verbose=False)
    assert quant.quantization_config("nf4", torch.float16, check_support=False) is not None  # settings still shown


def test_macos_with_fallbacks_works_and_says_so(monkeypatch):
    monkeypatch.setattr(quant.platform, "system", lambda: "Darwin")
    support = quant.quantization_support("cpu")
    assert support.available and "macOS" in support.message and "GGUF" in support.alternative


def test_missing_bitsandbytes_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    support = quant.quantization_support()
    assert not support.available and "pip install" in support.alternative


# ------------------------------------------------------------------------------------------------ the benchmark


def test_benchmark_script_runs_end_to_end(tmp_path, repo_script):
    out = repo_script("quantization_benchmark").main(["--model", "llama-smoke", "--prompt-len", "8", "--new-tokens", "2", "--repeats", "1",
                          "--fidelity-prompts", "2", "--out", str(tmp_path)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert [row["precision"] for row in result["rows"]] == ["fp32", "int8", "nf4", "fp4"]
    assert result["machine"]["device"] == "cpu" and set(result["versions"]) == {"torch", "transformers", "bitsandbytes"}
    for row in result["rows"][1:]:
        assert abs(row["quantized_stored_bytes"] / row["planner_bytes_same_matrices"] - 1) < 0.15
        assert row["planner_bytes_same_matrices"] == row["planner_bytes_expected_matrices"]  # Llama: nn.Linear only
    assert "| precision |" in out.with_suffix(".md").read_text()


def test_two_harmless_bitsandbytes_lines_are_dropped_and_nothing_else(caplog):
    """`import helpers` filters the two bitsandbytes log lines a learner cannot act on (the optional Hub kernel of
    AVX512-BF16 CPUs, LLM.int8's cast notice); any other line of the same loggers still shows."""
    quant.quiet_harmless_bitsandbytes_notices()  # idempotent: importing helpers did it already
    for name, (start, why) in quant.HARMLESS_BITSANDBYTES_NOTICES.items():
        logger = logging.getLogger(name)
        assert sum(isinstance(f, quant._DropHarmlessNotice) for f in logger.filters) == 1 and why
        with caplog.at_level(logging.WARNING, logger=name):
            logger.warning("%s: %s", start, "the details bitsandbytes adds")
            logger.warning("another problem, worth seeing")
        assert [r.getMessage() for r in caplog.records if r.name == name] == ["another problem, worth seeing"]
        caplog.clear()
