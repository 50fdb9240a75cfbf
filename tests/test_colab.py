"""Colab: every lesson and solution notebook opens on Colab from its badge and sets the course up there, at the pins,
without ever losing the learner's work.

- the repository's address is in one place, pyproject.toml's `[project.urls] Repository`;
- every notebook starts with the badge and has the Colab setup cell as its first code cell, both exactly what
  scripts/colab_cells.py generates (so all stay identical), a few lines long; every badge opens a notebook that
  exists at the path its URL names, in this repository;
- colab/requirements.txt is what the script generates, and every version in it is pyproject.toml's pin;
- the cell, run outside Colab, prints one line and changes nothing;
- run with a fake Colab (no network, no installs: the download, git, pip and nvidia-smi are simulated and recorded),
  it runs scripts/colab_setup.py of the release: the clone lands complete or not at all, the requirements and then
  the course are installed, `import helpers` finds the course in the running kernel through the .pth file pip wrote
  after the kernel started (no sys.path edit), the profile follows the GPU, and the learner's workspace lives outside
  the course folder: a new release, a restart or a killed clone never deletes anything of theirs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import nbformat
import pytest

from helpers.environment import pyproject_requirements
from helpers.paths import REPO_ROOT

MAX_CELL_LINES = 12
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted(
    (REPO_ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))
BADGE_URL = re.compile(r"^https://colab\.research\.google\.com/github/(?P<owner>[^/]+)/(?P<repo>[^/]+)/blob/"
                       r"(?P<branch>[^/]+)/(?P<path>.+\.ipynb)$")


@pytest.fixture(scope="module")
def colab_cells(repo_script):
    return repo_script("colab_cells")


def read(path):
    return nbformat.reads(path.read_text(encoding="utf-8"), as_version=nbformat.NO_CONVERT)


def test_there_are_lessons_and_solutions(colab_cells):
    assert colab_cells.notebooks() == NOTEBOOKS
    assert len(colab_cells.lessons()) >= 7 and len(NOTEBOOKS) >= 14, [p.name for p in NOTEBOOKS]


def test_the_repository_address_is_in_pyproject_only(colab_cells):
    url, owner, repo = colab_cells.repository()
    assert url == f"https://github.com/{owner}/{repo}"
    assert colab_cells.release_tag() == "v" + colab_cells.pyproject()["project"]["version"]
    for script in ("colab_cells.py", "colab_setup.py"):
        source = (REPO_ROOT / "scripts" / script).read_text(encoding="utf-8")
        assert f"{owner}/{repo}" not in source, f"{script} must take the address from pyproject.toml, not repeat it"


def test_the_setup_script_agrees_with_the_generator_and_pyproject(colab_cells, repo_script):
    colab_setup = repo_script("colab_setup")
    assert colab_setup.DISTRIBUTION == colab_cells.pyproject()["project"]["name"]
    assert str(colab_setup.COLAB_ROOT) == colab_cells.COLAB_ROOT
    assert (REPO_ROOT / colab_cells.SETUP_SCRIPT).is_file()
    ref = colab_cells.install_ref()
    assert colab_cells.raw_url(colab_cells.SETUP_SCRIPT).endswith(f"/{ref}/scripts/colab_setup.py")


def test_the_cell_installs_the_badges_branch_or_a_tagged_release(colab_cells):
    """Before the first release the cell installs the branch the badges open (it exists, and it holds the notebook the
    learner opened); a released cell names the tag `v<version>`, which must exist: the release steps of
    scripts/colab_cells.py tag and push it before RELEASED is set."""
    ref = colab_cells.install_ref()
    if not colab_cells.RELEASED:
        assert ref == colab_cells.BRANCH == "main"
        assert f"of branch {ref}" in colab_cells.cell_source()
        return
    assert ref == colab_cells.release_tag() and f"of release {ref}" in colab_cells.cell_source()
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tags cannot be read here")
    tags = subprocess.run(["git", "tag", "--list", ref], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    assert tags == [ref], f"the Colab cell installs {ref}, which is not tagged: git tag {ref} && git push origin {ref}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_the_generated_badge_and_a_short_cell(colab_cells, path):
    found = colab_cells.problems(read(path), path)
    assert not found, f"{path.name}: {found}: run `python scripts/colab_cells.py` (edit the script, not the cell)"
    cell = next(cell for cell in read(path).cells if cell.cell_type == "code")
    assert cell.id == colab_cells.CELL_ID and len(cell.source.splitlines()) <= MAX_CELL_LINES


def badges():
    for path in sorted((REPO_ROOT / "notebooks").rglob("*.ipynb")):
        for cell in read(path).cells:
            if cell.cell_type == "markdown":
                for match in re.finditer(r"https://colab\.research\.google\.com/github/[^)\s\"']+", cell.source):
                    yield path, match.group(0)
    for path in sorted(REPO_ROOT.glob("*.md")):
        for match in re.finditer(r"https://colab\.research\.google\.com/github/[^)\s\"']+", path.read_text("utf-8")):
            yield path, match.group(0)


def test_every_badge_opens_an_existing_notebook_of_this_repository(colab_cells):
    _, owner, repo = colab_cells.repository()
    found = list(badges())
    assert len(found) >= len(NOTEBOOKS)
    for path, url in found:
        match = BADGE_URL.match(url)
        assert match, f"{path.name}: not a Colab GitHub URL: {url}"
        assert (match["owner"], match["repo"], match["branch"]) == (owner, repo, "main"), f"{path.name}: {url}"
        assert (REPO_ROOT / match["path"]).is_file(), f"{path.name}: {url} names {match['path']}, which does not exist"
        if path.suffix == ".ipynb":
            assert REPO_ROOT / match["path"] == path, f"{path.name}'s badge opens another notebook: {url}"


def test_colab_requirements_are_generated_and_equal_the_pins(colab_cells):
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


def unset(monkeypatch, *names):
    """Unset for the test, restored afterwards even if the code under test sets them."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_the_cell_outside_colab_prints_one_line_and_does_nothing(monkeypatch, colab_cells):
    assert "google.colab" not in sys.modules
    unset(monkeypatch, "GROK2_COURSE_PROFILE", "GROK2_COURSE_WORKSPACE")
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(urllib.request, "urlretrieve", lambda *a, **k: calls.append(a))
    cwd = os.getcwd()
    output = run_cell(colab_cells.cell_source())
    assert output.count("\n") == 1 and output.startswith("Not on Colab"), output
    assert calls == [] and os.getcwd() == cwd
    assert "GROK2_COURSE_PROFILE" not in os.environ and "GROK2_COURSE_WORKSPACE" not in os.environ


