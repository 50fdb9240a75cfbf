"""An OpenAI-compatible server for the course's model: the API every client already speaks.

    server = start_server()                       # the profile's model, in a background process, on 127.0.0.1
    client = server.client()                      # the official `openai` package, pointed at it
    client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "What is your name?"}])
    server.health()                               # slots, active, queued, steps_per_s, counters
    server.stop()                                 # or `with start_server() as server: ...`

What it serves: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions`, streamed
(server-sent events) or not, with stop strings, usage counts and finish reasons - the text rules of `helpers.chat`,
which the chat widget uses too. The model is a folder or hub id (base or merged), optionally with a PEFT LoRA adapter;
with an unmerged adapter both the base and the adapter are listed and can be asked for by name (like vLLM's
`--lora-modules`), and requests for either share every decoding step.

How requests run: continuous batching (helpers.serving.scheduler). Up to `--max-batch-size` requests, streaming or
not, are generated together, one token each per decoding step; a new request is prefilled and joins at the next step;
a finished or hung-up one leaves at once. Up to `--max-queue` more wait for a slot; beyond that: 503. A greedy answer
is the same whoever else is being served (helpers.serving.batching says how).

Hardening: binds 127.0.0.1 unless told otherwise, and binds before loading the model (a busy port fails at once);
optional API key (`Authorization: Bearer ...`); every bad request gets an HTTP 4xx in OpenAI's error format:
`{"error": {"message", "type", "param", "code"}}` (helpers.serving.protocol lists the bounds).

This file is the command line and the names lessons use; the code is in helpers/serving/.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

from .errors import CourseError
from .serving.app import create_app
from .serving.load_test import LoadTestResult, RequestRecord, load_test
from .serving.process import (
    API_KEY_ENV_VAR,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LOOPBACK_HOSTS,
    ServerProcess,
    bind_socket,
    check_port_free,
    check_port_number,
    exit_with_parent,
    free_port,
    port_owner,
    start_server,
    stop_all_servers,
)
from .serving.protocol import MAX_BODY_BYTES, MAX_STOP_CHARS, MAX_STOP_STRINGS, APIError
from .serving.scheduler import DEFAULT_MAX_QUEUE, Scheduler
from .serving.served import ServedModel, load_for_serving

__all__ = ["start_server", "stop_all_servers", "ServerProcess", "load_test", "LoadTestResult", "RequestRecord",
           "load_for_serving", "ServedModel", "create_app", "Scheduler", "APIError", "check_port_free", "free_port",
           "port_owner", "main", "DEFAULT_HOST", "DEFAULT_PORT", "API_KEY_ENV_VAR", "LOOPBACK_HOSTS", "MAX_BODY_BYTES",
           "MAX_STOP_STRINGS", "MAX_STOP_CHARS", "DEFAULT_MAX_QUEUE"]


def _port(text: str) -> int:
    try:
        return check_port_number(int(text))
    except (ValueError, CourseError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: use a whole number from 1 to 65535 "
                                         "(0: any free port)") from None


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number from 1 to 1000000")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="folder or hub id (default: the profile's model)")
    parser.add_argument("--adapter", default=None, help="a PEFT LoRA adapter folder to serve on top of the model")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the weights")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--dtype", default="auto", help="auto (the course's choice for this machine), float32, "
                                                         "bfloat16 or float16")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT)
    parser.add_argument("--max-batch-size", type=_positive, default=8,
                        help="KV-cache slots: requests generated together (vLLM: --max-num-seqs)")
    parser.add_argument("--max-queue", type=_positive, default=DEFAULT_MAX_QUEUE,
                        help="requests waiting for a slot before the server answers 503")
    parser.add_argument("--max-model-len", type=_positive, default=None,
                        help="tokens per request, prompt and answer (default: the model's context, at most 2048)")
    parser.add_argument("--default-max-tokens", type=_positive, default=256)
    parser.add_argument("--torch-threads", type=_positive, default=None,
                        help="CPU threads for PyTorch (default: 1 for the tiny profile, else PyTorch's choice)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--allow-remote", action="store_true",
                        help=f"allow a non-loopback --host (an API key in ${API_KEY_ENV_VAR} is then required)")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK_HOSTS and not (args.allow_remote and os.environ.get(API_KEY_ENV_VAR)):
        parser.error(f"--host {args.host} exposes the server beyond this machine: pass --allow-remote and set "
                     f"{API_KEY_ENV_VAR}, or keep the default {DEFAULT_HOST}.")
    try:
        sock = bind_socket(args.host, args.port)  # first: a busy port fails now, not after loading the model
    except CourseError as error:
        parser.exit(1, f"error: {error}\n")

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.parent_pid:
        exit_with_parent(args.parent_pid)
    try:
        served = load_for_serving(args.model, adapter=args.adapter, merge=args.merge,
                                  served_model_name=args.served_model_name, profile=args.profile,
                                  default_max_tokens=args.default_max_tokens, dtype=args.dtype,
                                  max_model_len=args.max_model_len)
    except CourseError as error:
        sock.close()
        parser.exit(1, f"error: {error}\n")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    else:  # the tiny model runs fastest on one thread; real models keep PyTorch's choice
        from .hardware import use_few_threads_for_tiny_models
        from .profiles import get_profile

        use_few_threads_for_tiny_models(get_profile(args.profile))
    app = create_app(served, api_key=os.environ.get(API_KEY_ENV_VAR) or None, max_batch_size=args.max_batch_size,
                     max_queue=args.max_queue)
    port = sock.getsockname()[1]
    print(f"serving {served.names} on http://{args.host}:{port}/v1 (pid {os.getpid()}, "
          f"{args.max_batch_size} slots of {served.context_length} tokens)", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5, access_log=False)
    scheduler = app.state.scheduler

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn waits for open responses before the app's shutdown runs: end the generations (and tell their
            # clients) now, from a thread - a signal handler must not wait for the scheduler's lock.
            threading.Thread(target=scheduler.close, kwargs={"timeout": 0}, daemon=True).start()
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])
    print("server stopped", flush=True)


if __name__ == "__main__":
    main()
