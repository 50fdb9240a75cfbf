"""Every exercise check of the helpers/exercises/ package (lesson 07's own checks: test_exercises_07.py): an empty
slot is "not attempted" (no failure), a right answer passes, and typical wrong answers are rejected with a message
that starts with ❌.

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
from helpers.exercises import lesson_02, lesson_03, lesson_04, lesson_05, lesson_06
from helpers.chat import SEPARATOR, SamplingSettings, generate, render, stream
from helpers.download import LFSPointer
from helpers.memory import GPU_USABLE_FRACTION, GiB

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tiny model generates many answers here: one thread
# model, tokenizer, rejects, grok2_plan: tests/conftest.py


# ---------------------------------------------------------------------------------------------- the mechanics


# What each check takes after the answer, when nothing is answered yet.
EMPTY_EXTRA = {("01", "practitioner"): ({},), ("01", "expert"): ({},), ("02", "practitioner"): (None, None, "x"),
               ("04", "starter"): (None,), ("04", "practitioner"): (None, None), ("04", "expert"): (None, None),
               ("05", "practitioner"): (None, None, None, None, None), ("05", "expert"): (None, None),
               ("06", "starter"): (None, None, None), ("06", "practitioner"): (None, None)}


@pytest.mark.parametrize("key", sorted(E.CHECKS))
def test_every_check_reports_an_empty_slot_without_failing(key, capsys):
    result = E.CHECKS[key](None, *EMPTY_EXTRA.get(key, ()))
    assert result.status == E.NOT_ATTEMPTED and not result.passed and not result.ok
    assert "not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("key", sorted(E.CHECKS))
def test_the_not_attempted_hint_names_the_variables_of_the_answer_cell(key, capsys):
    """"Set `fresh_base`" must name what the lesson's answer cell defines, not a name the learner never sees there."""
    import ast
    import json
    import re

    lesson, tier = key
    hint = E.CHECKS[key](None, *EMPTY_EXTRA.get(key, ())).message
    capsys.readouterr()
    pattern = r"[Ss]et `([A-Za-z_]\w*)`|(?:Define|Write) `(?:def )?([A-Za-z_]\w*)\("
    named = {a or b for a, b in re.findall(pattern, hint)}
    notebook = next((helpers.paths.REPO_ROOT / "notebooks").glob(f"{lesson}_*.ipynb"))
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if c.get("id") == f"ex-{tier}-answer")
    tree = ast.parse("".join(cell["source"]))
    defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    defined |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert named <= defined, f"{notebook.name}: the hint names {sorted(named - defined)}, defined: {sorted(defined)}"


def test_there_are_three_tiers_for_each_of_the_eight_lessons():
    assert len(E.CHECKS) == 24
    assert {lesson for lesson, _ in E.CHECKS} == {f"0{i}" for i in range(8)}


def test_every_check_is_fed_a_known_wrong_answer_somewhere_in_the_tests():
    """Each registered check (lesson 07's included) must appear in a `rejects(...)` call: a check that no test feeds a
    wrong answer could be one that accepts anything."""
    import re
    from pathlib import Path

    sources = "\n".join(path.read_text(encoding="utf-8") for path in Path(__file__).parent.glob("test_*.py"))
    fed = set(re.findall(r"rejects\(\s*(?:E\.|exercises\.)?check_(\d\d)_(starter|practitioner|expert)\b", sources))
    assert set(E.CHECKS) <= fed, f"checks never fed a wrong answer: {sorted(set(E.CHECKS) - fed)}"


def test_a_failure_is_an_assertion_error_so_a_cell_goes_red():
    assert issubclass(E.ExerciseFailed, AssertionError)


def test_results_print_their_mark(capsys):
    assert E.check_02_expert(math.log2(131071) / 10).passed
    assert capsys.readouterr().out.startswith("✅ 02 expert")


# ---------------------------------------------------------------------------------------------- lesson 00


def test_00_starter(rejects, grok2_plan):
    usable = GPU_USABLE_FRACTION * 80 * GiB  # an "80 GB" H100 holds 80 GiB
    caches = 2 * grok2_plan.kv_cache_bytes(131072)  # two conversations
    by_hand = math.ceil((grok2_plan.weight_bytes("fp8") + caches) / usable)
    assert by_hand == grok2_plan.gpus_needed(80 * GiB, "fp8", context_tokens=131072, batch=2)
    assert E.check_00_starter(by_hand).passed
    rejects(E.check_00_starter, grok2_plan.gpus_needed(80 * GiB, "bf16", context_tokens=131072, batch=2), match="bf16")
    rejects(E.check_00_starter, math.ceil(grok2_plan.weight_bytes("fp8") / usable), match="KV cache")  # no cache
    rejects(E.check_00_starter, math.ceil((grok2_plan.weight_bytes("fp8") + caches) / (80 * GiB)), match="KV cache")
    rejects(E.check_00_starter, 1, match="too few")
    rejects(E.check_00_starter, 2.5, match="whole number")
    rejects(E.check_00_starter, "8", match="should be a number")