class FakeColab:
    """google.colab in sys.modules; the download, git, pip and nvidia-smi simulated and recorded, under `root`.

    The clone is a small folder with the course's requirements, pyproject.toml and a stand-in `helpers` package. The
    editable install writes, as pip does, a .pth file and the distribution's metadata into a site-packages folder that
    is on sys.path but whose .pth files this (already running) Python has not read: `import helpers` must then find
    the stand-in without any sys.path edit by the cell.
    """

    def __init__(self, monkeypatch, colab_cells, root: Path, gpu_mib: str | None = None):
        self.colab_cells, self.root, self.gpu_mib = colab_cells, root, gpu_mib
        self.calls, self.chdir, self.widget_managers, self.downloads = [], [], [], []
        self.fail_clone = self.fail_pip = False
        self.source = colab_cells.cell_source()  # now: it reads helpers.environment, which is taken away below
        self.site = root / "site-packages"
        self.site.mkdir(parents=True, exist_ok=True)
        colab = types.ModuleType("google.colab")
        colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: self.widget_managers.append(1))
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setattr(subprocess, "run", self.run)
        monkeypatch.setattr(urllib.request, "urlretrieve", self.urlretrieve)
        monkeypatch.setattr(os, "chdir", self.chdir.append)
        # This repository's own `helpers` must not be what the cell finds: out of sys.modules and off sys.path.
        monkeypatch.delitem(sys.modules, "helpers")
        keep = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
        monkeypatch.setattr(sys, "path", [str(self.site)] + keep)
        unset(monkeypatch, "GROK2_COURSE_PROFILE", "GROK2_COURSE_WORKSPACE")
        # The packages this process imported, as at their pins: the setup compares imported versions with the pins.
        for name, version in colab_cells.colab_pins().items():
            if name.replace("-", "_") in sys.modules:
                monkeypatch.setitem(sys.modules, name.replace("-", "_"), types.SimpleNamespace(__version__=version))

    def urlretrieve(self, url, filename):
        self.downloads.append((url, filename))
        text = (REPO_ROOT / "scripts" / "colab_setup.py").read_text(encoding="utf-8")
        assert 'COLAB_ROOT = Path("/content")' in text
        local = self.root / Path(filename).name
        local.write_text(text.replace('COLAB_ROOT = Path("/content")', f"COLAB_ROOT = Path({str(self.root)!r})"))
        return str(local), None

    def run(self, command, **kwargs):
        self.calls.append(command)
        if command[0] == "git":
            if self.fail_clone:
                return subprocess.CompletedProcess(command, 128)
            clone = Path(command[-1])
            (clone / "colab").mkdir(parents=True)
            (clone / "colab" / "requirements.txt").write_text(self.colab_cells.requirements_text())
            (clone / "notebooks").mkdir()
            (clone / "helpers").mkdir()
            (clone / "helpers" / "__init__.py").write_text('"""stand-in"""\n')
            shutil.copy(REPO_ROOT / "pyproject.toml", clone / "pyproject.toml")
            return subprocess.CompletedProcess(command, 0)
        if command[0] == "nvidia-smi":
            if self.gpu_mib is None:
                raise FileNotFoundError("nvidia-smi")
            return subprocess.CompletedProcess(command, 0, stdout=self.gpu_mib + "\n", stderr="")
        if self.fail_pip and command[1:4] == ["-m", "pip", "install"]:
            return subprocess.CompletedProcess(command, 1)
        if command[-2:-1] == ["-e"]:  # pip install --no-deps -e COURSE: what pip leaves in site-packages
            for old in self.site.glob("grok2_course-*"):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            info = self.site / "grok2_course-0.0.0.dist-info"
            info.mkdir()
            (info / "METADATA").write_text("Metadata-Version: 2.1\nName: grok2-course\nVersion: 0.0.0\n")
            (self.site / "grok2_course-0.0.0-editable.pth").write_text(command[-1] + "\n")
        return subprocess.CompletedProcess(command, 0)

    def cell(self, release: str | None = None) -> str:
        source = self.source
        if release:  # the same cell, as a later release writes it
            source = source.replace(f'"{self.colab_cells.install_ref()}"', f'"{release}"')
        return source

    def course(self, release: str | None = None) -> Path:
        _, _, repo = self.colab_cells.repository()
        return self.root / f"{repo}-{release or self.colab_cells.install_ref()}"


