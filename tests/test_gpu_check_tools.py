"""The tools that run the course's checks on a bare GPU machine, tested here on the CPU at toy size.

scripts/build_course_llama.py trains a Llama-architecture model on the course's Q&A; scripts/run_notebook_inprocess.py
runs a lesson in one IPython shell (no Jupyter); scripts/gpu_checks.sh strings them together with the decode
benchmark. Lesson 03 with a trained model under the `small` profile is the GPU run's workload, so it is run here too,
with a CPU-sized model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import helpers

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_course_llama(repo_script):
    return repo_script("build_course_llama")


@pytest.fixture(scope="module")
def run_notebook_inprocess(repo_script):
    return repo_script("run_notebook_inprocess")


COURSE_LLAMA_ARGS = ("--size", "cpu", "--batch-size", "16")


def course_llama_key(build_course_llama) -> str:
    """Everything the `cpu` build depends on: its code, the training data, the tokenizer it copies, the library versions
    and its arguments. Any change gives a new key, so a cached model is always what the script would build now."""
    import transformers

    from helpers.paths import TINY_MODEL_DIR

    inputs = [REPO / "scripts" / "build_course_llama.py", REPO / "scripts" / "build_tiny_grok2.py",
              REPO / "data" / "course_qa.jsonl", TINY_MODEL_DIR / "config.json",
              *(TINY_MODEL_DIR / name for name in build_course_llama.TOKENIZER_FILES)]
    digest = hashlib.sha256(f"{torch.__version__} {transformers.__version__} {COURSE_LLAMA_ARGS}".encode())
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def course_llama(build_course_llama) -> Path:
    """The `cpu` size: 3.5M parameters trained on the course Q&A (~45 s on two cores, longer beside other tests); it
    answers most course questions word for word. Built once per machine, like llama.cpp, in the course's cache outside
    the clone (helpers.engine_sources.cache_dir), under a key of everything the build depends on; builds under older
    keys, which this suite wrote, are removed. `test_the_build_runs_end_to_end` runs the script itself every time."""
    from helpers.engine_sources import cache_dir

    home = cache_dir() / "course-llama"
    out = home / f"cpu-{course_llama_key(build_course_llama)}"
    if not (out / "config.json").is_file():
        try:
            build_course_llama.main([*COURSE_LLAMA_ARGS, "--out", str(out)])  # written atomically by the script
        except SystemExit:  # another run on this machine finished the same build first
            if not (out / "config.json").is_file():
                raise
    for stale in home.glob("cpu-*"):
        if stale != out and stale.is_dir() and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return out


def test_the_build_runs_end_to_end(tmp_path, build_course_llama):
    """The script itself, at its smallest size: trains, measures, writes a Llama folder a stock transformers loads."""
    from transformers import AutoModelForCausalLM

    out = build_course_llama.main(["--size", "test", "--steps", "4", "--out", str(tmp_path / "model")])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert "trained 4 steps" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_course_llama_is_a_llama_with_the_course_tokenizer_and_learned_the_answers(course_llama, build_course_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(course_llama)
    tokenizer = AutoTokenizer.from_pretrained(course_llama)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer) == 1024
    assert model.generation_config.eos_token_id == [1, 2] and tokenizer.pad_token_id == 0
    rows = [json.loads(line) for line in (REPO / "data" / "course_qa.jsonl").read_text().splitlines()]
    assert build_course_llama.exact_answers(model, tokenizer, [r["messages"] for r in rows], "cpu", 16) >= 0.5
    readme = (course_llama / "README.md").read_text()
    assert "course_qa.jsonl" in readme and "exact answers" in readme


def test_course_llama_never_trains_on_the_held_out_text(build_course_llama):
    tokenizer = helpers.load_tokenizer()
    text = "\n".join(tokenizer.decode(ids) for ids, _ in build_course_llama.training_examples(tokenizer))
    held_out = (REPO / "data" / "heldout_course_text.txt").read_text().splitlines()
    assert not any(line.strip() and line.strip() in text for line in held_out[:64])


def test_an_existing_model_folder_is_not_overwritten_by_accident(tmp_path, build_course_llama):
    (tmp_path / "mine").mkdir()
    with pytest.raises(SystemExit, match="--overwrite"):
        build_course_llama.main(["--size", "test", "--out", str(tmp_path / "mine")])


def test_lesson_03_runs_in_process_with_a_trained_model_and_is_recorded(course_llama, tmp_path, monkeypatch,
                                                                         run_notebook_inprocess):
    """What the GPU run does, on the CPU: the small profile's workload on the trained Llama, every assertion of the
    lesson included (quantized copies close to, not identical to, full precision; memory as planned)."""
    monkeypatch.setenv("GROK2_COURSE_PROFILE", "small")
    monkeypatch.setenv("GROK2_COURSE_MODEL", str(course_llama))
    notebook = REPO / "notebooks" / "03_quantized_inference.ipynb"
    before = notebook.read_bytes()
    record = tmp_path / "lesson-03"
    report = run_notebook_inprocess.run(notebook, record, echo=False)
    assert report["ok"], report.get("error")
    assert notebook.read_bytes() == before
    markdown = record.with_suffix(".md").read_text()
    assert "| precision | whole model MB |" in markdown and "nf4" in markdown
    # The lesson's own checks, as the learner sees them: each quantized copy is close to full precision, not identical.
    for name in ("int8", "nf4"):
        assert f"✓ {name} is close to full precision, not identical" in markdown
    assert (tmp_path / "lesson-03-figure1.png").is_file()
    saved = json.loads(record.with_suffix(".json").read_text())
    assert saved["environment"]["GROK2_COURSE_MODEL"] == str(course_llama) and saved["machine"]["device"] == "cpu"


def test_the_runner_stops_at_the_first_failing_cell(tmp_path, run_notebook_inprocess):
    cells = [{"cell_type": "code", "source": ["x = 1\n", "print('first')"], "metadata": {}, "outputs": []},
             {"cell_type": "code", "source": ["raise ValueError('broken on purpose')"], "metadata": {}, "outputs": []},
             {"cell_type": "code", "source": ["print('never')"], "metadata": {}, "outputs": []}]
    notebook = tmp_path / "broken.ipynb"
    notebook.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "run_notebook_inprocess.py"), str(notebook),
                             "--record", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cell 2: ValueError: broken on purpose" in result.stdout
    saved = json.loads((tmp_path / "out.json").read_text())
    assert [c["cell"] for c in saved["cells"]] == [1, 2] and saved["cells"][0]["stdout"] == "first\n"


def test_gpu_checks_script_is_valid_bash_and_names_what_it_runs():
    script = REPO / "scripts" / "gpu_checks.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needed in ("tests/test_fast_generation.py", "scripts/build_course_llama.py", "run_notebook_inprocess.py",
                   "03_quantized_inference.ipynb", "benchmarks/decode_speed.py --suite"):
        assert needed in text
    # The course is installed (offline, editable) before anything imports it, never put on PYTHONPATH.
    assert "--no-index --no-deps --no-build-isolation" in text and "offline_install -e ." in text
    assert "PYTHONPATH=" not in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_the_gpu_suite_refuses_a_machine_without_cuda(repo_script):
    decode_speed = repo_script("decode_speed")

    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        decode_speed.main(["--suite", "gpu", "--out", "/nonexistent"])
