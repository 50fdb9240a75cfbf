"""Continuous batching: the one thread that owns the model, the bounded queue in front of it, and the loop that runs
every request being generated, streaming or not, as one batch at every decoding step.

    queue (bounded: a full queue answers 503) -> free slot? prefill alone -> joins the next step -> ... -> leaves

Each turn of the loop: requests that hung up leave (their slot is free at once); waiting requests take the free
slots and are prefilled one by one (a prompt-token budget per turn keeps the streams already running from stalling
behind a crowd of new prompts; at least one is always admitted); then one step decodes a token for every busy slot
(helpers.serving.batching), and each request picks its own token (helpers.serving.sequence). A request that has
finished sends its answer and leaves. This is iteration-level scheduling, as in Orca, vLLM and SGLang: nobody waits
for a whole batch to finish, and a new request starts after at most one step.

Every answer goes back to its own request: events travel through the request's own asyncio queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .batching import KVSlots, Row
from .protocol import APIError, overloaded, shutting_down
from .sequence import Sequence

log = logging.getLogger("helpers.serve")
DEFAULT_MAX_QUEUE = 64
PREFILL_TOKEN_BUDGET = 1024  # prompt tokens prefilled per turn of the loop (at least one request is always admitted)
RATE_WINDOW_S = 2.0  # steps per second are counted over this much recent time


@dataclass
class Job:
    """One request on its way through the scheduler. Events go back to the request's event loop."""

    conversation: Any  # list of messages, or a raw prompt string
    prompt_ids: list[int]
    settings: Any  # helpers.chat.SamplingSettings
    stream: bool
    use_adapter: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    on_cancel: Callable[[], None] | None = None

    def emit(self, kind: str, value: Any = None) -> None:
        deliver(self.loop, [(self, kind, value)])

    def cancel(self) -> None:
        self.cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel()


def deliver(loop: asyncio.AbstractEventLoop, events: list[tuple[Job, str, Any]]) -> None:
    """Hand events to their requests' queues, in one wake-up of their event loop (thread-safe)."""

    def put():
        for job, kind, value in events:
            job.events.put_nowait((kind, value))

    with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
        loop.call_soon_threadsafe(put)


