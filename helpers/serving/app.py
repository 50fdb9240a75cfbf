"""The HTTP side of the server: a FastAPI application that checks each OpenAI request (API key, body size while it
is read, schema, model name, context), turns it into a scheduler job, and turns the job's events into an OpenAI
response, whole or streamed as server-sent events. A client that hangs up cancels its job.

Routes are plain module-level functions; what they share (the model, the scheduler, the key) is one `ServerState`,
kept on the app and read from each request: `state(request)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import Request  # at module level: FastAPI resolves route annotations from these globals

from ..errors import CourseError
from .protocol import (
    MAX_BODY_BYTES,
    APIError,
    ChatRequest,
    ChunkWriter,
    CompletionRequest,
    SamplingFields,
    full_response,
    message_text,
    parse_json_object,
    validate,
)
from .process import INSTANCE_ENV_VAR
from .scheduler import DEFAULT_MAX_QUEUE, Job, Scheduler
from .served import ServedModel

log = logging.getLogger("helpers.serve")


@dataclass
class ServerState:
    served: ServedModel
    scheduler: Scheduler
    api_key: str | None
    instance: str
    started: int = field(default_factory=lambda: int(time.time()))


def create_app(served: ServedModel, *, api_key: str | None = None, max_batch_size: int = 8,
               max_queue: int = DEFAULT_MAX_QUEUE, instance: str | None = None):
    """The FastAPI application. `served` comes from `load_for_serving` (or is built around an in-memory model);
    `max_batch_size` is the number of KV-cache slots: how many requests are generated together."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    instance = instance or os.environ.get(INSTANCE_ENV_VAR) or secrets.token_hex(8)
    server = ServerState(served, Scheduler(served, max_batch_size, max_queue), api_key, instance)
    app = FastAPI(title="Grok 2 course server (OpenAI-compatible)", lifespan=_lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    app.state.scheduler = server.scheduler
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    return app


@contextlib.asynccontextmanager
async def _lifespan(app):
    app.state.server.scheduler.start()
    try:
        yield
    finally:
        app.state.server.scheduler.close()


def state(request: Request) -> ServerState:
    return request.app.state.server


# ================================================================================================ error rendering


def _json_error(error: APIError):
    from fastapi.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _api_error(request, error: APIError):
    return _json_error(error)


async def _http_error(request, error):
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    message = {404: f"Unknown route {request.method} {request.url.path}.",
               405: f"Method {request.method} is not allowed on {request.url.path}."}.get(error.status_code,
                                                                                      str(error.detail))
    return _json_error(APIError(error.status_code, message, kind))


async def _validation_error(request, error):
    return _json_error(APIError(400, str(error.errors()[:1])))


async def _unexpected(request, error: Exception):
    log.exception("unexpected error")
    return _json_error(APIError(500, f"Internal error: {type(error).__name__}: {error}", "server_error"))


# ============================================================================================= checking a request


def check_key(request: Request) -> None:
    """`Authorization: Bearer <key>`; the scheme's case does not matter (RFC 7235), the key is compared in constant
    time."""
    key = state(request).api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())):
        raise APIError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>' "
                            "(the openai client's api_key=...).", code="invalid_api_key")


async def read_body(request: Request) -> bytes:
    """The body, refused with a 413 as soon as it is known to be too large: from Content-Length before reading
    anything, else while it arrives (a chunked upload is never buffered beyond the limit). The 413 closes the
    connection: kept open, uvicorn would go on reading the rest of the upload (and throwing it away) to the end."""
    too_large = APIError(413, f"The request body is larger than {MAX_BODY_BYTES // 2**20} MiB, the most this server "
                              "reads. Send a shorter prompt.", code="request_too_large",
                         headers={"Connection": "close"})
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit() or len(declared) > 20:
            raise APIError(400, "The Content-Length header is not a number of bytes.")
        if int(declared) > MAX_BODY_BYTES:
            raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def parse(request: Request, schema):
    check_key(request)
    return validate(schema, parse_json_object(await read_body(request)))


def check_model(request: Request, name: str) -> None:
    names = state(request).served.names
    if name not in names:
        raise APIError(404, f"The model '{name}' does not exist on this server. Available: {', '.join(names)} "
                            "(GET /v1/models).", param="model", code="model_not_found")


def settings_for(served: ServedModel, body: SamplingFields, max_tokens: int | None, prompt_tokens: int):
    """The request's knobs as helpers.chat.SamplingSettings, or a 400 naming the one that is wrong."""
    from ..chat import SEPARATOR, SamplingSettings

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
    stops = body.stop_strings()
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


# ========================================================================================================= routes


