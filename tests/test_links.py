"""Every relative link in the notebooks' markdown and in the Markdown files resolves to a file of this repository, and
an anchor (`file.md#section`, `#section`) to a heading of the file it names.

Links are Markdown `[text](target)`, images `![alt](target)` and HTML `href="..."` / `src="..."`; code (fenced blocks
and `inline`) is left out; absolute URLs (http:, https:, mailto:) are not fetched. Anchors are compared with the ids
GitHub gives headings (lower case, punctuation dropped, spaces to hyphens) and, in notebooks, with Jupyter's (spaces
to hyphens).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pytest

from helpers.paths import REPO_ROOT

SKIP_DIRS = {".git", ".venv", ".venv-drift", "workspace", ".pytest_cache", "node_modules", ".ipynb_checkpoints",
             "build", ".whl", "__pycache__"}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:href|src)=\"(?P<html>[^\"]+)\"")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def documents() -> list[Path]:
    found = []
    for path in sorted(REPO_ROOT.rglob("*")):
        if path.suffix in (".md", ".ipynb") and not SKIP_DIRS & set(path.relative_to(REPO_ROOT).parts):
            found.append(path)
    return found


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def without_code(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # GitHub keeps letters, digits, _, - and spaces
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", markdown_of(path))
    found = set()
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            heading = match.group(1)
            found |= {github_slug(heading), github_slug(heading.replace("`", ""))}
            if path.suffix == ".ipynb":
                found.add(heading.replace(" ", "-"))
    found |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def links(path: Path):
    for match in LINK.finditer(without_code(markdown_of(path))):
        yield match.group("target") or match.group("html")


def problems(path: Path, root: Path = REPO_ROOT) -> list[str]:
    root = root.resolve()
    found = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.\-]*:", target, re.IGNORECASE) or target.startswith("//"):
            continue  # http:, https:, mailto:, data: ... not fetched
        file_part, _, anchor = urllib.parse.unquote(target).partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if file_part and root not in linked.parents:
            found.append(f"{target}: points outside the repository")
        elif not linked.exists():
            found.append(f"{target}: {linked.relative_to(root).as_posix()} does not exist")
        elif anchor and linked.suffix in (".md", ".ipynb") and anchor not in anchors(linked):
            found.append(f"{target}: no heading #{anchor} in {linked.name}")
    return found


DOCUMENTS = documents()


def test_there_are_documents():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in DOCUMENTS}
    assert {"README.md", "CONTRIBUTING.md", "notebooks/00_setup.ipynb"} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_relative_links_resolve(path):
    found = problems(path)
    assert not found, f"{path.relative_to(REPO_ROOT)}:\n" + "\n".join(found)


def test_the_checker_catches_broken_links(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "other.md").write_text("# Other page\n\n## Set-up, step 2 `now`\n", encoding="utf-8")
    page = folder / "page.md"
    page.write_text(
        "# Title\n\n[ok](other.md) [ok](other.md#set-up-step-2-now) [ok](#title) [web](https://example.com/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) <img src=\"img/none.png\">\n"
        "`[in code](skipped.md)`\n\n```\n[in a block](skipped.md)\n```\n", encoding="utf-8")
    found = problems(page, root=tmp_path)
    assert found == ["missing.md: docs/missing.md does not exist", "other.md#nowhere: no heading #nowhere in other.md",
                     "img/none.png: docs/img/none.png does not exist"], found


def test_the_readme_error_index_links_every_lessons_troubleshooting():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    index = readme[readme.index("## Troubleshooting index"):]
    targets = set(links(REPO_ROOT / "README.md"))
    for lesson in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        link = f"notebooks/{lesson.name}#troubleshooting"
        assert link in targets and link in index, f"README's troubleshooting index does not link {link}"
        assert "troubleshooting" in anchors(lesson), f"{lesson.name} has no #troubleshooting anchor"


TABLE_CODE = re.compile(r"`[^`\n]*`")


def table_pipe_problems(path: Path) -> list[str]:
    """A `|` inside `code` in a Markdown table row ends the cell there (GitHub and JupyterLab both split on it): it
    must be written `\\|`."""
    found = []
    for line in FENCE.sub("", markdown_of(path)).splitlines():
        if line.lstrip().startswith("|"):
            found += [code for code in TABLE_CODE.findall(line) if re.search(r"(?<!\\)\|", code)]
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_code_in_tables_escapes_its_pipes(path):
    found = table_pipe_problems(path)
    assert not found, f"{path.relative_to(REPO_ROOT)}: write | as \\| inside these table cells: {found}"


def test_the_pipe_check_catches_a_broken_cell(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("| a | b |\n|---|---|\n| `<|eos|>` | `<\\|ok\\|>` |\n", encoding="utf-8")
    assert table_pipe_problems(page) == ["`<|eos|>`"]
