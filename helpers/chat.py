"""Generation for a chat: sampling settings, stop strings and ids applied while generating, streaming, batches.

Everything here takes a conversation - a list of messages (`[{"role": "user", "content": ...}, ...]`, rendered with
the tokenizer's chat template) or a raw prompt string (sent as it is) - plus `SamplingSettings`, and returns plain
data: a `Completion` with the text, why generation stopped ("stop" / "length") and the token counts. That is what a
chat widget shows and what an OpenAI-compatible server returns, so widgets (helpers.widgets) and the server both build
on this module, never the reverse:

    done = generate(model, tokenizer, messages, SamplingSettings(temperature=0.7, seed=0))
    done.text, done.finish_reason, done.usage           # reply, "stop"/"length", prompt/completion/total tokens

    live = stream(model, tokenizer, messages, settings)  # generation runs in a background thread
    for piece in live:                                   # text as it is produced, token by token
        ...                                              # live.stop() ends it early (Stop button, client hung up)
    live.completion                                      # the same Completion as generate() returns

    generate_batch(model, tokenizer, [messages_a, messages_b], settings)  # left-padded batch, one Completion each

The text side (the template, the ids a conversation becomes, the answer text ids become) lives in helpers.chat_text
and is re-exported here. The ids come from `encode`: the template's own control tokens (`<|separator|>`) are real,
but a message's content is always plain text, so a user who types "<|separator|>\n\nSystem: ..." cannot fake a turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from .chat_text import (  # noqa: F401 - the text side, re-exported: `from helpers.chat import SEPARATOR, render`
    ARTICLE_PROMPT,
    EOS,
    REFERENCE_RENDERINGS,
    SEPARATOR,
    Completion,
    IncrementalDecoder,
    TokenPiece,
    VisibleText,
    encode,
    finish_completion,
    render,
    special_token_ids,
    token_pieces,
)


@dataclass(frozen=True)
class SamplingSettings:
    """The knobs of generation. temperature 0 means greedy (always the most likely token)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0  # keep the smallest set of tokens whose probabilities add up to top_p (1: no limit)
    top_k: int = 0  # keep only the k most likely tokens (0: no limit)
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the text less likely
    stop: tuple[str, ...] = (SEPARATOR,)  # stop strings: generation ends when one appears; it is not returned
    stop_token_ids: tuple[int, ...] | None = None  # None: the model's own (Grok 2: <|separator|> 1, <|eos|> 2)
    seed: int | None = None  # fixes the random draws of sampling

    def generate_kwargs(self) -> dict:
        """The knobs as `model.generate` arguments."""
        sampling = self.temperature > 0
        kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=sampling, repetition_penalty=self.repetition_penalty)
        if sampling:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


# ------------------------------------------------------------------------------------------------------- stop ids


def stop_token_ids(model, tokenizer, settings: SamplingSettings | None = None) -> list[int]:
    """Ids that end generation: `settings.stop_token_ids` if given, else the model's eos ids (Grok 2: <|separator|>
    and <|eos|>) plus the tokenizer's own."""
    if settings is not None and settings.stop_token_ids is not None:
        return list(settings.stop_token_ids)
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    for token in (SEPARATOR, EOS, tokenizer.eos_token):
        token_id = tokenizer.convert_tokens_to_ids(token) if token else None
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids

