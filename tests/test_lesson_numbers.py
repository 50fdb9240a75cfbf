"""No lesson types a number that the course computes: the prose of every notebook (its markdown cells, and the comments
and string literals of its code cells) is searched for Grok 2.5's planner figures - parameters, bytes per precision,
the per-GPU share, the KV cache - written by hand, within rounding ("540 GB", "~140 GB", "115B"). A lesson prints such
figures from the planner instead.

Not flagged: figures quoted from a source as that source states them (the model card's "about 500 GB" is 7% off the
computed bytes, so it reads as a quotation), and GPU memory sizes, which are datasheet facts (helpers.accelerators).
"""

from __future__ import annotations

import io
import json
import math
import re
import tokenize

import pytest
import torch
from transformers import AutoModelForCausalLM

import helpers
from helpers.accelerators import ACCELERATORS
from helpers.paths import REPO_ROOT
from helpers.units import GB, GiB, TB

NOTEBOOKS = sorted(p for p in (REPO_ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
TOLERANCE = 0.03  # "540 GB" for 539.0 GB, "140 GB" for 142.2 GB: a rounded copy of a computed figure
UNITS = {"B": 1e9, "billion": 1e9, "GB": GB, "GiB": GiB, "TB": TB}
TYPED = re.compile(r"(?<![\w.,/-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s?(billion|B|GB|GiB|TB)(?![\w])")
LONG_INTEGER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3}){3,}(?![\d,])")  # 269,515,497,472
F_STRING_FIELD = re.compile(r"\{[^{}]*\}")  # {grok.total_params / 1e9:.1f}: code inside a string, not prose
PROSE_TOKENS = {tokenize.COMMENT, tokenize.STRING} | {getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


@pytest.fixture(scope="module")
def figures(grok2_plan, grok2_config) -> dict[str, tuple[float, str]]:  # grok2_*: tests/conftest.py
    """name -> (value in bytes or parameters, "bytes" | "params"): what the course computes for Grok 2.5."""
    grok = grok2_plan
    parts = helpers.grok2_parameter_breakdown(grok2_config)
    computed = {
        "total parameters": (grok.total_params, "params"),
        "active parameters": (grok.active_params, "params"),
        "active parameters without the embedding table": (grok.active_params - grok.embedding_params, "params"),
        "expert parameters": (grok.expert_params, "params"),
        "dense MLP parameters": (parts["dense_mlp"], "params"),
        "attention parameters": (parts["attention"], "params"),
        "the GIT model stock transformers builds from the config": (_git_parameters(), "params"),
        "FP8 weights per GPU at TP 8": (grok.weight_bytes("fp8") / 8, "bytes"),
        "KV cache of 131072 tokens": (grok.kv_cache_bytes(131072), "bytes"),
        "two copies of the bf16 weights (git-lfs)": (2 * grok.weight_bytes("bf16"), "bytes"),
    }
    for precision in ("bf16", "fp8", "int8", "nf4"):
        computed[f"{precision} weights"] = (grok.weight_bytes(precision), "bytes")
    return computed


def _git_parameters() -> int:
    config = json.loads(helpers.GROK2_RELEASED_CONFIG.read_text())
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    with torch.device("meta"):
        wrong = AutoModelForCausalLM.from_config(CONFIG_MAPPING[config["model_type"]].from_dict(config))
    return sum(p.numel() for p in wrong.parameters())


def _is_datasheet_memory(value_bytes: float) -> bool:
    """A GPU's memory as sold (its datasheet's "80 GB", read as GB or as the GiB it holds), or a memory capacity: a
    power of two of GiB (the 256 GiB of RAM of a `max_memory` example), which the planner never computes."""
    sizes = [gpu.memory_bytes for gpu in ACCELERATORS.values()]
    sizes += [round(size / GiB) * GB for size in sizes] + [round(size / GB) * GiB for size in sizes]
    if any(abs(value_bytes - size) <= 0.005 * size for size in sizes):
        return True
    gib = value_bytes / GiB
    return gib >= 16 and abs(gib - 2 ** round(math.log2(gib))) < 1e-9


def typed_planner_figures(text: str, figures: dict) -> list[tuple[str, str]]:
    """(the typed text, the computed figure it copies) for every hand-typed copy of one of `figures` in `text`."""
    found = []
    for match in TYPED.finditer(text):
        number, unit = float(match.group(1).replace(",", "")), match.group(2)
        value = number * UNITS[unit]
        kind = "params" if unit in ("B", "billion") else "bytes"
        if kind == "bytes" and _is_datasheet_memory(value):
            continue
        for name, (figure, figure_kind) in figures.items():
            if kind == figure_kind and abs(value - figure) <= TOLERANCE * figure:
                found.append((match.group(0), name))
                break
    for match in LONG_INTEGER.finditer(text):
        value = int(match.group(0).replace(",", ""))
        for name, (figure, figure_kind) in figures.items():
            if figure_kind == "params" and value == figure:
                found.append((match.group(0), name))
    return found


def code_prose(source: str) -> str:
    """The comments and string literals of a code cell, one per line, the code inside f-strings left out: what a
    reader takes for prose in a code cell. A cell Python cannot tokenize (IPython syntax) is searched whole."""
    pieces = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in PROSE_TOKENS:
                text = token.string
                if token.type == tokenize.STRING and re.match(r"(?i)[rb]?f", text):
                    text = F_STRING_FIELD.sub("{}", text)
                pieces.append(text)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    return "\n".join(pieces)


def test_the_search_finds_typed_copies_and_leaves_quotations_and_datasheets_alone(figures):
    typed = typed_planner_figures("In bf16 it is about 540 GB; even 4-bit is about 140 GB.", figures)
    assert [name for _, name in typed] == ["bf16 weights", "nf4 weights"]
    assert typed_planner_figures("each token uses about 115B of the 270B parameters", figures)
    assert typed_planner_figures("about 114B weights", figures) and typed_planner_figures("~34 GB per GPU", figures)
    assert typed_planner_figures("A 55B-parameter captioning model", figures)
    assert typed_planner_figures("the 269,515,497,472-parameter count", figures)
    assert not typed_planner_figures("the model card says about 500 GB in 42 files", figures)  # a quotation, 7% off
    assert not typed_planner_figures("an H200 has 141 GB; a T4 16 GB; 8 GPUs with more than 40 GB each", figures)
    capacities = '{0: "72GiB", "cpu": "512GiB", "disk": "1024GiB"}'
    assert not typed_planner_figures(capacities, figures)  # capacities, not figures
    assert typed_planner_figures("the 4-bit weights: 142 GB", figures)  # next to the H200's 141 GB, yet a copy
    assert not typed_planner_figures("Llama-3.1-8B, `GB` from helpers.units, a 1.5B model", figures)


def typed_copies(path, cell_type: str, figures: dict) -> list[str]:
    """One line per figure typed in the prose of a notebook's cells of `cell_type` (a code cell's prose: its comments
    and strings)."""
    problems = []
    for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] == cell_type:
            text = "".join(cell["source"])
            for typed, name in typed_planner_figures(code_prose(text) if cell_type == "code" else text, figures):
                problems.append(f"cell {index} ({cell.get('id')}): {typed!r} copies the computed {name}")
    return problems


