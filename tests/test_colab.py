"""Colab: every lesson opens on Colab from its badge and installs the course there at the pins.

- the repository's address is in one place, pyproject.toml's `[project.urls] Repository`;
- every lesson starts with the badge and has the Colab setup cell as its first code cell, both exactly what
  scripts/colab_cells.py generates (so all lessons stay identical), and every badge opens a notebook that exists at the
  path its URL names, in this repository;
- colab/requirements.txt is what the script generates, and every version in it is pyproject.toml's pin;
- the cell, run outside Colab, prints one line and changes nothing; run with a fake Colab (no network, no installs:
  git, pip and nvidia-smi are recorded), it clones the release tag, installs the requirements, then the course without
  its dependencies, and picks `small` on a T4, `tiny` without a GPU, and keeps a profile already chosen.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import types

import nbformat
import pytest

from helpers.environment import pyproject_requirements
from helpers.paths import REPO_ROOT

spec = importlib.util.spec_from_file_location("colab_cells", REPO_ROOT / "scripts" / "colab_cells.py")
colab_cells = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab_cells)

LESSONS = colab_cells.lessons()
BADGE_URL = re.compile(r"^https://colab\.research\.google\.com/github/(?P<owner>[^/]+)/(?P<repo>[^/]+)/blob/"
                       r"(?P<branch>[^/]+)/(?P<path>.+\.ipynb)$")


def read(path):
    return nbformat.reads(path.read_text(encoding="utf-8"), as_version=nbformat.NO_CONVERT)


def first_code_cell(notebook):
    return next(cell for cell in notebook.cells if cell.cell_type == "code")


def test_there_are_lessons():
    assert len(LESSONS) >= 7, [p.name for p in LESSONS]


def test_the_repository_address_is_in_pyproject_only():
    url, owner, repo = colab_cells.repository()
    assert url == f"https://github.com/{owner}/{repo}"
    assert colab_cells.release_tag() == "v" + colab_cells.pyproject()["project"]["version"]
    source = (REPO_ROOT / "scripts" / "colab_cells.py").read_text(encoding="utf-8")
    assert f"{owner}/{repo}" not in source, "the script must read the address from pyproject.toml, not repeat it"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_has_the_generated_badge_and_cell(path):
    current, wanted = colab_cells.render(path)
    assert current == wanted, (f"{path.name}: the badge or the Colab cell differs from what the script writes: run "
                               "`python scripts/colab_cells.py` (edit the script, not the cell)")
    notebook = read(path)
    assert notebook.cells[0].source.split("\n")[0] == colab_cells.badge(path)
    cell = first_code_cell(notebook)
    assert cell.id == colab_cells.CELL_ID and cell.source == colab_cells.cell_source()
    assert sum(cell.get("id") == colab_cells.CELL_ID for cell in notebook.cells) == 1


def badges():
    for path in sorted((REPO_ROOT / "notebooks").rglob("*.ipynb")):
        for cell in read(path).cells:
            if cell.cell_type == "markdown":
                for match in re.finditer(r"https://colab\.research\.google\.com/github/[^)\s\"']+", cell.source):
                    yield path, match.group(0)
    for path in sorted(REPO_ROOT.glob("*.md")):
        for match in re.finditer(r"https://colab\.research\.google\.com/github/[^)\s\"']+", path.read_text("utf-8")):
            yield path, match.group(0)


def test_every_badge_opens_an_existing_notebook_of_this_repository():
    _, owner, repo = colab_cells.repository()
    found = list(badges())
    assert len(found) >= len(LESSONS)
    for path, url in found:
        match = BADGE_URL.match(url)
        assert match, f"{path.name}: not a Colab GitHub URL: {url}"
        assert (match["owner"], match["repo"], match["branch"]) == (owner, repo, "main"), f"{path.name}: {url}"
        assert (REPO_ROOT / match["path"]).is_file(), f"{path.name}: {url} names {match['path']}, which does not exist"
        if path.suffix == ".ipynb":
            assert REPO_ROOT / match["path"] == path, f"{path.name}'s badge opens another notebook: {url}"


def test_colab_requirements_are_generated_and_equal_the_pins():
    text = (REPO_ROOT / "colab" / "requirements.txt").read_text(encoding="utf-8")
    assert text == colab_cells.requirements_text(), "run `python scripts/colab_cells.py`"
    pins = {}
    for requirement in pyproject_requirements():  # read independently of the script
        name, _, version = requirement.partition("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    listed = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and name in pins and version == pins[name], f"colab/requirements.txt: {line!r}, pins: {pins}"
            listed[name] = version
    assert set(pins) - set(listed) == {"torch", "jupyterlab", "ipykernel"}, "only Colab's own packages are left out"


def run_cell(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<colab-setup>", "exec"), {"__name__": "__main__"})
    return out.getvalue()


def test_the_cell_outside_colab_prints_one_line_and_does_nothing(monkeypatch):
    assert "google.colab" not in sys.modules
    monkeypatch.delenv("GROK2_COURSE_PROFILE", raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    cwd = os.getcwd()
    output = run_cell(colab_cells.cell_source())
    assert output.count("\n") == 1 and output.startswith("Not on Colab"), output
    assert calls == [] and os.getcwd() == cwd and "GROK2_COURSE_PROFILE" not in os.environ


class FakeColab:
    """google.colab in sys.modules; git, pip and nvidia-smi recorded; the clone made from this repository's files."""

    def __init__(self, monkeypatch, tmp_path, gpu_mib: str | None):
        self.calls, self.gpu_mib, self.tmp_path = [], gpu_mib, tmp_path
        self.chdir, self.widget_managers = [], []
        colab = types.ModuleType("google.colab")
        colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: self.widget_managers.append(1))
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setattr(subprocess, "run", self.run)
        monkeypatch.setattr(os, "chdir", self.chdir.append)
        monkeypatch.setattr(sys, "path", list(sys.path))
        # The packages this process imported, as at their pins: the cell compares imported versions with the pins.
        for name, version in colab_cells.colab_pins().items():
            if name.replace("-", "_") in sys.modules:
                monkeypatch.setitem(sys.modules, name.replace("-", "_"), types.SimpleNamespace(__version__=version))

    def run(self, command, **kwargs):
        self.calls.append(command)
        if command[0] == "git":
            clone = __import__("pathlib").Path(command[-1])
            (clone / "colab").mkdir(parents=True)
            (clone / "colab" / "requirements.txt").write_text(colab_cells.requirements_text())
            return subprocess.CompletedProcess(command, 0)
        if command[0] == "nvidia-smi":
            if self.gpu_mib is None:
                raise FileNotFoundError("nvidia-smi")
            return subprocess.CompletedProcess(command, 0, stdout=self.gpu_mib + "\n", stderr="")
        return subprocess.CompletedProcess(command, 0)

    def source(self) -> str:
        source = colab_cells.cell_source()
        assert f'Path("{colab_cells.COLAB_INSTALL_DIR}/' in source
        return source.replace(f'Path("{colab_cells.COLAB_INSTALL_DIR}/', f'Path("{self.tmp_path}/')


