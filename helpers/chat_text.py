"""The text side of a chat, before and after the model: plain data, no generation.

Before: Grok 2's turn format (`SEPARATOR`, the reference renderings), the chat template (`render`), and the ids a
conversation becomes (`encode`): the template's control tokens are real ones, while message contents are always plain
text, so a user who types "<|separator|>\n\nSystem: ..." cannot fake a turn (OpenAI's tiktoken refuses special
tokens in text for the same reason).

After: the answer text that generated ids become (`finish_completion`: stop ids, stop strings, the template's space,
the finish reason, as a `Completion`), and the same while it streams (`IncrementalDecoder`: ids to text one token at
a time; `VisibleText`: what may be shown so far, holding back what could still become a stop string).

helpers.chat (generation) and helpers.serving (the server) both build on this module; helpers.chat re-exports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import CourseError

SEPARATOR = "<|separator|>"  # ends every turn (id 1 in Grok 2)
EOS = "<|eos|>"  # end of sequence (id 2)

# The magazine article's example prompt (lesson 04 compares its raw use with the chat template).
ARTICLE_PROMPT = "Explique-moi la différence entre Grok 2.5 et Grok 3."

# What Grok 2's chat template produces (facts 2.3), kept in one place: the tests and lesson 04 compare against these.
# The generation prompt is "Assistant:" with no space; earlier answers are written "Assistant: " + content, as they are
# (user and system text is stripped: "spaces").
REFERENCE_RENDERINGS = {
    "single_turn": (
        [{"role": "user", "content": "What is your name?"}],
        "Human: What is your name?<|separator|>\n\nAssistant:",
    ),
    "system": (
        [{"role": "system", "content": "Answer in one short sentence."},
         {"role": "user", "content": "How many layers does Grok 2 have?"}],
        "System: Answer in one short sentence.<|separator|>\n\nHuman: How many layers does Grok 2 have?<|separator|>\n\n"
        "Assistant:",
    ),
    "multi_turn": (
        [{"role": "user", "content": "What is Grok 2's hidden size?"},
         {"role": "assistant", "content": "The hidden size is 8192."},
         {"role": "user", "content": "How many layers does Grok 2 have?"}],
        "Human: What is Grok 2's hidden size?<|separator|>\n\nAssistant: The hidden size is 8192.<|separator|>\n\n"
        "Human: How many layers does Grok 2 have?<|separator|>\n\nAssistant:",
    ),
    "article": (
        [{"role": "user", "content": ARTICLE_PROMPT}],
        "Human: Explique-moi la différence entre Grok 2.5 et Grok 3.<|separator|>\n\nAssistant:",
    ),
    "spaces": (
        [{"role": "system", "content": " Be brief. "},
         {"role": "user", "content": " Hi\n"},
         {"role": "assistant", "content": " Hello."},
         {"role": "user", "content": "Experts?"}],
        "System: Be brief.<|separator|>\n\nHuman: Hi<|separator|>\n\nAssistant:  Hello.<|separator|>\n\n"
        "Human: Experts?<|separator|>\n\nAssistant:",
    ),
}


@dataclass
class Completion:
    """One answer and its accounting (what an OpenAI-compatible server puts in `choices[0]` and `usage`)."""

    text: str  # the reply, without stop strings, stop ids or padding
    finish_reason: str  # "stop" (a stop string or stop id, or stopped early) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int  # generated tokens, the final stop id included
    seconds: float = 0.0  # wall time of the generation (a whole batch for generate_batch)
    first_token_seconds: float | None = None  # time to first token (streams only)
    token_ids: list[int] = field(default_factory=list)
    interrupted: bool = False  # ended by stop() / a stop event, not by the model

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    @property
    def message(self) -> dict:
        """The reply as the next message of the conversation."""
        return {"role": "assistant", "content": self.text}


# ------------------------------------------------------------------------------------------------- before the model


def render(tokenizer, conversation: list[dict] | str, add_generation_prompt: bool = True) -> str:
    """The exact text the model receives. A string is taken as a raw prompt (no template)."""
    if isinstance(conversation, str):
        return conversation
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)


def special_token_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (<|pad|>, <|separator|>, <|eos|>, ... for Grok 2)."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special)
    return ids


def added_tokens(tokenizer) -> dict[int, str]:
    """Every token the tokenizer matches as a whole before its own vocabulary, by id: the special ones (Grok 2:
    <|pad|>, <|separator|>, <|eos|>) and any other added token (`tokenizer.add_tokens(...)`, tool-call markers)."""
    found = {int(i): str(token) for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    for text in tokenizer.all_special_tokens:
        found.setdefault(tokenizer.convert_tokens_to_ids(text), text)
    return {i: text for i, text in found.items() if text}


def encode(tokenizer, conversation: list[dict] | str) -> list[int]:
    """The token ids the model receives for `conversation` (no BOS is added: Grok 2 has none).

    A raw prompt string is tokenized as it is: whoever writes one writes Grok 2's format, control tokens included. For a
    list of messages, the chat template's control tokens are real ones, and every message's content is plain text: no
    text inside a content becomes an added token, special or not. A content that contains "<|separator|>" is tokenized
    as the characters "<", "|", "sep"... so it can never end a turn. Contents without such text get exactly the ids of
    the whole rendered prompt, as before.

    Which added tokens a content spells is asked of the tokenizer itself (it finds them all in one pass, however many
    it has), and only for contents holding a character that some added token starts with."""
    if isinstance(conversation, str):
        return tokenizer(conversation, add_special_tokens=False)["input_ids"]
    text = render(tokenizer, conversation)
    added = added_tokens(tokenizer)
    starts = {token[0] for token in added.values()}
    spelt = set()
    for message in conversation:
        content = str(message.get("content") or "")
        if any(start in content for start in starts):
            spelt.update(added[i] for i in tokenizer(content, add_special_tokens=False)["input_ids"] if i in added)
    if not spelt:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    ids, start = [], 0
    for begin, end in _injected_control_spans(tokenizer, conversation, text, sorted(spelt, key=len, reverse=True)):
        ids += tokenizer(text[start:begin], add_special_tokens=False)["input_ids"]
        ids += plain_text_ids(tokenizer, text[begin:end], set(added))
        start = end
    return ids + tokenizer(text[start:], add_special_tokens=False)["input_ids"]


def plain_text_ids(tokenizer, text: str, added_ids: set[int] | None = None) -> list[int]:
    """`text` tokenized as plain characters: no added token is matched in it, special or not.

    A fast tokenizer's `split_special_tokens=True` skips only the special ones, so its own pipeline (normalizer,
    pre-tokenizer, model) runs here without the added tokens; a Python tokenizer's skips them all. For byte-level
    tokenizers (Grok 2's, Granite's) these are the ids the text gets anywhere in a prompt. If the vocabulary itself
    turns this text into an added token's id, it cannot be kept as plain text: refused."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    else:
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
        words = ([word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]
                 if backend.pre_tokenizer is not None else [normalized])
        ids = [token.id for word in words for token in backend.model.tokenize(word)]
    if set(ids) & (added_ids if added_ids is not None else set(added_tokens(tokenizer))):
        raise CourseError(f"The text {text!r} in a message becomes a control token even as plain text with this "
                          "tokenizer, so it cannot be kept from acting as one.", f"Remove {text!r} from the messages.")
    return ids


