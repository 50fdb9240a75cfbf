"""Every exercise check in helpers/exercises.py: an empty slot is "not attempted" (no failure), a right answer passes,
and typical wrong answers are rejected with a message that starts with ❌.

The right answers are the solution notebooks' answers in short; nbval runs the notebooks themselves.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch

import helpers
from helpers import exercises as E
from helpers.exercises import lesson_02, lesson_03
from helpers.chat import SEPARATOR, SamplingSettings, generate, render, stream
from helpers.download import LFSPointer
from helpers.memory import GB

GROK = helpers.plan_profile("grok-2")


def rejects(check, *args, match: str | None = None, **kwargs):
    with pytest.raises(E.ExerciseFailed) as caught:
        check(*args, **kwargs)
    message = str(caught.value)
    assert message.startswith("❌"), message
    if match:
        assert match in message, message
    return message


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return helpers.load_model(verbose=False), helpers.load_tokenizer()


# ---------------------------------------------------------------------------------------------- the mechanics


@pytest.mark.parametrize("key", sorted(E.CHECKS))
def test_every_check_reports_an_empty_slot_without_failing(key, capsys):
    check = E.CHECKS[key]
    extra = {("01", "practitioner"): ({},), ("01", "expert"): ({},), ("02", "practitioner"): (None, None, "x"),
             ("04", "starter"): (None,), ("04", "practitioner"): (None, None), ("04", "expert"): (None, None),
             ("05", "practitioner"): (None,), ("05", "expert"): (None, None), ("06", "practitioner"): (None, None)}
    result = check(None, *extra.get(key, ()))
    assert result.status == E.NOT_ATTEMPTED and not result.passed and not result.ok
    assert "not attempted yet" in capsys.readouterr().out


def test_there_are_three_tiers_for_each_of_the_seven_lessons():
    assert len(E.CHECKS) == 21
    assert {lesson for lesson, _ in E.CHECKS} == {f"0{i}" for i in range(7)}


def test_a_failure_is_an_assertion_error_so_a_cell_goes_red():
    assert issubclass(E.ExerciseFailed, AssertionError)


def test_results_print_their_mark(capsys):
    assert E.check_02_expert(math.log2(131071) / 10).passed
    assert capsys.readouterr().out.startswith("✅ 02 expert")


# ---------------------------------------------------------------------------------------------- lesson 00


def test_00_starter():
    assert E.check_00_starter(GROK.gpus_needed(40 * GB, "fp8", context_tokens=32768)).passed
    rejects(E.check_00_starter, GROK.gpus_needed(40 * GB, "bf16", context_tokens=32768), match="bf16")
    rejects(E.check_00_starter, 1, match="too few")
    rejects(E.check_00_starter, 2.5, match="whole number")
    rejects(E.check_00_starter, "8", match="should be a number")


def test_00_practitioner():
    right = int(GROK.weight_bytes("fp8") // GROK.kv_cache_bytes(8192))
    assert E.check_00_practitioner(right).passed
    rejects(E.check_00_practitioner, right + 1, match="round down")
    rejects(E.check_00_practitioner, right - 1, match="largest")
    rejects(E.check_00_practitioner, 0)


def test_00_expert():
    one = 3 * 8192 * 16384
    assert E.check_00_expert(one).passed
    rejects(E.check_00_expert, one * 8, match="several experts")
    rejects(E.check_00_expert, GROK.total_params - GROK.active_params)


# ---------------------------------------------------------------------------------------------- lesson 01


def test_01_starter():
    hours = GROK.weight_bytes("bf16") * 8 / 250e6 / 3600
    assert E.check_01_starter(hours).passed
    rejects(E.check_01_starter, hours / 8, match="bits")
    rejects(E.check_01_starter, hours * 3600, match="seconds")
    rejects(E.check_01_starter, hours * 1.5)


MANIFEST = {"config.json": LFSPointer("a" * 64, 10), "model-00001.safetensors": LFSPointer("b" * 64, 300),
            "model-00002.safetensors": LFSPointer("c" * 64, 900), "model-00003.safetensors": LFSPointer("d" * 64, 500)}


def test_01_practitioner():
    assert E.check_01_practitioner(["model-00001.safetensors", "model-00003.safetensors"], MANIFEST).passed
    rejects(E.check_01_practitioner, list(MANIFEST)[1:], MANIFEST, match="largest shard")
    rejects(E.check_01_practitioner, ["model-00001.safetensors"], MANIFEST, match="missing")
    rejects(E.check_01_practitioner, ["config.json", "model-00001.safetensors", "model-00003.safetensors"], MANIFEST,
            match="non-weight")
    rejects(E.check_01_practitioner, "model-00001.safetensors", MANIFEST, match="list of paths")


def released_sizes():
    sizes = {f"pytorch_model-{i:05d}-TP-common.safetensors": 100 + i for i in range(3)}
    for rank in range(8):
        for part in range(2):
            sizes[f"pytorch_model-{10 + part:05d}-TP-{rank:03d}.safetensors"] = 1000 + rank * 10 + part
    return sizes


def test_01_expert():
    def right(names, rank):
        return sorted(n for n in names if n.endswith("-TP-common.safetensors") or n.endswith(f"-TP-{rank:03d}.safetensors"))

    def own_only(names, rank):
        return [n for n in names if n.endswith(f"-TP-{rank:03d}.safetensors")]

    def off_by_one(names, rank):
        return right(names, (rank + 1) % 8)[:-1] if rank == 7 else right(names, rank)

    sizes = released_sizes()
    assert E.check_01_expert(right, sizes).passed
    rejects(E.check_01_expert, own_only, sizes, match="TP-common")
    rejects(E.check_01_expert, off_by_one, sizes, match="rank 7")
    rejects(E.check_01_expert, lambda names, rank: None, sizes, match="returned None")
    rejects(E.check_01_expert, lambda names, rank: names + names[:1], sizes, match="twice")
    rejects(E.check_01_expert, ["a"], sizes, match="should be a function")


# ---------------------------------------------------------------------------------------------- lesson 02


def test_02_starter():
    right = GROK.expert_params * 2 / 1e9
    assert E.check_02_starter(right).passed
    rejects(E.check_02_starter, right / 2, match="2 bytes")
    rejects(E.check_02_starter, right * 1e9 / 2**30, match="GiB")
    rejects(E.check_02_starter, right * 1e9, match="bytes")


def test_02_practitioner(tiny):
    model, tokenizer = tiny
    prompt = "Which lesson explains LoRA fine-tuning?"
    counts = lesson_02._layer0_routing(model, tokenizer, prompt)
    busiest, idlest = int(counts.argmax()), int(counts.argmin())
    assert counts[idlest] < counts[busiest]
    assert E.check_02_practitioner(busiest, model, tokenizer, prompt).passed
    rejects(E.check_02_practitioner, idlest, model, tokenizer, prompt, match="bincount")
    rejects(E.check_02_practitioner, 99, model, tokenizer, prompt, match="does not exist")
    other = SimpleNamespace(model=SimpleNamespace(layers=[SimpleNamespace(block_sparse_moe=object())]))
    assert E.check_02_practitioner(0, other, tokenizer, prompt).status == E.SKIPPED


def test_02_expert():
    assert E.check_02_expert(math.log2(131071) / 10).passed
    rejects(E.check_02_expert, math.log2(131072) / 10, match="off by one")
    rejects(E.check_02_expert, 1.0)
    rejects(E.check_02_expert, math.log(131071) / math.log(1024) * 2)


# ---------------------------------------------------------------------------------------------- lesson 03


def test_03_starter():
    right = GROK.gpus_needed(80 * GB, "nf4", context_tokens=131072)
    assert E.check_03_starter(right).passed
    rejects(E.check_03_starter, right + 5, match="too many")
    rejects(E.check_03_starter, 0)


def test_03_practitioner():
    from transformers import BitsAndBytesConfig

    from helpers.quantization import quantization_config, quantization_support

    keep = list(quantization_config("nf4", torch.float32, check_support=False).llm_int8_skip_modules)
    right = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               llm_int8_skip_modules=keep + [r".*\.experts\..*"])
    rejects(E.check_03_practitioner, "nf4", match="BitsAndBytesConfig")
    rejects(E.check_03_practitioner, BitsAndBytesConfig(load_in_8bit=True), match="NF4")
    if not quantization_support().available:
        assert E.check_03_practitioner(right).status == E.SKIPPED
        return
    assert E.check_03_practitioner(right).passed
    wrong = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", llm_int8_skip_modules=keep + ["experts"])
    rejects(E.check_03_practitioner, wrong, match="regular expression")
    everything = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", llm_int8_skip_modules=[r".*"])
    rejects(E.check_03_practitioner, everything, match="nothing was quantized")


def test_03_expert_arithmetic():
    def right(weights):
        blocks = math.ceil(weights / 64)
        return 3 * blocks - 4 * math.ceil(blocks / 256) - 1028

    assert E.check_03_expert(right, measure=False).passed
    rejects(E.check_03_expert, lambda w: 3 * math.ceil(w / 64), measure=False, match="1,028")
    rejects(E.check_03_expert, lambda w: 3 * (w // 64) - 4 * ((w // 64) // 256) - 1028, measure=False,
            match="round up")
    rejects(E.check_03_expert, 12345, measure=False, match="should be a function")


def test_03_expert_measured():
    from helpers.quantization import quantization_support

    if not quantization_support().available:
        pytest.skip("bitsandbytes cannot run here")
    saved, sizes = lesson_03._measured_double_quant_saving()
    assert saved == sum(lesson_03._double_quant_prediction(w) for w in sizes)  # the layout's arithmetic is what bnb stores


# ---------------------------------------------------------------------------------------------- lesson 04


def test_04_starter(tiny):
    _, tokenizer = tiny
    right = render(tokenizer, E.STARTER_04)
    assert right == "System: Be brief.<|separator|>\n\nHuman: What is QLoRA?<|separator|>\n\nAssistant:"
    assert E.check_04_starter(right, tokenizer).passed
    rejects(E.check_04_starter, render(tokenizer, E.STARTER_04[1:]), tokenizer, match="system prompt")
    rejects(E.check_04_starter, render(tokenizer, E.STARTER_04, add_generation_prompt=False), tokenizer,
            match="generation prompt")
    rejects(E.check_04_starter, tokenizer(right)["input_ids"], tokenizer, match="rendered string")


def test_04_practitioner(tiny):
    model, tokenizer = tiny
    assert E.check_04_practitioner(SamplingSettings(stop=(SEPARATOR, " 2,")), model, tokenizer).passed
    rejects(E.check_04_practitioner, SamplingSettings(), model, tokenizer, match="end right after")
    rejects(E.check_04_practitioner, {"stop": " 2,"}, model, tokenizer, match="SamplingSettings")


def test_04_expert(tiny):
    model, tokenizer = tiny

    def right(messages, settings=SamplingSettings()):
        live = stream(model, tokenizer, messages, settings)
        for piece in live:
            yield {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": live.completion.finish_reason}],
               "usage": live.completion.usage}

    def no_usage(messages, settings=SamplingSettings()):
        for chunk in right(messages, settings):
            chunk.pop("usage", None)
            yield chunk

    def finish_everywhere(messages, settings=SamplingSettings()):
        for chunk in right(messages, settings):
            chunk["choices"][0]["finish_reason"] = "stop"
            yield chunk

    def one_chunk(messages, settings=SamplingSettings()):
        reply = generate(model, tokenizer, messages, settings)
        yield {"choices": [{"delta": {"content": reply.text}, "finish_reason": reply.finish_reason}],
               "usage": reply.usage}

    assert E.check_04_expert(right, model, tokenizer).passed
    rejects(E.check_04_expert, no_usage, model, tokenizer, match="usage")
    rejects(E.check_04_expert, finish_everywhere, model, tokenizer, match="only the last chunk")
    rejects(E.check_04_expert, one_chunk, model, tokenizer, match="1 chunk")


# ---------------------------------------------------------------------------------------------- lesson 05


def test_05_starter():
    assert E.check_05_starter(16 * (8192 + 8192)).passed
    rejects(E.check_05_starter, 8192 * 8192, match="full matrix")
    rejects(E.check_05_starter, 16 * 8192, match="one of the two")
    rejects(E.check_05_starter, 8 * (8192 + 8192))


def test_05_practitioner():
    assert E.check_05_practitioner("Grok 2 a 64 couches.", "Grok 2.5 a 64 couches.").passed
    rejects(E.check_05_practitioner, "same", "same", match="identical")
    rejects(E.check_05_practitioner, "before", "   ", match="empty")
    rejects(E.check_05_practitioner, "before", SimpleNamespace(text="after"), match="str")


def test_05_expert(tiny, tmp_path):
    model, tokenizer = tiny
    folder = tmp_path / "merged"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert E.check_05_expert(folder, model, tokenizer).passed

    rejects(E.check_05_expert, tmp_path / "nowhere", model, tokenizer, match="config.json")
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter / "adapter_config.json").write_text("{}")
    rejects(E.check_05_expert, adapter, model, tokenizer, match="adapter")
    no_tokenizer = tmp_path / "weights-only"
    model.save_pretrained(no_tokenizer)
    rejects(E.check_05_expert, no_tokenizer, model, tokenizer, match="tokenizer")

    other = helpers.load_model(verbose=False)  # a different model written to the folder
    with torch.no_grad():
        other.lm_head.weight.add_(0.5)
    stale = tmp_path / "stale"
    other.save_pretrained(stale)
    tokenizer.save_pretrained(stale)
    rejects(E.check_05_expert, stale, model, tokenizer, match="differs")


# ---------------------------------------------------------------------------------------------- lesson 06


def reply(finish="stop", prompt_tokens=25, content="Grok 2 has 64 layers."):
    message = SimpleNamespace(content=content)
    return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason=finish)],
                           usage=SimpleNamespace(prompt_tokens=prompt_tokens, completion_tokens=7))


def test_06_starter():
    assert E.check_06_starter(reply()).passed
    rejects(E.check_06_starter, reply(finish="length"), match="cut")
    rejects(E.check_06_starter, reply(prompt_tokens=8), match="system message")
    rejects(E.check_06_starter, reply(content=""), match="no text")
    rejects(E.check_06_starter, "Grok 2 has 64 layers.", match="ChatCompletion")


class FakeServer:
    """A chat.completions.create that accepts max_tokens up to `limit` and answers above it as the server does."""

    def __init__(self, limit):
        self.limit = limit
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, *, model, messages, max_tokens, temperature=None):
        if max_tokens > self.limit:
            response = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))
            raise openai.BadRequestError(f"max_tokens must be at most {self.limit}", response=response, body=None)
        return reply()


def test_06_practitioner():
    client = FakeServer(1000)
    assert E.check_06_practitioner(1000, client, "tiny").passed
    rejects(E.check_06_practitioner, 1001, client, "tiny", match="too large")
    rejects(E.check_06_practitioner, 999, client, "tiny", match="not the largest")


def test_06_expert():
    assert E.check_06_expert({1: 50.0, 2: 90.0, 4: 120.0, 8: 125.0}).passed
    rejects(E.check_06_expert, {1: 50.0, 8: 125.0}, match="1, 2, 4 and 8")
    rejects(E.check_06_expert, {1: 50.0, 2: 0.0, 4: 120.0, 8: 125.0}, match="positive")
    rejects(E.check_06_expert, [50, 90, 120, 125], match="dict")