@pytest.mark.parametrize("cell_type", ["markdown", "code"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.relative_to(REPO_ROOT / "notebooks").as_posix() for p in NOTEBOOKS])
def test_no_lesson_types_a_number_the_planner_computes(path, cell_type, figures):
    """In the markdown, and in the comments and strings of the code cells: a figure typed in a print is typed all the
    same."""
    problems = typed_copies(path, cell_type, figures)
    assert not problems, ("print these from the planner (helpers.plan_profile('grok-2')), or say where they are "
                          "printed, instead of typing them:\n" + "\n".join(problems))


def test_code_prose_is_the_comments_and_strings_without_the_code(figures):
    cell = 'weights = grok.weight_bytes("fp8")  # about 272 GB\nprint(f"{weights / 1e9:.0f} GB, i.e. 8 x 34 GB")\n'
    prose = code_prose(cell)
    assert "272 GB" in prose and "34 GB" in prose and "1e9" not in prose and "weight_bytes" not in prose
    assert [name for _, name in typed_planner_figures(prose, figures)] == ["fp8 weights", "FP8 weights per GPU at TP 8"]


def test_the_readme_quotes_the_planner_as_it_computes_now(grok2_plan):
    """The README cannot print from code, so its figures for Grok 2.5 are checked against the planner here: when the
    planner's arithmetic changes, this names the sentence to update."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    grok = grok2_plan
    expected = {
        "total parameters": f"{grok.total_params / 1e9:.1f}B",
        "active parameters": f"{grok.active_params / 1e9:.1f}B",
        "active parameters without the embedding table": f"{(grok.active_params - grok.embedding_params) / 1e9:.1f}B",
        "bf16 weights": f"{grok.weight_bytes('bf16') / GB:.0f} GB",
        "bf16 weights in GiB": f"{grok.weight_bytes('bf16') / GiB:.0f} GiB",
        "FP8 weights": f"≈{grok.weight_bytes('fp8') / GB:.0f} GB",
        "4-bit weights": f"≈{grok.weight_bytes('nf4') / GB:.0f} GB",
    }
    stale = {what: text for what, text in expected.items() if text not in readme}
    assert not stale, f"README.md no longer quotes the planner's figures (update these): {stale}"


def test_the_readme_names_the_gguf_the_planner_fits_on_one_h200():
    """The README's llama.cpp sentence: the most precise GGUF wholly on one H200 is the one the planner picks there,
    and no 4-bit (or larger) file fits it."""
    from helpers.machines import preset
    from helpers.machines.llama_routes import best_llama_cpp, llama_cpp_options

    readme = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    h200 = preset("1 x H200")
    picked = best_llama_cpp(h200, "gpu")
    quant = picked.weights.name.removeprefix("GGUF ")
    assert picked.fits and f"the most precise GGUF wholly on one 141 GB H200 is unsloth's 3-bit {quant}" in readme
    assert "IQ3" in quant  # the "3-bit" the sentence says
    larger = [r.weights.name for r in llama_cpp_options(h200, "gpu") if r.fits and re.search(r"Q[4-8]", r.weights.name)]
    assert not larger and "(none of its 4-bit files fits)" in readme, larger