@pytest.mark.parametrize("gpu_mib, preset, profile", [("15360", None, "small"), (None, None, "tiny"),
                                                       ("8192", None, "tiny"), ("15360", "grok-2", "grok-2")])
def test_the_cell_on_colab_sets_up_the_release(monkeypatch, tmp_path, colab_cells, gpu_mib, preset, profile):
    colab = FakeColab(monkeypatch, colab_cells, tmp_path, gpu_mib)
    if preset:
        monkeypatch.setenv("GROK2_COURSE_PROFILE", preset)
    output = run_cell(colab.cell())
    url, _, _ = colab_cells.repository()
    course = colab.course()
    assert colab.downloads[0][0] == colab_cells.raw_url("scripts/colab_setup.py")
    git, pip_requirements, pip_course, smi = colab.calls
    assert git[:2] == ["git", "clone"] and git[git.index("--branch") + 1] == colab_cells.install_ref()
    assert git[-2] == url and Path(git[-1]).parent == tmp_path and Path(git[-1]) != course  # cloned aside, renamed
    assert pip_requirements[-2:] == ["-r", str(course / "colab" / "requirements.txt")]
    assert pip_course[-3:] == ["--no-deps", "-e", str(course)]
    assert smi[0] == "nvidia-smi"
    assert os.environ["GROK2_COURSE_PROFILE"] == profile and f"profile {profile}" in output
    assert os.environ["GROK2_COURSE_WORKSPACE"] == str(tmp_path / "grok2-workspace")
    assert course not in Path(os.environ["GROK2_COURSE_WORKSPACE"]).parents, "the workspace is outside the course"
    assert colab.chdir == [course / "notebooks"] and colab.widget_managers == [1]
    # `import helpers` finds the course, through the .pth file pip wrote after this Python started
    assert Path(importlib.util.find_spec("helpers").origin) == course / "helpers" / "__init__.py"
    assert str(course) in sys.path and not any(".partial-" in p for p in sys.path)
    # Run again (a restarted session): installed already, so nothing is downloaded but the script, cloned or installed.
    colab.calls.clear()
    run_cell(colab.cell())
    assert [call[0] for call in colab.calls] == ["nvidia-smi"]