def test_00_practitioner(rejects, grok2_plan):
    right = int(grok2_plan.weight_bytes("fp8") // grok2_plan.kv_cache_bytes(8192))
    assert E.check_00_practitioner(right).passed
    rejects(E.check_00_practitioner, right + 1, match="round down")
    rejects(E.check_00_practitioner, right - 1, match="largest")
    rejects(E.check_00_practitioner, 0)


def test_00_expert(rejects, grok2_plan):
    one = 3 * 8192 * 16384
    assert E.check_00_expert(one).passed
    rejects(E.check_00_expert, one * 8, match="several experts")
    rejects(E.check_00_expert, grok2_plan.total_params - grok2_plan.active_params)


# ---------------------------------------------------------------------------------------------- lesson 01


def test_01_starter(rejects, grok2_plan):
    needed = 2 * grok2_plan.weight_bytes("bf16") * 1.05  # two copies with git-lfs, and the disk guard's 5%
    right = min(tb for tb in (1, 2, 4) if tb * 1e12 >= needed)
    assert E.check_01_starter(right).passed
    rejects(E.check_01_starter, 1, match="two")  # one copy fits 1 TB; git-lfs keeps two
    rejects(E.check_01_starter, 4, match="smaller")
    rejects(E.check_01_starter, 3, match="choose one")
    rejects(E.check_01_starter, "2 TB", match="should be a number")


MANIFEST = {"config.json": LFSPointer("a" * 64, 10), "model-00001.safetensors": LFSPointer("b" * 64, 300),
            "model-00002.safetensors": LFSPointer("c" * 64, 900), "model-00003.safetensors": LFSPointer("d" * 64, 500)}


def test_01_practitioner(rejects):
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


def test_01_expert(rejects):
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


def test_02_starter(rejects, grok2_plan):
    right = grok2_plan.expert_params * 2 / 1e9
    assert E.check_02_starter(right).passed
    rejects(E.check_02_starter, right / 2, match="2 bytes")
    rejects(E.check_02_starter, right * 1e9 / 2**30, match="GiB")
    rejects(E.check_02_starter, right * 1e9, match="bytes")


def test_02_practitioner(model, tokenizer, rejects):
    prompt = "Which lesson explains LoRA fine-tuning?"
    counts = lesson_02._layer0_routing(model, tokenizer, prompt)
    busiest, idlest = int(counts.argmax()), int(counts.argmin())
    assert counts[idlest] < counts[busiest]
    assert E.check_02_practitioner(busiest, model, tokenizer, prompt).passed
    rejects(E.check_02_practitioner, idlest, model, tokenizer, prompt, match="bincount")
    rejects(E.check_02_practitioner, 99, model, tokenizer, prompt, match="does not exist")
    other = SimpleNamespace(model=SimpleNamespace(layers=[SimpleNamespace(block_sparse_moe=object())]))
    assert E.check_02_practitioner(0, other, tokenizer, prompt).status == E.SKIPPED


def test_02_expert(rejects):
    assert E.check_02_expert(math.log2(131071) / 10).passed
    rejects(E.check_02_expert, math.log2(131072) / 10, match="off by one")
    rejects(E.check_02_expert, 1.0)
    rejects(E.check_02_expert, math.log(131071) / math.log(1024) * 2)


# ---------------------------------------------------------------------------------------------- lesson 03


def test_03_starter(rejects, grok2_plan):
    usable, cache = 4 * GPU_USABLE_FRACTION * 80 * GiB, 2 * grok2_plan.kv_cache_bytes(131072)  # two conversations
    right = [p for p in ("bf16", "fp8", "int8", "nf4") if grok2_plan.weight_bytes(p) + cache <= usable]
    assert right == ["nf4"]
    assert E.check_03_starter(right).passed and E.check_03_starter(("NF4",)).passed
    weights_only = [p for p in ("bf16", "fp8", "int8", "nf4") if grok2_plan.weight_bytes(p) <= usable]
    rejects(E.check_03_starter, weights_only, match="KV cache")
    rejects(E.check_03_starter, ["bf16", "nf4"], match="bf16 does not fit")
    rejects(E.check_03_starter, [], match="nf4 fits")
    rejects(E.check_03_starter, ["nf8"], match="unknown")
    rejects(E.check_03_starter, "nf4", match="list")


def test_03_practitioner(rejects):
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


def test_03_expert_arithmetic(rejects):
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


def test_04_starter(model, tokenizer, rejects):
    right = render(tokenizer, E.STARTER_04)
    assert right == "System: Be brief.<|separator|>\n\nHuman: What is QLoRA?<|separator|>\n\nAssistant:"
    assert E.check_04_starter(right, tokenizer).passed
    rejects(E.check_04_starter, render(tokenizer, E.STARTER_04[1:]), tokenizer, match="system prompt")
    rejects(E.check_04_starter, render(tokenizer, E.STARTER_04, add_generation_prompt=False), tokenizer,
            match="generation prompt")
    rejects(E.check_04_starter, tokenizer(right)["input_ids"], tokenizer, match="rendered string")


def test_04_practitioner(model, tokenizer, rejects):
    assert lesson_04.own_name(model, tokenizer)[0] == "Grok"
    assert E.check_04_practitioner(SamplingSettings(stop=(SEPARATOR, " 2,")), model, tokenizer).passed
    rejects(E.check_04_practitioner, SamplingSettings(), model, tokenizer, match="end right after")
    rejects(E.check_04_practitioner, SamplingSettings(stop=(SEPARATOR, "Grok")), model, tokenizer, match="'Grok'")
    rejects(E.check_04_practitioner, SamplingSettings(max_new_tokens=1), model, tokenizer)
    rejects(E.check_04_practitioner, {"stop": " 2,"}, model, tokenizer, match="SamplingSettings")


def test_04_practitioner_finds_the_name_of_a_model_that_is_not_grok(model, tokenizer, monkeypatch):
    monkeypatch.setattr(lesson_04, "own_name", lambda m, t: ("Granite", "I am Granite, an AI model from IBM."))
    monkeypatch.setattr("helpers.chat.generate", lambda *a, **k: SimpleNamespace(text="I am Granite",
                                                                                  finish_reason="stop"))
    assert E.check_04_practitioner(SamplingSettings(stop=(",",)), model, tokenizer).passed
    monkeypatch.setattr(lesson_04, "own_name", lambda m, t: (None, "Hello! How can I help?"))
    assert E.check_04_practitioner(SamplingSettings(), model, tokenizer).status == E.SKIPPED


def test_04_expert(model, tokenizer, rejects):

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


def test_05_starter(rejects):
    assert E.check_05_starter(16 * (8192 + 8192)).passed
    rejects(E.check_05_starter, 8192 * 8192, match="full matrix")
    rejects(E.check_05_starter, 16 * 8192, match="one of the two")
    rejects(E.check_05_starter, 8 * (8192 + 8192))


@pytest.fixture(scope="module")
def tuned():
    """A stand-in for the fine-tuned model: the tiny model with its last layer moved, so that it answers otherwise."""
    torch.manual_seed(0)
    other = helpers.load_model(verbose=False)
    with torch.no_grad():
        for param in other.model.layers[-1].parameters():
            param.add_(torch.randn_like(param) * 0.3)
    return other


def test_05_practitioner(model, tokenizer, tuned, rejects):
    base = model
    question = [{"role": "user", "content": "Combien de couches a Grok 2.5 ?"}]
    before, after = lesson_05._greedy(base, tokenizer, question), lesson_05._greedy(tuned, tokenizer, question)
    assert before != after
    assert E.check_05_practitioner(before, after, tuned, base, tokenizer, question).passed
    assert E.check_05_practitioner(before, after[:12], tuned, base, tokenizer, question).passed  # a shorter run
    rejects(E.check_05_practitioner, "Grok 2 a 64 couches.", "Grok 2.5 a 64 couches.", tuned, base, tokenizer,
            question, match="not the merged model's")  # any two different strings no longer pass
    rejects(E.check_05_practitioner, after, before, tuned, base, tokenizer, question, match="swapped")
    rejects(E.check_05_practitioner, before, before, tuned, base, tokenizer, question, match="base model's answer")
    rejects(E.check_05_practitioner, before, after, tuned, tuned, tokenizer, question, match="merged model itself")
    rejects(E.check_05_practitioner, before, after, tuned, base, tokenizer, "Combien ?", match="list of messages")
    rejects(E.check_05_practitioner, before, after, match="pass the models")
    rejects(E.check_05_practitioner, "before", "   ", match="empty")
    rejects(E.check_05_practitioner, "before", SimpleNamespace(text="after"), match="str")


def test_05_expert(model, tokenizer, tmp_path, rejects):
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


def counted(messages):
    """FakeServer's token count of a request: a word a token, plus 3 per message for the template."""
    return sum(len(m["content"].split()) + 3 for m in messages)


def test_06_starter(rejects):
    client, messages = FakeServer(1000), [dict(m) for m in lesson_06.STARTER_06]
    right = reply(prompt_tokens=counted(messages))
    assert E.check_06_starter(right, messages, client, "tiny").passed
    rejects(E.check_06_starter, reply(finish="length"), messages, client, "tiny", match="cut")
    rejects(E.check_06_starter, reply(content=""), messages, client, "tiny", match="no text")
    rejects(E.check_06_starter, "Grok 2 has 64 layers.", messages, client, "tiny", match="ChatCompletion")
    rejects(E.check_06_starter, right, messages[1:], client, "tiny", match="no system message")
    brief = [{"role": "system", "content": "Be brief."}, messages[1]]
    rejects(E.check_06_starter, reply(prompt_tokens=counted(brief)), brief, client, "tiny", match="system prompt is")
    rejects(E.check_06_starter, right, messages[::-1], client, "tiny", match="then the user's question")
    # the right messages shown, but the reply came from the question alone
    rejects(E.check_06_starter, reply(prompt_tokens=counted(messages[1:])), messages, client, "tiny",
            match="without the system prompt")
    rejects(E.check_06_starter, right, None, client, "tiny", match="pass the messages")


class FakeServer:
    """A chat.completions.create that accepts max_tokens up to `limit` and answers above it as the server does."""

    def __init__(self, limit):
        self.limit = limit
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, *, model, messages, max_tokens, temperature=None):
        if max_tokens > self.limit:
            response = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))
            raise openai.BadRequestError(f"max_tokens must be at most {self.limit}", response=response, body=None)
        return reply(prompt_tokens=counted(messages))