class _StopOnEvent(StoppingCriteria):
    """Lets another thread end a generation early (the chat widget's Stop button, a client that hung up)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids, scores, **kwargs):
        stop = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

def _inputs(tokenizer, conversations: list, device):
    """`encode`d conversations as one left-padded batch (every prompt ends at the same position)."""
    rows = [encode(tokenizer, c) for c in conversations]
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}

# --------------------------------------------------------------------------------------------------- generation


def _generation_arguments(model, tokenizer, settings: SamplingSettings, *stop_events: threading.Event | None) -> dict:
    """What every `model.generate` call here passes: the knobs, stop ids and strings, padding, the stop events."""
    events = [event for event in stop_events if event is not None]
    return dict(
        **settings.generate_kwargs(),
        eos_token_id=stop_token_ids(model, tokenizer, settings) or None,
        pad_token_id=tokenizer.pad_token_id,
        stop_strings=[s for s in settings.stop if s] or None,
        tokenizer=tokenizer,
        stopping_criteria=StoppingCriteriaList([_StopOnEvent(*events)]) if events else None,
    )


@torch.no_grad()
def generate_batch(model, tokenizer, conversations: list, settings: SamplingSettings = SamplingSettings(),
                   stop_event: threading.Event | None = None) -> list[Completion]:
    """Several conversations in one batch (left-padded, so every prompt ends at the same position): one Completion
    each, identical to one-by-one greedy generation. Setting `stop_event` from another thread ends the batch early."""
    inputs = _inputs(tokenizer, conversations, model.device)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    started = time.perf_counter()
    output = model.generate(**inputs, **_generation_arguments(model, tokenizer, settings, stop_event))
    seconds = time.perf_counter() - started
    width = inputs["input_ids"].shape[1]
    stops = stop_token_ids(model, tokenizer, settings)
    interrupted = stop_event is not None and stop_event.is_set()
    return [finish_completion(tokenizer, conversation, row[width:].tolist(), settings.stop, stops,
                              int(prompt_mask.sum()),
                              seconds, interrupted)
            for conversation, row, prompt_mask in zip(conversations, output, inputs["attention_mask"])]


def generate(model, tokenizer, conversation, settings: SamplingSettings = SamplingSettings()) -> Completion:
    """One answer: `conversation` is a list of messages (templated) or a raw prompt string."""
    return generate_batch(model, tokenizer, [conversation], settings)[0]


class _TokenStreamer(TextIteratorStreamer):
    """transformers' TextIteratorStreamer, handing over text after every token (the stock one waits for a space, so
    it streams word by word), holding back only half of a multi-byte character, and never showing the stop ids."""

    def __init__(self, tokenizer, hidden_ids, timeout: float):
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=False)
        self.decoder = IncrementalDecoder(tokenizer, hidden_ids)

    def put(self, value):
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        piece = self.decoder.add(value.reshape(-1).tolist())
        if piece is not None:
            self.on_finalized_text(piece)

    def end(self):
        self.on_finalized_text(self.decoder.flush(), stream_end=True)


class Stream:
    """Iterate to receive the answer piece by piece as it is generated; `.completion` holds the totals afterwards.

    Generation runs in a background thread and hands text over through transformers' TextIteratorStreamer. `stop()`,
    or setting the caller's `stop_event` (only read here, never set), ends it early, between two tokens; the thread is
    always joined, even when the reader stops iterating, so nothing is left running. Greedy streaming yields exactly
    the text of `generate`.
    """

    def __init__(self, model, tokenizer, conversation, settings: SamplingSettings = SamplingSettings(),
                 stop_event: threading.Event | None = None, timeout: float = 600):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.conversation = conversation
        self.prompt = render(tokenizer, conversation)
        self.stop_event = stop_event  # the caller's (a server's "client went away"), only read
        self._halt = threading.Event()  # ours: stop(), or a reader that went away
        self.completion: Completion | None = None
        self._interrupted = False
        self._error: BaseException | None = None
        self._output = None
        self._prompt_tokens = 0
        self._streamer = _TokenStreamer(tokenizer, stop_token_ids(model, tokenizer, settings), timeout)
        self._thread = threading.Thread(target=self._run, daemon=True, name="helpers.chat.Stream")

    def _run(self):
        try:
            inputs = _inputs(self.tokenizer, [self.conversation], self.model.device)
            self._prompt_tokens = int(inputs["input_ids"].shape[1])
            if self.settings.seed is not None:
                torch.manual_seed(self.settings.seed)
            with torch.no_grad():
                arguments = _generation_arguments(self.model, self.tokenizer, self.settings, self._halt, self.stop_event)
                self._output = self.model.generate(**inputs, **arguments, streamer=self._streamer)
        except BaseException as error:  # handed to the reader in __iter__
            self._error = error
            self._streamer.end()

    def stop(self) -> None:
        """End the generation after the current token (safe to call from any thread, any number of times)."""
        if self.completion is None:
            self._interrupted = True
        self._halt.set()

    def _external_stop(self) -> bool:
        return self._interrupted or (self.stop_event is not None and self.stop_event.is_set())

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __iter__(self) -> Iterator[str]:
        if self._thread.ident is not None:
            raise RuntimeError("A Stream can be read only once; call stream(...) again for a new answer.")
        started = time.perf_counter()
        first = None
        visible = VisibleText(self.tokenizer, self.conversation, self.settings.stop)
        self._thread.start()
        try:
            for piece in self._streamer:
                if not piece:
                    continue
                if first is None:
                    first = time.perf_counter() - started
                ready = visible.add(piece)
                if ready:
                    yield ready
                if visible.stopped:
                    break
        finally:
            if visible.stopped or self._thread.is_alive():
                self._halt.set()  # the reader has what it wants, or went away: end the generation
            self._thread.join()
        if self._error is not None:
            raise self._error
        rest = visible.rest()
        if rest:
            yield rest
        stopped = visible.stopped
        new = self._output[0, self._prompt_tokens :].tolist()
        ended_on_id = bool(new) and new[-1] in set(stop_token_ids(self.model, self.tokenizer, self.settings))
        finish = "stop" if stopped or ended_on_id or len(new) < self.settings.max_new_tokens else "length"
        self.completion = Completion(visible.text, finish, self._prompt_tokens, len(new),
                                     time.perf_counter() - started, first, new,
                                     interrupted=self._external_stop() and not (stopped or ended_on_id))


def stream(model, tokenizer, conversation, settings: SamplingSettings = SamplingSettings(),
           stop_event: threading.Event | None = None) -> Stream:
    """Start streaming an answer: iterate over the result for text pieces; `.stop()` ends it; `.completion` after."""
    return Stream(model, tokenizer, conversation, settings, stop_event)


# --------------------------------------------------------------------------------------- the next-token distribution


@dataclass
class NextTokenDistribution:
    """The next token's probabilities, as the model gives them and after each sampling knob in turn."""

    tokens: list[str]  # the `top` most likely tokens according to the model, most likely first
    token_ids: list[int]
    stages: dict[str, list[float]]  # "model", then e.g. "repetition_penalty=1.3", "temperature=0.7", "top_k=5" ...

    @property
    def before(self) -> list[float]:
        return next(iter(self.stages.values()))

    @property
    def after(self) -> list[float]:
        return list(self.stages.values())[-1]

    def __iter__(self):  # tokens, before, after = next_token_distribution(...)
        return iter((self.tokens, self.before, self.after))


