"""OpenAI's wire format, as this server speaks it: request bodies (parsed and bounded), errors, and response bodies.

Everything a client sends is checked here before any work proportional to it is done: the body is parsed with JSON's
own rules (no `Infinity`/`NaN`, no 5,000-digit numbers, no 100,000-deep nesting), every string must be text (no
lone surrogate such as a JSON "\\ud800", which no tokenizer can read), integers must fit in 64 bits,
floats must be finite, stop strings follow OpenAI (at most 4) and are bounded in length. A bad request becomes an
`APIError`, rendered as `{"error": {"message", "type", "param", "code"}}` with a 4xx status, never a 500.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..units import MiB

MAX_BODY_BYTES = 4 * MiB
MAX_STOP_STRINGS = 4  # OpenAI's limit ("up to 4 sequences")
MAX_STOP_CHARS = 256  # each; checking a stop costs time per token in proportion to its length
INT64_MAX = 2**63 - 1

Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


# =============================================================================================== errors (OpenAI format)


class APIError(Exception):
    """An error the client caused (4xx) or the server could not avoid (5xx), rendered in OpenAI's format."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def shutting_down() -> APIError:
    return APIError(503, "The server is shutting down.", "server_error", code="shutting_down")


def overloaded(queued: int) -> APIError:
    return APIError(503, f"The server is busy: every slot is generating and {queued} requests are waiting, the most "
                         "it queues. Retry in a moment, or start the server with more slots or a longer queue.",
                    "server_error", code="server_overloaded", headers={"Retry-After": "1"})


def validation_message(error: ValidationError) -> tuple[str, str | None]:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first.get("loc", ())) or None
    message = str(first.get("msg"))
    return (f"Invalid value for '{param}': {message}" if param else message), param


