"""Talking to the model: the chat template, sampling settings, stop strings, streaming, batches.

Everything here works on messages (`[{"role": "user", "content": ...}, ...]`) or a raw prompt string, and returns
plain data (`Completion`) with the text, why generation stopped, and token counts - what a chat widget shows and what
an OpenAI-compatible server returns. Widgets (helpers.widgets) and servers build on this module, never the reverse.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

SEPARATOR = "<|separator|>"
EOS = "<|eos|>"

# What Grok 2's template produces (facts 2.3), kept in one place: the tests and the lesson compare against these.
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
         {"role": "assistant", "content": " The hidden size is 8192."},
         {"role": "user", "content": "How many layers does Grok 2 have?"}],
        "Human: What is Grok 2's hidden size?<|separator|>\n\nAssistant:  The hidden size is 8192.<|separator|>\n\n"
        "Human: How many layers does Grok 2 have?<|separator|>\n\nAssistant:",
    ),
}


@dataclass(frozen=True)
class SamplingSettings:
    """The knobs of generation. temperature 0 means greedy (always the most likely token)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0  # keep the smallest set of tokens whose probabilities add up to top_p
    top_k: int = 0  # keep only the k most likely tokens (0: no limit)
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the text less likely
    stop: tuple[str, ...] = (SEPARATOR,)  # stop strings: generation ends when one appears; it is not returned
    seed: int | None = None  # fixes the random draws of sampling

    def generate_kwargs(self) -> dict:
        sampling = self.temperature > 0
        kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=sampling, repetition_penalty=self.repetition_penalty)
        if sampling:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (a stop string or stop id) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    seconds: float = 0.0
    first_token_seconds: float | None = None
    token_ids: list[int] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------------------- prompts


