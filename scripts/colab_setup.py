"""The course's setup on Google Colab: what the first code cell of every lesson runs there.

That cell is a few lines written by scripts/colab_cells.py. On Colab it downloads this file as it is at the course's
release tag and calls `setup(repository, release, small_gpu_mib)`; anywhere else it prints one line and does nothing.
Every step below can run again (a second run, or a run after Runtime > Restart session, does only what is left):

1. The course: cloned at the release tag into /content/<repo>-<tag>, one folder per release. A newer release goes into
   a new folder beside the old one, so nothing is ever deleted. (Before the course's first release the cell passes
   the branch the badges open, `main`, in place of a tag: /content/<repo>-main, cloned once per Colab runtime.) The clone is made in a temporary folder and renamed
   into place once complete: a clone killed half-way never passes for a complete one (its leftover is removed on the
   next run; it is this script's own folder, never yours).
2. The packages: colab/requirements.txt (each at the course's pin; Colab keeps its own torch, jupyterlab and
   ipykernel, see scripts/colab_cells.py), then the course itself, editable and without dependencies. When a package
   this session had already imported changed version, it asks for one restart.
3. `import helpers` in this running kernel (see `make_importable`).
4. Your work: the lessons write downloads, checkpoints and adapters to GROK2_COURSE_WORKSPACE, which is set to
   /content/grok2-workspace (unless you set it yourself): outside every course folder, so a new release never touches
   it. A workspace left inside an older course folder by an earlier setup is kept, and named.
5. The lesson's folder as the working directory, Colab's widget manager (the lessons' ipywidgets need it), and the
   profile: `small` on a GPU with at least `small_gpu_mib` MiB of memory, `tiny` otherwise; one chosen already is kept.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

COLAB_ROOT = Path("/content")  # where Colab keeps a session's files
DISTRIBUTION = "grok2-course"  # pyproject.toml's [project] name (tests/test_colab.py checks that they agree)
PACKAGE = "helpers"
WORKSPACE_ENV = "GROK2_COURSE_WORKSPACE"
PROFILE_ENV = "GROK2_COURSE_PROFILE"
STAMP = ".colab-installed"  # in the course folder: the release whose packages were installed from it


def course_folder(repository: str, release: str, root: Path) -> Path:
    name = repository.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
    return root / f"{name}-{release}"


def clone(repository: str, release: str, course: Path) -> None:
    """The release, cloned into a temporary folder beside `course`, then renamed to it (never into a folder in use)."""
    for leftover in course.parent.glob(f".{course.name}.partial-*"):  # a clone of this release killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    partial = course.parent / f".{course.name}.partial-{os.getpid()}"
    command = ["git", "clone", "--quiet", "--depth", "1", "--branch", release, repository, str(partial)]
    if subprocess.run(command).returncode:
        shutil.rmtree(partial, ignore_errors=True)
        raise SystemExit(f"Could not clone {repository} at {release} (see the lines above): check the network, "
                         "then run this cell again.")
    os.rename(partial, course)


def install(course: Path, release: str) -> None:
    """The pinned packages, then the course (editable, no dependencies); asks for a restart if an imported one changed."""
    requirements = course / "colab" / "requirements.txt"
    for what in (["-r", str(requirements)], ["--no-deps", "-e", str(course)]):
        if subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *what]).returncode:
            raise SystemExit(f"pip could not install {what[-1]} (see the lines above): check the network, then run "
                             "this cell again (what is installed already is kept).")
    (course / STAMP).write_text(release)
    importlib.invalidate_caches()
    pins = dict(line.split("==") for line in requirements.read_text().splitlines() if line[:1].isalnum())
    stale = [name for name, version in pins.items()
             if getattr(sys.modules.get(name.replace("-", "_")), "__version__", version) != version]
    if stale:
        raise SystemExit(f"Installed. {', '.join(stale)} changed while already imported: Runtime > Restart session, "
                         "then run this notebook again from the top.")


def make_importable(course: Path) -> None:
    """Make `import helpers` work in this kernel, which was running before the course was installed.

    `pip install -e` does not put the course on sys.path: it writes a path-configuration (.pth) file into the
    site-packages folder, and Python reads .pth files only when it starts (the `site` module does, once). A kernel
    that was already running never sees the new file. `site.addsitedir(folder)` is the standard library's way to run
    that same start-up step for one folder now: it reads the folder's .pth files, adding their paths to sys.path and
    running their `import` lines (setuptools' editable installs use one that registers an import hook). Lines it has
    already handled are harmless to handle again: paths already on sys.path are skipped, and the import lines that
    pip and setuptools write check whether their hook is installed. The folder is the one that holds the course's
    installed metadata, found with importlib.metadata, so no path is guessed or typed.
    """
    importlib.invalidate_caches()
    try:
        installed = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"The course ({DISTRIBUTION}) is not installed in this Python: delete {course / STAMP} "
                         "and run this cell again.") from None
    site.addsitedir(str(installed.locate_file("")))
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(PACKAGE)
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin is None or course.resolve() not in origin.parents:
        raise SystemExit(f"`import {PACKAGE}` finds {origin or 'nothing'}, not the course in {course} (an earlier "
                         "release is still loaded in this session): Runtime > Restart session, then run this "
                         "notebook again from the top.")


def use_workspace(repository: str, root: Path) -> Path:
    """GROK2_COURSE_WORKSPACE, outside every course folder (kept if already set); names a workspace of an older setup."""
    workspace = Path(os.environ.setdefault(WORKSPACE_ENV, str(root / "grok2-workspace")))
    name = repository.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
    older = root / name / "workspace"  # where earlier setup cells kept it: inside the course folder
    if older.is_dir() and any(older.iterdir()) and older.resolve() != workspace.resolve():
        print(f"Your work from an earlier setup is still in {older} (kept as it is). The lessons now use {workspace}; "
              f"to go on with the older one, run os.environ['{WORKSPACE_ENV}'] = '{older}' before this cell.")
    return workspace


def gpu_memory_mib() -> int:
    """The largest GPU's memory in MiB (nvidia-smi, so torch is not imported here); 0 without a GPU."""
    query = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    try:
        return max(int(x) for x in subprocess.run(query, capture_output=True, text=True).stdout.split())
    except (OSError, ValueError):  # no nvidia-smi, or no GPU listed
        return 0


def torch_pin(course: Path) -> str:
    """The torch version pyproject.toml pins (Colab keeps its own build: the summary shows both)."""
    try:
        import tomllib  # Python 3.11+, as on Colab
    except ModuleNotFoundError:
        return "unknown"
    for requirement in tomllib.loads((course / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        if name.strip() == "torch":
            return version.strip()
    return "unknown"


def setup(repository: str, release: str, small_gpu_mib: int, root: Path | str = COLAB_ROOT) -> Path:
    """Everything the module docstring lists, in that order; returns the course folder."""
    root = Path(root)
    course = course_folder(repository, release, root)
    if not course.is_dir():
        clone(repository, release, course)
    stamp = course / STAMP
    if not stamp.is_file() or stamp.read_text() != release:
        install(course, release)
    make_importable(course)
    workspace = use_workspace(repository, root)
    os.chdir(course / "notebooks")
    from google.colab import output

    output.enable_custom_widget_manager()
    gpu_mib = gpu_memory_mib()
    profile = os.environ.setdefault(PROFILE_ENV, "small" if gpu_mib >= small_gpu_mib else "tiny")
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = "not installed"
    print(f"Colab: course {release} in {course}; your work in {workspace}; GPU memory {gpu_mib} MiB; profile "
          f"{profile}; torch {torch} (Colab's own build; the course pins {torch_pin(course)})")
    return course
