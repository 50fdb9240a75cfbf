"""Writes the Colab parts of the course from pyproject.toml: colab/requirements.txt, and at the top of every lesson and
solution notebook an "Open in Colab" badge and the Colab setup cell. Idempotent: a second run changes nothing.

    python scripts/colab_cells.py            write them (only notebooks whose parts change are rewritten)
    python scripts/colab_cells.py --check    change nothing; exit 1 and name each file that is out of date

Everything comes from pyproject.toml, the single source of truth:
- the repository's address: `[project.urls] Repository` (a github.com address). Moving the course is a one-line edit
  there, then this script;
- what the Colab cell installs (`install_ref()`): the branch the badges open, `main`, until the course is released;
  then the git tag `v<[project] version>`. Releasing is three steps: `git tag v<version> && git push origin
  v<version>` (the tag must hold scripts/colab_setup.py: the cell downloads that file as it is at the tag), set
  RELEASED = True below and run this script, commit. tests/test_colab.py checks that a released cell names a tag
  that exists in this clone;
- the packages and their versions: `[project] dependencies`, pinned exactly, less the ones Colab keeps (below).

What the badge and the cell are:
- the badge is the first line of each notebook's first (markdown) cell and opens
  colab.research.google.com/github/<owner>/<repo>/blob/main/notebooks/<file>.ipynb;
- the cell is each notebook's first code cell (cell id `colab-setup`), a few lines. Outside Colab it prints one line
  and does nothing else. On Colab it downloads scripts/colab_setup.py at `install_ref()` and runs it: that script
  clones the course at that ref, installs colab/requirements.txt and the course, makes `import helpers` work in the running
  kernel, keeps the learner's work in /content/grok2-workspace (outside the course folder: a new release never
  touches it), and picks the profile (its docstring has the details). The cell passes it the address, the ref and
  the GPU memory the `small` profile needs (from helpers.environment, so the threshold has one home).

Notebooks are changed through scripts/notebook_files.py: one locked, atomic read-modify-write each, so the script can
run while someone edits the rest of a notebook.

Why Colab keeps its own torch: Colab's torch is a CUDA build matched to its GPU driver and preinstalled. The course's
pin names the same release series the lessons are tested with, but installing it on Colab means downloading the CUDA
wheel and its nvidia-* libraries (several GB, minutes, on every new session) to replace a working build; the setup
prints Colab's torch version next to the pin so a mismatch is visible. jupyterlab and ipykernel are Colab's own too:
Colab runs its own front end, and replacing its kernel package can break the runtime.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import notebook_files

ROOT = notebook_files.ROOT
NOTEBOOK_DIR = notebook_files.NOTEBOOK_DIR
REQUIREMENTS = ROOT / "colab" / "requirements.txt"
CELL_ID = "colab-setup"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\((?P<url>[^)]*)\)$")
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9_.\-]+)/(?P<repo>[A-Za-z0-9_.\-]+?)(?:\.git)?/?$")
COLAB_ROOT = "/content"  # where Colab keeps a session's files (scripts/colab_setup.py's COLAB_ROOT)
SETUP_SCRIPT = "scripts/colab_setup.py"
BRANCH = "main"  # the branch the badges open
# False until `v<version>` is tagged and pushed (the release steps above): until then the cell installs BRANCH, the
# same branch the badge opened the notebook from, so the notebook and the code it runs always exist and agree.
RELEASED = False

# Packages Colab provides itself, each with the reason (also printed into colab/requirements.txt).
COLAB_KEEPS = {
    "torch": "Colab's preinstalled CUDA build, matched to its GPU driver (the setup prints it next to the pin)",
    "jupyterlab": "Colab has its own notebook front end",
    "ipykernel": "Colab's kernel; replacing it can break the runtime",
}

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli, else the copy pip carries
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        from pip._vendor import tomli as tomllib


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def repository() -> tuple[str, str, str]:
    """(address, owner, repo) from `[project.urls] Repository`."""
    url = pyproject()["project"]["urls"]["Repository"]
    match = GITHUB.match(url)
    if not match:
        raise SystemExit(f"[project.urls] Repository must be https://github.com/<owner>/<repo>, not {url!r}")
    return url.rstrip("/").removesuffix(".git"), match["owner"], match["repo"]


def release_tag() -> str:
    return "v" + pyproject()["project"]["version"]


def install_ref() -> str:
    """The git ref the Colab cell installs: the release tag once RELEASED, the badges' branch before."""
    return release_tag() if RELEASED else BRANCH


def install_ref_words() -> str:
    return f"release {release_tag()}" if RELEASED else f"branch {BRANCH}"