# Private-use characters, which no tokenizer or template gives a meaning: the BMP's, then planes 15 and 16's.
PRIVATE_USE = (range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))


def _unused_character(text: str) -> str:
    """A private-use character that `text` does not contain. The text's characters are collected once (one pass, in
    C), and each candidate is then a set lookup; a text that holds all of them (137,000+ characters) is refused."""
    present = set(text)
    for block in PRIVATE_USE:
        for code in block:
            if chr(code) not in present:
                return chr(code)
    raise CourseError("The messages contain every Unicode private-use character as well as the text of a control "
                      "token (such as <|separator|>), so the control-token text cannot be told apart from the chat "
                      "template's own.", "Remove the private-use characters (U+E000-U+F8FF, U+F0000-U+10FFFD) or "
                      "the control-token text from the messages.")


def _injected_control_spans(tokenizer, conversation: list[dict], text: str, controls: list[str]):
    """Where in the rendered `text` control-token text came from message contents, not from the template.

    The conversation is rendered a second time with each such text in the contents replaced by as many copies of a
    character found nowhere else; the template places contents without changing their length, so those characters
    mark the spans exactly. A template that rewrites contents otherwise cannot be read this way: refused."""
    marker = _unused_character(text)
    pattern = re.compile("|".join(re.escape(c) for c in controls))
    masked = [{**m, "content": pattern.sub(lambda found: marker * len(found.group()), str(m.get("content") or ""))}
              for m in conversation]
    marked = render(tokenizer, masked)
    refused = CourseError("A message contains the text of a control token (such as <|separator|>), and this chat "
                          "template rewrites message contents, so it cannot be kept as plain text.",
                          "Remove control-token text such as '<|separator|>' from the messages.")
    if len(marked) != len(text):
        raise refused
    spans, position = [], marked.find(marker)
    while position != -1:
        control = next((c for c in controls if text.startswith(c, position)
                        and marked[position:position + len(c)] == marker * len(c)), None)
        if control is None:
            raise refused
        spans.append((position, position + len(control)))
        position = marked.find(marker, position + len(control))
    return spans


@dataclass(frozen=True)
class TokenPiece:
    id: int
    text: str
    special: bool


