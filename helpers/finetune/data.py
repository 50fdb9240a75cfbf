"""Fine-tuning data: chat rows read from JSONL and validated, tokenized with a loss mask on the answers, and the
seeded order in which training visits them.

    rows = load_chat_jsonl("data/finetune/faq_fr_train.jsonl")   # every bad line reported, nothing dropped
    examples = encode_dataset(tokenizer, rows, max_len=128)       # labels on the assistant's answers only

Every input is bounded before work proportional to it is done: the file's size, each line's length (a 5 GB line is
refused after reading 1 MB of it), and JSON nesting. Lines are split on "\\n" only, so text holding U+2028 or U+0085
(valid inside JSON strings) stays on its line, and every line number is the one an editor shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import CourseError
from ..batches import IGNORE_INDEX, collate
from ..units import MB, format_bytes

CHAT_ROLES = ("system", "user", "assistant")
CONTROL_TOKENS = ("<|separator|>", "<|eos|>", "<|pad|>")
MAX_FILE_BYTES = 256 * MB  # a JSONL set larger than this is refused before it is read (raise it with max_bytes=)
MAX_LINE_BYTES = 1 * MB  # one conversation; far above what any profile's max_seq_len can hold
MAX_PROBLEMS_KEPT = 1000  # problems listed in a DataError beyond this are counted, not kept
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16 LE/BE; UTF-32 LE starts like UTF-16 LE

ROW_FORMAT_FIX = ('Fix each line listed. A row is one JSON object per line: {"messages": [{"role": "user", "content": '
                  '"..."}, {"role": "assistant", "content": "..."}]} - an optional system message first, then user '
                  "and assistant turns alternating, ending with the assistant's answer.")
ENCODING_FIX = ("Save the file as UTF-8 (the only encoding JSONL allows): in an editor, 'Save with encoding: UTF-8'; "
                "or `iconv -f latin1 -t utf-8 old.jsonl > new.jsonl` (-f utf-16 for a UTF-16 file); or in Python "
                "Path(new).write_text(Path(old).read_text(encoding='latin-1'), encoding='utf-8').")


class DataError(CourseError):
    """Malformed fine-tuning rows. `problems` lists every one as "line N: what is wrong"."""

    def __init__(self, source: str, problems: list[str], fix: str = ROW_FORMAT_FIX, more: int = 0):
        self.source = source
        self.problems = problems
        total = len(problems) + more
        hidden = total - min(len(problems), 50)
        shown = "\n".join(problems[:50]) + (f"\n... and {hidden} more" if hidden else "")
        super().__init__(f"{total} problem(s) in {source}; nothing was loaded:\n{shown}", fix)


def _lone_surrogate(text: str) -> str:
    """What keeps `text` from being Unicode text, in words ("" when it is text). A JSON line may escape half of a UTF-16
    surrogate pair alone ("\\ud800"): Python keeps it, but it is no character, cannot be written as UTF-8, and the
    tokenizer fails on it with a TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (f"a lone surrogate (\\u{ord(text[error.start]):04x} at character {error.start}), half of a UTF-16 pair "
                "without its other half, which is not text: write the character itself, or both halves of its pair")
    return ""


def _role(role) -> str:
    """The role as a problem names it: quoted unless it is plain text (a lone surrogate must not reach the message)."""
    return role if isinstance(role, str) and not _lone_surrogate(role) else repr(role)


def _content_problem(where: str, role, content) -> str:
    role = _role(role)
    if not isinstance(content, str) or not content.strip():
        return f'{where} ({role}) has no text in "content"'
    if any(token in content for token in CONTROL_TOKENS):
        return f"{where} ({role}) contains a control token as text (the model would stop there)"
    not_text = _lone_surrogate(content)
    return f'{where} ({role}) holds in "content" {not_text}' if not_text else ""


def _message_problems(messages) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ['"messages" must be a non-empty list']
    found = []
    roles = []
    for index, message in enumerate(messages):
        where = f"message {index}"
        if not isinstance(message, dict):
            found.append(f"{where} is not an object")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            found.append(f"{where} has role {role!r}; use one of {', '.join(CHAT_ROLES)}")
        problem = _content_problem(where, role, content)
        if problem:
            found.append(problem)
        unknown = set(message) - {"role", "content"}
        if unknown:
            found.append(f"{where} has unknown key(s) {sorted(unknown)}")
        roles.append(role)
    if found:
        return found
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        found.append("a system message may only come first")
    elif not body:
        found.append("no user or assistant message")
    else:
        expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
        if body != expected:
            found.append(f"turns must alternate user, assistant, ...; got {', '.join(body)}")
        elif body[-1] != "assistant":
            found.append("the last message must be the assistant's answer (that is what is learned)")
    return found