# ===================================================================================================== parsing


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def parse_json_object(raw: bytes) -> dict:
    """The request body as a dict, or an APIError(400) that says what is wrong with it."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise APIError(400, "The JSON body is nested too deeply to be a chat request.") from None
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError, Infinity/NaN, numbers of 4,300+ digits
        raise APIError(400, f"We could not parse the JSON body of your request ({str(error)[:200]}). Send valid JSON "
                            "with 'Content-Type: application/json'.") from None
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    check_text(raw, data)
    return data


# What a lone surrogate looks like in a UTF-8 body: a JSON escape of one (\ud800-\udfff), or its UTF-8-style bytes
# (json.loads decodes with "surrogatepass"). A body without either holds none: most bodies are cleared by this scan.
SURROGATE_SIGNS = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
MAX_PLACES_SEARCHED = 50_000  # values looked at to name the field that holds one (beyond: the error names no field)


def check_text(raw: bytes, data) -> None:
    """Refuse a string that is not Unicode text. JSON lets a body escape half of a surrogate pair ("\\ud800") alone,
    which Python keeps as a lone surrogate: it cannot be encoded as UTF-8, and the tokenizer fails on it (a 500).

    Cheap first: a scan of the raw bytes for anything that could become one, then one UTF-8 encoding of the whole
    body (both in C, linear in the 4 MiB at most). Only a body that really holds one is walked, to name the field."""
    if json.detect_encoding(raw) == "utf-8" and not SURROGATE_SIGNS.search(raw):  # json.loads also reads UTF-16/32
        return
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
        return
    except UnicodeEncodeError:  # there is one: the walk names where, unless it stops at its bound first
        known = True
    except RecursionError:  # nested to the parser's own limit: only the walk, which has no recursion, can tell
        known = False
    param, detail, complete = _lone_surrogate_place(data)
    if not known and not param:
        if complete:  # every value looked at, none is a lone surrogate: a real pair ("\\ud83d\\ude00") deep down
            return
        raise APIError(400, f"The body is nested too deeply for one pass and holds more than {MAX_PLACES_SEARCHED:,} "
                            "values, too many to check for lone surrogates (half of a UTF-16 pair without its other "
                            "half, which is not text). Send it less deeply nested.", code="invalid_text")
    where = f"The value of '{param}'" if param else "A string in the body"
    raise APIError(400, f"{where} holds a lone surrogate{detail}: half of a UTF-16 pair without its other half, which "
                        "is not text. Send the character itself, or both halves of its pair (a JSON '\\ud83d\\ude00' "
                        "is fine, a lone '\\ud800' is not).", param=param, code="invalid_text")


def _lone_surrogate_place(data) -> tuple[str | None, str, bool]:
    """(the name of a field whose string is not text, which character, True) - iterative (bodies nest up to JSON's
    own limit), O(1) per value (a value's place is a link to its parent's, spelt out only when found), and bounded:
    (None, "", whether every value was looked at) when none is found, which past MAX_PLACES_SEARCHED values is False."""
    pending, queued, complete = [(None, data)], 1, True  # (place, value); a place is (key or index, the parent's)
    while pending:
        place, value = pending.pop()
        room = MAX_PLACES_SEARCHED - queued
        if isinstance(value, dict):
            taken = min(len(value), max(0, room // 2))
            for key, item in itertools.islice(value.items(), taken):
                pending += [((key, place), key), ((key, place), item)]
            queued, complete = queued + 2 * taken, complete and taken == len(value)
        elif isinstance(value, list):
            taken = min(len(value), max(0, room))
            pending += [((index, place), item) for index, item in enumerate(value[:taken])]
            queued, complete = queued + taken, complete and taken == len(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                parts = []
                while place is not None:
                    part, place = place
                    parts.append(str(part))
                # a field's name may hold one too: written \\udxxx, so that the error itself is valid UTF-8
                param = ".".join(reversed(parts)).encode("utf-8", "backslashreplace").decode("utf-8")
                return param or None, f" (\\u{ord(value[error.start]):04x} at character {error.start})", True
    return None, "", complete


def validate(schema: type[BaseModel], data: dict):
    try:
        return schema.model_validate(data)
    except RecursionError:
        raise APIError(400, "The JSON body is nested too deeply to be a chat request.") from None
    except ValidationError as error:
        message, param = validation_message(error)
        raise APIError(400, message, param=param) from None


# ============================================================================================== request bodies


class _Lenient(BaseModel):
    """Unknown fields are ignored (clients send many optional ones); known ones are type-checked."""

    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: str
    text: str | None = None


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class SamplingFields(_Lenient):
    model: str
    max_tokens: Int64 | None = None
    temperature: Finite | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Finite | None = Field(default=None, gt=0.0, le=1.0)
    top_k: Int64 | None = Field(default=None, ge=0)  # vLLM-style extension
    repetition_penalty: Finite | None = Field(default=None, gt=0.0, le=100.0)  # vLLM-style extension
    presence_penalty: Finite | None = None
    frequency_penalty: Finite | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    seed: Int64 | None = None
    n: Int64 | None = None
    logprobs: bool | Int64 | None = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise APIError(400, f"stop takes up to {MAX_STOP_STRINGS} strings (as OpenAI's API); got {len(stops)}.",
                           param="stop")
        for stop in stops:
            if not stop or len(stop) > MAX_STOP_CHARS:
                raise APIError(400, f"Each stop string must be 1 to {MAX_STOP_CHARS} characters long; got one of "
                                    f"{len(stop)}.", param="stop")
        return stops


class ChatRequest(SamplingFields):
    messages: list[Message]
    max_completion_tokens: Int64 | None = None
    tools: list | None = None
    response_format: dict | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None


def message_text(message: Message) -> str:
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


# ============================================================================================== response bodies


def usage(completion) -> dict:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def full_response(kind: str, reply_id: str, created: int, model: str, completion) -> dict:
    """A whole `chat.completion` or `text_completion` object."""
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": completion.text},
                  "finish_reason": completion.finish_reason, "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": completion.text, "finish_reason": completion.finish_reason, "logprobs": None}
        obj = "text_completion"
    return {"id": reply_id, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": usage(completion)}


class ChunkWriter:
    """The server-sent events of one streamed answer, in OpenAI's chunk format (`data: {...}`, then `data: [DONE]`)."""

    def __init__(self, kind: str, reply_id: str, created: int, model: str, include_usage: bool):
        self.kind, self.reply_id, self.created, self.model, self.include_usage = kind, reply_id, created, model, include_usage
        self.object = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def _event(self, payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False) -> str:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        payload = {"id": self.reply_id, "object": self.object, "created": self.created, "model": self.model,
                   "choices": [choice]}
        if self.include_usage:
            payload["usage"] = None
        return self._event(payload)

    def usage(self, completion) -> str:
        return self._event({"id": self.reply_id, "object": self.object, "created": self.created, "model": self.model,
                            "choices": [], "usage": usage(completion)})

    def error(self, error: APIError) -> str:
        return self._event(error.body())

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"
