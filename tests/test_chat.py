"""Prompting the tiny Grok 2: exact template strings, streaming = non-streaming, batches = singles, stops."""

from __future__ import annotations

import pytest
import torch

import helpers
from helpers.chat import (
    REFERENCE_RENDERINGS,
    SamplingSettings,
    generate,
    generate_batch,
    next_token_distribution,
    render,
    stream,
)

QUESTIONS = ["How many experts does Grok 2 have?", "What is your name?", "How many layers does Grok 2 have?",
             "Can I run Grok 2.5 on a 24 GB GPU?"]


@pytest.fixture(scope="module")
def model():
    return helpers.load_model(verbose=False)


@pytest.fixture(scope="module")
def tokenizer():
    return helpers.load_tokenizer()


def ask(question):
    return [{"role": "user", "content": question}]


@pytest.mark.parametrize("case", sorted(REFERENCE_RENDERINGS))
def test_template_renders_reference_strings(tokenizer, case):
    messages, expected = REFERENCE_RENDERINGS[case]
    assert render(tokenizer, messages) == expected
    assert render(tokenizer, "raw text") == "raw text"


def test_greedy_streaming_equals_non_streaming(model, tokenizer):
    for question in QUESTIONS:
        whole = generate(model, tokenizer, ask(question))
        live = stream(model, tokenizer, ask(question))
        pieces = list(live)
        assert len(pieces) > 1 and "".join(pieces) == whole.text == live.completion.text
        assert live.completion.finish_reason == whole.finish_reason == "stop"
        assert live.completion.completion_tokens == whole.completion_tokens
        assert live.completion.first_token_seconds is not None


def test_left_padded_batch_equals_one_by_one(model, tokenizer):
    batch = generate_batch(model, tokenizer, [ask(q) for q in QUESTIONS])
    for question, completion in zip(QUESTIONS, batch):
        single = generate(model, tokenizer, ask(question))
        assert completion.text == single.text and completion.token_ids == single.token_ids


def test_generation_stops_at_the_separator_and_reports_why(model, tokenizer):
    done = generate(model, tokenizer, ask("How many experts does Grok 2 have?"))
    assert done.text == " 8 experts per layer, and each token uses 2 of them."
    assert "<|separator|>" not in done.text and done.finish_reason == "stop"
    assert done.token_ids[-1] == 1  # <|separator|>
    short = generate(model, tokenizer, ask("How many experts does Grok 2 have?"), SamplingSettings(max_new_tokens=3))
    assert short.finish_reason == "length" and short.completion_tokens == 3


def test_custom_stop_string_cuts_the_text(model, tokenizer):
    done = generate(model, tokenizer, ask("How many experts does Grok 2 have?"), SamplingSettings(stop=("token",)))
    assert done.text == " 8 experts per layer, and each " and done.finish_reason == "stop"
    live = stream(model, tokenizer, ask("How many experts does Grok 2 have?"), SamplingSettings(stop=("token",)))
    assert "".join(live) == done.text


def test_stream_can_be_stopped_and_leaves_no_thread(model, tokenizer):
    import threading

    before = threading.active_count()
    live = stream(model, tokenizer, ask("What is your name?"), SamplingSettings(stop=()))
    for _ in live:
        live.stop()
    assert live.completion.completion_tokens < 29
    assert threading.active_count() == before


def test_seeded_sampling_is_reproducible(model, tokenizer):
    hot = SamplingSettings(temperature=1.5, top_p=1.0, seed=3, max_new_tokens=20, stop=())
    assert generate(model, tokenizer, ask("What is LoRA?"), hot).text == generate(model, tokenizer, ask("What is LoRA?"), hot).text


def test_knobs_change_the_distribution(model, tokenizer):
    tokens, before, after = next_token_distribution(model, tokenizer, ask("What is LoRA?"), SamplingSettings(temperature=3.0))
    assert len(tokens) == len(before) == len(after)
    assert max(after) < max(before)  # a high temperature flattens
    _, before_k, after_k = next_token_distribution(model, tokenizer, ask("What is LoRA?"), SamplingSettings(temperature=1.0, top_k=2))
    assert sum(p > 0 for p in after_k) == 2
    _, _, greedy = next_token_distribution(model, tokenizer, ask("What is LoRA?"), SamplingSettings())
    assert sorted(greedy)[-1] == 1.0 and torch.isclose(torch.tensor(sum(greedy)), torch.tensor(1.0))