@torch.no_grad()
def next_token_distribution(model, tokenizer, conversation, settings: SamplingSettings,
                            top: int = 12) -> NextTokenDistribution:
    """Probabilities of the next token before and after each knob (repetition penalty, temperature, top-k, top-p;
    greedy puts everything on one token). Uses transformers' own logits processors, in the order `generate` applies
    them, so the last stage is exactly what `generate` samples from."""
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    inputs = _inputs(tokenizer, [conversation], model.device)
    logits = model(**inputs).logits[:, -1].float()
    steps = []
    if settings.repetition_penalty != 1.0:
        steps.append((f"repetition_penalty={settings.repetition_penalty:g}",
                      RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)))
    if settings.temperature > 0:
        if settings.temperature != 1.0:  # as in generate: temperature 1 changes nothing and is skipped
            steps.append((f"temperature={settings.temperature:g}", TemperatureLogitsWarper(settings.temperature)))
        if settings.top_k:
            steps.append((f"top_k={settings.top_k}", TopKLogitsWarper(settings.top_k)))
        if settings.top_p < 1.0:
            steps.append((f"top_p={settings.top_p:g}", TopPLogitsWarper(settings.top_p)))
    probabilities = {"model": torch.softmax(logits, -1)[0]}
    current = logits.clone()
    for name, processor in steps:
        current = processor(inputs["input_ids"], current)
        probabilities[name] = torch.softmax(current, -1)[0]
    if settings.temperature <= 0:  # greedy: all the probability on the top token
        greedy = torch.zeros_like(probabilities["model"])
        greedy[current[0].argmax()] = 1.0
        probabilities["greedy"] = greedy
    order = torch.argsort(probabilities["model"], descending=True)[:top]
    return NextTokenDistribution(
        tokens=[tokenizer.decode([i]) for i in order.tolist()],
        token_ids=order.tolist(),
        stages={name: p[order].tolist() for name, p in probabilities.items()},
    )


# ------------------------------------------------------------------------------------------------------ batching


@dataclass(frozen=True)
class BatchTiming:
    """Serving the same conversations `batch_size` at a time (see measure_batching)."""

    batch_size: int
    seconds: float  # best of the repeats, for all the conversations
    sequences_per_second: float
    tokens_per_second: float  # generated tokens (padding excluded) per second
    completion_tokens: int


@torch.no_grad()
def measure_batching(model, tokenizer, conversations: list, batch_sizes=(1, 2, 4, 8),
                     settings: SamplingSettings = SamplingSettings(), repeats: int = 3) -> list[BatchTiming]:
    """Answer the same conversations one at a time, then 2, 4, 8... at a time (left-padded batches), and time it.

    Each size runs once to warm up, then `repeats` times; the best time counts (a shared machine only ever slows
    a run down). The answers are the same at every size, so the sizes compare like for like."""
    timings = []
    for size in batch_sizes:
        groups = [conversations[i : i + size] for i in range(0, len(conversations), size)]
        best, tokens = float("inf"), 0
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            completions = [c for group in groups for c in generate_batch(model, tokenizer, group, settings)]
            seconds = time.perf_counter() - started
            if attempt:  # the first run is the warm-up
                best = min(best, seconds)
            tokens = sum(c.completion_tokens for c in completions)
        timings.append(BatchTiming(size, best, len(conversations) / best, tokens / best, tokens))
    return timings