def render(tokenizer, messages: list[dict] | str, add_generation_prompt: bool = True) -> str:
    """The exact text the model receives. A string is taken as a raw prompt (no template)."""
    if isinstance(messages, str):
        return messages
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end generation: the model's eos ids (Grok 2: <|separator|> and <|eos|>) plus the tokenizer's eos."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    for token in (SEPARATOR, EOS, tokenizer.eos_token):
        token_id = tokenizer.convert_tokens_to_ids(token) if token else None
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    positions = [text.find(s) for s in stops if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def _clean(text: str, tokenizer) -> str:
    if tokenizer.pad_token:
        text = text.replace(tokenizer.pad_token, "")
    return text


class _StopOnEvent(StoppingCriteria):
    """Lets another thread end a generation early (the chat widget's Stop button, a client that hung up)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _inputs(tokenizer, prompts: list[str], device):
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------------- generation


def _generation_arguments(model, tokenizer, settings: SamplingSettings, stop_event: threading.Event | None) -> dict:
    """What every `model.generate` call here passes: the knobs, stop ids and strings, padding, the stop event."""
    return dict(
        **settings.generate_kwargs(),
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        stop_strings=[s for s in settings.stop if s] or None,
        tokenizer=tokenizer,
        stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop_event)]) if stop_event else None,
    )


@torch.no_grad()
def generate_batch(model, tokenizer, conversations: list, settings: SamplingSettings = SamplingSettings(),
                   stop_event: threading.Event | None = None) -> list[Completion]:
    """Several prompts in one batch (left-padded, so every prompt ends at the same position)."""
    prompts = [render(tokenizer, c) for c in conversations]
    inputs = _inputs(tokenizer, prompts, model.device)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    started = time.perf_counter()
    output = model.generate(**inputs, **_generation_arguments(model, tokenizer, settings, stop_event))
    seconds = time.perf_counter() - started
    width = inputs["input_ids"].shape[1]
    stops = set(stop_token_ids(model, tokenizer))
    results = []
    for row, prompt_mask in zip(output, inputs["attention_mask"]):
        new = row[width:].tolist()
        kept = []
        for token in new:  # up to and including the first stop id; later ones are batch padding
            kept.append(token)
            if token in stops:
                break
        ended_on_id = bool(kept) and kept[-1] in stops
        raw = tokenizer.decode(kept[:-1] if ended_on_id else kept, skip_special_tokens=False)
        text, stopped = _cut_at_stop(raw, settings.stop)
        interrupted = stop_event is not None and stop_event.is_set()
        finish = "stop" if stopped or ended_on_id or interrupted else "length"
        results.append(Completion(_clean(text, tokenizer), finish, int(prompt_mask.sum()), len(kept), seconds, token_ids=kept))
    return results


def generate(model, tokenizer, conversation, settings: SamplingSettings = SamplingSettings()) -> Completion:
    """One answer: `conversation` is a list of messages (templated) or a raw prompt string."""
    return generate_batch(model, tokenizer, [conversation], settings)[0]


class Stream:
    """Iterate to receive the answer piece by piece as it is generated; `.completion` holds the totals afterwards.

    Generation runs in a background thread (transformers' TextIteratorStreamer); `stop()` ends it early and the
    thread is always joined, so nothing is left running.
    """

    def __init__(self, model, tokenizer, conversation, settings: SamplingSettings = SamplingSettings()):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.prompt = render(tokenizer, conversation)
        self.stop_event = threading.Event()
        self.completion: Completion | None = None
        self._error: BaseException | None = None
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=False, timeout=600)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            inputs = _inputs(self.tokenizer, [self.prompt], self.model.device)
            if self.settings.seed is not None:
                torch.manual_seed(self.settings.seed)
            with torch.no_grad():
                arguments = _generation_arguments(self.model, self.tokenizer, self.settings, self.stop_event)
                self._output = self.model.generate(**inputs, **arguments, streamer=self._streamer)
            self._prompt_tokens = inputs["input_ids"].shape[1]
        except BaseException as error:  # surfaced to the reader in __iter__
            self._error = error
            self._streamer.end()

    def stop(self) -> None:
        self.stop_event.set()

    def __iter__(self) -> Iterator[str]:
        started = time.perf_counter()
        first = None
        text, sent, stopped = "", 0, False
        self._thread.start()
        try:
            for piece in self._streamer:
                if first is None and piece:
                    first = time.perf_counter() - started
                text += piece
                visible, stopped = _cut_at_stop(_clean(text, self.tokenizer), self.settings.stop)
                # Hold back a tail that might be the start of a stop string ("<|sep" of "<|separator|>").
                ready = len(visible) if stopped else max(sent, len(visible) - _partial_stop(visible, self.settings.stop))
                if ready > sent:
                    yield visible[sent:ready]
                    sent = ready
                if stopped:
                    self.stop_event.set()
        finally:
            self.stop_event.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        visible, stopped = _cut_at_stop(_clean(text, self.tokenizer), self.settings.stop)
        if len(visible) > sent:
            yield visible[sent:]
        new = self._output[0, self._prompt_tokens :].tolist()
        stops = set(stop_token_ids(self.model, self.tokenizer))
        ended_on_id = bool(new) and new[-1] in stops
        finish = "stop" if stopped or ended_on_id or len(new) < self.settings.max_new_tokens else "length"
        self.completion = Completion(visible, finish, self._prompt_tokens, len(new), time.perf_counter() - started, first, new)


def stream(model, tokenizer, conversation, settings: SamplingSettings = SamplingSettings()) -> Stream:
    return Stream(model, tokenizer, conversation, settings)


# --------------------------------------------------------------------------------------- the next-token distribution


@torch.no_grad()
def next_token_distribution(model, tokenizer, conversation, settings: SamplingSettings, top: int = 12):
    """Probabilities of the next token before and after the sampling knobs (temperature, top-k, top-p, penalty).

    Returns (tokens, raw probabilities, adjusted probabilities) for the `top` most likely raw tokens: what the plots in
    the lesson show. Uses transformers' own logits processors, so it is exactly what `generate` samples from.
    """
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    inputs = _inputs(tokenizer, [render(tokenizer, conversation)], model.device)
    logits = model(**inputs).logits[:, -1].float()
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature > 0:
        processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            processors.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    adjusted = processors(inputs["input_ids"], logits.clone())
    raw_p = torch.softmax(logits, -1)[0]
    if settings.temperature > 0:
        new_p = torch.softmax(adjusted, -1)[0]
    else:  # greedy: all the probability on the top token
        new_p = torch.zeros_like(raw_p)
        new_p[adjusted[0].argmax()] = 1.0
    order = torch.argsort(raw_p, descending=True)[:top]
    tokens = [tokenizer.decode([i]) for i in order.tolist()]
    return tokens, raw_p[order].tolist(), new_p[order].tolist()


def with_settings(settings: SamplingSettings, **changes) -> SamplingSettings:
    return replace(settings, **changes)
