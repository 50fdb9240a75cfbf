"""An OpenAI-compatible server for the course's model: the API every client already speaks.

    server = start_server()                       # the profile's model, in a background process, on 127.0.0.1
    client = server.client()                      # the official `openai` package, pointed at it
    client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "What is your name?"}])
    server.stop()                                 # or `with start_server() as server: ...`

What it serves: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions`, streamed
(server-sent events) or not, with stop strings, usage counts and finish reasons - all from `helpers.chat`, which the
chat widget uses too. The model is a folder or hub id (base or merged), optionally with a PEFT LoRA adapter; with an
unmerged adapter both the base and the adapter are listed and can be asked for by name (like vLLM's `--lora-modules`).

How requests are run: one worker thread owns the model. Requests wait in a queue; non-streaming requests that share
the same sampling settings are taken together as one left-padded batch (`helpers.chat.generate_batch`), streaming
requests run one at a time (`helpers.chat.Stream`). Every answer goes back to the request it belongs to. A client that
hangs up - while queued, while its batch runs, or mid-stream - is cancelled and frees its place.

Hardening: binds 127.0.0.1 unless told otherwise; optional API key (`Authorization: Bearer ...`); every bad request
(malformed JSON, unknown model, empty messages, a prompt longer than the context, `max_tokens` out of bounds,
unsupported options) gets an HTTP 4xx in OpenAI's error format: `{"error": {"message", "type", "param", "code"}}`.

The process side (`start_server` / `ServerProcess`) starts `python -m helpers.serve` in its own process group, waits
for `/health`, reports an occupied port with the fix, and stops it cleanly (SIGTERM, then SIGKILL of the group)
leaving no orphan: the child also exits by itself if the process that started it (a notebook kernel) dies.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import contextlib
import copy
import hmac
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request  # at module level: FastAPI resolves route annotations from these globals

from .errors import CourseError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV_VAR = "GROK2_COURSE_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_STOP_STRINGS = 4  # OpenAI's limit
log = logging.getLogger("helpers.serve")


# =============================================================================================== errors (OpenAI format)


class APIError(Exception):
    """An error the client caused (4xx) or the server could not avoid (5xx), rendered in OpenAI's format."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _validation_message(error: ValidationError) -> tuple[str, str | None]:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first.get("loc", ())) or None
    return (f"Invalid value for '{param}': {first.get('msg')}" if param else str(first.get("msg"))), param


# ================================================================================================ request bodies


class _Lenient(BaseModel):
    """Unknown fields are ignored (clients send many optional ones); known ones are type-checked."""

    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: str
    text: str | None = None


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class _SamplingFields(_Lenient):
    model: str
    max_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)  # vLLM-style extension
    repetition_penalty: float | None = Field(default=None, gt=0.0)  # vLLM-style extension
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    seed: int | None = None
    n: int | None = None
    logprobs: bool | int | None = None


class ChatRequest(_SamplingFields):
    messages: list[Message]
    max_completion_tokens: int | None = None
    tools: list | None = None
    response_format: dict | None = None


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None


# ========================================================================================== the model being served


