"""Production engine commands for Grok 2.5 (from the memory plan) and GGUF export of the tiny Grok 2."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import helpers
from helpers import engines
from helpers.paths import REPO_ROOT

# --------------------------------------------------------------------------------------------------- the plan


@pytest.fixture(scope="module")
def released():
    return engines.plan_deployment(gpu_memory_gb=80, gpus=8)


def test_released_checkpoint_runs_at_tp_8_even_when_memory_allows_less(released):
    assert released.gpus_needed == 4 and released.tensor_parallel == 8
    assert any("split in 8" in note for note in released.notes)
    assert 33 < released.weights_per_gpu_gb < 40  # FP8: "~34 GB per GPU", hence the card's "> 40 GB" GPUs
    assert round(released.disk_gb) == 539


def test_plans_that_cannot_work_are_refused():
    with pytest.raises(helpers.CourseError, match="tensor parallelism 8 only"):
        engines.plan_deployment(gpu_memory_gb=24, gpus=16)  # would need 16 x 24 GB
    with pytest.raises(helpers.CourseError, match="needs 8 GPUs and the node has 4"):
        engines.plan_deployment(gpu_memory_gb=80, gpus=4)


def test_converted_checkpoint_takes_the_tp_from_memory():
    assert engines.plan_deployment(gpu_memory_gb=141, gpus=8, released_layout=False).tensor_parallel == 4
    assert engines.plan_deployment(gpu_memory_gb=80, gpus=8, released_layout=False).tensor_parallel == 4
    assert engines.plan_deployment(gpu_memory_gb=48, gpus=8, released_layout=False).tensor_parallel == 8


# ----------------------------------------------------------------------------------------------- the commands


def test_sglang_command_is_the_model_cards(released):
    command = engines.sglang_command(released, "/local/grok-2")
    text = " ".join(command.argv)
    assert text.startswith("python3 -m sglang.launch_server --model /local/grok-2 "
                           "--tokenizer-path /local/grok-2/tokenizer.tok.json --tp 8 --quantization fp8 "
                           "--attention-backend triton")
    assert "--host 127.0.0.1" in text and command.base_url == "http://127.0.0.1:30000/v1"
    assert command.shell().count("\\\n") == len(command.options) // 2
    with_lora = engines.sglang_command(released, adapters={"mine": "/a/mine"})
    assert with_lora.argv[-3:] == ["--enable-lora", "--lora-paths", "mine=/a/mine"]


def test_vllm_and_llama_cpp_commands(released):
    vllm = engines.vllm_command(released, "/local/grok-2", adapters={"mine": "/a/mine"})
    assert vllm.argv[:3] == ["vllm", "serve", "/local/grok-2"]
    assert vllm.argv[vllm.argv.index("--tensor-parallel-size") + 1] == "8"
    assert ["--lora-modules", "mine=/a/mine"] == vllm.argv[vllm.argv.index("--lora-modules"):][:2]
    assert any("convert_released_checkpoint" in note for note in vllm.notes)
    llama = engines.llama_cpp_command("/m/grok-2-Q4_K_M.gguf", gpu_layers=20)
    assert llama.argv[:3] == ["llama-server", "--model", "/m/grok-2-Q4_K_M.gguf"] and "--jinja" in llama.argv
    assert all("127.0.0.1" in c.argv for c in (vllm, llama))
    steps = engines.gguf_conversion_steps("/local/grok-2")
    assert "alvarobartt/grok-2-tokenizer" in steps[1] and "--outtype bf16" in steps[2] and steps[3].endswith("Q4_K_M")


def test_arguments_are_checked(released):
    for command in (engines.sglang_command(released), engines.vllm_command(released),
                    engines.llama_cpp_command("/m.gguf", threads=4)):
        check = engines.check_arguments(command)
        assert check.ok, (command.engine, check.problems)
    typo = engines.EngineCommand("sglang", ["python3", "-m", "sglang.launch_server", "--model", "/m", "--quantisation",
                                            "fp8"], 30000, parser_argv_start=3)
    check = engines.check_arguments(typo)
    assert not check.ok and any("--quantisation" in p for p in check.problems)


@pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="SGLang is not installed here")
def test_sglang_parser_accepts_the_command(released):  # pragma: no cover - runs where sglang is importable
    check = engines.check_arguments(engines.sglang_command(released))
    assert check.ok and check.checked_with.startswith("sglang") and check.parsed["tp_size"] == 8


def test_recorded_parser_checks_passed():
    """benchmarks/results/engine-args-check.json: the real sglang 0.5.23 / vllm 0.33.0 parsers and llama.cpp's options."""
    recorded = json.loads((REPO_ROOT / "benchmarks" / "results" / "engine-args-check.json").read_text())
    assert {row["engine"] for row in recorded["checks"]} == {"sglang", "vllm", "llama.cpp"}
    assert all(row["ok"] and not row["problems"] for row in recorded["checks"])
    assert any("argument parser" in row["checked_with"] for row in recorded["checks"] if row["engine"] == "sglang")
    current = {" ".join(engines.sglang_command(engines.plan_deployment()).argv)}
    assert current & {" ".join(row["argv"]) for row in recorded["checks"]}, "the recorded check is of today's command"


