"""Lesson 05's machinery: data validation, the answer-only loss mask, LoRA targets, deterministic training that
resumes bit-for-bit (in process, and after a SIGKILL of the script), gradient accumulation, the adapter round trip
and merge, QLoRA gradients, the memory plan for Grok 2.5, the accelerate configurations, and a real 2-process
`accelerate launch` (DDP over gloo on CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import helpers
from helpers import evaluation, finetune, widgets
from helpers.units import GB
from helpers.paths import DATA_DIR, REPO_ROOT

FINETUNE_DATA = DATA_DIR / "finetune"
SCRIPT = REPO_ROOT / "scripts" / "train_lora.py"
CONFIGS = REPO_ROOT / "configs" / "accelerate"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tokenizer: tests/conftest.py


@pytest.fixture(scope="module")
def rows():
    return (finetune.load_chat_jsonl(FINETUNE_DATA / "faq_fr_train.jsonl"),
            finetune.load_chat_jsonl(FINETUNE_DATA / "faq_fr_heldout.jsonl"))


@pytest.fixture(scope="module")
def sets(tokenizer, rows):
    max_len = helpers.get_profile("tiny").sizes.max_seq_len
    return finetune.encode_dataset(tokenizer, rows[0], max_len), finetune.encode_dataset(tokenizer, rows[1], max_len)


def tiny_lora(settings: finetune.LoraSettings, seed: int = 0, quantization: str | None = None):
    return finetune.apply_lora(helpers.load_model(profile="tiny", quantization=quantization, verbose=False),
                               settings, seed=seed)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------------------- data


def test_shipped_sets_validate_fit_and_match_their_source(rows, sets):
    train_rows, heldout_rows = rows
    assert len(train_rows) >= 200 and len(heldout_rows) >= 50
    finetune.check_heldout_is_new(train_rows, heldout_rows)
    assert all(e.answer_tokens > 0 for e in sets[0] + sets[1])
    spec = importlib.util.spec_from_file_location("faq_fr_source", FINETUNE_DATA / "faq_fr_source.py")
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    train, heldout = source.splits()
    assert [r["messages"] for r in train] == train_rows, "re-run data/finetune/faq_fr_source.py"
    assert [r["messages"] for r in heldout] == heldout_rows, "re-run data/finetune/faq_fr_source.py"


def test_validation_reports_every_bad_line_and_loads_nothing():
    good = json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})
    lines = [
        good,                                                                              # 1 fine
        "{not json",                                                                       # 2
        json.dumps([1, 2]),                                                                # 3 not an object
        json.dumps({"conversation": []}),                                                  # 4 no "messages"
        json.dumps({"messages": []}),                                                      # 5 empty
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "A"}]}),  # 6
        json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "A"}]}),  # 7
        json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A<|separator|>"}]}),
        json.dumps({"messages": [{"role": "user", "content": "Q", "name": "x"}, {"role": "assistant", "content": "A"}]}),
        json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "system", "content": "S"},
                                 {"role": "assistant", "content": "A"}]}),                 # 10 system not first
        json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}]}),  # 11
        json.dumps({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]}),  # 12
        "",                                                                                # 13 empty line
        good,
    ]
    with pytest.raises(finetune.DataError) as caught:
        finetune.validate_chat_rows(lines, source="bad.jsonl")
    numbers = sorted({int(p.split(":")[0].split()[1]) for p in caught.value.problems})
    assert numbers == list(range(2, 14))
    assert "bad.jsonl" in str(caught.value) and "Fix:" in str(caught.value)
    assert any("control token" in p for p in caught.value.problems)
    assert finetune.validate_chat_rows([good, good]) == [json.loads(good)["messages"]] * 2


def test_missing_file_and_leaked_heldout_questions_are_refused(tmp_path, rows):
    with pytest.raises(helpers.CourseError):
        finetune.load_chat_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(helpers.CourseError, match="also appear in the training set"):
        finetune.check_heldout_is_new(rows[0], rows[0][:3])


def test_loss_mask_covers_answers_and_their_separator_only(tokenizer, rows):
    train_rows = rows[0]
    single = train_rows[0]
    example = finetune.encode_conversation(tokenizer, single)
    learned = tokenizer.decode([label for label in example.labels if label != -100])
    assert learned == " " + single[-1]["content"] + "<|separator|>"
    whole = tokenizer(tokenizer.apply_chat_template(single, tokenize=False), add_special_tokens=False)["input_ids"]
    assert list(example.input_ids) == whole
    # a system prompt and a second turn: both answers are learned, nothing else
    system = next(c for c in train_rows if c[0]["role"] == "system")
    two_turns = next(c for c in train_rows if len(c) == 4)
    for conversation in (system, two_turns):
        example = finetune.encode_conversation(tokenizer, conversation)
        learned = tokenizer.decode([label for label in example.labels if label != -100])
        answers = [m["content"] for m in conversation if m["role"] == "assistant"]
        assert learned == "".join(f" {a}<|separator|>" for a in answers)
        prompt_ids = [i for i, label in zip(example.input_ids, example.labels) if label == -100]
        assert "Human" in tokenizer.decode(prompt_ids)


def test_too_long_rows_are_refused_not_cut(tokenizer, rows):
    with pytest.raises(helpers.CourseError, match="exceed max_len=8"):
        finetune.encode_dataset(tokenizer, rows[0][:3], max_len=8)


def test_micro_batches_are_a_pure_function_of_seed_and_index():
    n, batch = 10, 4
    first_epoch = [i for k in range(0, 10, 2) for i in finetune.micro_batch_indices(n, 2, seed=3, micro_batch=k // 2)]
    assert sorted(first_epoch) == list(range(n))
    assert finetune.micro_batch_indices(n, batch, 3, 7) == finetune.micro_batch_indices(n, batch, 3, 7)
    assert finetune.micro_batch_indices(n, batch, 3, 0) != finetune.micro_batch_indices(n, batch, 4, 0)


# ---------------------------------------------------------------------------------------------------- adapters


def test_lora_targets_every_part_but_never_the_router():
    base = helpers.load_model(profile="tiny", verbose=False)
    layers = base.config.num_hidden_layers
    settings = finetune.LoraSettings(rank=4, alpha=8)
    found = finetune.find_lora_targets(base, settings)
    assert {k: len(v) for k, v in found.items()} == {"attention": 4 * layers, "dense_mlp": 3 * layers,
                                                     "experts": 3 * base.config.num_local_experts * layers}
    assert not any("block_sparse_moe.gate" in n for names in found.values() for n in names)
    model = finetune.apply_lora(base, settings)
    trainable, total = finetune.count_parameters(model)
    assert trainable == finetune.plan_lora(model.config, settings, precision="fp32").lora_params
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    attention_only = finetune.LoraSettings(rank=4, parts=("attention",))
    c = model.config
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    per_layer = 4 * ((c.hidden_size + q) + 2 * (c.hidden_size + kv) + (q + c.hidden_size))
    assert finetune.plan_lora(c, attention_only).lora_params_by_part == {"attention": layers * per_layer}
    with pytest.raises(helpers.CourseError):
        finetune.LoraSettings(parts=("router",))


def train_tiny(sets, steps=6, checkpoint_dir=None, seed=0, dropout=0.05, **kwargs):
    model = tiny_lora(finetune.LoraSettings(rank=4, alpha=8, dropout=dropout), seed=seed)
    settings = finetune.TrainSettings(steps=steps, batch_size=4, learning_rate=5e-3, warmup_steps=2, seed=seed,
                                      eval_every=2, save_every=2)
    result = finetune.train(model, sets[0], settings, heldout=sets[1][:8], checkpoint_dir=checkpoint_dir,
                            progress=False, **kwargs)
    return model, result


def test_resumed_training_is_bit_for_bit_the_uninterrupted_run(tmp_path, sets):
    reference, full = train_tiny(sets, checkpoint_dir=tmp_path / "a")
    assert not full.interrupted and full.steps_done == 6
    _, first = train_tiny(sets, checkpoint_dir=tmp_path / "b", stop_after=3)
    assert first.interrupted and first.steps_done == 3
    assert [p.name for p in finetune.list_checkpoints(tmp_path / "b")] == ["checkpoint-000002", "checkpoint-000003"]
    resumed, second = train_tiny(sets, checkpoint_dir=tmp_path / "b")  # a fresh process would do exactly this
    assert second.resumed_from == 3 and second.steps_done == 6
    expected, got = trainable_state(reference), trainable_state(resumed)
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    assert [r.get("loss") for r in second.history] == [r.get("loss") for r in full.history]
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_resume_with_other_settings_is_refused(tmp_path, sets):
    train_tiny(sets, steps=2, checkpoint_dir=tmp_path)
    with pytest.raises(helpers.CourseError, match="different settings"):
        train_tiny(sets, steps=4, checkpoint_dir=tmp_path)


def test_keyboard_interrupt_checkpoints_the_last_completed_step(tmp_path, sets):
    def interrupt(record, history):
        if record["step"] == 1:
            raise KeyboardInterrupt

    _, result = train_tiny(sets, checkpoint_dir=tmp_path, callbacks=[interrupt])
    assert result.interrupted and result.steps_done == 1
    assert [p.name for p in finetune.list_checkpoints(tmp_path)] == ["checkpoint-000001"]


def test_gradient_accumulation_gives_the_big_batch_update(sets):
    def update(batch_size, accumulation):
        model = tiny_lora(finetune.LoraSettings(rank=4, dropout=0.0), seed=1)
        start = trainable_state(model)
        settings = finetune.TrainSettings(steps=1, batch_size=batch_size, grad_accum_steps=accumulation, seed=1,
                                          optimizer="sgd", learning_rate=1.0, warmup_steps=0, max_grad_norm=0.0,
                                          eval_every=0, save_every=0)
        finetune.train(model, sets[0], settings, progress=False)
        return {n: p - start[n] for n, p in trainable_state(model).items()}

    big, accumulated = update(8, 1), update(4, 2)
    scale = max(u.abs().max().item() for u in big.values())
    assert scale > 1e-4
    assert max((big[n] - accumulated[n]).abs().max().item() for n in big) < 1e-4 * scale


def test_paged_optimizer_needs_cuda():
    settings = finetune.TrainSettings(steps=1, batch_size=1, optimizer="paged_adamw_8bit")
    with pytest.raises(helpers.CourseError, match="CUDA"):
        finetune.make_optimizer([torch.nn.Parameter(torch.zeros(1))], settings, torch.device("cpu"))
    auto = finetune.TrainSettings(steps=1, batch_size=1)
    assert isinstance(finetune.make_optimizer([torch.nn.Parameter(torch.zeros(1))], auto, torch.device("cpu")),
                      torch.optim.AdamW)


# ---------------------------------------------------------------------------------------- save, reload, merge


def test_adapter_round_trip_and_merge_give_the_same_outputs(tmp_path, sets, tokenizer, rows):
    model, _ = train_tiny(sets, steps=3)
    saved = finetune.save_adapter(model, tmp_path / "adapter")
    assert set(saved["files"]) >= {"adapter_config.json", "adapter_model.safetensors"}
    trainable, _ = finetune.count_parameters(model)
    assert saved["files"]["adapter_model.safetensors"] < 4 * trainable + 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # nothing temporary left beside it
    probe = rows[1][:4]
    reloaded = finetune.load_adapter(helpers.load_model(profile="tiny", verbose=False), tmp_path / "adapter")
    assert finetune.max_logit_difference(model, reloaded, tokenizer, probe) == 0.0
    merged = reloaded.merge_and_unload()
    assert not any("lora" in name for name, _ in merged.named_modules())
    assert finetune.max_logit_difference(model, merged, tokenizer, probe) < 1e-3
    # and the adapter really changed the model
    base = helpers.load_model(profile="tiny", verbose=False)
    assert finetune.max_logit_difference(base, merged, tokenizer, probe) > 1e-3
    with pytest.raises(helpers.CourseError):
        finetune.load_adapter(base, tmp_path)


def test_save_adapter_is_atomic(tmp_path, sets, monkeypatch):
    model, _ = train_tiny(sets, steps=1)
    target = tmp_path / "adapter"
    finetune.save_adapter(model, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_save(directory, **kwargs):
        (Path(directory) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        finetune.save_adapter(model, target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


# --------------------------------------------------------------------------------------------------------- QLoRA


def test_qlora_gradients_equal_those_of_the_dequantized_model(sets):
    """bitsandbytes repacks 4-bit weights for a CPU inference kernel without backward after an eval-mode forward;
    apply_lora / keep_4bit_differentiable must keep the gradients exact anyway."""
    import bitsandbytes as bnb

    support = helpers.quantization.quantization_support()
    if not support.available:
        pytest.skip(support.message)
    settings = finetune.LoraSettings(rank=4, dropout=0.0)
    batch = finetune.collate(sets[0][:6], 0)
    quantized = tiny_lora(settings, seed=3, quantization="nf4")
    quantized.eval()
    with torch.no_grad():  # what train() does first (held-out loss), the case that used to break gradients
        quantized(input_ids=batch["input_ids"][:1, :5], use_cache=False)
    finetune.keep_4bit_differentiable(quantized)
    twin = helpers.load_model(profile="tiny", verbose=False)
    state = twin.state_dict()
    layers = 0
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            key = name.replace("base_model.model.", "").replace(".base_layer", "") + ".weight"
            state[key] = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            layers += 1
    assert layers > 0
    twin.load_state_dict(state)
    twin = finetune.apply_lora(twin, settings, seed=3)
    for model in (quantized, twin):
        model.train()
        loss, count = finetune.summed_label_loss(model, batch)
        (loss / count).backward()
    grads_q = {n: p.grad for n, p in quantized.named_parameters() if p.grad is not None}
    grads_t = {n: p.grad for n, p in twin.named_parameters() if p.grad is not None}
    assert grads_q.keys() == grads_t.keys() and grads_q
    for name, grad in grads_t.items():
        assert torch.allclose(grads_q[name], grad, rtol=1e-4, atol=1e-6), name


# ------------------------------------------------------------------------------------------------- evaluation


def test_answer_metrics():
    assert evaluation.token_f1("64 couches.", "64 couches.") == 1.0
    assert evaluation.exact_match("Oui, c'est permis !", "oui c est permis")
    assert evaluation.token_f1("Non, la licence l'interdit.", "Oui, c'est permis.") == 0.0
    assert 0 < evaluation.token_f1("8 experts par token.", "8 experts par couche.") < 1
    assert evaluation.normalize_answer("Une RMSNorm avant et après chaque bloc.")[-3:] == ["après", "chaque", "bloc"]


def test_every_name_the_lessons_and_scripts_use_is_still_importable_from_finetune():
    """Learners see no change from the split into helpers/finetune/: each `finetune.X` that lesson 05, its solutions,
    the training script, the benchmark and the exercise checks use still resolves."""
    sources = [REPO_ROOT / "notebooks" / "05_lora_finetuning.ipynb",
               REPO_ROOT / "notebooks" / "solutions" / "05_lora_finetuning_solutions.ipynb",
               SCRIPT, REPO_ROOT / "benchmarks" / "lora_benchmark.py", REPO_ROOT / "helpers" / "exercises" / "lesson_05.py"]
    used = set()
    for path in sources:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bfinetune\.([A-Za-z_]\w*)", text))
    assert {"train", "LossCurve", "evaluate_answers", "plan_lora", "save_adapter", "launch_command"} <= used
    missing = sorted(name for name in used if not hasattr(finetune, name))
    assert not missing, f"no longer importable as finetune.X: {missing}"
    assert finetune.LossCurve is widgets.LossCurve and finetune.token_f1 is evaluation.token_f1


# ------------------------------------------------------------------------------------------------------ plans


def test_the_plan_for_grok_2_5(grok2_config):
    config = grok2_config
    settings = finetune.LoraSettings(rank=16, alpha=32)
    plan = finetune.plan_lora(config, settings, precision="nf4", batch_size=1, seq_len=1024)
    assert 135 * GB <= plan.base_weight_bytes <= 165 * GB  # facts 5.1/6: 4-bit Grok 2.5
    h, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    per_layer_attention = 16 * ((h + h) + (h + kv) + (h + kv) + (h + h))
    assert plan.lora_params_by_part["attention"] == config.num_hidden_layers * per_layer_attention
    assert plan.lora_params_by_part["experts"] == config.num_hidden_layers * config.num_local_experts * 3 * 16 * (
        h + config.moe_intermediate_size)
    assert plan.optimizer_bytes == 8 * plan.lora_params
    smallest = plan.smallest_sets("fsdp")
    assert "4 x A100 / H100 80GB" in smallest and "2 x H200 141GB" in smallest
    assert not next(r for r in plan.gpu_options() if r["gpus"] == "2 x A100 / H100 80GB")["fits"]
    command = finetune.launch_command(8, "/data/grok-2", settings=settings)
    config_file = command.split("--config_file ")[1].split()[0]
    assert (REPO_ROOT / config_file).exists() and "--num_processes 8" in command and "--quantization nf4" in command
    bf16 = finetune.plan_lora(config, settings, precision="bf16")
    assert bf16.smallest_sets("fsdp") == ["8 x H200 141GB"]


def test_accelerate_configs_parse_and_name_grok_2_layers():
    from accelerate.commands.config.config_args import load_config_from_file

    from helpers.grok2 import modeling_grok2

    kinds = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_config_from_file(str(path))
        kinds[path.name] = config.distributed_type.value
        if config.fsdp_config:
            layer = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
            assert hasattr(modeling_grok2, layer)
            assert config.fsdp_config["fsdp_use_orig_params"] is False  # PEFT's FSDP recipe
    assert kinds == {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "fsdp_qlora.yaml": "FSDP"}


# ------------------------------------------------------------------------------------------------ the script


def script_env(workspace: Path) -> dict:
    env = dict(os.environ, GROK2_COURSE_WORKSPACE=str(workspace), OMP_NUM_THREADS="1", GROK2_COURSE_PROFILE="tiny",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)
    return env


SCRIPT_ARGS = ["--cpu", "--threads", "1", "--steps", "5", "--batch-size", "4", "--rank", "4", "--lr", "5e-3",
               "--dropout", "0.05", "--warmup", "2", "--eval-every", "2", "--save-every", "2"]


def test_script_resumes_after_a_sigkill_to_the_same_weights(tmp_path, sets):
    from safetensors.torch import load_file

    command = [sys.executable, str(SCRIPT), *SCRIPT_ARGS, "--report", str(tmp_path / "report.json")]
    crashed = subprocess.run(command + ["--crash-at-step", "3"], cwd=REPO_ROOT, env=script_env(tmp_path),
                             capture_output=True, text=True, timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    checkpoints = tmp_path / "lora-checkpoints" / "faq-fr-tiny"
    assert [p.name for p in finetune.list_checkpoints(checkpoints)] == ["checkpoint-000002"]
    resumed = subprocess.run(command, cwd=REPO_ROOT, env=script_env(tmp_path), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["resumed_from"] == 2 and report["steps_done"] == 5 and not report["interrupted"]

    # the same run in this process, never interrupted
    model = tiny_lora(finetune.LoraSettings(rank=4, alpha=8, dropout=0.05), seed=0)
    settings = finetune.TrainSettings(steps=5, batch_size=4, learning_rate=5e-3, warmup_steps=2, seed=0,
                                      eval_every=2, save_every=2)
    finetune.train(model, sets[0], settings, heldout=sets[1], progress=False)
    expected = {k.replace(".default", ""): v for k, v in trainable_state(model).items()}
    saved = load_file(str(tmp_path / "adapters" / "faq-fr-tiny" / "adapter_model.safetensors"))
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in saved)


def test_accelerate_launch_two_cpu_processes_matches_one_process(tmp_path, sets):
    """`accelerate launch` with 2 processes (DDP over gloo): same adapter as one process with the same global batch.
    Plain gradient descent, so the comparison is of gradients (Adam would magnify rounding in near-zero gradients)."""
    from safetensors.torch import load_file

    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
               "--num_processes", "2", str(SCRIPT), "--cpu", "--threads", "1", "--steps", "3", "--batch-size", "4",
               "--rank", "4", "--dropout", "0", "--optimizer", "sgd", "--lr", "0.5", "--warmup", "1", "--eval-every", "3",
               "--save-every", "3", "--report", str(tmp_path / "report.json")]
    done = subprocess.run(command, cwd=REPO_ROOT, env=script_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["processes"] == 2 and report["distributed_type"] == "MULTI_CPU" and report["steps_done"] == 3
    assert [p.name for p in finetune.list_checkpoints(tmp_path / "lora-checkpoints" / "faq-fr-tiny")] == [
        "checkpoint-000003"]

    model = tiny_lora(finetune.LoraSettings(rank=4, alpha=8, dropout=0.0), seed=0)
    start = trainable_state(model)
    settings = finetune.TrainSettings(steps=3, batch_size=8, learning_rate=0.5, warmup_steps=1, seed=0, optimizer="sgd",
                                      eval_every=0, save_every=0)
    finetune.train(model, sets[0], settings, progress=False)
    expected = {k.replace(".default", ""): v for k, v in trainable_state(model).items()}
    moved = max((v - start[k]).abs().max().item() for k, v in trainable_state(model).items())
    saved = load_file(str(tmp_path / "adapters" / "faq-fr-tiny" / "adapter_model.safetensors"))
    assert saved.keys() == expected.keys()
    assert moved > 1e-2 and max((saved[k] - expected[k]).abs().max().item() for k in saved) < 1e-5 * max(1.0, moved)


def test_lora_benchmark_runs_end_to_end(tmp_path, repo_script):
    """The GPU benchmark's smoke size, on CPU: builds a Grok-2-shaped model, trains LoRA and QLoRA, writes its report."""
    report = repo_script("lora_benchmark").main(["--size", "grok2-smoke", "--out", str(tmp_path)])
    assert {r["mode"] for r in report["modes"]} <= {"lora", "qlora"} and report["modes"]
    for record in report["modes"]:
        assert record["trainable_params"] == record["plan"]["lora_params"]
        assert record["median_step_seconds"] > 0
    assert (tmp_path / "lora-grok2-smoke-cpu.json").exists() and (tmp_path / "lora-grok2-smoke-cpu.md").exists()
