"""The OpenAI-compatible server, end to end: real server processes on free local ports, the official `openai` client.

Two servers are started once each:
* the tiny Grok 2 (trained): answers are compared with `helpers.chat` run in this process and with the server's own
  answer to the same request alone - streaming and not, stop strings, 16 concurrent clients of which some hang up,
  seeded sampling beside other traffic;
* a random tiny Grok 2 whose LM head can never pick a stop token (so a stream runs until it is cut), with a PEFT LoRA
  adapter, an API key, 2 slots and a queue of 2: adapter serving, authentication, a full queue, clients that hang up.
Both must stop cleanly and leave no process behind. Bad inputs (issue 18) are in tests/test_serve_bad_input.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import psutil
import pytest
import torch

import helpers
from helpers.chat import SEPARATOR, SamplingSettings, generate
from helpers.serve import load_test, start_server

QUESTIONS = ["How many experts does Grok 2 have?", "What is your name?", "How many layers does Grok 2 have?",
             "Can I run Grok 2.5 on a 24 GB GPU?", "What is QLoRA?", "What is the separator token?",
             "What is lesson 01 about?", "How do I run the tests?"]
API_KEY = "sk-course-test"
RANDOM_SLOTS, RANDOM_QUEUE = 2, 2


def ask(question):
    return [{"role": "user", "content": question}]


def streamed_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def wait_for(predicate, seconds: float = 10.0):
    """Poll `predicate()` until it returns something true (returned) or `seconds` pass (the last value)."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------------ fixtures


# The references computed here share 2 cores with the server: one thread each is much faster than fighting.
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # model, tokenizer: tests/conftest.py


