"""The model a server runs: loaded once (a base or merged model, or a base with an unmerged LoRA adapter), the names
clients ask for, its context, and the prompts it accepts: bounded by their length in characters before any of them is
tokenized, then, when that bound is loose (a long context allows megabytes), counted in pieces that stop as soon as
the context is exceeded - the work is in proportion to the context, never to the prompt."""

from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CourseError
from .protocol import APIError

DEFAULT_MAX_MODEL_LEN = 2048  # tokens per sequence (prompt + answer) when the model allows more: each slot holds this
COUNT_PIECE_CHARS = 16_384  # a long prompt is counted this many characters at a time, the lock released in between
UNSAFE_CUT_SLACK = 16  # tokens a cut inside a word may add to a count (see count_tokens_upto)


@dataclass
class ServedModel:
    """What the server runs: the model, its tokenizer, and the names clients may ask for."""

    model: Any
    tokenizer: Any
    name: str
    adapter_name: str | None = None  # with an unmerged PEFT adapter: served under this name, the base under `name`
    context_length: int = DEFAULT_MAX_MODEL_LEN  # set from the model (and max_model_len) in __post_init__
    default_max_tokens: int = 256
    source: str = ""
    max_model_len: int | None = None  # a cap below the model's own context (a KV-cache slot holds this many tokens)
    max_token_chars: int = 0  # the longest token's text: a prompt of more than context * this characters cannot fit
    _counting_tokenizer: Any = None
    _counting_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        config = getattr(self.model, "config", None)
        model_length = int(getattr(config, "max_position_embeddings", None) or self.context_length)
        cap = self.max_model_len or DEFAULT_MAX_MODEL_LEN
        self.context_length = min(model_length, cap)
        vocabulary = self.tokenizer.get_vocab()
        self.max_token_chars = max(1, max((len(text) for text in vocabulary), default=1))
        # Encoding prompts happens in request threads while the scheduler decodes; a fast tokenizer's Rust core
        # refuses concurrent use ("Already borrowed"), so requests encode with their own copy, one at a time.
        try:
            self._counting_tokenizer = copy.deepcopy(self.tokenizer)
        except Exception:  # noqa: BLE001 - a tokenizer that cannot be copied is shared (under the lock)
            self._counting_tokenizer = self.tokenizer

    @property
    def names(self) -> list[str]:
        return [self.name] + ([self.adapter_name] if self.adapter_name else [])

    def uses_adapter(self, name: str) -> bool:
        return self.adapter_name is not None and name == self.adapter_name

    def check_prompt_size(self, conversation) -> None:
        """Refuse, before tokenizing, a prompt that cannot fit the context whatever its tokens."""
        texts = [conversation] if isinstance(conversation, str) else [m["content"] for m in conversation]
        if len(texts) > self.context_length:
            raise APIError(400, f"This model's maximum context length is {self.context_length} tokens. However, you "
                                f"sent {len(texts)} messages, and each takes at least one token. Send fewer.",
                           param="messages", code="context_length_exceeded")
        characters = sum(len(text) for text in texts)
        limit = self.context_length * self.max_token_chars
        if characters > limit:
            raise APIError(400, f"This model's maximum context length is {self.context_length} tokens. However, your "
                                f"prompt has {characters:,} characters, and no {self.context_length} tokens of this "
                                f"model hold more than {limit:,} (at most {self.max_token_chars} per token). "
                                "Shorten it.", param=_prompt_field(conversation), code="context_length_exceeded")

    def prompt_ids(self, conversation) -> list[int]:
        """The ids the model receives (helpers.chat.encode: message contents can never become added tokens).

        A prompt longer than one counting piece is counted first, piece by piece, and refused as soon as it holds
        more tokens than the context: only a prompt that fits is tokenized whole."""
        from ..chat_text import encode, render

        self.check_prompt_size(conversation)
        with self._counting_lock:  # rendering reads the tokenizer too (its added tokens): not beside an encoding
            text = render(self._counting_tokenizer, conversation)
        if len(text) > COUNT_PIECE_CHARS:
            counted, read, over = count_tokens_upto(self._counting_tokenizer, text, self.context_length,
                                                    self._counting_lock)
            if over:
                raise APIError(400, f"This model's maximum context length is {self.context_length} tokens. However, "
                                    f"your prompt holds more: {counted:,} tokens in its first {read:,} characters "
                                    f"(of {len(text):,}). Shorten it.", param=_prompt_field(conversation),
                               code="context_length_exceeded")
        with self._counting_lock:
            return encode(self._counting_tokenizer, conversation)

    @property
    def default_temperature(self) -> float:
        """The model's own generation defaults (as vLLM applies them): greedy unless its generation_config samples."""
        generation = getattr(self.model, "generation_config", None)
        if generation is not None and getattr(generation, "do_sample", False):
            return float(getattr(generation, "temperature", None) or 1.0)
        return 0.0