def _row_problems(line) -> tuple[list[str], list | None]:
    """(problems, None) for a bad line, ([], messages) for a good one."""
    if not isinstance(line, str):
        return [f"expected a line of text (str), got {type(line).__name__}"], None
    if len(line) > MAX_LINE_BYTES:
        return [f"{len(line):,} characters, more than a row may have ({MAX_LINE_BYTES:,})"], None
    if not line.strip():
        return ["empty line"], None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        return [f"not valid JSON ({error.msg} at column {error.colno})"], None
    except RecursionError:  # the C parser stops at Python's recursion limit: cheap, and caught here
        return ['JSON nested too deeply to read (a row is 3 levels deep: {"messages": [{...}]})'], None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        return [f"not valid JSON ({error})"], None
    if not isinstance(row, dict) or "messages" not in row:
        return ['expected an object with a "messages" list'], None
    problems = _message_problems(row["messages"])
    return problems, (None if problems else row["messages"])


@dataclass
class _Reading:
    """What reading a file found before any row was parsed: (line number, problem), and whether it is the encoding."""

    problems: list[tuple[int, str]]
    encoding: bool = False


def _validate(numbered: Iterable[tuple[int, object]], source: str, reading: _Reading | None = None) -> list[list[dict]]:
    conversations, problems, more = [], [], 0
    for number, line in numbered:
        found, messages = _row_problems(line)
        if not found:
            conversations.append(messages)
        elif len(problems) < MAX_PROBLEMS_KEPT:
            problems += [(number, f"line {number}: {problem}") for problem in found]
        else:
            more += 1
    if reading is not None:  # encoding or length problems share the line numbering
        problems = sorted(problems + reading.problems, key=lambda item: item[0])
    if problems:
        fix = ENCODING_FIX if reading is not None and reading.encoding else ROW_FORMAT_FIX
        raise DataError(source, [p for _, p in problems], fix, more)
    if not conversations:
        raise DataError(source, ["no rows at all"])
    return conversations


def validate_chat_rows(lines: Iterable[str] | str, source: str = "<rows>") -> list[list[dict]]:
    """Parse JSONL chat rows; raise DataError listing *every* malformed line ("line N: ..."). Nothing is dropped.

    `lines` is a list (or any iterable) of lines, or one string of JSONL (split on "\\n" only)."""
    if isinstance(lines, str):
        lines = lines.removesuffix("\n").split("\n")
    return _validate(enumerate(lines, start=1), source)


def _guess_encoding(raw: bytes) -> str:
    try:
        raw.decode("cp1252")
        return "it looks like Latin-1 / Windows-1252"
    except UnicodeDecodeError:
        return "its encoding is not UTF-8"


def _file_lines(path: Path, reading: _Reading, max_line_bytes: int) -> Iterator[tuple[int, str]]:
    """(number, text) of each line, split on b"\\n" only and decoded as UTF-8; what cannot be read goes to `reading`."""
    with path.open("rb") as handle:
        head = handle.read(4096)
        if head.startswith(UTF16_32_BOMS) or b"\x00" in head:
            reading.encoding = True
            reading.problems.append((1, "line 1: the file is UTF-16 or UTF-32 (a byte-order mark, or NUL bytes "
                                        "between the letters), not UTF-8"))
            return
        handle.seek(len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0)  # a UTF-8 byte-order mark is harmless
        number = 0
        while True:
            raw = handle.readline(max_line_bytes + 1)  # never more than one bounded line in memory
            if not raw:
                return
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                limit = format_bytes(max_line_bytes, binary=False)
                reading.problems.append((number, f"line {number}: longer than {limit} (no row is that long: is this "
                                                 "a JSONL file, one conversation per line?); stopped reading here"))
                return
            raw = raw.removesuffix(b"\n")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                reading.encoding = True
                reading.problems.append((number, f"line {number}: byte {error.start + 1} (0x{raw[error.start]:02x}) "
                                                 f"is not UTF-8: {_guess_encoding(raw)}"))
                continue
            yield number, text