@pytest.fixture(scope="module")
def server():
    with_server = start_server(port=0, max_batch_size=8)
    yield with_server
    pid = with_server.pid
    assert with_server.stop()["orphans"] == []
    assert not psutil.pid_exists(pid)  # stopped and reaped


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory, tokenizer):
    """A random tiny Grok 2 that never emits <|pad|>/<|separator|>/<|eos|> (their LM-head rows are zero), + an adapter."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("random-grok-2")
    torch.manual_seed(0)
    config = helpers.grok2.Grok2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       moe_intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                                       head_dim=16, num_hidden_layers=2, max_position_embeddings=4096,
                                       embedding_multiplier_scale=5.66)
    base = helpers.grok2.Grok2ForCausalLM(config).eval()
    with torch.no_grad():
        base.lm_head.weight[:3] = 0.0
    base.generation_config.eos_token_id = [1, 2]
    base.generation_config.pad_token_id = 0
    base.save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(folder / "adapter")
    return folder


@pytest.fixture(scope="module")
def adapter_server(random_model_dir):
    with_server = start_server(random_model_dir / "base", adapter=random_model_dir / "adapter", port=0,
                               api_key=API_KEY, served_model_name="random-grok-2", max_batch_size=RANDOM_SLOTS,
                               max_queue=RANDOM_QUEUE)
    yield with_server
    assert with_server.stop()["orphans"] == []


def endless_stream(server, lines: list, ready: threading.Event, model="random-grok-2", max_tokens=2000):
    """A 2000-token stream from the random model, read into `lines` until the connection is closed."""
    body = {"model": model, "messages": ask("Go on."), "max_tokens": max_tokens, "stream": True}
    with contextlib.suppress(httpx.HTTPError):
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {API_KEY}"}) as reply:
            lines.append(reply.status_code)
            for line in reply.iter_lines():
                lines.append(line)
                if len(lines) > 6:
                    ready.set()
                if getattr(threading.current_thread(), "hang_up", False):
                    break


# ---------------------------------------------------------------------------------------------- the basic API


def test_health_and_models(server, client):
    assert server.host == "127.0.0.1"
    health = server.health()
    assert health["status"] == "ok" and health["instance"] == server.instance and health["pid"] == server.pid
    assert health["slots"] == 8 and health["active"] == 0 and health["queued"] == 0 and "steps_per_s" in health
    assert [m.id for m in client.models.list().data] == ["tiny-grok-2"] == server.models


def test_chat_matches_the_model_run_here(client, server, model, tokenizer):
    for question in QUESTIONS[:3]:
        here = generate(model, tokenizer, ask(question))
        reply = client.chat.completions.create(model=server.model, messages=ask(question), temperature=0)
        assert reply.choices[0].message.content == here.text
        assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
        assert reply.usage.prompt_tokens == here.prompt_tokens
        assert reply.usage.completion_tokens == here.completion_tokens
        assert reply.usage.total_tokens == here.prompt_tokens + here.completion_tokens


def test_streaming_equals_non_streaming_with_usage(client, server):
    whole = client.chat.completions.create(model=server.model, messages=ask("What is your name?"))
    chunks = list(client.chat.completions.create(model=server.model, messages=ask("What is your name?"), stream=True,
                                                 stream_options={"include_usage": True}))
    assert streamed_text(chunks) == whole.choices[0].message.content and len(chunks) > 5
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stop_strings_and_length(client, server, model, tokenizer):
    question = ask("How many experts does Grok 2 have?")
    here = generate(model, tokenizer, question, SamplingSettings(stop=(SEPARATOR, "token")))
    assert "token" in generate(model, tokenizer, question).text and "token" not in here.text
    reply = client.chat.completions.create(model=server.model, messages=question, stop=["token"])
    assert reply.choices[0].message.content == here.text and reply.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=server.model, messages=question, stop="token", stream=True)
    assert streamed_text(streamed) == here.text
    short = client.chat.completions.create(model=server.model, messages=question, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_completions_endpoint(client, server, model, tokenizer):
    prompt = "Human: What is your name?<|separator|>\n\nAssistant:"
    here = generate(model, tokenizer, prompt, SamplingSettings(max_new_tokens=12))
    reply = client.completions.create(model=server.model, prompt=prompt, max_tokens=12)
    assert reply.choices[0].text == here.text and reply.object == "text_completion"
    streamed = client.completions.create(model=server.model, prompt=prompt, max_tokens=12, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == here.text


# ------------------------------------------------------------------------------------- continuous batching


def test_eight_concurrent_clients_get_their_own_answers(server, model, tokenizer):
    expected = {q: generate(model, tokenizer, ask(q)).text for q in QUESTIONS}
    assert len(set(expected.values())) == len(QUESTIONS), "the questions must have different answers"
    before = server.health()
    barrier = threading.Barrier(len(QUESTIONS))
    answers = {}

    def one(index, question):
        local = server.client()  # one client (one connection pool) per user
        barrier.wait()
        if index % 2:  # half stream, half not: both share every step
            answers[question] = streamed_text(local.chat.completions.create(model=server.model, messages=ask(question),
                                                                            stream=True))
        else:
            reply = local.chat.completions.create(model=server.model, messages=ask(question))
            answers[question] = reply.choices[0].message.content

    threads = [threading.Thread(target=one, args=(i, q)) for i, q in enumerate(QUESTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == expected
    after = server.health()
    assert after["completed"] - before["completed"] == len(QUESTIONS) and after["failed"] == 0
    assert after["largest_batch"] >= 2, "requests that wait together are decoded in one step"
    tokens = after["generated_tokens"] - before["generated_tokens"]  # one per request comes from its prefill
    assert after["steps"] - before["steps"] < tokens - len(QUESTIONS), "steps were shared"


def test_sixteen_mixed_clients_get_exactly_their_answer_alone(server):
    """Issue 20's exactness check: 16 requests at once (streaming or not, greedy or cut by max_tokens), 4 of them
    hanging up mid-stream; every one that stays gets, bit for bit, what it gets when it is served alone."""
    requests = [dict(messages=ask(q), max_tokens=(None if k == 0 else 7)) for k in range(2) for q in QUESTIONS]
    hang_ups = {1, 5, 11, 13}
    for index in hang_ups:  # the tiny Grok 2's longest answer (75 tokens): still running when its client hangs up
        requests[index] = dict(messages=ask("Go on."), max_tokens=500)

    def create(local, request, **extra):
        options = {k: v for k, v in request.items() if v is not None}
        return local.chat.completions.create(model=server.model, temperature=0, **options, **extra)

    alone = {}
    for index, request in enumerate(requests):  # one at a time: the server runs each alone
        if index not in hang_ups:
            reply = create(server.client(), request)
            alone[index] = (reply.choices[0].message.content, reply.choices[0].finish_reason,
                            reply.usage.completion_tokens)
    assert len({a[0] for a in alone.values()}) >= 10  # (nearly) all different: a mix-up would show
    before = server.health()
    barrier = threading.Barrier(len(requests))
    crowd = {}

    def one(index):
        local = server.client()
        barrier.wait()
        if index % 2 == 0:
            reply = create(local, requests[index])
            crowd[index] = (reply.choices[0].message.content, reply.choices[0].finish_reason,
                            reply.usage.completion_tokens)
            return
        chunks = create(local, requests[index], stream=True, stream_options={"include_usage": True})
        pieces, finish, usage = [], None, None
        for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
                if index in hang_ups and len(pieces) == 2:
                    chunks.close()  # hang up mid-answer
                    return
        crowd[index] = ("".join(pieces), finish, usage)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(crowd) == set(range(len(requests))) - hang_ups, "every client that stayed got an answer"
    assert {i: crowd[i] for i in crowd} == {i: alone[i] for i in crowd}
    after = wait_for(lambda: (h := server.health())["active"] == 0 and h)
    assert after["failed"] == 0 and after["queued"] == 0 and after["largest_batch"] == 8
    assert after["completed"] + after["cancelled"] - before["completed"] - before["cancelled"] == len(requests)
    assert after["cancelled"] - before["cancelled"] >= 1, "a client that hung up mid-answer was cancelled"


def test_seeded_sampling_ignores_what_runs_beside_it(server, model, tokenizer):
    seeded = dict(model=server.model, messages=ask("What is QLoRA?"), temperature=1.0, seed=1234, max_tokens=24)
    alone = server.client().chat.completions.create(**seeded).choices[0].message.content
    here = generate(model, tokenizer, ask("What is QLoRA?"), SamplingSettings(max_new_tokens=24, temperature=1.0,
                                                                             seed=1234))
    first_word = tokenizer.decode(here.token_ids[:1]).strip()
    assert first_word and alone.startswith(first_word), "alone, the first draw is generate()'s with that seed"
    results, lengths = {}, {}
    barrier = threading.Barrier(6)

    def one(index):
        local = server.client()
        barrier.wait()
        if index == 0:
            reply = local.chat.completions.create(**seeded)
        else:  # sampling beside it with other seeds: other random draws, other lengths (fixed, so the test repeats)
            reply = local.chat.completions.create(model=server.model, messages=ask(QUESTIONS[index]), temperature=1.3,
                                                  seed=index, max_tokens=16 + index)
        results[index], lengths[index] = reply.choices[0].message.content, reply.usage.completion_tokens

    before = server.health()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    steps = server.health()["steps"] - before["steps"]
    assert results[0] == alone
    # Each request's first token comes from its prefill, every other one from a decoding step. Had the seeded request
    # shared no step with the others, there would be at least (its tokens - 1) steps of its own plus (the longest
    # other's - 1): fewer steps prove that it was decoded beside them.
    assert steps < (lengths[0] - 1) + (max(lengths[i] for i in range(1, 6)) - 1), (steps, lengths)


def test_small_load_test(server):
    result = load_test(server.base_url, server.model, QUESTIONS, requests=8, concurrency=4, max_tokens=16)
    summary = result.summary()
    assert summary["errors"] == 0 and summary["requests"] == 8
    assert 0 < summary["ttft_p50_s"] <= summary["latency_p50_s"] <= summary["latency_p95_s"]
    assert 0 < summary["itl_p50_s"] <= summary["itl_p95_s"] < summary["latency_p95_s"]
    assert summary["tokens_per_s"] > 0
    assert server.health()["steps_per_s"] >= 0
    with pytest.raises(helpers.CourseError, match="not this machine"):
        load_test("http://example.com/v1", server.model, QUESTIONS)


# ------------------------------------------------------------------------------------------------ processes


def test_occupied_port_is_reported_with_the_fix(server):
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(helpers.CourseError, match=f"Port {server.port} on 127.0.0.1 is already in use") as raised:
        start_server(port=server.port)
    assert "port=0" in str(raised.value)
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children  # nothing was started


def test_remote_bind_needs_consent_and_a_key():
    with pytest.raises(helpers.CourseError, match="beyond this machine"):
        start_server(host="0.0.0.0", port=0)
    with pytest.raises(helpers.CourseError, match="API key"):
        start_server(host="0.0.0.0", port=0, allow_remote=True)
    from helpers.serve import main

    with pytest.raises(SystemExit):  # the command line refuses too
        main(["--host", "0.0.0.0", "--port", "0"])


def test_server_exits_when_its_parent_dies():
    """A kernel killed with SIGKILL cannot stop its server: the server notices and exits by itself (no orphan)."""
    from helpers.serve import free_port

    port = free_port()
    serve = f"{sys.executable} -m helpers.serve --port {port} --parent-pid $$"
    parent = subprocess.Popen(["bash", "-c", f"{serve} > /dev/null 2>&1 & echo $!; sleep 600"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True, cwd=helpers.paths.REPO_ROOT)
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        assert psutil.pid_exists(child)
        os.kill(parent.pid, signal.SIGKILL)  # the "kernel" dies without cleaning up
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and psutil.pid_exists(child):
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.2)
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------- adapter, API key, hang-ups


def test_api_key_is_required_when_set(adapter_server):
    anonymous = openai.OpenAI(base_url=adapter_server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    assert httpx.get(f"{adapter_server.url}/health").status_code == 200  # health stays open for probes
    assert [m.id for m in adapter_server.client().models.list().data] == ["random-grok-2", "random-grok-2+adapter"]


def test_base_and_adapter_answers_match_peft_here(adapter_server, random_model_dir, tokenizer):
    from peft import PeftModel

    base = helpers.load_model(random_model_dir / "base", verbose=False)
    settings = SamplingSettings(max_new_tokens=8)
    base_here = generate(base, tokenizer, ask("What is LoRA?"), settings).text
    with_adapter = PeftModel.from_pretrained(base, str(random_model_dir / "adapter")).eval()
    adapter_here = generate(with_adapter, tokenizer, ask("What is LoRA?"), settings).text
    assert base_here != adapter_here
    served = {}

    def one(name):  # at the same time: base and adapter rows share the decoding steps
        served[name] = adapter_server.client().chat.completions.create(model=name, messages=ask("What is LoRA?"),
                                                                       max_tokens=8).choices[0].message.content

    threads = [threading.Thread(target=one, args=(name,)) for name in adapter_server.models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert served == {"random-grok-2": base_here, "random-grok-2+adapter": adapter_here}


def test_merged_adapter_gives_the_same_answers(random_model_dir, tokenizer):
    from helpers.serve import load_for_serving

    unmerged = load_for_serving(random_model_dir / "base", adapter=random_model_dir / "adapter")
    merged = load_for_serving(random_model_dir / "base", adapter=random_model_dir / "adapter", merge=True)
    assert merged.names == ["base+adapter-merged"] and unmerged.names == ["base", "base+adapter"]
    settings = SamplingSettings(max_new_tokens=8)
    assert (generate(merged.model, tokenizer, ask("What is LoRA?"), settings).token_ids
            == generate(unmerged.model, tokenizer, ask("What is LoRA?"), settings).token_ids)
    with pytest.raises(helpers.CourseError, match="adapter_config.json"):
        load_for_serving(random_model_dir / "base", adapter=random_model_dir)


def test_client_that_hangs_up_mid_stream_frees_its_slot(adapter_server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "random-grok-2", "messages": ask("Tell me everything."), "max_tokens": 2000, "stream": True}
    before = adapter_server.health()
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{adapter_server.url}/v1/chat/completions", json=body, headers=headers) as reply:
            assert reply.status_code == 200
            received = []
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    received.append(line)
                if len(received) >= 5:
                    break  # hang up after a few tokens of a 2000-token answer
    health = wait_for(lambda: (h := adapter_server.health())["active"] == 0 and h["cancelled"] > before["cancelled"]
                      and h)
    assert health and health["cancelled"] == before["cancelled"] + 1 and health["failed"] == 0
    # the slot is free: the next request is served at once
    reply = adapter_server.client().chat.completions.create(model="random-grok-2", messages=ask("hi"), max_tokens=4)
    assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"


def test_a_waiting_non_streaming_request_is_cancelled_when_its_client_hangs_up():
    """In this process, without a server: the hang-up (`http.disconnect`) ends the wait within a few turns of the
    event loop. (It used to be noticed by looking every 0.25 s: 10 turns of an idle loop take far less than that.)"""
    import asyncio

    from starlette.requests import Request

    from helpers.serving.app import _wait_for_completion
    from helpers.serving.protocol import APIError
    from helpers.serving.scheduler import Job

    async def scenario():
        hung_up = asyncio.Event()

        async def receive():  # the body has been read: what comes next is the hang-up
            await hung_up.wait()
            return {"type": "http.disconnect"}

        request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}, receive)
        job = Job("hi", [1], SamplingSettings(), False, False, asyncio.get_running_loop(), asyncio.Queue())
        waiting = asyncio.ensure_future(_wait_for_completion(request, job))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not waiting.done() and not job.cancelled.is_set()  # waits for its result
        hung_up.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert waiting.done() and job.cancelled.is_set()
        with pytest.raises(APIError, match="client closed"):
            waiting.result()

    asyncio.run(scenario())


def test_a_non_streaming_client_that_hangs_up_frees_its_slot(adapter_server):
    body = json.dumps({"model": "random-grok-2", "messages": ask("Tell me everything."), "max_tokens": 2000}).encode()
    before = adapter_server.health()
    with socket.create_connection(("127.0.0.1", adapter_server.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        running = wait_for(lambda: (h := adapter_server.health())["active"] == 1 and h["steps"] > before["steps"] + 5
                           and h)
        assert running, "the request is being generated"
    # the socket is closed: the request leaves at the next step, long before its 2000 tokens
    health = wait_for(lambda: (h := adapter_server.health())["active"] == 0 and h)
    assert health and health["cancelled"] == before["cancelled"] + 1 and health["failed"] == 0
    assert health["completed"] == before["completed"]
    assert health["steps"] - running["steps"] < 1000, "it was cancelled, not generated to the end"


def test_a_newcomer_joins_a_running_stream(adapter_server):
    """Continuous batching: a short request sent while a long stream runs is generated beside it and finishes while
    the stream goes on (a server that runs one request at a time would make it wait for the stream's 2000 tokens)."""
    lines, ready = [], threading.Event()
    reader = threading.Thread(target=endless_stream, args=(adapter_server, lines, ready), daemon=True)
    reader.start()
    try:
        assert ready.wait(30)
        before = adapter_server.health()
        reply = adapter_server.client().chat.completions.create(model="random-grok-2", messages=ask("hi"), max_tokens=4)
        received = len(lines)
        during = adapter_server.health()
        assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"
        assert during["active"] >= 1 and during["completed"] == before["completed"] + 1 and reader.is_alive()
        assert wait_for(lambda: len(lines) > received + 3), "the stream goes on after the newcomer left"
    finally:
        reader.hang_up = True
        reader.join(30)
    assert not reader.is_alive()
    assert all("error" not in str(line) for line in lines)
    health = wait_for(lambda: (h := adapter_server.health())["active"] == 0 and h)
    assert health and health["failed"] == 0


def test_a_full_queue_gets_503_and_hung_up_clients_leave_at_once(adapter_server):
    """2 slots busy with endless streams, 2 requests waiting: the next one gets a 503 in OpenAI's format."""
    streams = [([], threading.Event()) for _ in range(RANDOM_SLOTS + RANDOM_QUEUE)]
    readers = [threading.Thread(target=endless_stream, args=(adapter_server, lines, ready), daemon=True)
               for lines, ready in streams]
    for reader in readers[:RANDOM_SLOTS]:
        reader.start()
    assert all(ready.wait(30) for _, ready in streams[:RANDOM_SLOTS])
    for reader in readers[RANDOM_SLOTS:]:
        reader.start()
    assert wait_for(lambda: adapter_server.health()["queued"] == RANDOM_QUEUE)
    health = adapter_server.health()
    assert health["active"] == RANDOM_SLOTS and health["free_slots"] == 0 and health["steps_per_s"] > 0
    with pytest.raises(openai.InternalServerError) as raised:
        adapter_server.client().chat.completions.create(model="random-grok-2", messages=ask("hi"), max_tokens=4)
    assert raised.value.status_code == 503 and raised.value.code == "server_overloaded"
    assert "Retry" in raised.value.message and raised.value.response.headers["retry-after"] == "1"
    for reader in readers:
        reader.hang_up = True
    for reader in readers:
        reader.join(30)
    health = wait_for(lambda: (h := adapter_server.health())["active"] == 0 and h["queued"] == 0 and h, 15)
    assert health and health["failed"] == 0 and health["rejected"] >= 1
    reply = adapter_server.client().chat.completions.create(model="random-grok-2", messages=ask("hi"), max_tokens=4)
    assert reply.usage.completion_tokens == 4


def test_stop_during_a_stream_is_quick_and_tells_the_client(adapter_server):
    """Last user of adapter_server: it is stopped here while a 2000-token stream runs."""
    lines, ready = [], threading.Event()
    reader = threading.Thread(target=endless_stream, args=(adapter_server, lines, ready))
    reader.start()
    assert ready.wait(30)
    started = time.perf_counter()
    report = adapter_server.stop()
    assert time.perf_counter() - started < 10 and report["stopped_by"] == "SIGTERM" and report["orphans"] == []
    assert report["process_gone"] and report["port_free"], report
    reader.join(10)
    assert not reader.is_alive()
    events = [line for line in lines[1:] if line]
    assert any("shutting down" in line for line in events) and events[-1] == "data: [DONE]"