def test_a_new_release_keeps_the_old_course_and_the_learners_work(monkeypatch, tmp_path, colab_cells):
    colab = FakeColab(monkeypatch, colab_cells, tmp_path)
    run_cell(colab.cell())
    old = colab.course()
    workspace = Path(os.environ["GROK2_COURSE_WORKSPACE"])
    (workspace / "adapters" / "mine").mkdir(parents=True)
    (workspace / "adapters" / "mine" / "adapter_model.safetensors").write_bytes(b"learner's adapter")
    (old / "notebooks" / "my-notes.ipynb").write_text("{}")  # something the learner saved into the course folder
    # In the same session the kernel still imports the old release: the setup asks for a restart.
    with pytest.raises(SystemExit, match="an earlier release is still loaded in this session.*Restart session"):
        run_cell(colab.cell(release="v99.0.0"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(old)])  # Runtime > Restart session
    output = run_cell(colab.cell(release="v99.0.0"))
    new = colab.course("v99.0.0")
    assert new.is_dir() and new != old and f"course v99.0.0 in {new}" in output
    assert (old / "notebooks" / "my-notes.ipynb").read_text() == "{}" and (old / "helpers").is_dir()
    assert (workspace / "adapters" / "mine" / "adapter_model.safetensors").read_bytes() == b"learner's adapter"
    assert os.environ["GROK2_COURSE_WORKSPACE"] == str(workspace)


def test_a_killed_clone_is_redone_and_a_failed_one_says_so(monkeypatch, tmp_path, colab_cells):
    colab = FakeColab(monkeypatch, colab_cells, tmp_path)
    course = colab.course()
    leftover = tmp_path / f".{course.name}.partial-12345"  # a clone killed half-way in an earlier session
    (leftover / "colab").mkdir(parents=True)
    colab.fail_clone = True
    with pytest.raises(SystemExit, match="Could not clone .* check the network, then run this cell again"):
        run_cell(colab.cell())
    assert not course.exists() and not list(tmp_path.glob(".*.partial-*")), "no half clone left, none passed as whole"
    colab.fail_clone = False
    run_cell(colab.cell())
    assert (course / "helpers" / "__init__.py").is_file() and not list(tmp_path.glob(".*.partial-*"))


def test_a_failed_install_says_so_and_the_next_run_finishes_it(monkeypatch, tmp_path, colab_cells):
    colab = FakeColab(monkeypatch, colab_cells, tmp_path)
    colab.fail_pip = True
    with pytest.raises(SystemExit, match="pip could not install .*requirements.txt .*run this cell again"):
        run_cell(colab.cell())
    colab.fail_pip = False
    colab.calls.clear()
    run_cell(colab.cell())  # cloned already: only the installs are done again
    assert [call[0] for call in colab.calls] == [sys.executable, sys.executable, "nvidia-smi"]


def test_a_workspace_of_an_older_setup_is_kept_and_named(monkeypatch, tmp_path, colab_cells):
    colab = FakeColab(monkeypatch, colab_cells, tmp_path)
    _, _, repo = colab_cells.repository()
    older = tmp_path / repo / "workspace"  # where setup cells before this one kept the learner's work
    (older / "lesson01").mkdir(parents=True)
    output = run_cell(colab.cell())
    assert f"Your work from an earlier setup is still in {older}" in output and (older / "lesson01").is_dir()
    # A workspace the learner chose is used as it is.
    colab.calls.clear()
    monkeypatch.setenv("GROK2_COURSE_WORKSPACE", str(older))
    output = run_cell(colab.cell())
    assert os.environ["GROK2_COURSE_WORKSPACE"] == str(older) and "earlier setup" not in output


def test_the_cell_asks_for_a_restart_when_an_imported_package_changed(monkeypatch, tmp_path, colab_cells):
    colab = FakeColab(monkeypatch, colab_cells, tmp_path)
    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(__version__="0.0.1"))
    with pytest.raises(SystemExit, match="tqdm changed while already imported: Runtime > Restart session"):
        run_cell(colab.cell())


def test_the_cell_asks_for_a_restart_when_helpers_is_another_release(monkeypatch, tmp_path, colab_cells):
    colab = FakeColab(monkeypatch, colab_cells, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "helpers").mkdir(parents=True)
    (elsewhere / "helpers" / "__init__.py").write_text("")
    sys.path.insert(1, str(elsewhere))  # sys.path is the test's own copy (FakeColab)
    with pytest.raises(SystemExit, match=r"`import helpers` finds .*elsewhere.*Runtime > Restart session"):
        run_cell(colab.cell())


