"""One request while it is generated: how it picks each token (the logits processors of transformers' `generate`,
in its order, with the request's own random generator), when it ends (stop ids, stop strings, max tokens), and the
text its client has been sent so far.

Its own generator is what makes a seeded answer independent of the traffic: `torch.manual_seed` would share one
random stream between every request in the batch, so a neighbour would shift the draws. Seeded with the same number,
a request alone draws exactly what `helpers.chat.generate(..., seed=...)` draws for its first token.
"""

from __future__ import annotations

import os
import time

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..chat_text import Completion, IncrementalDecoder, VisibleText, finish_completion


def logits_processors(settings) -> LogitsProcessorList:
    """What `model.generate` applies for these settings, in its order (repetition penalty, then temperature, top-k,
    top-p, the last three only when sampling)."""
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.temperature > 0:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature=settings.temperature))
        if settings.top_k:
            processors.append(TopKLogitsWarper(top_k=settings.top_k))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=settings.top_p))
    return processors


class Sequence:
    """A request in a slot: `choose` the next token from its logits, `accept` it, until `finish` is set."""

    def __init__(self, job, slot: int, tokenizer, stop_ids, device):
        self.job, self.slot = job, slot
        settings = job.settings
        self.settings = settings
        self.ids = list(job.prompt_ids)  # the prompt, then every generated token (the repetition penalty reads them)
        self.generated: list[int] = []
        self.stop_ids = list(stop_ids)
        self._stop_set = set(stop_ids)
        self.processors = logits_processors(settings)
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(8), "little")
        self.generator = torch.Generator(device=device).manual_seed(seed % 2**64)
        self.decoder = IncrementalDecoder(tokenizer, stop_ids)
        self.visible = VisibleText(tokenizer, job.conversation, settings.stop)
        self.tokenizer = tokenizer
        self.sent = ""  # what the client has been sent (streams)
        self.finish: str | None = None  # "stop" or "length" once it has ended
        self.started = time.perf_counter()
        self.first_token_s: float | None = None

    @property
    def position(self) -> int:
        """Where the last token sits: the next step writes its key and value there."""
        return len(self.ids) - 1

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from this request's logits [vocab] (fp32)."""
        if not self.processors and self.settings.temperature <= 0:  # plain greedy: the first of the largest
            return int(logits.argmax())
        scores = logits[None]
        if self.processors:
            scores = self.processors(torch.tensor([self.ids], device=scores.device), scores)
        if self.settings.temperature > 0:
            probabilities = torch.softmax(scores, dim=-1)
            return int(torch.multinomial(probabilities, num_samples=1, generator=self.generator)[0, 0])
        return int(scores.argmax(dim=-1)[0])

    def accept(self, token: int) -> str:
        """Add `token`; returns the text that may be shown now ("" when none). Sets `finish` when it ends."""
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
        self.ids.append(token)
        self.generated.append(token)
        piece = self.decoder.add([token])
        ready = self.visible.add(piece) if piece else ""
        if token in self._stop_set or self.visible.stopped:
            self.finish = "stop"
        elif len(self.generated) >= self.settings.max_new_tokens:
            self.finish = "length"
        self.sent += ready
        return ready

    def completion(self, interrupted: bool = False) -> Completion:
        """The whole answer, exactly as helpers.chat would report these ids."""
        return finish_completion(self.tokenizer, self.job.conversation, self.generated, self.settings.stop,
                                 self.stop_ids, len(self.job.prompt_ids), time.perf_counter() - self.started,
                                 interrupted, self.first_token_s)

    def last_piece(self, completion: Completion) -> str:
        """What a stream still owes its client at the end: the answer beyond what was sent."""
        if completion.text.startswith(self.sent):
            return completion.text[len(self.sent):]
        return ""
