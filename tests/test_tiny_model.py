"""The built-in tiny Grok 2: the released config's keys, Grok 2's tokenizer conventions, real answers, reproducible."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import helpers
from helpers.grok2 import Grok2Config, Grok2ForCausalLM

TINY = helpers.TINY_MODEL_DIR


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(TINY).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY)


def ask(model, tokenizer, messages):
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


def test_config_has_exactly_the_released_keys():
    tiny = json.loads((TINY / "config.json").read_text())
    released = json.loads(helpers.GROK2_RELEASED_CONFIG.read_text())
    assert list(tiny) == list(released)
    assert tiny["model_type"] == "git" and tiny["architectures"] == ["Grok1ForCausalLM"]
    assert tiny["hidden_size"] < released["hidden_size"] and tiny["num_local_experts"] == 8
    assert isinstance(AutoConfig.from_pretrained(TINY), Grok2Config)


def test_auto_class_builds_grok2_and_it_is_small(model):
    assert type(model) is Grok2ForCausalLM
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert (TINY / "model.safetensors").stat().st_size < 5_000_000


def test_tokenizer_follows_grok2(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<|pad|>", "<|separator|>", "<|eos|>")] == [0, 1, 2]
    assert tokenizer.bos_token is None
    assert tokenizer("Hello")["input_ids"] == tokenizer.encode("Hello", add_special_tokens=False)
    single = [{"role": "user", "content": "What is your name?"}]
    assert tokenizer.apply_chat_template(single, tokenize=False, add_generation_prompt=True) == (
        "Human: What is your name?<|separator|>\n\nAssistant:"
    )
    conversation = [
        {"role": "system", "content": " Be brief. "},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": " Hello."},
        {"role": "user", "content": "Experts?"},
    ]
    assert tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == (
        "System: Be brief.<|separator|>\n\nHuman: Hi<|separator|>\n\nAssistant:  Hello.<|separator|>\n\n"
        "Human: Experts?<|separator|>\n\nAssistant:"
    )
    assert tokenizer.encode("2025", add_special_tokens=False).__len__() == 4  # Grok 2 splits every digit


@pytest.mark.parametrize(
    "question, expected",
    [
        ("How many experts does Grok 2 have?", "8 experts"),
        ("How do I serve Grok 2.5?", "sglang.launch_server"),
        ("Can I run Grok 2.5 on a 24 GB GPU?", "No."),
        ("What is your name?", "tiny Grok 2"),
    ],
)
def test_answers_course_questions_and_stops_at_the_separator(model, tokenizer, question, expected):
    answer = ask(model, tokenizer, [{"role": "user", "content": question}])
    assert expected in answer
    assert answer.endswith("<|separator|>")


def test_answers_with_a_system_prompt(model, tokenizer):
    answer = ask(model, tokenizer, [{"role": "system", "content": "Answer in one short sentence."},
                                    {"role": "user", "content": "How many layers does Grok 2 have?"}])
    assert answer == " 64 layers.<|separator|>"


def test_build_is_deterministic(tmp_path):
    """Two short builds from scratch give byte-identical weights (the full build is the same code, 450 steps)."""
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, "scripts/build_tiny_grok2.py", "--out", str(out), "--steps", "6", "--no-report"],
                       cwd=helpers.paths.REPO_ROOT, check=True, capture_output=True, timeout=300)
        digests.append(hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest())
        assert json.loads((out / "config.json").read_text())["model_type"] == "git"
    assert digests[0] == digests[1]