def test_the_script_is_idempotent_and_puts_the_parts_at_the_top(tmp_path, monkeypatch, colab_cells, repo_script):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    notebook_files = repo_script("notebook_files")
    folder = tmp_path / "notebooks"
    (folder / "solutions").mkdir(parents=True)
    paths = {}
    for name, title in (("99_example.ipynb", "# 99 · Example\n\n**Goals**"),
                        ("solutions/99_example_solutions.ipynb", "# 99 · Solutions")):
        notebook = new_notebook(cells=[new_markdown_cell(title), new_code_cell("import helpers")],
                                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
        paths[name] = folder / name
        paths[name].write_text(nbformat.writes(notebook) + "\n", encoding="utf-8")
    monkeypatch.setattr(colab_cells, "ROOT", tmp_path)
    monkeypatch.setattr(colab_cells, "NOTEBOOK_DIR", folder)
    monkeypatch.setattr(colab_cells, "REQUIREMENTS", tmp_path / "colab" / "requirements.txt")
    monkeypatch.setattr(colab_cells, "pyproject", lambda: {"project": {
        "name": "grok2-course", "version": "9.9.9", "urls": {"Repository": "https://github.com/someone/elsewhere"},
        "dependencies": ["torch==2.13.0", "jupyterlab==4.6.6", "ipykernel==7.4.0", "tqdm==4.70.1"]}})
    monkeypatch.setattr(colab_cells, "small_profile_min_gpu_gb", lambda: 12)
    monkeypatch.setattr(colab_cells, "RELEASED", True)  # as after the release steps: the cell installs the tag
    assert colab_cells.install_ref() == "v9.9.9"
    assert colab_cells.main(["--check"]) == 1
    assert colab_cells.main([]) == 0
    once = {name: path.read_text(encoding="utf-8") for name, path in paths.items()}
    assert colab_cells.main(["--check"]) == 0 and colab_cells.main([]) == 0
    assert {name: path.read_text(encoding="utf-8") for name, path in paths.items()} == once
    for name, path in paths.items():
        cells = read(path).cells
        assert cells[0].source.startswith("[![Open In Colab](") and f"someone/elsewhere/blob/main/notebooks/{name}" \
            in cells[0].source
        assert cells[1].id == "colab-setup" and f'"{colab_cells.install_ref()}"' in cells[1].source
        assert cells[2].source == "import helpers"
        assert "small_gpu_mib=11445" in cells[1].source  # 12 GB in MiB, rounded up
    assert read(paths["99_example.ipynb"]).cells[0].source.endswith("# 99 · Example\n\n**Goals**")
    assert (tmp_path / "colab" / "requirements.txt").read_text().splitlines()[-1] == "tqdm==4.70.1"
    # A cell someone inserted by hand (keys in another order) does not make the check fail.
    with notebook_files.edit(paths["99_example.ipynb"]) as notebook:
        notebook["cells"].append({"source": ["print(2)"], "outputs": [], "metadata": {}, "id": "x1",
                                  "execution_count": None, "cell_type": "code"})
    assert colab_cells.main(["--check"]) == 0


def test_a_real_editable_install_becomes_importable_in_the_running_python(tmp_path):
    """What setup does on Colab, with pip and setuptools for real (offline): `pip install -e` writes a .pth file into a
    site-packages folder already on sys.path, which a running Python never reads; make_importable reads it."""
    project = tmp_path / "probe"
    (project / "probe_course_pkg").mkdir(parents=True)
    (project / "probe_course_pkg" / "__init__.py").write_text("VALUE = 42\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "probe-course"\nversion = "0.0.1"\n'
        '[tool.setuptools.packages.find]\ninclude = ["probe_course_pkg*"]\n')
    prefix = tmp_path / "prefix"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "--no-deps",
               "--prefix", str(prefix), "-e", str(project)]
    subprocess.run(install, check=True, timeout=300, env={**os.environ, "PIP_NO_INDEX": "1"})
    (site_dir,) = prefix.glob("lib/python*/site-packages")
    probe = f"""
import importlib.util, runpy, sys
from pathlib import Path
before = importlib.util.find_spec("probe_course_pkg")
make_importable = runpy.run_path({str(REPO_ROOT / "scripts" / "colab_setup.py")!r})["make_importable"]
make_importable.__globals__.update(DISTRIBUTION="probe-course", PACKAGE="probe_course_pkg")
make_importable(Path({str(project)!r}))
import probe_course_pkg
print(before is None, probe_course_pkg.VALUE)
"""
    # The site-packages folder is on sys.path (PYTHONPATH), but its .pth files are not read at start-up: as on Colab.
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(site_dir)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "42"], "not importable before, importable after: " + result.stdout