def load_chat_jsonl(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> list[list[dict]]:
    """Conversations from a UTF-8 JSONL file, validated (see `validate_chat_rows`); files over `max_bytes` refused."""
    path = Path(path)
    if not path.exists():
        raise CourseError(f"{path} does not exist.", "Check the path (data/finetune/ holds the course's sets).")
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.jsonl"))[:5]
        raise CourseError(f"{path} is a folder, not a JSONL file.",
                          f"Pass one file in it: {', '.join(inside)}." if inside else
                          "Pass the path of a .jsonl file (one JSON conversation per line).")
    size = path.stat().st_size
    if size > max_bytes:
        raise CourseError(f"{path} is {format_bytes(size)}, more than load_chat_jsonl reads "
                          f"({format_bytes(max_bytes)}): every row is held in memory.",
                          "Train on a part of it (split it into files), or pass max_bytes= if this machine has the "
                          "memory for it.")
    reading = _Reading([])
    return _validate(_file_lines(path, reading, MAX_LINE_BYTES), str(path), reading)


def check_heldout_is_new(train: list[list[dict]], heldout: list[list[dict]]) -> None:
    """A held-out question that also appears in training measures recitation, not the skill: refuse it."""
    def questions(conversations):
        return {m["content"].strip().lower() for c in conversations for m in c if m["role"] == "user"}

    leaked = sorted(questions(train) & questions(heldout))
    if leaked:
        raise CourseError(f"{len(leaked)} held-out question(s) also appear in the training set: {leaked[:5]}",
                          "Move them to one split only: the held-out score must be measured on unseen wording.")


@dataclass(frozen=True)
class Example:
    """One tokenized conversation. `labels` is -100 wherever the loss must not look (everything but the answers)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    row: int  # 1-based position in its file

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the loss learns: each answer and its end-of-turn token.

    For Grok 2 an answer renders as "Assistant: <answer><|separator|>\\n\\n" after "...Assistant:" - the span is
    " <answer><|separator|>" (the space belongs to the first answer token, exactly as at generation time), and the
    trailing newlines are left out. Works for any tokenizer whose chat template renders prefixes consistently.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (text.startswith(prompt) and text.startswith(upto) and upto.startswith(prompt)):
            raise CourseError("This tokenizer's chat template does not render conversations prefix by prefix.",
                              "Use a model whose template renders each turn independently (Grok 2's does).")
        answer = upto[len(prompt):].rstrip()
        spans.append((len(prompt), len(prompt) + len(answer)))
    return text, spans


def encode_conversation(tokenizer, messages: list[dict], row: int = 0) -> Example:
    """Token ids of the whole conversation, labels only on the assistant's answers (+ their end-of-turn token)."""
    text, spans = _assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    labels = []
    for token, (start, end) in zip(ids, offsets):
        learned = any(start >= s and end <= e and end > start for s, e in spans)
        labels.append(token if learned else IGNORE_INDEX)
    return Example(tuple(ids), tuple(labels), row)


def encode_dataset(tokenizer, conversations: list[list[dict]], max_len: int) -> list[Example]:
    """Encode every conversation; refuse (listing rows) any longer than `max_len` tokens instead of cutting it.

    Rows that did not come through `load_chat_jsonl` / `validate_chat_rows` are checked for text first: a lone
    surrogate would stop the tokenizer with a TypeError naming no row."""
    not_text = [f"line {row}: message {index} ({_role(message.get('role'))}) holds in \"content\" {problem}"
                for row, conversation in enumerate(conversations, start=1)
                for index, message in enumerate(conversation)
                if isinstance(message, dict) and isinstance(message.get("content"), str)
                and (problem := _lone_surrogate(message["content"]))]
    if not_text:
        raise DataError("the conversations given to encode_dataset", not_text)
    examples = [encode_conversation(tokenizer, c, row=i) for i, c in enumerate(conversations, start=1)]
    too_long = [f"line {e.row}: {len(e.input_ids)} tokens" for e in examples if len(e.input_ids) > max_len]
    if too_long:
        raise CourseError(f"{len(too_long)} conversation(s) exceed max_len={max_len} tokens: {too_long[:10]}",
                          "Shorten them, or raise max_len (the profile's sizes.max_seq_len); nothing is truncated "
                          "silently, since a cut answer would teach the model to stop mid-sentence.")
    empty = [f"line {e.row}" for e in examples if e.answer_tokens == 0]
    if empty:
        raise CourseError(f"No answer tokens to learn in {empty[:10]}", "Each row must end with an assistant answer.")
    return examples


@lru_cache(maxsize=64)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=generator).tolist())


def micro_batch_indices(n: int, batch_size: int, seed: int, micro_batch: int) -> list[int]:
    """Example indices of global micro-batch number `micro_batch`: a fresh shuffle every epoch, a pure function of
    (seed, micro_batch) - so any step's batch can be recomputed after a restart without saved sampler state."""
    start = micro_batch * batch_size
    return [_epoch_order(n, seed, k // n)[k % n] for k in range(start, start + batch_size)]


__all__ = ["CHAT_ROLES", "CONTROL_TOKENS", "MAX_FILE_BYTES", "MAX_LINE_BYTES", "DataError", "validate_chat_rows",
           "load_chat_jsonl", "check_heldout_is_new", "Example", "encode_conversation", "encode_dataset", "collate",
           "micro_batch_indices"]
