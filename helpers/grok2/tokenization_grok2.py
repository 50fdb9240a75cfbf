"""Grok 2's tokenizer: the released `tokenizer.tok.json` (tiktoken format) as a transformers tokenizer.

The hub repository ships no `tokenizer.json`, only `tokenizer.tok.json`, which SGLang and vLLM read with tiktoken
(SGLang `tiktoken_tokenizer.py`, vLLM `tokenizers/grok2.py`). Its format:

    {"regular_tokens": [{"bytes": [72, 105], "token": 1234}, ...],   # byte sequence -> id (= BPE merge rank)
     "special_tokens": [{"bytes": [...], "token": 0}, ...],           # <|pad|>, <|separator|>, <|eos|>, controls
     "word_split": "V1", "pat_str": optional regex, "vocab_size": optional}

A tiktoken vocabulary is a byte-level BPE whose merge order is the token id. We rebuild the equivalent Hugging Face
BPE (vocabulary + the merge list implied by the ranks) so that `AutoTokenizer`-style code, `apply_chat_template`,
padding and batching all work, and check it against tiktoken itself in the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

from .configuration_grok2 import EOS_TOKEN_ID, PAD_TOKEN_ID, SEPARATOR_TOKEN_ID

# "V1" word split (SGLang `PAT_STR_B`): GPT-style pre-tokenization, but every digit stands alone.
GROK2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Grok 2's chat template (identical in SGLang and vLLM): user/system content stripped, assistant content not;
# every turn ends with "<|separator|>\n\n"; the generation prompt is "Assistant:" with no trailing space.
GROK2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'].strip() + '<|separator|>\n\n' }}"
    "{% elif message['role'] == 'system' %}{{ 'System: ' + message['content'].strip() + '<|separator|>\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + '<|separator|>\n\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

PAD, SEPARATOR, EOS = "<|pad|>", "<|separator|>", "<|eos|>"


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte, the alphabet of Hugging Face byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def read_tok_json(path: str | Path) -> tuple[dict[bytes, int], dict[str, int], str, int | None]:
    """(mergeable ranks, special tokens, split pattern, declared vocab size) from a tok.json file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("word_split", "V1") != "V1":
        raise ValueError(f"{path}: unknown word_split {data['word_split']!r} (only 'V1' is known)")
    ranks = {bytes(item["bytes"]): int(item["token"]) for item in data["regular_tokens"]}
    specials = {bytes(item["bytes"]).decode("utf-8"): int(item["token"]) for item in data["special_tokens"]}
    return ranks, specials, data.get("pat_str", GROK2_SPLIT_PATTERN), data.get("vocab_size")


def bpe_merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list implied by tiktoken ranks: each multi-byte token is made from two lower-ranked tokens.

    tiktoken merges, at each step, the adjacent pair whose concatenation has the lowest rank. An HF BPE with merges
    sorted by the rank of their result does the same. For each token we record every split into two known parts;
    ordering ties by the parts' ranks keeps the choice deterministic.
    """
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def tokenizer_from_tok_json(path: str | Path):
    """A `PreTrainedTokenizerFast` equivalent to the tiktoken tokenizer in `path`, with Grok 2's chat template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ranks, specials, pattern, _ = read_tok_json(path)
    to_unicode = _byte_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    vocab = {as_text(token): rank for token, rank in ranks.items()}
    vocab.update(specials)  # in the vocabulary at their own ids; registered as special (never split) below
    merges = [(as_text(left), as_text(right)) for left, right in bpe_merges_from_ranks(ranks)]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in specials])
    for text, token_id in specials.items():
        if backend.token_to_id(text) != token_id:
            raise ValueError(f"{path}: special token {text!r} should have id {token_id}, got {backend.token_to_id(text)}")

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD if PAD in specials else None,
        eos_token=EOS if EOS in specials else None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = GROK2_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    expected = {PAD: PAD_TOKEN_ID, SEPARATOR: SEPARATOR_TOKEN_ID, EOS: EOS_TOKEN_ID}
    for text, token_id in expected.items():
        if text in specials and specials[text] != token_id:
            raise ValueError(f"{path}: {text} has id {specials[text]}, Grok 2 uses {token_id}")
    return tokenizer


def tiktoken_encoding_from_tok_json(path: str | Path):
    """The reference: the same file read by tiktoken, as SGLang does (used by the tests to check the conversion)."""
    import tiktoken

    ranks, specials, pattern, vocab_size = read_tok_json(path)
    return tiktoken.Encoding(
        name=Path(path).name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials, explicit_n_vocab=vocab_size
    )


def tok_json_from_tokenizer(tokenizer, path: str | Path) -> None:
    """The inverse of `tokenizer_from_tok_json` for a byte-level BPE whose merge order is its id order (the tiny
    Grok 2's): write it in the released tok.json format, specials (`<|...|>`) at their own ids."""
    to_byte = {char: byte for byte, char in _byte_to_unicode().items()}
    vocab = tokenizer.get_vocab()
    specials = {text: token_id for text, token_id in vocab.items() if text in tokenizer.all_special_tokens or
                (text.startswith("<|") and text.endswith("|>"))}
    ranks = {bytes(to_byte[char] for char in text): token_id for text, token_id in vocab.items() if text not in specials}
    write_tok_json(path, ranks, specials, vocab_size=len(vocab))


def write_tok_json(path: str | Path, ranks: dict[bytes, int], specials: dict[str, int], vocab_size: int | None = None) -> None:
    """Write ranks and specials in the released tok.json format (for building test and practice checkpoints)."""
    data = {
        "regular_tokens": [{"bytes": list(token), "token": rank} for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])],
        "special_tokens": [{"bytes": list(text.encode()), "token": rank} for text, rank in sorted(specials.items(), key=lambda kv: kv[1])],
        "word_split": "V1",
        "pat_str": GROK2_SPLIT_PATTERN,
    }
    if vocab_size is not None:
        data["vocab_size"] = vocab_size
    Path(path).write_text(json.dumps(data), encoding="utf-8")
