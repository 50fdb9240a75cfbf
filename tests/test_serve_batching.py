"""The decoding step of continuous batching (helpers.serving.batching), in this process: a request's logits are bit
for bit the same alone or beside others, in whichever slot, with a LoRA adapter on some rows and not others; matrix
products keep their shape; the scheduler's queue is bounded."""

from __future__ import annotations

import asyncio

import pytest
import torch
import torch.nn.functional as F

import helpers
from helpers.chat import SamplingSettings, encode
from helpers.serving.batching import KVSlots, Row, decoding_step, fixed_rows_linear, pad_every_linear
from helpers.serving.protocol import APIError
from helpers.serving.scheduler import Job, Scheduler
from helpers.serving.served import ServedModel

QUESTIONS = ["How many experts does Grok 2 have?", "What is your name?", "How many layers does Grok 2 have?",
             "Can I run Grok 2.5 on a 24 GB GPU?", "What is QLoRA?", "What is the separator token?",
             "What is lesson 01 about?", "How do I run the tests?"]
SLOTS, STEPS = 8, 12

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # model, tokenizer: tests/conftest.py


def decode(kv: KVSlots, prompts: dict[int, list[int]], adapters: dict[int, bool] | None = None,
           leave_after: dict[int, int] | None = None) -> dict[int, list[torch.Tensor]]:
    """Greedy decoding of `prompts` (slot -> ids) for STEPS steps; the logits each slot saw at each step. A slot in
    `leave_after` stops after that many steps (its neighbours change mid-way)."""
    adapters, leave_after = adapters or {}, leave_after or {}
    seen, last, position = {}, {}, {}
    for slot, ids in prompts.items():
        logits = kv.prefill(slot, ids, adapters.get(slot, False))
        seen[slot], last[slot], position[slot] = [logits], int(logits.argmax()), len(ids)
    for step in range(STEPS):
        rows = [Row(slot, last[slot], position[slot], adapters.get(slot, False)) for slot in prompts
                if step < leave_after.get(slot, STEPS)]
        logits = kv.step(rows)
        for row in rows:
            seen[row.slot].append(logits[row.slot].clone())
            last[row.slot], position[row.slot] = int(logits[row.slot].argmax()), position[row.slot] + 1
    return seen


def identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_request_computes_the_same_bits_alone_or_in_a_crowd(model, tokenizer):
    prompts = [encode(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
    alone = decode(KVSlots(model, SLOTS, 256), {0: prompts[0]})[0]
    crowd = decode(KVSlots(model, SLOTS, 256), {7 - i: p for i, p in enumerate(prompts)}, leave_after={3: 4, 5: 7})
    assert identical(alone, crowd[7])  # the same request in slot 7, beside 7 others, some of which left
    left_early = decode(KVSlots(model, SLOTS, 256), {3: prompts[4]})[3]
    assert identical(left_early[: len(crowd[3])], crowd[3]) and len(crowd[3]) == 5


def test_adapter_and_base_requests_decode_together_exactly(tokenizer):
    """Lesson 05's adapters put LoRA on the experts too (w1, w2, w3), where a layer sees tokens, not requests."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = helpers.grok2.Grok2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       moe_intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                                       head_dim=16, num_hidden_layers=2, max_position_embeddings=512)
    lora = get_peft_model(helpers.grok2.Grok2ForCausalLM(config).eval(),
                          LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "w1", "w2"],
                                     init_lora_weights=False))
    lora.eval()
    prompts = {slot: encode(tokenizer, [{"role": "user", "content": q}]) for slot, q in enumerate(QUESTIONS[:5])}
    adapters = {0: True, 1: False, 2: True, 3: True, 4: False}
    crowd = decode(KVSlots(lora, SLOTS, 128, True), prompts, adapters)
    for slot in (0, 1):
        alone = decode(KVSlots(lora, SLOTS, 128, True), {slot: prompts[slot]}, {slot: adapters[slot]})
        assert identical(alone[slot], crowd[slot])
    assert not torch.equal(crowd[0][0], decode(KVSlots(lora, SLOTS, 128, True), {0: prompts[0]})[0][0])


def test_a_transformers_mixture_of_experts_model_too(tokenizer):
    """The small profile's architecture (GraniteMoe, at toy size): its fused expert kernel is swapped for the
    course's per-expert loop, and a request computes the same bits alone or in a crowd."""
    from transformers import GraniteMoeConfig, GraniteMoeForCausalLM

    torch.manual_seed(0)
    config = GraniteMoeConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, num_local_experts=6,
                              num_experts_per_tok=2, max_position_embeddings=256)
    granite = GraniteMoeForCausalLM(config).eval()
    prompts = {slot: encode(tokenizer, [{"role": "user", "content": q}]) for slot, q in enumerate(QUESTIONS)}
    crowd = decode(KVSlots(granite, SLOTS, 128), prompts)
    assert granite.config._experts_implementation == "course_per_expert_loop"
    for slot in (2, 6):
        assert identical(decode(KVSlots(granite, SLOTS, 128), {slot: prompts[slot]})[slot], crowd[slot])


def test_matrix_products_keep_the_slot_count_of_rows():
    torch.manual_seed(0)
    x, linear = torch.randn(1, 3, 16), torch.nn.Linear(16, 24)
    seen = []
    linear.register_forward_hook(lambda module, args, output: seen.append(args[0].numel() // 16))  # rows in
    pad_every_linear(linear)
    alone = linear(x)
    with decoding_step(8):
        padded = linear(x)
        direct = fixed_rows_linear(x, linear.weight, linear.bias)
        untouched = linear(torch.randn(9, 16))  # more rows than slots: as it is
    assert seen == [3, 8, 9] and padded.shape == alone.shape == direct.shape == (1, 3, 24)
    assert untouched.shape == (9, 24) and torch.equal(padded, direct)
    assert torch.equal(padded[0], F.linear(torch.cat([x[0], torch.zeros(5, 16)]), linear.weight, linear.bias)[:3])


def test_the_queue_is_bounded_and_closing_tells_the_waiting(model, tokenizer):
    served = ServedModel(model, tokenizer, "tiny-grok-2")
    scheduler = Scheduler(served, slots=1, max_queue=2)  # not started: everything waits
    loop = asyncio.new_event_loop()
    try:
        jobs = [Job("Human: hi", [1], SamplingSettings(), False, False, loop, asyncio.Queue()) for _ in range(3)]
        scheduler.submit(jobs[0])
        scheduler.submit(jobs[1])
        with pytest.raises(APIError) as raised:
            scheduler.submit(jobs[2])
        assert raised.value.status == 503 and raised.value.code == "server_overloaded"
        jobs[0].cancel()  # a waiting client that hangs up no longer counts
        scheduler.submit(jobs[2])
        assert scheduler.snapshot()["queued"] == 2 and scheduler.snapshot()["rejected"] == 1
        scheduler.close()
        loop.run_until_complete(asyncio.sleep(0))
        assert all(job.events.get_nowait()[1].code == "shutting_down" for job in jobs[1:])
    finally:
        loop.close()