# ------------------------------------------------------------------------------------------------------- GGUF


def test_gguf_size_table_matches_the_facts():
    sizes = {row["type"]: row["size_GB"] for row in engines.gguf_size_table()}
    assert sizes == {"Q2_K": 89, "Q3_K_M": 132, "Q4_K_M": 163, "Q5_K_M": 192, "Q6_K": 221, "Q8_0": 286, "BF16": 539}
    assert len(engines.LLAMA_CPP_DIFFERENCES) == 4


@pytest.fixture(scope="module")
def tiny():
    return helpers.load_model(verbose=False), helpers.load_tokenizer()


def test_tiny_grok_2_exports_to_a_gguf_llama_cpp_can_load(tmp_path, tiny):
    model, tokenizer = tiny
    path = engines.export_gguf(model, tmp_path / "tiny.gguf", tokenizer=tokenizer)
    report = engines.verify_gguf(path, model, tokenizer)
    assert report["ok"], report["problems"]
    assert report["architecture"] == "grok" and report["tensors"] == len(engines.expected_gguf_tensors(model.config))
    assert report["weights_checked"] == len(model.state_dict()) and report["chat_template"]


def test_gguf_metadata_follows_llama_cpps_converter(tmp_path, tiny):
    import gguf

    model, tokenizer = tiny
    reader = gguf.GGUFReader(str(engines.export_gguf(model, tmp_path / "tiny.gguf", tokenizer=tokenizer)))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("grok.rope.scaling.type") == "yarn"  # the converter's "treat original as yarn"
    assert field("grok.attention.temperature_length") == model.config.attn_temperature_len
    assert abs(field("grok.attention.output_scale") - model.config.head_dim ** -0.5) < 1e-6
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.add_bos_token") is False
    assert field("tokenizer.ggml.eos_token_id") == 2 and field("tokenizer.ggml.padding_token_id") == 0
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    experts = {t.name: t for t in reader.tensors}["blk.0.ffn_down_exps.weight"]
    assert tuple(experts.shape) == (model.config.moe_intermediate_size, model.config.hidden_size, 8)


def test_verify_gguf_catches_a_wrong_file(tmp_path, tiny):
    model, tokenizer = tiny
    path = engines.export_gguf(model, tmp_path / "tiny.gguf", tokenizer=tokenizer)
    changed = helpers.load_model(verbose=False)
    with torch.no_grad():
        changed.model.layers[1].block_sparse_moe.experts[3].w2.weight.add_(1.0)
    report = engines.verify_gguf(path, changed, tokenizer)
    assert report["problems"] == ["model.layers.1.block_sparse_moe.experts.3.w2.weight: values differ from the model's"]
    with pytest.raises(helpers.CourseError, match="Grok 2 models only"):
        from transformers import GPT2Config, GPT2LMHeadModel

        engines.export_gguf(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16)),
                            tmp_path / "gpt2.gguf", tokenizer=tokenizer)


def test_plain_rope_variant_and_end_of_turn(tmp_path, tiny):
    import gguf

    model, tokenizer = tiny
    reader = gguf.GGUFReader(str(engines.export_gguf(model, tmp_path / "plain.gguf", tokenizer=tokenizer,
                                                     rope_as_converter=False)))
    assert "grok.rope.scaling.type" not in reader.fields
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == 1  # <|separator|> ends a turn in llama.cpp


def test_recorded_llama_cpp_run_agrees_with_transformers():
    """benchmarks/results/gguf-llama-cpp-check.json: the exported file run by llama.cpp itself (see the script)."""
    recorded = json.loads((REPO_ROOT / "benchmarks" / "results" / "gguf-llama-cpp-check.json").read_text())
    plain, converter = recorded["variants"]["plain RoPE"], recorded["variants"]["as the converter writes it (YaRN)"]
    assert plain["gguf_verified"] and converter["gguf_verified"]
    assert plain["identical_answers"] >= 0.9 * recorded["questions"] > converter["identical_answers"]
