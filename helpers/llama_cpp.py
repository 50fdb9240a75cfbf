"""llama.cpp's `llama-server` run from Python on a GGUF: start it on a free local port, wait until it serves, ask it
through the same `openai` client lesson 06 uses, stop it; and compare its greedy answers with transformers'.

    with LlamaServer(gguf_path, cpu_moe=True) as server:          # the binary built by helpers.engine_sources
        engines.ask(server.base_url, server.model, "How many experts does Grok 2 have?")
    compare_greedy(model, tokenizer, gguf_path, questions)         # -> rows with both answers, and the share equal

The server is llama.cpp's own: nothing here reimplements it. The command comes from `helpers.engines.llama_cpp_command`
(checked against the vendored llama.cpp's options), so the test exercises the same flags a learner pastes. The child
process runs in its own process group and is killed with its group on exit, error or Ctrl+C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .engine_sources import llama_cpp_binary
from .errors import CourseError
from .serving.process import free_port  # one definition of "a free port on 127.0.0.1" for every server the course runs

START_TIMEOUT_S = 120  # loading the tiny model takes well under a second; a busy 2-core machine, a few


class LlamaServer:
    """`llama-server` serving one GGUF on 127.0.0.1 (keyword arguments go to `engines.llama_cpp_command`)."""

    def __init__(self, gguf_path: str | Path, binary: str | Path | None = None, port: int | None = None,
                 threads: int = 1, context_size: int = 2048, verbose: bool = False, **command_options):
        from .engines import llama_cpp_command

        binary = binary or llama_cpp_binary("llama-server")
        if binary is None:
            raise CourseError("llama.cpp's llama-server is not built on this machine.",
                              "run `python -m helpers.engine_sources build` (or `bash scripts/course.sh test`, which "
                              "builds it once per machine)")
        # One thread: the tiny model's matrices are too small to share, and on a busy machine extra threads spin.
        self.command = llama_cpp_command(str(gguf_path), port=port or free_port(), threads=threads,
                                         context_size=context_size, binary=str(binary), **command_options)
        self.verbose = verbose
        self.model = self.command.argv[self.command.argv.index("--alias") + 1]
        self.base_url = self.command.base_url
        self._process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "LlamaServer":
        import httpx

        argv = [*self.command.argv, "--parallel", "1", "--no-warmup"] + (["--verbose"] if self.verbose else [])
        self._log = tempfile.TemporaryFile(mode="w+", prefix="llama-server-")
        self._process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        health = self.base_url.removesuffix("/v1") + "/health"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self.log()
                self.stop()
                raise CourseError(f"llama-server exited with code {self._process.returncode}:\n{log[-2000:]}",
                                  "read the log above (a GGUF llama.cpp cannot load names the tensor)")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health, timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise CourseError(f"llama-server did not answer {health} within {START_TIMEOUT_S} s.",
                          "the machine may be overloaded; try again, or start it by hand to see its log")

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None


def compare_greedy(model, tokenizer, gguf_path: str | Path, questions: list[str], max_new_tokens: int = 48,
                   **server_options) -> dict:
    """Greedy answers of transformers (`helpers.chat.generate`) and of llama-server (lesson 06's client code,
    `helpers.engines.ask`) to the same chat questions. Returns {"rows": [...], "identical": n, "questions": n}."""
    from .chat import SamplingSettings, generate
    from .engines import ask

    rows = []
    with LlamaServer(gguf_path, **server_options) as server:
        for question in questions:
            messages = [{"role": "user", "content": question}]
            ours = generate(model, tokenizer, messages, SamplingSettings(max_new_tokens=max_new_tokens)).text
            theirs = ask(server.base_url, server.model, question, max_tokens=max_new_tokens)
            rows.append({"question": question, "transformers": ours, "llama.cpp": theirs,
                         "same": ours.strip() == theirs.strip()})
    return {"rows": rows, "identical": sum(r["same"] for r in rows), "questions": len(rows),
            "command": server.command.argv}


def course_questions(limit: int = 40) -> list[str]:
    """The first `limit` user questions of the course's Q&A (data/course_qa.jsonl), the tiny model's training set."""
    import json

    from .paths import DATA_DIR

    rows = [json.loads(line) for line in (DATA_DIR / "course_qa.jsonl").read_text().splitlines() if line.strip()]
    return [r["messages"][0]["content"] for r in rows if r["messages"][0]["role"] == "user"][:limit]