@dataclass
class ServedModel:
    """What the server runs: the model, its tokenizer, and the names clients may ask for."""

    model: Any
    tokenizer: Any
    name: str
    adapter_name: str | None = None  # with an unmerged PEFT adapter: served under this name, the base under `name`
    context_length: int = 2048
    default_max_tokens: int = 256
    source: str = ""
    _counting_tokenizer: Any = None
    _counting_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        config = getattr(self.model, "config", None)
        self.context_length = int(getattr(config, "max_position_embeddings", None) or self.context_length)
        # Counting prompt tokens happens in request threads while the worker generates; a fast tokenizer's Rust core
        # refuses concurrent use ("Already borrowed"), so requests count with their own copy, one at a time.
        try:
            self._counting_tokenizer = copy.deepcopy(self.tokenizer)
        except Exception:  # noqa: BLE001 - a tokenizer that cannot be copied is shared (under the lock)
            self._counting_tokenizer = self.tokenizer

    @property
    def names(self) -> list[str]:
        return [self.name] + ([self.adapter_name] if self.adapter_name else [])

    def uses_adapter(self, name: str) -> bool:
        return self.adapter_name is not None and name == self.adapter_name

    def count_prompt_tokens(self, conversation) -> int:
        from .chat import render

        with self._counting_lock:
            text = render(self._counting_tokenizer, conversation)
            return len(self._counting_tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def default_temperature(self) -> float:
        """The model's own generation defaults (as vLLM applies them): greedy unless its generation_config samples."""
        generation = getattr(self.model, "generation_config", None)
        if generation is not None and getattr(generation, "do_sample", False):
            return float(getattr(generation, "temperature", None) or 1.0)
        return 0.0


def load_for_serving(model: str | Path | None = None, *, adapter: str | Path | None = None, merge: bool = False,
                     served_model_name: str | None = None, profile: str | None = None,
                     default_max_tokens: int = 256) -> ServedModel:
    """Load a base (or merged) model, optionally with a PEFT LoRA adapter, ready for `create_app`."""
    from .loading import load_model, load_tokenizer, plan_load

    plan = plan_load(model, profile=profile)
    source = plan.source
    base = load_model(plan=plan, verbose=False)
    tokenizer = load_tokenizer(plan.tokenizer_source)
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
    return ServedModel(base, tokenizer, name, adapter_name, source=str(source), default_max_tokens=default_max_tokens)


def _default_name(source: str | Path) -> str:
    text = str(source)
    return Path(text).name if Path(text).expanduser().exists() else text


# ===================================================================================== the queue and the worker


@dataclass
class Job:
    """One request on its way through the worker. Events go back to the request's event loop."""

    conversation: Any  # list of messages, or a raw prompt string
    settings: Any  # helpers.chat.SamplingSettings
    stream: bool
    use_adapter: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    prompt_tokens: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    _on_cancel: Callable[[], None] | None = None

    def emit(self, kind: str, value: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the request's loop is gone: nobody is listening any more
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def cancel(self) -> None:
        self.cancelled.set()
        if self._on_cancel is not None:
            self._on_cancel()


class Scheduler:
    """The single worker thread that owns the model, with a queue in front of it.

    Non-streaming jobs with identical sampling settings (and no seed: a seeded answer must not depend on what else is
    in the batch) are run together, up to `max_batch_size`; everything else runs alone, in arrival order.
    """

    def __init__(self, served: ServedModel, max_batch_size: int = 8, max_queue: int = 256):
        self.served, self.max_batch_size, self.max_queue = served, max(1, max_batch_size), max_queue
        self._pending: collections.deque[Job] = collections.deque()
        self._condition = threading.Condition()
        self._closing = False
        self._running = 0
        self._current: list[Job] = []
        self.stats = {"requests": 0, "completed": 0, "cancelled": 0, "failed": 0, "batches": 0, "largest_batch": 0,
                      "generated_tokens": 0}
        self._thread = threading.Thread(target=self._loop, name="helpers.serve worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, fail the queued ones, cancel the running ones (their clients get a 503), join the worker.
        Safe to call more than once."""
        with self._condition:
            self._closing = True
            leftover = list(self._pending)
            self._pending.clear()
            running = list(self._current)
            self._condition.notify_all()
        for job in leftover:
            job.emit("error", APIError(503, "The server is shutting down.", "server_error", code="shutting_down"))
        for job in running:  # generation in progress ends between two tokens; its client is told why
            if job.cancelled.is_set():
                continue
            job.cancel()
            job.emit("error", APIError(503, "The server is shutting down.", "server_error", code="shutting_down"))
        if timeout and self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        with self._condition:
            if self._closing:
                raise APIError(503, "The server is shutting down.", "server_error", code="shutting_down")
            if len(self._pending) >= self.max_queue:
                raise APIError(503, f"The server is busy ({len(self._pending)} requests queued). Retry shortly.",
                               "server_error", code="server_overloaded")
            self._pending.append(job)
            self.stats["requests"] += 1
            self._condition.notify()

    def snapshot(self) -> dict:
        with self._condition:
            return {"queued": sum(not j.cancelled.is_set() for j in self._pending), "running": self._running,
                    **self.stats}

    # ---------------------------------------------------------------------------------------------- the worker

    @staticmethod
    def _batchable(job: Job) -> bool:
        return not job.stream and job.settings.seed is None

    def _next_batch(self) -> list[Job] | None:
        with self._condition:
            while True:
                while self._pending and self._pending[0].cancelled.is_set():  # hung up while waiting
                    self._pending.popleft()
                    self.stats["cancelled"] += 1
                if self._closing:
                    return None
                if self._pending:
                    break
                self._condition.wait(timeout=0.5)
            first = self._pending.popleft()
            batch = [first]
            if self._batchable(first):
                for job in list(self._pending):
                    if len(batch) >= self.max_batch_size:
                        break
                    if (self._batchable(job) and not job.cancelled.is_set() and job.settings == first.settings
                            and job.use_adapter == first.use_adapter):
                        self._pending.remove(job)
                        batch.append(job)
            self._running = len(batch)
            self._current = batch
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                with self._adapter_context(batch[0].use_adapter):
                    if batch[0].stream:
                        self._run_stream(batch[0])
                    else:
                        self._run_batch(batch)
            except BaseException as error:  # noqa: BLE001 - report to the clients, keep serving
                log.exception("generation failed")
                with self._condition:
                    self.stats["failed"] += len(batch)
                for job in batch:
                    job.emit("error", APIError(500, f"Generation failed: {type(error).__name__}: {error}",
                                               "server_error"))
            finally:
                with self._condition:
                    self._running = 0
                    self._current = []

    def _adapter_context(self, use_adapter: bool):
        model = self.served.model
        if self.served.adapter_name is not None and not use_adapter:
            return model.disable_adapter()  # PEFT: the base model's answer, same weights in memory
        return contextlib.nullcontext()

    def _count(self, key: str, n: int = 1) -> None:
        with self._condition:
            self.stats[key] += n

    def _run_batch(self, batch: list[Job]) -> None:
        from .chat import generate_batch

        stop_event = threading.Event()

        def cancel_if_everyone_left():
            if all(job.cancelled.is_set() for job in batch):
                stop_event.set()

        for job in batch:
            job._on_cancel = cancel_if_everyone_left
        served = self.served
        completions = generate_batch(served.model, served.tokenizer, [j.conversation for j in batch], batch[0].settings,
                                     stop_event=stop_event)
        for job, completion in zip(batch, completions):
            if job.cancelled.is_set():
                self._count("cancelled")
                continue
            self._count("completed")
            self._count("generated_tokens", completion.completion_tokens)
            job.emit("done", completion)

    def _run_stream(self, job: Job) -> None:
        from .chat import Stream

        if job.cancelled.is_set():  # hung up between the queue and here
            self._count("cancelled")
            return
        live = Stream(self.served.model, self.served.tokenizer, job.conversation, job.settings)
        job._on_cancel = live.stop  # ends the generation between two tokens
        pieces = iter(live)
        try:
            for piece in pieces:
                if job.cancelled.is_set():
                    break
                job.emit("delta", piece)
        finally:
            live.stop()
            pieces.close()  # joins the generation thread (helpers.chat.Stream guarantees it)
        if job.cancelled.is_set():
            self._count("cancelled")
            return
        self._count("completed")
        self._count("generated_tokens", live.completion.completion_tokens)
        job.emit("done", live.completion)


# ================================================================================================= the web app


def _openai_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _message_text(message: Message) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text":
            raise APIError(400, f"Content parts of type '{part.type}' are not supported: this model reads text only.",
                           param="messages")
        texts.append(part.text or "")
    return "".join(texts)


def create_app(served: ServedModel, *, api_key: str | None = None, max_batch_size: int = 8, max_queue: int = 256):
    """The FastAPI application. `served` comes from `load_for_serving` (or is built around an in-memory model)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .chat import SEPARATOR, SamplingSettings

    scheduler = Scheduler(served, max_batch_size=max_batch_size, max_queue=max_queue)
    started = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        try:
            yield
        finally:
            scheduler.close()

    app = FastAPI(title="Grok 2 course server (OpenAI-compatible)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    app.state.served = served

    # ------------------------------------------------------------------------------------------ error rendering

    @app.exception_handler(APIError)
    async def _api_error(request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, error: StarletteHTTPException):
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        message = {404: f"Unknown route {request.method} {request.url.path}.",
                   405: f"Method {request.method} is not allowed on {request.url.path}."}.get(error.status_code,
                                                                                          str(error.detail))
        return JSONResponse(APIError(error.status_code, message, kind).body(), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, error: RequestValidationError):
        return JSONResponse(APIError(400, str(error.errors()[:1])).body(), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request, error: Exception):
        log.exception("unexpected error")
        body = APIError(500, f"Internal error: {type(error).__name__}: {error}", "server_error").body()
        return JSONResponse(body, status_code=500)

    # ------------------------------------------------------------------------------------------ request helpers

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise APIError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>' "
                                "(the openai client's api_key=...).", code="invalid_api_key")

    async def read_body(request: Request, schema: type[BaseModel]):
        check_key(request)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise APIError(413, f"The request body is larger than {MAX_BODY_BYTES // 2**20} MiB.")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise APIError(400, f"We could not parse the JSON body of your request ({error}). Send valid JSON "
                                "with 'Content-Type: application/json'.") from None
        if not isinstance(data, dict):
            raise APIError(400, "The request body must be a JSON object.")
        try:
            return schema.model_validate(data)
        except ValidationError as error:
            message, param = _validation_message(error)
            raise APIError(400, message, param=param) from None

    def check_model(name: str) -> None:
        if name not in served.names:
            raise APIError(404, f"The model '{name}' does not exist on this server. Available: "
                                f"{', '.join(served.names)} (GET /v1/models).", param="model", code="model_not_found")

    def settings_for(body: _SamplingFields, max_tokens: int | None, prompt_tokens: int) -> SamplingSettings:
        if body.n not in (None, 1):
            raise APIError(400, "Only n=1 is supported: send several requests for several answers.", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(400, f"{name} is not supported by this server; use repetition_penalty (e.g. 1.1).",
                               param=name)
        if body.logprobs:
            raise APIError(400, "logprobs are not supported by this server.", param="logprobs")
        room = served.context_length - prompt_tokens
        if room < 1:
            raise APIError(400, f"This model's maximum context length is {served.context_length} tokens. However, "
                                f"your prompt is {prompt_tokens} tokens, leaving no room for an answer. Shorten it.",
                           param="messages", code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(room, served.default_max_tokens)
        elif max_tokens < 1:
            raise APIError(400, f"max_tokens must be at least 1 (got {max_tokens}).", param="max_tokens",
                           code="invalid_value")
        elif max_tokens > room:
            raise APIError(400, f"This model's maximum context length is {served.context_length} tokens. However, you "
                                f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
                                f"{max_tokens} in the completion). Reduce max_tokens to at most {room}.",
                           param="max_tokens", code="context_length_exceeded")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
            raise APIError(400, f"stop takes up to {MAX_STOP_STRINGS} non-empty strings.", param="stop")
        temperature = served.default_temperature if body.temperature is None else body.temperature
        return SamplingSettings(
            max_new_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            repetition_penalty=body.repetition_penalty or 1.0,
            stop=tuple(dict.fromkeys((SEPARATOR, *stops))),  # the end of a turn always ends the answer
            seed=body.seed,
        )

    async def run(request: Request, conversation, body: _SamplingFields, max_tokens: int | None, kind: str):
        check_model(body.model)
        prompt_tokens = await asyncio.to_thread(served.count_prompt_tokens, conversation)
        settings = settings_for(body, max_tokens, prompt_tokens)
        job = Job(conversation, settings, body.stream, served.uses_adapter(body.model), asyncio.get_running_loop(),
                  asyncio.Queue(), prompt_tokens)
        scheduler.submit(job)
        reply_id, created = _openai_id("chatcmpl" if kind == "chat" else "cmpl"), int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            events = _sse(job, kind, reply_id, created, body.model, include_usage)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        completion = await _wait_for_completion(request, job)
        return JSONResponse(_full_response(kind, reply_id, created, body.model, completion))

    # -------------------------------------------------------------------------------------------------- routes

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": served.names, **scheduler.snapshot()}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        data = [{"id": name, "object": "model", "created": started, "owned_by": "grok2-course",
                 "root": served.source, "parent": None if name == served.name else served.name,
                 "max_model_len": served.context_length} for name in served.names]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body: ChatRequest = await read_body(request, ChatRequest)
        check_model(body.model)
        if not body.messages:
            raise APIError(400, "'messages' must contain at least one message.", param="messages")
        if body.tools:
            raise APIError(400, "Tool calling is not supported by this server.", param="tools")
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise APIError(400, "Only response_format {'type': 'text'} is supported.", param="response_format")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": _message_text(m)}
                    for m in body.messages]
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise APIError(400, "'messages' needs at least one non-empty user message.", param="messages")
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return await run(request, messages, body, max_tokens, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionRequest = await read_body(request, CompletionRequest)
        check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(400, "Send exactly one prompt per request.", param="prompt")
        if not prompts[0]:
            raise APIError(400, "'prompt' must not be empty.", param="prompt")
        if body.echo or body.suffix:
            raise APIError(400, "echo and suffix are not supported by this server.", param="echo")
        return await run(request, prompts[0], body, body.max_tokens, "completion")

    return app


async def _wait_for_completion(request, job: Job):
    """The result of a non-streaming job; a client that hangs up meanwhile cancels it."""
    while True:
        try:
            kind, value = await asyncio.wait_for(job.events.get(), timeout=0.25)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise APIError(499, "The client closed the request.", code="client_closed_request") from None
            continue
        except asyncio.CancelledError:
            job.cancel()
            raise
        if kind == "error":
            raise value
        if kind == "done":
            return value


def _usage(completion) -> dict:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def _full_response(kind: str, reply_id: str, created: int, model: str, completion) -> dict:
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": completion.text},
                  "finish_reason": completion.finish_reason, "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": completion.text, "finish_reason": completion.finish_reason, "logprobs": None}
        obj = "text_completion"
    return {"id": reply_id, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": _usage(completion)}


async def _sse(job: Job, kind: str, reply_id: str, created: int, model: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. Closing the connection cancels."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(text: str | None, finish: str | None = None, first: bool = False) -> str:
        if kind == "chat":
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        payload = {"id": reply_id, "object": obj, "created": created, "model": model, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return f"data: {json.dumps(payload)}\n\n"

    finished = False
    try:
        if kind == "chat":
            yield chunk(None, first=True)
        while True:
            event, value = await job.events.get()
            if event == "delta":
                yield chunk(value)
            elif event == "error":
                yield f"data: {json.dumps(value.body())}\n\n"
                break
            else:  # done
                yield chunk(None, finish=value.finish_reason)
                if include_usage:
                    usage = {"id": reply_id, "object": obj, "created": created, "model": model, "choices": [],
                             "usage": _usage(value)}
                    yield f"data: {json.dumps(usage)}\n\n"
                break
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:  # the client hung up (the response task was cancelled): free the worker
            job.cancel()


# ================================================================================== running it as a process


def port_owner(port: int) -> str | None:
    """Who listens on `port`, in words, when the system lets us see it."""
    try:
        import psutil

        for connection in psutil.net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
                if connection.pid:
                    process = psutil.Process(connection.pid)
                    return f"pid {connection.pid} ({' '.join(process.cmdline())[:120]})"
                return "another process"
    except Exception:  # noqa: BLE001 - permissions differ per OS; the message works without it
        return None
    return None


def check_port_free(host: str, port: int) -> None:
    """Raise CourseError naming the fix when something already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "in use"
        try:
            probe.bind((host, port))
        except OSError as error:
            owner = port_owner(port)
            raise CourseError(
                f"Port {port} on {host} is already in use{' by ' + owner if owner else ''} ({error.strerror}).",
                f"Stop the server that holds it (`server.stop()` on the object you started, or "
                f"`helpers.serve.stop_all_servers()` in the notebook that started it; otherwise end that process), "
                f"or choose another port: `start_server(port=0)` picks a free one.",
            ) from None


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


_RUNNING: list[ServerProcess] = []


class ServerProcess:
    """A server started by `start_server`: its address, a client for it, its log, and a clean `stop()`."""

    def __init__(self, process: subprocess.Popen, host: str, port: int, log_path: Path, api_key: str | None,
                 models: list[str]):
        self.process, self.host, self.port, self.log_path, self.api_key = process, host, port, log_path, api_key
        self.models = models

    @property
    def model(self) -> str:
        """The name to pass as `model=` (the adapter's, when one is served)."""
        return self.models[-1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def health(self, timeout: float = 5.0) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=timeout).json()

    def client(self, **kwargs):
        """The official openai client for this server."""
        from openai import OpenAI

        kwargs.setdefault("timeout", 60.0)
        kwargs.setdefault("max_retries", 0)
        return OpenAI(base_url=self.base_url, api_key=self.api_key or "not-needed", **kwargs)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> dict:
        """SIGTERM (uvicorn finishes open responses, the worker is joined), then SIGKILL to the whole process group if
        it has not exited in `timeout` s. Returns what happened; raises if anything of the group survived."""
        how = "already exited"
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
                how = "SIGTERM"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
                how = "SIGKILL (did not stop on SIGTERM)"
        # Anything else left in the server's process group (nothing is expected) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self in _RUNNING:
            _RUNNING.remove(self)
        leftover = _group_members(self.process.pid)
        if leftover:
            raise CourseError(f"Processes of the server's group survived: {leftover}.",
                              f"End them by id: `kill -9 {' '.join(map(str, leftover))}`.")
        return {"pid": self.process.pid, "stopped_by": how, "exit_code": self.process.returncode,
                "orphans": leftover}

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited ({self.process.returncode})"
        return f"<ServerProcess {self.base_url} pid={self.pid} {state} models={self.models}>"


def _group_members(pgid: int) -> list[int]:
    try:
        import psutil
    except ImportError:
        return []
    members = []
    for process in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def stop_all_servers() -> list[dict]:
    """Stop every server this Python process started (also run at exit)."""
    return [server.stop() for server in list(_RUNNING)]


atexit.register(stop_all_servers)


def start_server(model: str | Path | None = None, *, adapter: str | Path | None = None, merge: bool = False,
                 host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
                 served_model_name: str | None = None, max_batch_size: int = 8, default_max_tokens: int = 256,
                 profile: str | None = None, startup_timeout: float = 120.0, log_path: str | Path | None = None,
                 allow_remote: bool = False, torch_threads: int | None = None) -> ServerProcess:
    """Start `python -m helpers.serve` in the background and return once `/health` answers.

    `port=0` picks a free port. `host` stays 127.0.0.1 (this machine only) unless `allow_remote=True`; serving beyond
    this machine also needs an `api_key`.
    """
    from .paths import workspace_dir
    from .profiles import get_profile

    if host not in LOOPBACK_HOSTS:
        if not allow_remote:
            raise CourseError(f"host={host!r} would expose the server beyond this machine.",
                              "Keep the default host='127.0.0.1', or pass allow_remote=True together with an api_key "
                              "(and a firewall / TLS proxy in front of it).")
        if not api_key:
            raise CourseError("A server reachable from other machines needs an API key.",
                              "Pass api_key='...' (clients send it as 'Authorization: Bearer ...').")
    if port == 0:
        port = free_port(host)
    check_port_free(host, port)
    source = str(model) if model is not None else get_profile(profile).model_id
    log_file = Path(log_path) if log_path else workspace_dir() / "server-logs" / f"serve-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "helpers.serve", "--model", source, "--host", host, "--port", str(port),
               *(["--allow-remote"] if allow_remote else []),
               "--max-batch-size", str(max_batch_size), "--default-max-tokens", str(default_max_tokens),
               "--parent-pid", str(os.getpid())]
    if adapter is not None:
        command += ["--adapter", str(adapter)] + (["--merge"] if merge else [])
    if served_model_name:
        command += ["--served-model-name", served_model_name]
    if profile:
        command += ["--profile", profile]
    if torch_threads:
        command += ["--torch-threads", str(torch_threads)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(API_KEY_ENV_VAR, None)
    if api_key:
        env[API_KEY_ENV_VAR] = api_key  # in the environment, not on the command line (which `ps` shows everyone)
    with open(log_file, "wb") as log_handle:
        process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
    server = ServerProcess(process, host, port, log_file, api_key, [])
    _RUNNING.append(server)
    try:
        server.models = _wait_until_healthy(server, startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_healthy(server: ServerProcess, timeout: float) -> list[str]:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            tail = server.log_tail()
            if "address already in use" in tail.lower():
                owner = port_owner(server.port)
                raise CourseError(f"Port {server.port} on {server.host} was taken{' by ' + owner if owner else ''} "
                                  "while the server started.", "Choose another port, e.g. start_server(port=0).")
            raise CourseError(f"The server exited during start-up (exit code {server.process.returncode}). "
                              f"Last lines of its log ({server.log_path}):\n{tail}",
                              "Read the error above: usually a wrong model path or adapter folder.")
        try:
            reply = httpx.get(f"{server.url}/health", timeout=2.0)
            if reply.status_code == 200:
                return reply.json()["models"]
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise CourseError(f"The server did not answer /health within {timeout:.0f} s. Last lines of its log:\n"
                      f"{server.log_tail()}", "Wait longer (startup_timeout=...) for a big model, or read the log.")


# ======================================================================================================== clients


@dataclass
class RequestRecord:
    ok: bool
    latency_s: float
    first_token_s: float | None
    completion_tokens: int
    text: str = ""
    error: str = ""


@dataclass
class LoadTestResult:
    concurrency: int
    requests: int
    stream: bool
    wall_s: float
    records: list[RequestRecord]

    @property
    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if r.ok]

    def percentile(self, values: list[float], q: float) -> float:
        if not values:
            return math.nan
        ordered = sorted(values)
        index = (len(ordered) - 1) * q
        low, high = math.floor(index), math.ceil(index)
        return ordered[low] + (ordered[high] - ordered[low]) * (index - low)

    def summary(self) -> dict:
        latencies = [r.latency_s for r in self.ok]
        firsts = [r.first_token_s for r in self.ok if r.first_token_s is not None]
        tokens = sum(r.completion_tokens for r in self.ok)
        return {
            "concurrency": self.concurrency, "requests": self.requests, "stream": self.stream,
            "errors": len(self.records) - len(self.ok),
            "latency_p50_s": round(self.percentile(latencies, 0.5), 4),
            "latency_p95_s": round(self.percentile(latencies, 0.95), 4),
            "ttft_p50_s": round(self.percentile(firsts, 0.5), 4) if firsts else None,
            "ttft_p95_s": round(self.percentile(firsts, 0.95), 4) if firsts else None,
            "tokens_per_s": round(tokens / self.wall_s, 1) if self.wall_s else 0.0,
            "requests_per_s": round(len(self.ok) / self.wall_s, 2) if self.wall_s else 0.0,
            "completion_tokens": tokens, "wall_s": round(self.wall_s, 3),
        }


def _require_local(base_url: str) -> None:
    from urllib.parse import urlparse

    host = urlparse(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise CourseError(f"The load test targets {host!r}, not this machine.",
                          "Load-test only servers you run yourself on 127.0.0.1 (start_server(...).base_url).")


def load_test(base_url: str, model: str, questions: list[str], *, requests: int = 16, concurrency: int = 4,
              max_tokens: int = 48, stream: bool = True, api_key: str | None = None,
              timeout: float = 60.0) -> LoadTestResult:
    """`requests` chat requests, `concurrency` at a time, against a server on 127.0.0.1 (bounded: at most 1000
    requests, 64 at a time). Streaming measures the time to the first token; non-streaming lets the server batch."""
    from openai import OpenAI

    _require_local(base_url)
    if not (1 <= requests <= 1000 and 1 <= concurrency <= 64):
        raise CourseError(f"requests={requests}, concurrency={concurrency} is outside the bounds of this load test.",
                          "Use 1-1000 requests and a concurrency of 1-64.")
    client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)

    def one(index: int) -> RequestRecord:
        messages = [{"role": "user", "content": questions[index % len(questions)]}]
        started = time.perf_counter()
        try:
            if stream:
                first, pieces, usage = None, [], None
                for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                            temperature=0, stream=True,
                                                            stream_options={"include_usage": True}):
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.choices and chunk.choices[0].delta.content:
                        if first is None:
                            first = time.perf_counter() - started
                        pieces.append(chunk.choices[0].delta.content)
                tokens = usage.completion_tokens if usage else len(pieces)
                return RequestRecord(True, time.perf_counter() - started, first, tokens, "".join(pieces))
            reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
            return RequestRecord(True, time.perf_counter() - started, None, reply.usage.completion_tokens,
                                 reply.choices[0].message.content)
        except Exception as error:  # noqa: BLE001 - a failed request is a data point, not a crash
            return RequestRecord(False, time.perf_counter() - started, None, 0,
                                 error=f"{type(error).__name__}: {error}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = list(pool.map(one, range(requests)))
    client.close()
    return LoadTestResult(concurrency, requests, stream, time.perf_counter() - started, records)


# ============================================================================================ python -m helpers.serve


def _exit_with_parent(parent_pid: int) -> None:
    """If the process that started us (e.g. a notebook kernel) dies, stop: no orphan server keeps the port."""

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent watchdog", daemon=True).start()


def _default_torch_threads(model) -> int | None:
    """A small model on CPU runs fastest on one thread: its matrices are too small to split, and extra threads only
    spin against other processes (measured here: 6x faster on a busy 2-core machine)."""
    parameters = sum(p.numel() for p in model.parameters())
    on_cpu = next(model.parameters()).device.type == "cpu"
    return 1 if on_cpu and parameters < 100_000_000 else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="folder or hub id (default: the profile's model)")
    parser.add_argument("--adapter", default=None, help="a PEFT LoRA adapter folder to serve on top of the model")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the weights")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--default-max-tokens", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: 1 for a small model on CPU, else PyTorch's choice)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--allow-remote", action="store_true",
                        help=f"allow a non-loopback --host (an API key in ${API_KEY_ENV_VAR} is then required)")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK_HOSTS and not (args.allow_remote and os.environ.get(API_KEY_ENV_VAR)):
        parser.error(f"--host {args.host} exposes the server beyond this machine: pass --allow-remote and set "
                     f"{API_KEY_ENV_VAR}, or keep the default {DEFAULT_HOST}.")

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    served = load_for_serving(args.model, adapter=args.adapter, merge=args.merge,
                              served_model_name=args.served_model_name, profile=args.profile,
                              default_max_tokens=args.default_max_tokens)
    threads = args.torch_threads or _default_torch_threads(served.model)
    if threads:
        import torch

        torch.set_num_threads(threads)
    app = create_app(served, api_key=os.environ.get(API_KEY_ENV_VAR) or None, max_batch_size=args.max_batch_size)
    print(f"serving {served.names} on http://{args.host}:{args.port}/v1 (pid {os.getpid()})", flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=5, access_log=False)
    scheduler = app.state.scheduler

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn waits for open responses before the app's shutdown runs: end the generations (and tell their
            # clients) now, from a thread - a signal handler must not wait for the scheduler's lock.
            threading.Thread(target=scheduler.close, kwargs={"timeout": 0}, daemon=True).start()
            super().handle_exit(sig, frame)

    Server(config).run()
    print("server stopped", flush=True)


if __name__ == "__main__":
    main()
