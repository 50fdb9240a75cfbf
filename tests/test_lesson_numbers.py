"""No lesson types a number that the course computes: the prose of every notebook (its markdown cells) is searched for
Grok 2.5's planner figures - parameters, bytes per precision, the per-GPU share, the KV cache - written by hand, within
rounding ("540 GB", "~140 GB", "115B"). A lesson prints such figures from the planner instead.

Not flagged: figures quoted from a source as that source states them (the model card's "about 500 GB" is 7% off the
computed bytes, so it reads as a quotation), and GPU memory sizes, which are datasheet facts (helpers.accelerators).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import helpers
from helpers.accelerators import ACCELERATORS
from helpers.paths import REPO_ROOT
from helpers.units import GB, GiB, TB

NOTEBOOKS = sorted(p for p in (REPO_ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
TOLERANCE = 0.03  # "540 GB" for 539.0 GB, "140 GB" for 142.2 GB: a rounded copy of a computed figure
UNITS = {"B": 1e9, "billion": 1e9, "GB": GB, "GiB": GiB, "TB": TB}
TYPED = re.compile(r"(?<![\w.,/-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s?(billion|B|GB|GiB|TB)(?![\w])")
LONG_INTEGER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3}){3,}(?![\d,])")  # 269,515,497,472


@lru_cache(maxsize=1)
def computed_figures() -> dict[str, tuple[float, str]]:
    """name -> (value in bytes or parameters, "bytes" | "params"): what the course computes for Grok 2.5."""
    grok = helpers.plan_profile("grok-2")
    config = AutoConfig.from_pretrained(helpers.GROK2_RELEASED_CONFIG)
    parts = helpers.grok2_parameter_breakdown(config)
    figures = {
        "total parameters": (grok.total_params, "params"),
        "active parameters": (grok.active_params, "params"),
        "active parameters without the embedding table": (grok.active_params - grok.embedding_params, "params"),
        "expert parameters": (grok.expert_params, "params"),
        "dense MLP parameters": (parts["dense residual MLP"], "params"),
        "attention parameters": (parts["attention (q,k,v,o)"], "params"),
        "the GIT model stock transformers builds from the config": (_git_parameters(), "params"),
        "FP8 weights per GPU at TP 8": (grok.weight_bytes("fp8") / 8, "bytes"),
        "KV cache of 131072 tokens": (grok.kv_cache_bytes(131072), "bytes"),
        "two copies of the bf16 weights (git-lfs)": (2 * grok.weight_bytes("bf16"), "bytes"),
    }
    for precision in ("bf16", "fp8", "int8", "nf4"):
        figures[f"{precision} weights"] = (grok.weight_bytes(precision), "bytes")
    return figures


def _git_parameters() -> int:
    config = json.loads(helpers.GROK2_RELEASED_CONFIG.read_text())
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    with torch.device("meta"):
        wrong = AutoModelForCausalLM.from_config(CONFIG_MAPPING[config["model_type"]].from_dict(config))
    return sum(p.numel() for p in wrong.parameters())


def _is_datasheet_memory(value_bytes: float) -> bool:
    return any(abs(value_bytes - gpu.memory_bytes) <= 0.005 * gpu.memory_bytes for gpu in ACCELERATORS.values())


def typed_planner_figures(text: str) -> list[tuple[str, str]]:
    """(the typed text, the computed figure it copies) for every hand-typed copy of a computed figure in `text`."""
    found = []
    for match in TYPED.finditer(text):
        number, unit = float(match.group(1).replace(",", "")), match.group(2)
        value = number * UNITS[unit]
        kind = "params" if unit in ("B", "billion") else "bytes"
        if kind == "bytes" and _is_datasheet_memory(value):
            continue
        for name, (figure, figure_kind) in computed_figures().items():
            if kind == figure_kind and abs(value - figure) <= TOLERANCE * figure:
                found.append((match.group(0), name))
                break
    for match in LONG_INTEGER.finditer(text):
        value = int(match.group(0).replace(",", ""))
        for name, (figure, figure_kind) in computed_figures().items():
            if figure_kind == "params" and value == figure:
                found.append((match.group(0), name))
    return found


def test_the_search_finds_typed_copies_and_leaves_quotations_and_datasheets_alone():
    assert [name for _, name in typed_planner_figures("In bf16 it is about 540 GB; even 4-bit is about 140 GB.")] == [
        "bf16 weights", "nf4 weights"]
    assert typed_planner_figures("each token uses about 115B of the 270B parameters")
    assert typed_planner_figures("about 114B weights") and typed_planner_figures("~34 GB per GPU")
    assert typed_planner_figures("A 55B-parameter captioning model")
    assert typed_planner_figures("the 269,515,497,472-parameter count")
    assert not typed_planner_figures("the model card says about 500 GB in 42 files")  # a quotation, 7% off
    assert not typed_planner_figures("an H200 has 141 GB; a T4 16 GB; 8 GPUs with more than 40 GB each")
    assert not typed_planner_figures("Llama-3.1-8B, `GB` from helpers.units, a 1.5B model")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.relative_to(REPO_ROOT / "notebooks").as_posix() for p in NOTEBOOKS])
def test_no_lesson_types_a_number_the_planner_computes(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for typed, name in typed_planner_figures("".join(cell["source"])):
            problems.append(f"cell {index} ({cell.get('id')}): {typed!r} copies the computed {name}")
    assert not problems, ("print these from the planner (helpers.plan_profile('grok-2')), or say where they are "
                          "printed, instead of typing them:\n" + "\n".join(problems))
