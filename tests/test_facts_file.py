"""docs/grok2-facts.md: every "facts N.M" citation in the course resolves to a section of it, and the figures it
quotes are the ones the planner computes."""

from __future__ import annotations

import io
import json
import re
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACTS = REPO / "docs" / "grok2-facts.md"
NUMBER = r"\d+(?:\.\d+)?"
# A citation starts at "facts" or "grok2-facts.md"; what may stand between it and the numbers: quotes and backticks,
# spaces and line breaks (a string continued on the next line), a closing parenthesis, "section(s)".
ANCHOR = re.compile(r"\bfacts\b|grok2-facts\.md", re.IGNORECASE)
LISTED = re.compile(rf"[`\"'\s)]*(?:sections?\s+)?({NUMBER}(?:\s*(?:,|/|and)\s*{NUMBER})*)")
# Later in the same paragraph, a parenthesis holding only section numbers cites them too: "Facts (...): ... (3.1, 3.2)".
# Not a call's arguments: `range(9, 18)` has a name before its parenthesis.
BARE = re.compile(rf"(?<![\w\])])\(({NUMBER}(?:\s*,\s*{NUMBER})*)\)")
PARAGRAPH_END = re.compile(r"\n\s*\n")
PROSE_TOKENS = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def cited_sections(text: str) -> list[str]:
    """Every section number `text` cites, each number of a list included ("facts 2.1, 2.2, 5.3", "facts 5.1/6",
    "grok2-facts.md section 8", and "(3.1, 3.2)" later in the paragraph of such a mention)."""
    found = {}  # where each list starts -> its numbers (two mentions in one paragraph read its lists once)
    for anchor in ANCHOR.finditer(text):
        listed = LISTED.match(text, anchor.end())
        if listed:
            found[listed.start(1)] = re.findall(NUMBER, listed.group(1))
        end = PARAGRAPH_END.search(text, anchor.end())
        for bare in BARE.finditer(text, listed.end() if listed else anchor.end(), end.start() if end else len(text)):
            found[bare.start(1)] = re.findall(NUMBER, bare.group(1))
    return [number for start in sorted(found) for number in found[start]]


def readable_text(path: Path) -> str:
    """What a reader reads: a notebook's cells; a Python file's comments and strings (its code, with calls such as
    `range(9, 18)` beside a citing comment, is not prose), each run of them on adjacent lines one paragraph; any other
    file as it is."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        return "\n\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
    if path.suffix != ".py":
        return text
    prose, last_line = [], -1
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in PROSE_TOKENS:
                prose.append(("\n" if token.start[0] <= last_line + 1 else "\n\n") + token.string)
                last_line = token.end[0]
    except (tokenize.TokenError, SyntaxError):  # a file Python cannot read is searched whole
        return text
    return "".join(prose)


def sections() -> set[str]:
    found = set()
    for line in FACTS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", line)
        if match:
            found.add(match.group(1).rstrip("."))
    return found


def citing_files() -> list[Path]:
    """Every file that may cite the facts, but this one (its strings are examples of citations, good and bad)."""
    files = []
    for folder in ("helpers", "tests", "scripts", "benchmarks", "notebooks", "docs"):
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".ipynb", ".md", ".sh")
                  and ".ipynb_checkpoints" not in p.parts and p.resolve() != Path(__file__).resolve()]
    return files + [REPO / "README.md", REPO / "CONTRIBUTING.md"]


def test_every_facts_citation_names_a_section_that_exists():
    known = sections()
    assert {"1.1", "2.1", "3.2", "4.6", "5.1", "8"} <= known
    dangling, cited = [], 0
    for path in citing_files():
        for number in cited_sections(readable_text(path)):
            cited += 1
            if number not in known:
                dangling.append(f"{path.relative_to(REPO)}: facts {number}")
    assert not dangling, f"citations of sections that docs/grok2-facts.md does not have: {dangling}"
    assert cited >= 30  # the course cites it throughout: a search that finds few has stopped reading them


def test_every_number_of_a_citation_is_read():
    assert cited_sections("(facts 2.1, 2.2, 5.3). Also facts 5.1/6 and facts 3.3 and 4.6.") == [
        "2.1", "2.2", "5.3", "5.1", "6", "3.3", "4.6"]
    assert cited_sections("recorded in docs/grok2-facts.md section 8.") == ["8"]
    assert cited_sections('_BLOG = ("... (secondary; docs/grok2-facts.md "\n    "section 8)")') == ["8"]
    assert cited_sections("in `docs/grok2-facts.md` sections 4.1 and 4.2") == ["4.1", "4.2"]
    text = "Facts (docs/grok2-facts.md): TP 8 (3.1, 3.2), range(9, 18); weight-only (3.3, 5.1, 8).\n\nNot (9.9)."
    assert cited_sections(text) == ["3.1", "3.2", "3.3", "5.1", "8"]  # no call's arguments, nor the next paragraph
    assert cited_sections("facts 5.1, its file list") == ["5.1"] and cited_sections("the facts of life") == []


def test_python_code_beside_a_citation_is_not_read_as_one(tmp_path):
    source = tmp_path / "example.py"
    source.write_text('# the file names (facts 2.1): 15 common files\nsizes = {i: 17 for i in (6, 7, 8)}\n'
                      'NOTE = ("speeds in docs/grok2-facts.md "\n        "section 8")\n', encoding="utf-8")
    assert cited_sections(readable_text(source)) == ["2.1", "8"]


def test_the_figures_it_quotes_are_the_planners(grok2_plan):  # tests/conftest.py
    from helpers.units import GB, GiB

    text = " ".join(FACTS.read_text(encoding="utf-8").split())  # line breaks do not matter
    plan = grok2_plan
    assert f"{plan.total_params:,} parameters" in text
    assert f"{plan.weight_bytes('bf16') / GB:.1f} GB ({plan.weight_bytes('bf16') / GiB:.0f} GiB) in bf16" in text
    assert f"{plan.kv_cache_bytes_per_token() / 1024:.0f} KiB per token" in text
    assert f"{plan.active_params / 1e9:.1f}B counting the whole input embedding table" in text
    assert f"{(plan.active_params - plan.embedding_params) / 1e9:.1f}B without it" in text
    # section 6: every rule typed in, each at the value its one home holds
    from helpers.accelerators import METAL_DEFAULT_WORKING_SET
    from helpers.machines.weights import APPROXIMATE_MARGIN
    from helpers.memory import GPU_USABLE_FRACTION, RAM_USABLE_FRACTION

    assert f"fragmentation ({1 - GPU_USABLE_FRACTION:.0%}): `helpers.memory.GPU_USABLE_FRACTION`" in text
    assert f"loader's buffers ({1 - RAM_USABLE_FRACTION:.0%}): `helpers.memory.RAM_USABLE_FRACTION`" in text
    assert (f"wire by default ({METAL_DEFAULT_WORKING_SET:.0%} of unified memory, raised with `iogpu.wired_limit_mb`): "
            "`helpers.accelerators.METAL_DEFAULT_WORKING_SET`") in text
    assert f"computed size ({APPROXIMATE_MARGIN:.0%}): `helpers.machines.weights.APPROXIMATE_MARGIN`" in text
    assert "The one rule typed in" not in text