class Scheduler:
    """`slots` requests generated together, up to `max_queue` more waiting for a slot."""

    def __init__(self, served, slots: int = 8, max_queue: int = DEFAULT_MAX_QUEUE,
                 prefill_budget: int = PREFILL_TOKEN_BUDGET):
        from ..chat import stop_token_ids

        self.served, self.slots, self.max_queue, self.prefill_budget = served, max(1, slots), max_queue, prefill_budget
        self.kv = KVSlots(served.model, self.slots, served.context_length, served.adapter_name is not None)
        self.stop_ids = stop_token_ids(served.model, served.tokenizer)
        self._pending: collections.deque[Job] = collections.deque()
        self._active: dict[int, Sequence] = {}  # slot -> the request generated there
        self._condition = threading.Condition()
        self._closing = False
        self._step_times: collections.deque[float] = collections.deque()
        self._outbox: list[tuple[Job, str, Any]] = []  # this turn's events, sent together (see _flush)
        self.stats = {"requests": 0, "completed": 0, "cancelled": 0, "failed": 0, "rejected": 0, "steps": 0,
                      "prefills": 0, "largest_batch": 0, "generated_tokens": 0}
        self._thread = threading.Thread(target=self._loop, name="helpers.serve scheduler", daemon=True)

    # ------------------------------------------------------------------------------------------ from requests

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._condition:
            if self._closing:
                raise shutting_down()
            waiting = collections.deque(j for j in self._pending if not j.cancelled.is_set())
            self.stats["cancelled"] += len(self._pending) - len(waiting)  # hung up while waiting: gone for good
            self._pending = waiting
            if len(waiting) >= self.max_queue:
                self.stats["rejected"] += 1
                raise overloaded(len(waiting))
            job.on_cancel = self.wake
            self._pending.append(job)
            self.stats["requests"] += 1
            self._condition.notify()

    def wake(self) -> None:
        with self._condition:
            self._condition.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new requests, fail the queued ones and cancel the running ones (their clients get a 503), join the
        thread. Safe to call more than once, from any thread."""
        with self._condition:
            self._closing = True
            leftover = list(self._pending)
            self._pending.clear()
            running = [sequence.job for sequence in self._active.values()]
            self._condition.notify_all()
        for job in leftover + running:  # generation in progress ends at the next step; its client is told why
            if not job.cancelled.is_set():
                job.cancelled.set()
                job.emit("error", shutting_down())
        if timeout and self._thread.is_alive():
            self._thread.join(timeout)

    def snapshot(self) -> dict:
        """What /health shows: the slots, the queue, the rate of steps, and counters since start."""
        with self._condition:
            now = time.perf_counter()
            recent = [t for t in self._step_times if now - t <= RATE_WINDOW_S]
            rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
            active = len(self._active)
            return {"slots": self.slots, "active": active, "running": active, "free_slots": self.slots - active,
                    "queued": sum(not j.cancelled.is_set() for j in self._pending), "max_queue": self.max_queue,
                    "steps_per_s": round(rate, 2), "kv_cache_bytes": self.kv.bytes, **self.stats}

    # ------------------------------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            admitted = self._admit()
            if admitted is None:
                return
            for slot, job in admitted:
                try:
                    self._prefill(slot, job)
                except Exception as error:  # noqa: BLE001 - this request fails, the server goes on
                    self._fail([slot], error, also=job)
                # Prompts admitted together are prefilled one after another: each first token goes out as soon as its
                # own prefill is done, not after the last one's (the time to first token of the first newcomer).
                self._flush()
            self._drop_cancelled()
            if self._active:
                try:
                    self._step()
                except Exception as error:  # noqa: BLE001 - the requests of this step fail, the server goes on
                    self._fail(list(self._active), error)
                self._flush()

    def _flush(self) -> None:
        """Send this turn's events: one wake-up per event loop, not one per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for event in self._outbox:
            by_loop.setdefault(event[0].loop, []).append(event)
        self._outbox = []
        for loop, events in by_loop.items():
            deliver(loop, events)

    def _admit(self) -> list[tuple[int, Job]] | None:
        """Waiting requests for the free slots (None when closing). Sleeps while there is nothing to do."""
        with self._condition:
            while True:
                while self._pending and self._pending[0].cancelled.is_set():  # hung up while waiting
                    self._pending.popleft()
                    self.stats["cancelled"] += 1
                if self._closing:
                    return None
                if self._pending and len(self._active) < self.slots or self._active:
                    break
                self._condition.wait(timeout=0.5)
            free = [slot for slot in range(self.slots) if slot not in self._active]
            admitted, budget = [], self.prefill_budget
            while self._pending and free and (not admitted or budget >= len(self._pending[0].prompt_ids)):
                job = self._pending.popleft()
                if job.cancelled.is_set():
                    self.stats["cancelled"] += 1
                    continue
                budget -= len(job.prompt_ids)
                admitted.append((free.pop(0), job))
            return admitted

    def _fail(self, slots: list[int], error: Exception, also: Job | None = None) -> None:
        """The requests in `slots` (and `also`, failed before it had a slot) get a 500 and leave."""
        log.exception("generation failed")
        with self._condition:
            failed = {id(s.job): s.job for s in (self._active.pop(slot) for slot in slots if slot in self._active)}
            if also is not None:
                failed[id(also)] = also
            self.stats["failed"] += len(failed)
        for job in failed.values():
            job.emit("error", APIError(500, f"Generation failed: {type(error).__name__}: {error}", "server_error"))

    def _prefill(self, slot: int, job: Job) -> None:
        sequence = Sequence(job, slot, self.served.tokenizer, self.stop_ids, self.served.model.device)
        with self._condition:
            self._active[slot] = sequence
        if job.cancelled.is_set():  # hung up between the queue and here
            return self._leave(sequence, "cancelled")
        logits = self.kv.prefill(slot, job.prompt_ids, job.use_adapter)
        with self._condition:
            self.stats["prefills"] += 1
        return self._advance(sequence, logits)

    def _step(self) -> None:
        rows = [Row(slot, s.ids[-1], s.position, s.job.use_adapter) for slot, s in self._active.items()]
        logits = self.kv.step(rows)
        with self._condition:
            self.stats["steps"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(rows))
            self._step_times.append(time.perf_counter())
            while self._step_times and self._step_times[-1] - self._step_times[0] > RATE_WINDOW_S:
                self._step_times.popleft()
        for slot, sequence in list(self._active.items()):
            self._advance(sequence, logits[slot])

    def _advance(self, sequence: Sequence, logits) -> None:
        """The request's next token; its text to a streaming client; its answer when it has finished."""
        job = sequence.job
        if job.cancelled.is_set():
            return self._leave(sequence, "cancelled")
        piece = sequence.accept(sequence.choose(logits))
        if piece and job.stream:
            self._outbox.append((job, "delta", piece))
        if sequence.finish is None:
            return None
        completion = sequence.completion()
        with self._condition:
            self.stats["generated_tokens"] += completion.completion_tokens
        self._leave(sequence, "completed")  # before the answer goes out: /health never lags behind a client
        if job.stream:
            rest = sequence.last_piece(completion)
            if rest:
                self._outbox.append((job, "delta", rest))
        self._outbox.append((job, "done", completion))
        return None

    def _leave(self, sequence: Sequence, outcome: str) -> None:
        with self._condition:
            self._active.pop(sequence.slot, None)
            self.stats[outcome] += 1

    def _drop_cancelled(self) -> None:
        """Requests whose client hung up leave now; their slot is free for the next turn."""
        for sequence in list(self._active.values()):
            if sequence.job.cancelled.is_set():
                self._leave(sequence, "cancelled")
