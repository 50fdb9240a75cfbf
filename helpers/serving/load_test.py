"""A load-test client: N chat requests, C at a time, through the official `openai` package, against a server on this
machine only, bounded. It records what a user feels: latency, time to first token (TTFT), the gaps between tokens of
a stream (inter-token latency, ITL), and the throughput of the whole run."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import CourseError
from .process import LOOPBACK_HOSTS

MAX_REQUESTS = 1000
MAX_CONCURRENCY = 64


@dataclass
class RequestRecord:
    ok: bool
    latency_s: float
    first_token_s: float | None
    completion_tokens: int
    text: str = ""
    error: str = ""
    gaps_s: list[float] = field(default_factory=list)  # between successive pieces of a stream


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = math.floor(index), math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def _rounded(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 4) if values else None


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
        return percentile(values, q)

    def summary(self) -> dict:
        latencies = [r.latency_s for r in self.ok]
        firsts = [r.first_token_s for r in self.ok if r.first_token_s is not None]
        gaps = [gap for r in self.ok for gap in r.gaps_s]
        tokens = sum(r.completion_tokens for r in self.ok)
        return {
            "concurrency": self.concurrency, "requests": self.requests, "stream": self.stream,
            "errors": len(self.records) - len(self.ok),
            "latency_p50_s": _rounded(latencies, 0.5), "latency_p95_s": _rounded(latencies, 0.95),
            "ttft_p50_s": _rounded(firsts, 0.5), "ttft_p95_s": _rounded(firsts, 0.95),
            "itl_p50_s": _rounded(gaps, 0.5), "itl_p95_s": _rounded(gaps, 0.95),
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


def _one(client, model: str, messages: list[dict], max_tokens: int, stream: bool) -> RequestRecord:
    started = time.perf_counter()
    try:
        if not stream:
            reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                   temperature=0)
            return RequestRecord(True, time.perf_counter() - started, None, reply.usage.completion_tokens,
                                 reply.choices[0].message.content)
        first, last, pieces, gaps, usage = None, None, [], [], None
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                    temperature=0, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                if first is None:
                    first = now - started
                else:
                    gaps.append(now - last)
                last = now
                pieces.append(chunk.choices[0].delta.content)
        tokens = usage.completion_tokens if usage else len(pieces)
        return RequestRecord(True, time.perf_counter() - started, first, tokens, "".join(pieces), gaps_s=gaps)
    except Exception as error:  # noqa: BLE001 - a failed request is a data point, not a crash
        return RequestRecord(False, time.perf_counter() - started, None, 0, error=f"{type(error).__name__}: {error}")


def load_test(base_url: str, model: str, questions: list[str], *, requests: int = 16, concurrency: int = 4,
              max_tokens: int = 48, stream: bool = True, api_key: str | None = None,
              timeout: float = 60.0) -> LoadTestResult:
    """`requests` greedy chat requests, `concurrency` at a time, against a server on 127.0.0.1 (bounded: at most
    1000 requests, 64 at a time). Streaming also measures the time to the first token and between tokens."""
    from openai import OpenAI

    _require_local(base_url)
    if not (1 <= requests <= MAX_REQUESTS and 1 <= concurrency <= MAX_CONCURRENCY):
        raise CourseError(f"requests={requests}, concurrency={concurrency} is outside the bounds of this load test.",
                          f"Use 1-{MAX_REQUESTS} requests and a concurrency of 1-{MAX_CONCURRENCY}.")
    if not questions:
        raise CourseError("The load test got no questions to ask.", "Pass a list of at least one question.")
    client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)

    def one(index: int) -> RequestRecord:
        messages = [{"role": "user", "content": questions[index % len(questions)]}]
        return _one(client, model, messages, max_tokens, stream)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = list(pool.map(one, range(requests)))
    client.close()
    return LoadTestResult(concurrency, requests, stream, time.perf_counter() - started, records)