async def health(request: Request):
    """Liveness, this server's identity (`instance`, `pid`), the CPU threads its PyTorch uses, and the scheduler:
    slots, queue, steps per second."""
    import torch

    server = state(request)
    return {"status": "ok", "models": server.served.names, "instance": server.instance, "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(), **server.scheduler.snapshot()}


async def models(request: Request):
    check_key(request)
    server = state(request)
    served = server.served
    data = [{"id": name, "object": "model", "created": server.started, "owned_by": "grok2-course",
             "root": served.source, "parent": None if name == served.name else served.name,
             "max_model_len": served.context_length} for name in served.names]
    return {"object": "list", "data": data}


async def chat_completions(request: Request):
    body: ChatRequest = await parse(request, ChatRequest)
    check_model(request, body.model)
    if not body.messages:
        raise APIError(400, "'messages' must contain at least one message.", param="messages")
    if body.tools:
        raise APIError(400, "Tool calling is not supported by this server.", param="tools")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise APIError(400, "Only response_format {'type': 'text'} is supported.", param="response_format")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": message_text(m)}
                for m in body.messages]
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise APIError(400, "'messages' needs at least one non-empty user message.", param="messages")
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    return await run(request, messages, body, max_tokens, "chat")


async def completions(request: Request):
    body: CompletionRequest = await parse(request, CompletionRequest)
    check_model(request, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise APIError(400, "Send exactly one prompt per request.", param="prompt")
    if not prompts[0]:
        raise APIError(400, "'prompt' must not be empty.", param="prompt")
    if body.echo or body.suffix:
        raise APIError(400, "echo and suffix are not supported by this server.", param="echo")
    return await run(request, prompts[0], body, body.max_tokens, "completion")


async def run(request: Request, conversation, body: SamplingFields, max_tokens: int | None, kind: str):
    """Queue the request; answer with the whole completion, or stream it."""
    from fastapi.responses import JSONResponse, StreamingResponse

    server = state(request)
    served = server.served
    try:  # refused by its length in characters before any tokenizing, then encoded in a worker thread
        prompt_ids = await asyncio.to_thread(_prompt_ids, served, conversation)
    except CourseError as error:
        raise APIError(400, str(error), param="messages") from None
    settings = settings_for(served, body, max_tokens, len(prompt_ids))
    job = Job(conversation, prompt_ids, settings, body.stream, served.uses_adapter(body.model),
              asyncio.get_running_loop(), asyncio.Queue())
    server.scheduler.submit(job)
    reply_id, created = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        writer = ChunkWriter(kind, reply_id, created, body.model, include_usage)
        return StreamingResponse(_events(job, writer), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    completion = await _wait_for_completion(request, job)
    return JSONResponse(full_response(kind, reply_id, created, body.model, completion))


def _prompt_ids(served: ServedModel, conversation) -> list[int]:
    """`served.prompt_ids`, run in a worker thread, with any error other than the client's (an APIError such as a
    prompt too long, a CourseError) turned into a 500 here, in the thread. A StopIteration must not leave it: an
    asyncio future refuses to hold one (TypeError in the event loop's callback), so the awaiting request would never
    be answered."""
    try:
        return served.prompt_ids(conversation)
    except (APIError, CourseError):
        raise
    except Exception as error:  # StopIteration included
        log.exception("unexpected error while encoding a prompt")
        raise APIError(500, f"Internal error while encoding the prompt: {type(error).__name__}: {error}",
                       "server_error") from None


async def _wait_for_completion(request: Request, job: Job):
    """The result of a non-streaming job. A client that hangs up meanwhile cancels it at once: the server's
    `http.disconnect` is awaited beside the job's result (whichever comes first), so the slot is free at the next
    step, not at the next look."""
    hang_up, result = asyncio.ensure_future(_hung_up(request)), None
    try:
        while True:
            result = asyncio.ensure_future(job.events.get())
            done, _ = await asyncio.wait({result, hang_up}, return_when=asyncio.FIRST_COMPLETED)
            if result not in done:  # a result that arrives with the hang-up still counts: nobody is cancelled for it
                job.cancel()
                raise APIError(499, "The client closed the request.", code="client_closed_request")
            kind, value = result.result()
            if kind == "error":
                raise value
            if kind == "done":
                return value
    except asyncio.CancelledError:  # the server is stopping this request's task
        job.cancel()
        raise
    finally:
        for waiting in (hang_up, result):
            if waiting is not None:
                waiting.cancel()


async def _hung_up(request: Request) -> None:
    """Returns when the client has closed the connection. The body has been read, so the next message the server
    sends this request is `http.disconnect` (when the client hangs up, or once the response has gone out)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _events(job: Job, writer: ChunkWriter) -> AsyncIterator[str]:
    """The job's events as server-sent events, ending with `data: [DONE]`. Closing the connection cancels the job."""
    finished = False
    try:
        if writer.kind == "chat":
            yield writer.chunk(None, first=True)
        while True:
            event, value = await job.events.get()
            if event == "delta":
                yield writer.chunk(value)
            elif event == "error":
                yield writer.error(value)
                break
            else:  # done
                yield writer.chunk(None, finish=value.finish_reason)
                if writer.include_usage:
                    yield writer.usage(value)
                break
        yield writer.done()
        finished = True
    finally:
        if not finished:  # the client hung up (the response task was cancelled): free the slot
            job.cancel()