def test_06_practitioner(rejects):
    client = FakeServer(1000)
    assert E.check_06_practitioner(1000, client, "tiny").passed
    rejects(E.check_06_practitioner, 1001, client, "tiny", match="too large")
    rejects(E.check_06_practitioner, 999, client, "tiny", match="not the largest")


def summary(concurrency, tokens_per_s, requests=8, stream=False, errors=0):
    """What serve.load_test(...).summary() returns, for a measured throughput."""
    wall = 10.0
    return {"concurrency": concurrency, "requests": requests, "stream": stream, "errors": errors,
            "tokens_per_s": tokens_per_s, "completion_tokens": round(tokens_per_s * wall), "wall_s": wall}


def test_06_expert(rejects):
    measured = {1: 50.0, 2: 90.0, 4: 120.0, 8: 125.0}  # x1.8, x1.33, x1.04: doubling stops paying after 4
    curve = {c: summary(c, t) for c, t in measured.items()}
    assert lesson_06.stops_paying(measured) == 4
    assert E.check_06_expert(curve, 4).passed
    assert E.check_06_expert(curve).status == E.NOT_ATTEMPTED  # measured, but no decision yet
    rejects(E.check_06_expert, curve, 8, match="x1.04")  # the wrong decision for this curve
    rejects(E.check_06_expert, curve, 2, match="x1.33")
    rejects(E.check_06_expert, curve, 3, match="1, 2, 4 or 8")
    rejects(E.check_06_expert, {1: 1, 2: 1, 4: 1, 8: 1}, 1, match="bare number")  # any numbers no longer pass
    rejects(E.check_06_expert, {c: summary(c, t) for c, t in {1: 50.0, 8: 125.0}.items()}, 4, match="1, 2, 4 and 8")
    rejects(E.check_06_expert, {**curve, 2: summary(4, 90.0)}, 4, match="concurrency 4")
    rejects(E.check_06_expert, {**curve, 2: summary(2, 90.0, stream=True)}, 4, match="stream=True")
    rejects(E.check_06_expert, {**curve, 2: summary(2, 90.0, errors=2)}, 4, match="failed request")
    rejects(E.check_06_expert, {**curve, 2: {**summary(2, 90.0), "tokens_per_s": 900.0}}, 4, match="not completion_tokens")
    rejects(E.check_06_expert, [50, 90, 120, 125], 4, match="dict")
    flat = {c: summary(c, 100.0) for c in (1, 2, 4, 8)}
    assert E.check_06_expert(flat, 1).passed  # nothing gained from the first doubling on