def runtime_pins() -> dict[str, str]:
    """{canonical name: version} of `[project] dependencies` (tests/test_pins.py makes sure each is pinned with ==)."""
    pins = {}
    for requirement in pyproject()["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        pins[canonical(name.strip())] = version.strip()
    return pins


def colab_pins() -> dict[str, str]:
    return {name: version for name, version in runtime_pins().items() if name not in COLAB_KEEPS}


def requirements_text() -> str:
    kept = "".join(f"#   {name}=={runtime_pins()[name]} is not installed: {why}\n" for name, why in COLAB_KEEPS.items())
    return ("# What the Colab setup cell installs, every version equal to pyproject.toml's pin.\n"
            "# Generated by scripts/colab_cells.py from pyproject.toml: do not edit, run the script.\n"
            f"{kept}"
            + "".join(f"{name}=={version}\n" for name, version in colab_pins().items()))


def badge_url(notebook: Path) -> str:
    _, owner, repo = repository()
    relative = notebook.resolve().relative_to(ROOT).as_posix()
    return f"https://colab.research.google.com/github/{owner}/{repo}/blob/{BRANCH}/{relative}"


def badge(notebook: Path) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({badge_url(notebook)})"


def small_profile_min_gpu_gb() -> int:
    from helpers.environment import PROFILE_NEEDS
    from helpers.units import GB

    return PROFILE_NEEDS["small"][1] // GB


def raw_url(path: str) -> str:
    """The file at `install_ref()`, as GitHub serves it raw."""
    _, owner, repo = repository()
    return f"https://raw.githubusercontent.com/{owner}/{repo}/{install_ref()}/{path}"


def cell_source() -> str:
    url, _, _ = repository()
    ref = install_ref()
    return f'''\
# Colab setup, the same in every notebook (written by scripts/colab_cells.py: edit that, not this cell).
# On Google Colab it runs {SETUP_SCRIPT} of {install_ref_words()} (its docstring says what it does); elsewhere nothing.
import sys

if "google.colab" in sys.modules:
    import runpy, urllib.request
    COURSE, RELEASE = "{url}", "{ref}"
    url = "{raw_url(SETUP_SCRIPT)}"
    setup = runpy.run_path(urllib.request.urlretrieve(url, f"{COLAB_ROOT}/colab_setup-{{RELEASE}}.py")[0])["setup"]
    setup(COURSE, RELEASE, small_gpu_mib={small_profile_min_gpu_mib()})
else:
    print("Not on Colab: nothing to install (this is the course's own environment).")'''


def small_profile_min_gpu_mib() -> int:
    """The GPU memory the `small` profile needs, in MiB (nvidia-smi's unit), rounded up."""
    return -(-small_profile_min_gpu_gb() * 1000**3 // 2**20)


def notebooks() -> list[Path]:
    """Every lesson and every solution notebook: each opens on Colab from its badge."""
    return notebook_files.lessons(NOTEBOOK_DIR) + notebook_files.solutions(NOTEBOOK_DIR)


def lessons() -> list[Path]:
    return notebook_files.lessons(NOTEBOOK_DIR)


def setup_cell_index(notebook: dict) -> int | None:
    """The Colab setup cell: the one with its id, else a first code cell that already deals with Colab."""
    cells = notebook["cells"]
    for index, cell in enumerate(cells):
        if cell.get("id") == CELL_ID:
            return index
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            return index if "google.colab" in notebook_files.source(cell) else None
    return None


def code_cell(text: str, cell_id: str) -> dict:
    cell = {"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": {}, "outputs": [], "source": []}
    notebook_files.set_source(cell, text)
    return cell


def problems(notebook: dict, path: Path) -> list[str]:
    """What differs from the generated parts (empty when the notebook is up to date)."""
    found = []
    cells = notebook["cells"]
    if not cells or cells[0]["cell_type"] != "markdown":
        return ["the first cell must be markdown (the title)"]
    if notebook_files.source(cells[0]).split("\n")[0] != badge(path):
        found.append("the first line of the first cell is not the generated badge")
    setup = [i for i, cell in enumerate(cells) if cell.get("id") == CELL_ID]
    first_code = next((i for i, cell in enumerate(cells) if cell["cell_type"] == "code"), None)
    if len(setup) != 1:
        found.append(f"{len(setup)} cells with the id {CELL_ID!r}, expected 1")
    elif setup[0] != first_code:
        found.append("the Colab setup cell is not the first code cell")
    elif notebook_files.source(cells[setup[0]]) != cell_source():
        found.append("the Colab setup cell differs from the generated one")
    return found


def apply(notebook: dict, path: Path) -> dict:
    """Put the badge and the setup cell into a notebook (its JSON as a dict), in place; returns it."""
    cells = notebook["cells"]
    first = cells[0]
    if first["cell_type"] != "markdown":
        raise SystemExit(f"{path.name}: the first cell must be markdown (the title)")
    lines = notebook_files.source(first).split("\n")
    if lines and BADGE.match(lines[0]):
        lines = lines[2:] if len(lines) > 1 and not lines[1].strip() else lines[1:]
    notebook_files.set_source(first, "\n".join([badge(path), ""] + lines))
    index = setup_cell_index(notebook)
    if index is None:
        cells.insert(1, code_cell(cell_source(), CELL_ID))
    elif notebook_files.source(cells[index]) != cell_source() or cells[index].get("id") != CELL_ID:
        cells[index] = code_cell(cell_source(), CELL_ID)
    return notebook


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in notebooks():
        if args.check:
            if problems(notebook_files.read(path), path):
                stale.append(path)
            continue
        with notebook_files.edit(path) as notebook:  # locked: others may be editing the rest of it
            if problems(notebook, path):
                apply(notebook, path)
                stale.append(path)
    current = REQUIREMENTS.read_text(encoding="utf-8") if REQUIREMENTS.is_file() else ""
    if current != requirements_text():
        stale.append(REQUIREMENTS)
        if not args.check:
            REQUIREMENTS.parent.mkdir(exist_ok=True)
            REQUIREMENTS.write_text(requirements_text(), encoding="utf-8")
    for path in stale:
        print(("out of date: " if args.check else "rewrote: ") + str(path.relative_to(ROOT)))
    if not stale:
        print("Everything is up to date.")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
