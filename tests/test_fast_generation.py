"""The fast decoding path: grouped experts, the static-cache decode loop, and the roofline arithmetic.

"Exact against the plain path" is checked the strict way on the CPU: the same tokens as `model.generate`, logits equal
to float32 rounding, and the grouped experts equal to the per-expert loop bit for bit. The GPU-only modes (CUDA
graphs, compiled CUDA graphs) are measured by benchmarks/decode_speed.py on a GPU machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import helpers
from helpers.errors import CourseError
from helpers.fast_generation import FastGenerator, sample
from helpers.grok2 import Grok2ForCausalLM, grouped_experts
from helpers.grok2.modeling_grok2 import Grok2SparseMoeBlock
from helpers.roofline import (count_active_experts, decode_step_bytes, kv_bytes_per_token, measure_copy_bandwidth,
                              roofline_tokens_per_s)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread, results independent of cores


def tiny(dtype=torch.float32) -> Grok2ForCausalLM:
    return AutoModelForCausalLM.from_pretrained(str(helpers.TINY_MODEL_DIR), dtype=dtype).eval()


def chat_batch():
    tokenizer = helpers.load_tokenizer()
    conversations = [[{"role": "user", "content": "What is Grok 2.5?"}],
                     [{"role": "user", "content": "How many experts does Grok 2 have?"}],
                     [{"role": "user", "content": "Hi"}]]
    return tokenizer.apply_chat_template(conversations, add_generation_prompt=True, return_tensors="pt",
                                         padding=True, return_dict=True)


def random_llama() -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


# ------------------------------------------------------------------------------------------- grouped experts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_experts_equal_the_loop_bit_for_bit_and_keep_names(dtype):
    model = tiny(dtype)
    ids = torch.randint(3, 1000, (3, 40), generator=torch.Generator().manual_seed(0))
    names_before = list(model.state_dict())
    assert not grouped_experts.is_active(model)
    with torch.no_grad():
        loop = model(ids).logits
        assert grouped_experts.enable(model) == model.config.num_hidden_layers
        assert grouped_experts.is_active(model) and grouped_experts.is_active(model.model.layers[1].block_sparse_moe)
        grouped = model(ids).logits
    assert torch.equal(loop, grouped)  # same products, added in the same order
    assert list(model.state_dict()) == names_before
    block = model.model.layers[2].block_sparse_moe
    # The experts' weights are views of the stack: no second copy of the model.
    assert block.experts[5].w3.weight.data_ptr() == block._stacked["w3"][5].data_ptr()
    storages = {p.untyped_storage().data_ptr() for p in block.experts.parameters()}
    assert storages == {block._stacked[n].untyped_storage().data_ptr() for n in ("w1", "w2", "w3")}
    grouped_experts.disable(model)
    assert grouped_experts.enabled_blocks(model) == 0 and type(block) is Grok2SparseMoeBlock
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loop)


def test_the_model_file_knows_nothing_of_the_fast_path():
    source = (REPO / "helpers" / "grok2" / "modeling_grok2.py").read_text()
    assert "import" not in "".join(line for line in source.splitlines() if "grouped" in line)
    assert "grouped_mm" not in source and "_stacked" not in source
    assert not hasattr(Grok2ForCausalLM, "stack_experts") and not grouped_experts.is_active(random_llama())


def test_grouped_path_is_used_and_avoids_the_cpu_round_trip(monkeypatch):
    model = tiny()
    grouped_experts.enable(model)

    def loop(*args, **kwargs):
        raise AssertionError("the grouped path must not fall back to the loop, which reads the routing on the CPU")

    monkeypatch.setattr(Grok2SparseMoeBlock, "forward", loop)
    with torch.no_grad():
        model(torch.tensor([[5, 6, 7]]))


def test_moving_or_casting_unstacks_and_stays_correct():
    model = tiny()
    grouped_experts.enable(model)
    model.to(torch.bfloat16)
    assert grouped_experts.enabled_blocks(model) == 0
    reference = tiny().to(torch.bfloat16)  # the same cast, never grouped
    ids = torch.tensor([[3, 50, 60, 70, 80]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)


def test_saving_a_grouped_model_round_trips(tmp_path):
    model = tiny()
    grouped_experts.enable(model)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_lora_on_experts_falls_back_to_the_loop_and_is_applied():
    from peft import LoraConfig, get_peft_model

    model = tiny()
    grouped_experts.enable(model)
    ids = torch.tensor([[3, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        base = model(ids).logits
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=["w1", "w2", "w3"], init_lora_weights=False))
    block = adapted.base_model.model.model.layers[0].block_sparse_moe
    # Wrapped experts: the stack no longer describes them.
    assert not block.runs_grouped(torch.zeros(1, 64)) and not grouped_experts.is_active(block)
    with torch.no_grad():
        assert not torch.allclose(adapted(ids).logits, base, atol=1e-4)  # the adapters really act


def test_a_replaced_weight_falls_back_to_the_loop():
    model = tiny()
    grouped_experts.enable(model)
    block = model.model.layers[0].block_sparse_moe
    block.experts[2].w1.weight = torch.nn.Parameter(block.experts[2].w1.weight.detach().clone() * 2)
    assert not grouped_experts.is_active(model) and not block.runs_grouped(torch.zeros(1, 64))


def test_training_takes_the_loop_so_gradients_reach_each_expert():
    model = tiny().train()
    grouped_experts.enable(model)
    ids = torch.randint(3, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    model(ids, labels=ids).loss.backward()
    grads = [e.w1.weight.grad for layer in model.model.layers for e in layer.block_sparse_moe.experts]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------------------------------ fast generation


def test_fast_generation_equals_generate_on_a_padded_batch_with_stops():
    model = tiny()
    batch = chat_batch()
    with torch.no_grad():
        reference = model.generate(**batch, max_new_tokens=40, do_sample=False)
    fast = FastGenerator(model)
    assert fast.mode == "eager"  # "auto" on a CPU
    out = fast.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=40)
    assert torch.equal(out.sequences, reference)  # same tokens, same padding after each answer, same length
    assert out.new_tokens == reference.shape[1] - batch["input_ids"].shape[1]
    # Reused for another batch size and length: a new cache, same answers.
    again = fast.generate(batch["input_ids"][1:2], batch["attention_mask"][1:2], max_new_tokens=40)
    with torch.no_grad():
        single = model.generate(input_ids=batch["input_ids"][1:2], attention_mask=batch["attention_mask"][1:2],
                                max_new_tokens=40, do_sample=False)
    assert torch.equal(again.sequences, single)


def test_closing_frees_the_cache_and_restores_the_model():
    model = tiny()
    with FastGenerator(model) as fast:
        fast.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3)
        assert grouped_experts.is_active(model) and fast._session is not None
    assert fast._session is None
    assert grouped_experts.enabled_blocks(model) == 0
    grouped_experts.enable(model)  # grouped by its owner: a generator leaves it grouped
    FastGenerator(model).close()
    assert grouped_experts.is_active(model)


def test_fast_generation_logits_equal_generate_logits_on_a_stock_transformers_model():
    model = random_llama()
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        reference = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None,
                                   pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    out = FastGenerator(model).generate(ids, mask, max_new_tokens=12, eos_token_id=None, pad_token_id=0,
                                        output_logits=True)
    assert torch.equal(out.sequences, reference.sequences)
    torch.testing.assert_close(out.logits, torch.stack(reference.logits, 1).float(), atol=1e-5, rtol=1e-5)
    assert out.decode_steps == 11 and out.decode_tokens_per_s > 0


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model = tiny()
    batch = chat_batch()
    fast = FastGenerator(model)
    args = (batch["input_ids"], batch["attention_mask"])
    first = fast.generate(*args, max_new_tokens=20, do_sample=True, temperature=1.3, top_p=0.9, seed=7)
    second = fast.generate(*args, max_new_tokens=20, do_sample=True, temperature=1.3, top_p=0.9, seed=7)
    assert torch.equal(first.sequences, second.sequences)
    greedy = fast.generate(*args, max_new_tokens=20)
    assert torch.equal(fast.generate(*args, max_new_tokens=20, do_sample=True, top_k=1, seed=3).sequences,
                       greedy.sequences)
    assert not torch.equal(first.sequences[:, :greedy.sequences.shape[1]], greedy.sequences)


def test_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = {int(sample(logits, 1.0, None, 0.7, torch.Generator().manual_seed(s))) for s in range(200)}
    assert draws == {0, 1}  # 0.5 < 0.7 needs the second token; 0.8 >= 0.7 stops there


def test_compiled_decoding_equals_generate():
    """torch.compile over the whole decode step (Grok 2 in bf16: the grouped kernels' compiled form needs bf16).

    The compiled kernels round where eager rounds (`emulate_precision_casts`), so even in bf16 the tokens are the
    same as generate's, for the row the tiny model was never taught ("Hi") too, and every logit agrees with the
    plain model re-reading the same tokens without a cache to bf16 precision."""
    model = tiny(torch.bfloat16)
    batch = chat_batch()
    with torch.no_grad():
        reference = model.generate(**batch, max_new_tokens=24, do_sample=False)
    fast = FastGenerator(model, mode="compile")
    assert fast.mode == "compile" and not fast.notes
    out = fast.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=24, output_logits=True)
    assert torch.equal(out.sequences, reference)
    prompt_len = batch["input_ids"].shape[1]
    mask = torch.cat([batch["attention_mask"], torch.ones(3, out.new_tokens - 1, dtype=torch.long)], 1)
    with torch.no_grad():
        plain = model(out.sequences[:, :-1], attention_mask=mask, use_cache=False).logits[:, prompt_len - 1:]
    eos = torch.tensor(model.generation_config.eos_token_id).reshape(-1)
    finished = torch.isin(out.sequences[:, prompt_len:], eos).cumsum(1) > 0
    running = ~torch.cat([torch.zeros(3, 1, dtype=torch.bool), finished[:, :-1]], 1)  # steps before each row's end
    error = (out.logits - plain.float()).abs()[running].max() / plain.float().abs().max()
    assert error < 1e-2


def test_tuned_compilation_of_a_stock_transformers_model_equals_generate():
    """The `tune=True` compile options (coordinate-descent tuning of the generated kernels) on a Llama in fp32."""
    model = random_llama()
    ids = torch.randint(3, 300, (1, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
    fast = FastGenerator(model, mode="compile", tune=True)
    assert fast.mode == "compile" and not fast.notes
    assert torch.equal(fast.generate(ids, max_new_tokens=8, eos_token_id=None, pad_token_id=0).sequences, reference)


def test_modes_that_cannot_work_fall_back_or_refuse_with_a_reason():
    fast = FastGenerator(tiny(), mode="compile")  # fp32 grouped kernels cannot be compiled
    assert fast.mode == "eager" and "grouped" in fast.notes[0]
    with pytest.raises(CourseError, match="Unknown decoding mode"):
        FastGenerator(tiny(), mode="turbo")
    if not torch.cuda.is_available():
        with pytest.raises(CourseError, match="needs a CUDA GPU"):
            FastGenerator(tiny(), mode="cuda-graph")
    with pytest.raises(CourseError, match="batch dimension"):
        FastGenerator(tiny()).generate(torch.tensor([3, 4, 5]))


# ---------------------------------------------------------------------------------------------- the roofline


def test_step_bytes_count_active_weights_once_and_each_sequence_cache():
    model = tiny()
    c = model.config
    element = 4
    total = sum(p.numel() for p in model.parameters()) * element
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n) * element
    embedding = c.vocab_size * c.hidden_size * element
    step = decode_step_bytes(model, batch=3, context=100)
    assert step.weights == total - embedding + 3 * c.hidden_size * element - experts * 6 // 8
    assert kv_bytes_per_token(model) == 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * element
    assert step.kv_cache == 3 * 100 * kv_bytes_per_token(model)
    assert roofline_tokens_per_s(step, 3, 1e9) == pytest.approx(3e9 / step.total)


def test_step_bytes_of_grok_2_5_match_the_planners_active_parameters(grok2_config, grok2_plan):
    with torch.device("meta"):
        model = Grok2ForCausalLM(grok2_config)
    step = decode_step_bytes(model, batch=1, context=0)
    element = next(model.parameters()).element_size()
    assert step.weights == (grok2_plan.active_params - grok2_plan.embedding_params + grok2_config.hidden_size) * element
    assert 110e9 < step.weights / element < 116e9  # ~115B weights read per token: why 8 GPUs, even for speed


def test_active_experts_are_counted_per_decode_step():
    model = tiny()
    fast = FastGenerator(model)
    ids = torch.randint(3, 1000, (4, 10), generator=torch.Generator().manual_seed(3))
    one = count_active_experts(model, lambda: fast.generate(ids[:1], max_new_tokens=6, eos_token_id=None), 1)
    four = count_active_experts(model, lambda: fast.generate(ids, max_new_tokens=6, eos_token_id=None), 4)
    assert one == 2.0  # top-2 of 8
    assert 2.0 < four <= 8.0
    assert "route" not in vars(model.model.layers[0].block_sparse_moe)  # the hooks are gone


def test_copy_bandwidth_is_measured():
    assert measure_copy_bandwidth("cpu", size_bytes=2**24, repeats=3) > 1e8


def test_decode_speed_benchmark_runs_end_to_end(tmp_path, repo_script):
    decode_speed = repo_script("decode_speed")
    stem = decode_speed.main(["--suite", "smoke", "--out", str(tmp_path)])
    results = json.loads(stem.with_suffix(".json").read_text())
    rows = [r for case in results["cases"] for r in case["rows"]]
    assert rows and all(0 < r["share_of_roofline"] < 1 for r in rows)
    fast = [r for r in rows if r["method"].startswith("fast")]
    assert fast and all(r["logits_max_rel_diff"] < 1e-5 for r in fast)
    assert all(r["tokens_equal_generate"] for r in fast if "tokens_equal_generate" in r)
    assert results["load"]["load_s"] > 0 and results["cases"][1]["prefill"]["flops"] > 0
    assert stem.with_suffix(".png").is_file()
    assert "share of roofline" in stem.with_suffix(".md").read_text()
    assert math.isfinite(results["ceilings"]["copy_bytes_per_s"])


# ------------------------------------------------------------------------------- CUDA (run on a GPU machine)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_checks.sh)")


@needs_cuda
def test_grouped_experts_on_cuda_equal_the_loop():
    model = tiny(torch.bfloat16).cuda()
    assert grouped_experts.grouped_mm_supported(torch.device("cuda"), torch.bfloat16), \
        "grouped_mm needs compute capability >= 8.0"
    ids = torch.randint(3, 1000, (4, 64), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        loop = model(ids).logits
        assert grouped_experts.enable(model) and grouped_experts.is_active(model, compiled=True)
        grouped = model(ids).logits
    assert (grouped - loop).abs().max() / loop.abs().max() < 1e-2  # bf16 kernels: another summation order


@needs_cuda
@pytest.mark.parametrize("mode, tune", [("cuda-graph", False), ("compile", False), ("compile", True)])
def test_gpu_modes_equal_generate_on_cuda(mode, tune):
    model = tiny(torch.bfloat16).cuda()
    batch = {k: v.cuda() for k, v in chat_batch().items()}
    with torch.no_grad():
        reference = model.generate(**batch, max_new_tokens=24, do_sample=False)
    fast = FastGenerator(model, mode=mode, tune=tune)
    assert fast.mode == mode, fast.notes
    first = fast.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=24, output_logits=True)
    again = fast.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=24)  # a replay
    assert torch.equal(first.sequences, again.sequences)
    assert torch.equal(first.sequences[:2], reference[:2, :first.sequences.shape[1]])  # the confident rows
    prompt_len = batch["input_ids"].shape[1]
    steps = first.new_tokens
    mask = torch.cat([batch["attention_mask"], torch.ones(3, steps - 1, dtype=torch.long, device="cuda")], 1)
    with torch.no_grad():
        plain = model(first.sequences[:, :-1], attention_mask=mask, use_cache=False).logits[:, prompt_len - 1:]
    # The first two rows run to their end token: compare their steps before it.
    eos = torch.tensor(model.generation_config.eos_token_id, device="cuda").reshape(-1)
    ended = torch.isin(first.sequences[:2, prompt_len:], eos).cumsum(1) > 0
    running = ~torch.cat([torch.zeros(2, 1, dtype=torch.bool, device="cuda"), ended[:, :-1]], 1)
    error = (first.logits[:2] - plain[:2].float()).abs()[running].max() / plain.float().abs().max()
    assert error < 2e-2