def _prompt_field(conversation) -> str:
    return "prompt" if isinstance(conversation, str) else "messages"


def _pieces(text: str, size: int):
    """`text` in pieces of about `size` characters, each but the last ending where a word ends: `(piece, safe)`.

    A piece ends before a space that follows a non-space character: there, byte-level BPE pre-tokenizers (GPT-2's,
    Grok 2's, Llama 3's, Granite's) split anyway, so the pieces' tokens are exactly the whole text's. Where no such
    place is found in the piece's second half (text without spaces), it is cut at `size` (`safe` False)."""
    start = 0
    while len(text) - start > size:
        end, cut = start + size, -1
        low = start + size // 2
        while True:
            cut = text.rfind(" ", low, end)
            if cut <= low or not text[cut - 1].isspace():
                break
            end = cut  # inside a run of spaces: the run belongs together, look before it
        safe = cut > low
        cut = cut if safe else start + size
        yield text[start:cut], safe
        start = cut
    yield text[start:], True


def count_tokens_upto(tokenizer, text: str, limit: int, lock: threading.Lock | None = None,
                      piece_chars: int = COUNT_PIECE_CHARS) -> tuple[int, int, bool]:
    """(tokens counted, characters read, whether `text` surely holds more than `limit` tokens), counted in pieces of
    about `piece_chars` characters and stopped as soon as that is sure: work in proportion to `limit`, whatever the
    length of `text`. `lock` is held for one piece at a time, so other requests' prompts are encoded in between.

    Cut between words (see _pieces), the count is exact. A cut inside a word (text without spaces) tokenizes the two
    halves of that word apart, which may count a few tokens more than the word has, so the count is taken as sure
    only past `limit` plus UNSAFE_CUT_SLACK per such cut. Added tokens (<|separator|>) count as one, as the template
    writes them; a content that spells one is encoded as more (helpers.chat.encode): that only lowers the count."""
    counted, read, slack = 0, 0, 0
    for piece, safe in _pieces(text, piece_chars):
        with lock or contextlib.nullcontext():
            counted += len(tokenizer(piece, add_special_tokens=False)["input_ids"])
        read += len(piece)
        slack += 0 if safe else UNSAFE_CUT_SLACK  # this piece's own cut already shapes its count
        if counted > limit + slack:
            return counted, read, True
    return counted, read, False


def load_for_serving(model: str | Path | None = None, *, adapter: str | Path | None = None, merge: bool = False,
                     served_model_name: str | None = None, profile: str | None = None,
                     default_max_tokens: int = 256, dtype: str = "auto",
                     max_model_len: int | None = None) -> ServedModel:
    """Load a base (or merged) model, optionally with a PEFT LoRA adapter, ready for `create_app`."""
    from ..loading import load_model, load_tokenizer, plan_load

    plan = plan_load(model, profile=profile, dtype=dtype)
    source = plan.source
    base = load_model(plan=plan, verbose=False)
    tokenizer = load_tokenizer(plan=plan)
    name = served_model_name or _default_name(source)
    adapter_name = None
    if adapter is not None:
        adapter_path = Path(adapter).expanduser()
        if not (adapter_path / "adapter_config.json").exists():
            raise CourseError(f"No adapter_config.json in {adapter_path}: not a PEFT adapter folder.",
                              "Pass the folder that `model.save_pretrained(...)` wrote in lesson 05 "
                              "(it holds adapter_config.json and adapter_model.safetensors).")
        from peft import PeftModel

        base = PeftModel.from_pretrained(base, str(adapter_path))
        if merge:  # fold the low-rank update into the weights: one model, no adapter overhead per token
            base = base.merge_and_unload()
            name = served_model_name or f"{_default_name(source)}+{adapter_path.name}-merged"
        else:
            adapter_name = f"{name}+{adapter_path.name}"
    base.eval()
    return ServedModel(base, tokenizer, name, adapter_name, source=str(source), default_max_tokens=default_max_tokens,
                       max_model_len=max_model_len)


def _default_name(source: str | Path) -> str:
    text = str(source)
    return Path(text).name if Path(text).expanduser().exists() else text
