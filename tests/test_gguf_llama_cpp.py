"""A real engine in the tests: llama.cpp's own `llama-server`, built from the pinned source (helpers.engine_sources),
serving the tiny Grok 2's GGUF with its experts forced onto the CPU buffer, asked through lesson 06's `openai` client
code (helpers.engines.ask), answering the course's questions as transformers does."""

from __future__ import annotations

import json
import re

import pytest

import helpers.gguf
from helpers import engines, llama_cpp
from helpers.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def plain_rope_gguf(tmp_path_factory, model, tokenizer):
    # Plain RoPE, as SGLang reads the release's rope_type "original" (the converter's YaRN changes most answers).
    return helpers.gguf.export_gguf(model, tmp_path_factory.mktemp("gguf") / "tiny-plain.gguf", tokenizer=tokenizer,
                                    rope_as_converter=False)


def test_llama_server_answers_the_course_questions_as_transformers_does(model, tokenizer, plain_rope_gguf,
                                                                      llama_cpp_tool):
    binary = llama_cpp_tool("llama-server")
    questions = llama_cpp.course_questions(40)
    run = llama_cpp.compare_greedy(model, tokenizer, plain_rope_gguf, questions, binary=binary, cpu_moe=True)
    assert "--cpu-moe" in run["command"] and run["questions"] == 40
    different = [(r["question"], r["transformers"], r["llama.cpp"]) for r in run["rows"] if not r["same"]]
    assert run["identical"] >= 0.9 * run["questions"], different


def test_the_experts_really_sit_in_the_cpu_buffer(plain_rope_gguf, llama_cpp_tool):
    with llama_cpp.LlamaServer(plain_rope_gguf, binary=llama_cpp_tool("llama-server"), cpu_moe=True,
                               verbose=True) as server:
        answer = engines.ask(server.base_url, server.model, "How many experts does Grok 2 have?", max_tokens=16)
        log = server.log()
    assert answer.strip()
    overridden = set(re.findall(r"tensor (\S+) \(.*\) buffer type overridden to CPU", log))  # llama.cpp's debug log
    assert "blk.0.attn_q.weight" not in overridden and "blk.0.ffn_gate.weight" not in overridden  # experts only
    assert {f"blk.{i}.ffn_{kind}_exps.weight" for i in range(4) for kind in ("gate", "up", "down")} <= overridden, \
        log[-3000:]


def test_a_server_that_cannot_load_the_file_says_why(tmp_path, llama_cpp_tool):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(helpers.CourseError, match="llama-server exited"):
        llama_cpp.LlamaServer(broken, binary=llama_cpp_tool("llama-server")).start()


def test_recorded_run_agrees_with_transformers():
    """benchmarks/results/gguf-llama-cpp-check.json: both exports run by llama-server (benchmarks/gguf_llama_cpp_check.py)."""
    recorded = json.loads((REPO_ROOT / "benchmarks" / "results" / "gguf-llama-cpp-check.json").read_text())
    plain, converter = recorded["variants"]["plain RoPE"], recorded["variants"]["as the converter writes it (YaRN)"]
    assert plain["gguf_verified"] and converter["gguf_verified"] and "llama-server" in recorded["llama_cpp"]
    assert plain["identical_answers"] >= 0.9 * recorded["questions"] > converter["identical_answers"]
