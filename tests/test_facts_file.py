"""docs/grok2-facts.md: every "facts N.M" citation in the course resolves to a section of it, and the figures it
quotes are the ones the planner computes."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACTS = REPO / "docs" / "grok2-facts.md"
CITATION = re.compile(r"\bfacts (\d+(?:\.\d+)?)")


def sections() -> set[str]:
    found = set()
    for line in FACTS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", line)
        if match:
            found.add(match.group(1).rstrip("."))
    return found


def citing_files() -> list[Path]:
    files = []
    for folder in ("helpers", "tests", "scripts", "benchmarks", "notebooks", "docs"):
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".ipynb", ".md", ".sh")
                  and ".ipynb_checkpoints" not in p.parts]
    return files + [REPO / "README.md", REPO / "CONTRIBUTING.md"]


def test_every_facts_citation_names_a_section_that_exists():
    known = sections()
    assert {"1.1", "2.1", "3.2", "4.6", "5.1", "8"} <= known
    dangling = []
    for path in citing_files():
        for number in CITATION.findall(path.read_text(encoding="utf-8")):
            if number not in known:
                dangling.append(f"{path.relative_to(REPO)}: facts {number}")
    assert not dangling, f"citations of sections that docs/grok2-facts.md does not have: {dangling}"


def test_the_figures_it_quotes_are_the_planners():
    from helpers.profiles import plan_profile
    from helpers.units import GB, GiB

    text = " ".join(FACTS.read_text(encoding="utf-8").split())  # line breaks do not matter
    plan = plan_profile("grok-2")
    assert f"{plan.total_params:,} parameters" in text
    assert f"{plan.weight_bytes('bf16') / GB:.1f} GB ({plan.weight_bytes('bf16') / GiB:.0f} GiB) in bf16" in text
    assert f"{plan.kv_cache_bytes_per_token() / 1024:.0f} KiB per token" in text
    assert f"{plan.active_params / 1e9:.1f}B counting the whole input embedding table" in text
    assert f"{(plan.active_params - plan.embedding_params) / 1e9:.1f}B without it" in text