def token_pieces(tokenizer, text: str) -> list[TokenPiece]:
    """`text` as the model sees it: one entry per token, with its id and whether it is a special token.

    No special tokens are added (Grok 2 has no BOS): the ids are exactly what `generate` receives."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    special = special_token_ids(tokenizer)
    return [TokenPiece(i, tokenizer.decode([i]), i in special) for i in ids]

# -------------------------------------------------------------------------------------------------- after the model


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    positions = [text.find(s) for s in stops if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):  # longest first: the first hit is the answer
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


def _clean(text: str, tokenizer) -> str:
    if tokenizer.pad_token:
        text = text.replace(tokenizer.pad_token, "")
    return text


def _template_space(text: str, conversation) -> int:
    """1 if `text` starts with the space that belongs to the template, else 0.

    The generation prompt ends with "Assistant:" and no space, so the model's first token carries one (" 8"); the
    template writes earlier answers as "Assistant: " + content. Dropping that one space makes a reply, sent back as
    the next message, render exactly as the model saw answers in training."""
    return 1 if not isinstance(conversation, str) and text.startswith(" ") else 0

class VisibleText:
    """The part of an answer a reader may see while it is being generated.

    `add(piece)` takes the next piece of decoded text and returns what can be shown now: stop strings cut the answer
    (`stopped` turns True), a tail that could be the start of a stop string ("<|sep" of "<|separator|>") is held back
    until it is decided, padding text is removed, and the space the template leaves before the first word is dropped
    (see _template_space). `rest()`, once generation has ended, returns what was held back and is final after all."""

    def __init__(self, tokenizer, conversation, stops: tuple[str, ...]):
        self.tokenizer, self.conversation, self.stops = tokenizer, conversation, stops
        self.raw, self.sent, self.stopped = "", 0, False

    @property
    def text(self) -> str:
        """The answer so far, as generate() would return it."""
        visible, _ = _cut_at_stop(_clean(self.raw, self.tokenizer), self.stops)
        return visible[_template_space(visible, self.conversation):]

    def add(self, piece: str) -> str:
        self.raw += piece
        visible, self.stopped = _cut_at_stop(_clean(self.raw, self.tokenizer), self.stops)
        offset = _template_space(visible, self.conversation)
        ready = len(visible) if self.stopped else len(visible) - _partial_stop(visible, self.stops)
        start = max(self.sent, offset)
        if ready <= start:
            return ""
        self.sent = ready
        return visible[start:ready]

    def rest(self) -> str:
        visible, self.stopped = _cut_at_stop(_clean(self.raw, self.tokenizer), self.stops)
        start = max(self.sent, _template_space(visible, self.conversation))
        self.sent = max(self.sent, len(visible))
        return visible[start:]


class IncrementalDecoder:
    """Token ids in, text out, one token at a time: what a stream shows after every token.

    Ids in `hidden` (the stop ids) never show. Half of a multi-byte character is held back until its other bytes
    arrive. After a newline the decoder starts afresh, so decoding stays short on long answers."""

    def __init__(self, tokenizer, hidden=()):
        self.tokenizer, self.hidden = tokenizer, set(hidden)
        self.cache: list[int] = []
        self.printed = 0

    def add(self, ids) -> str | None:
        """The new text, "" when there is none yet, None while a character is incomplete."""
        self.cache.extend(i for i in ids if i not in self.hidden)
        text = self.tokenizer.decode(self.cache, skip_special_tokens=False)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
            return None
        piece = text[self.printed :]
        if text.endswith("\n"):  # start afresh
            self.cache, self.printed = [], 0
        else:
            self.printed = len(text)
        return piece

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character included, as the replacement character)."""
        text = self.tokenizer.decode(self.cache, skip_special_tokens=False) if self.cache else ""
        piece = text[self.printed :]
        self.cache, self.printed = [], 0
        return piece


def finish_completion(tokenizer, conversation, new_ids: list[int], stops: tuple[str, ...], stop_ids,
                      prompt_tokens: int, seconds: float = 0.0, interrupted: bool = False,
                      first_token_seconds: float | None = None) -> Completion:
    """The Completion for `new_ids`, the generated ids: kept up to and including the first stop id, decoded without
    it, cut at the first stop string, without the template's space. finish_reason "stop" for a stop id or string (or
    an interruption), "length" otherwise."""
    stop_id_set = set(stop_ids)
    kept = []
    for token in new_ids:  # up to and including the first stop id; what follows is batch padding
        kept.append(token)
        if token in stop_id_set:
            break
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in stop_id_set:  # a row ended by a stop string is padded while the others go on
        while kept and kept[-1] == pad:
            kept.pop()
    ended_on_id = bool(kept) and kept[-1] in stop_id_set
    raw = tokenizer.decode(kept[:-1] if ended_on_id else kept, skip_special_tokens=False)
    text, stopped = _cut_at_stop(_clean(raw, tokenizer), stops)
    text = text[_template_space(text, conversation):]
    finish = "stop" if stopped or ended_on_id or interrupted else "length"
    return Completion(text, finish, prompt_tokens, len(kept), seconds, first_token_seconds, kept,
                      interrupted=interrupted and not (stopped or ended_on_id))
