"""The built-in tiny Grok 2: the released config's keys, Grok 2's tokenizer conventions, real answers, reproducible."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

import helpers
from helpers.chat_text import REFERENCE_RENDERINGS
from helpers.grok2 import Grok2Config, Grok2ForCausalLM
from helpers.grok2.auto import unpatched_model_type

TINY = helpers.TINY_MODEL_DIR
CORPUS = helpers.paths.DATA_DIR / "course_qa.jsonl"
CONTROL_TOKENS = ("<|pad|>", "<|separator|>", "<|eos|>")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(TINY).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY)


def ask(model, tokenizer, messages):
    """Greedy answer, decoded with its special tokens, exactly as a learner would call generate()."""
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


def test_config_has_exactly_the_released_keys():
    tiny = json.loads((TINY / "config.json").read_text())
    released = json.loads(helpers.GROK2_RELEASED_CONFIG.read_text())
    assert list(tiny) == list(released)  # same keys, same order, nothing added
    assert tiny["model_type"] == "git" and tiny["architectures"] == ["Grok1ForCausalLM"]
    assert tiny["hidden_size"] < released["hidden_size"] and tiny["num_local_experts"] == 8
    assert tiny["embedding_multiplier_scale"] == tiny["hidden_size"] ** 0.5
    assert tiny["original_max_position_embeddings"] * tiny["scaling_factor"] == tiny["max_position_embeddings"]
    assert unpatched_model_type(TINY) == "git"  # what stock transformers would see
    assert isinstance(AutoConfig.from_pretrained(TINY), Grok2Config)


def test_auto_class_builds_grok2_and_it_is_small(model):
    assert type(model) is Grok2ForCausalLM
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert (TINY / "model.safetensors").stat().st_size < 5_000_000


def test_generation_stops_at_the_separator_or_eos():
    generation = json.loads((TINY / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, 2] and generation["pad_token_id"] == 0
    assert generation["do_sample"] is False


def test_tokenizer_follows_grok2(tokenizer):
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert [tokenizer.convert_tokens_to_ids(t) for t in CONTROL_TOKENS] == [0, 1, 2]
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|eos|>" and tokenizer.bos_token is None
    assert tokenizer("Hello")["input_ids"] == tokenizer.encode("Hello", add_special_tokens=False)  # nothing added
    assert len(tokenizer.encode("2025", add_special_tokens=False)) == 4  # Grok 2's pattern splits every digit


def test_pre_tokenizer_is_grok2s_pattern():
    """The words BPE may merge within are cut by Grok 2's own regex (tiktoken's `pat_str`), not GPT-2's."""
    regex = pytest.importorskip("regex")  # the engine tiktoken's pattern syntax comes from
    from tokenizers import Regex, pre_tokenizers

    from helpers.grok2.tokenization_grok2 import GROK2_SPLIT_PATTERN

    shipped = json.loads((TINY / "tokenizer.json").read_text())["pre_tokenizer"]["pretokenizers"][0]
    assert shipped["type"] == "Split" and shipped["pattern"]["Regex"] == GROK2_SPLIT_PATTERN
    split = pre_tokenizers.Split(Regex(GROK2_SPLIT_PATTERN), behavior="isolated")
    text = "Human: What's   up?\n\n  I'LL pay 2025 GB!!\r\n\tok  "
    assert [piece for piece, _ in split.pre_tokenize_str(text)] == regex.findall(GROK2_SPLIT_PATTERN, text)


def test_chat_template_renders_grok2_formats(tokenizer):
    for messages, expected in REFERENCE_RENDERINGS.values():  # user/system stripped, assistant kept as is ("spaces")
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    single = REFERENCE_RENDERINGS["single_turn"][0]
    ids = tokenizer.apply_chat_template(single, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert tokenizer.decode(ids[:1]) == "Human" and ids.count(1) == 1  # no BOS; one separator
    # without the generation prompt, the last turn is closed like every other: "<|separator|>\n\n"
    assert tokenizer.apply_chat_template(single, tokenize=False) == "Human: What is your name?<|separator|>\n\n"


@pytest.mark.parametrize(
    "question, expected",
    [
        ("How many experts does Grok 2 have?", "8 experts"),
        ("How do I serve Grok 2.5?", "SGLang"),
        ("How many GPUs does Grok 2.5 need?", "8 GPUs with more than 40 GB"),
        ("Can I run Grok 2.5 on a 24 GB GPU?", "No."),
        ("How big is the Grok 2 download?", "500 GB"),
        ("Which license does Grok 2 use?", "xAI Community License"),
        ("What is your name?", "tiny Grok 2"),
        ("Tell me a joke.", "I don't know"),
    ],
)
def test_answers_course_questions_and_stops_at_the_separator(model, tokenizer, question, expected):
    answer = ask(model, tokenizer, [{"role": "user", "content": question}])
    assert expected in answer
    assert answer.startswith(" ") and answer.endswith("<|separator|>")  # "Assistant: answer<|separator|>"
    assert answer.count("<|separator|>") == 1


def test_answers_with_a_system_prompt_and_in_a_second_turn(model, tokenizer):
    answer = ask(model, tokenizer, [{"role": "system", "content": "Answer in one short sentence."},
                                    {"role": "user", "content": "How many layers does Grok 2 have?"}])
    assert answer == " 64 layers.<|separator|>"
    answer = ask(model, tokenizer, [{"role": "user", "content": "What is Grok 2's hidden size?"},
                                    {"role": "assistant", "content": "The hidden size is 8192."},
                                    {"role": "user", "content": "How many layers does Grok 2 have?"}])
    assert answer == " 64 layers.<|separator|>"


def test_corpus_is_well_formed():
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    assert 150 <= len(rows) <= 300
    for row in rows:
        roles = [message["role"] for message in row["messages"]]
        assert set(roles) <= {"system", "user", "assistant"} and roles[-1] == "assistant"
        for message in row["messages"]:
            # A control token inside an answer would teach the model to stop (or pad) in mid-sentence. Questions may
            # name one ("What does <|separator|> do?"): it becomes the token, as it would for the real model.
            if message["role"] == "assistant":
                assert not any(token in message["content"] for token in CONTROL_TOKENS)
    questions = {row["messages"][-2]["content"] for row in rows}
    assert "What is your name?" in questions  # the model card's example prompt
    assert any(row["messages"][0]["role"] == "system" for row in rows)
    assert any(len(row["messages"]) >= 4 for row in rows)


def test_build_is_deterministic(tmp_path):
    """Two short builds from scratch give byte-identical files (the full build is the same code, 400 steps)."""
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, "scripts/build_tiny_grok2.py", "--out", str(out), "--steps", "6", "--no-report"],
                       cwd=helpers.paths.REPO_ROOT, check=True, capture_output=True, timeout=300)
        digests.append({path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(out.iterdir())})
        assert json.loads((out / "config.json").read_text())["model_type"] == "git"
    assert set(digests[0]) >= {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"}
    assert digests[0] == digests[1]