@pytest.mark.parametrize("gpu_mib, preset, profile", [("15360", None, "small"), (None, None, "tiny"),
                                                       ("8192", None, "tiny"), ("15360", "grok-2", "grok-2")])
def test_the_cell_on_colab_installs_the_release_and_picks_the_profile(monkeypatch, tmp_path, gpu_mib, preset, profile):
    monkeypatch.delenv("GROK2_COURSE_PROFILE", raising=False)
    if preset:
        monkeypatch.setenv("GROK2_COURSE_PROFILE", preset)
    colab = FakeColab(monkeypatch, tmp_path, gpu_mib)
    output = run_cell(colab.source())
    url, _, repo = colab_cells.repository()
    course = tmp_path / repo
    git, pip_requirements, pip_course, smi = colab.calls
    assert git[:2] == ["git", "clone"] and git[git.index("--branch") + 1] == colab_cells.release_tag()
    assert git[-2:] == [url, str(course)]
    assert pip_requirements[-2:] == ["-r", str(course / "colab" / "requirements.txt")]
    assert pip_course[-3:] == ["--no-deps", "-e", str(course)]
    assert smi[0] == "nvidia-smi"
    assert os.environ["GROK2_COURSE_PROFILE"] == profile and f"profile {profile}" in output
    assert colab.chdir == [course / "notebooks"] and sys.path[0] == str(course)
    assert colab.widget_managers == [1]  # the lessons' widgets render on Colab
    # Run again (a restarted session): installed already, so nothing is cloned or installed.
    colab.calls.clear()
    run_cell(colab.source())
    assert [call[0] for call in colab.calls] == ["nvidia-smi"]


def test_the_cell_asks_for_a_restart_when_an_imported_package_changed(monkeypatch, tmp_path):
    colab = FakeColab(monkeypatch, tmp_path, None)
    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(__version__="0.0.1"))
    with pytest.raises(SystemExit, match="tqdm changed while already imported: Runtime > Restart session"):
        run_cell(colab.source())


def test_the_script_is_idempotent_and_puts_the_parts_at_the_top(tmp_path, monkeypatch):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    notebook = new_notebook(cells=[new_markdown_cell("# 99 · Example\n\n**Goals**"), new_code_cell("import helpers")],
                            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    folder = tmp_path / "notebooks"
    folder.mkdir()
    path = folder / "99_example.ipynb"
    path.write_text(nbformat.writes(notebook) + "\n", encoding="utf-8")
    monkeypatch.setattr(colab_cells, "ROOT", tmp_path)
    monkeypatch.setattr(colab_cells, "NOTEBOOK_DIR", folder)
    monkeypatch.setattr(colab_cells, "REQUIREMENTS", tmp_path / "colab" / "requirements.txt")
    monkeypatch.setattr(colab_cells, "pyproject", lambda: {"project": {
        "version": "9.9.9", "urls": {"Repository": "https://github.com/someone/elsewhere"},
        "dependencies": ["torch==2.13.0", "jupyterlab==4.6.6", "ipykernel==7.4.0", "tqdm==4.70.1"]}})
    monkeypatch.setattr(colab_cells, "small_profile_min_gpu_gb", lambda: 12)
    assert colab_cells.main(["--check"]) == 1
    assert colab_cells.main([]) == 0
    once = path.read_text(encoding="utf-8")
    assert colab_cells.main(["--check"]) == 0 and colab_cells.main([]) == 0
    assert path.read_text(encoding="utf-8") == once
    cells = read(path).cells
    assert cells[0].source.startswith("[![Open In Colab](") and "someone/elsewhere/blob/main/notebooks/99_example" \
        in cells[0].source and cells[0].source.endswith("# 99 · Example\n\n**Goals**")
    assert cells[1].id == "colab-setup" and '"v9.9.9"' in cells[1].source and cells[2].source == "import helpers"
    assert (tmp_path / "colab" / "requirements.txt").read_text().splitlines()[-1] == "tqdm==4.70.1"
