"""The released tokenizer.tok.json (tiktoken format) as a transformers tokenizer: same ids as tiktoken, right specials."""

from __future__ import annotations

import pytest
from tiktoken._educational import bpe_train

from helpers.chat_text import REFERENCE_RENDERINGS
from helpers.grok2.tokenization_grok2 import (
    GROK2_SPLIT_PATTERN,
    tiktoken_encoding_from_tok_json,
    tokenizer_from_tok_json,
    write_tok_json,
)

TRAINING_TEXT = (
    "Grok 2.5 has 8 experts and 64 layers. Human: What is your name?\n\nAssistant: I am Grok. "
    "The checkpoint is about 500 GB in 42 files, pre-sharded for 8 GPUs; it's served with SGLang --tp 8. "
    "Il faut 8 GPU de plus de 40 Go. Ünïcödé, émojis 🙂 and tabs\tand\nnewlines 12345 are fine. "
) * 3
HELD_OUT = [
    "How many experts does Grok 2 have? It has 8 experts, 2 active per token.",
    "Explique-moi la différence entre Grok 2.5 et Grok 3.",
    "  leading spaces, digits 2025-08-23, symbols <>{}[] and 🙂🙂 emoji\n\n\nend",
    "",
]


@pytest.fixture(scope="module")
def tok_json(tmp_path_factory):
    ranks = bpe_train(TRAINING_TEXT, 300, GROK2_SPLIT_PATTERN, visualise=None)
    # Grok 2 numbers its control tokens first: <|pad|> 0, <|separator|> 1, <|eos|> 2; regular tokens follow.
    ranks = {token: rank + 3 for token, rank in ranks.items()}
    specials = {"<|pad|>": 0, "<|separator|>": 1, "<|eos|>": 2}
    path = tmp_path_factory.mktemp("tok") / "tokenizer.tok.json"
    write_tok_json(path, ranks, specials, vocab_size=len(ranks) + 3)
    return path


def test_ids_equal_tiktoken(tok_json):
    reference = tiktoken_encoding_from_tok_json(tok_json)
    ours = tokenizer_from_tok_json(tok_json)
    for text in HELD_OUT + [TRAINING_TEXT]:
        assert ours.encode(text, add_special_tokens=False) == reference.encode(text), text
        assert ours.decode(reference.encode(text)) == text


def test_special_tokens_and_no_bos(tok_json):
    tokenizer = tokenizer_from_tok_json(tok_json)
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2
    assert tokenizer.convert_tokens_to_ids("<|separator|>") == 1
    assert tokenizer.bos_token is None
    ids = tokenizer("Hello")["input_ids"]
    assert ids == tokenizer.encode("Hello", add_special_tokens=False)  # nothing prepended
    assert tokenizer.encode("a<|separator|>b", add_special_tokens=False).count(1) == 1


def test_chat_template_renders_the_reference_strings(tok_json):
    tokenizer = tokenizer_from_tok_json(tok_json)
    for messages, expected in REFERENCE_RENDERINGS.values():  # helpers.chat_text: one conversation per shape
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected


def test_wrong_special_ids_are_refused(tmp_path):
    ranks = {bytes([b]): b + 3 for b in range(256)}
    path = tmp_path / "tokenizer.tok.json"
    write_tok_json(path, ranks, {"<|pad|>": 0, "<|eos|>": 1, "<|separator|>": 2})
    with pytest.raises(ValueError, match="Grok 2 uses"):
        tokenizer_from_tok_json(path)
