"""One source of truth for versions: pyproject.toml pins everything; environment.yml, the notebooks' install cells and
the environment check agree with it."""

from __future__ import annotations

import json
import re

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from helpers.environment import pinned_requirements, pyproject_requirements
from helpers.paths import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
ENVIRONMENT = yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))
PINNED = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)==(?P<version>[0-9][A-Za-z0-9_.+\-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def all_requirements() -> list[str]:
    return pyproject_requirements(extras=True)


def pins() -> dict[str, str]:
    return {canonical(name): version for name, version in pinned_requirements(all_requirements()).items()}


def conda_section() -> list[str]:
    return [d for d in ENVIRONMENT["dependencies"] if isinstance(d, str)]


def pip_section() -> list[str]:
    sections = [d["pip"] for d in ENVIRONMENT["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml has exactly one pip: section"
    return sections[0]


def test_every_dependency_is_pinned_exactly():
    for requirement in all_requirements():
        assert PINNED.fullmatch(requirement), f"not pinned with ==: {requirement!r} (pin every dependency exactly)"
    names = [canonical(PINNED.fullmatch(r)["name"]) for r in all_requirements()]
    assert len(names) == len(set(names)), "a package is pinned twice"


def test_torch_is_pinned_to_the_cpu_wheel_release():
    # A looser torch pin makes pip download GBs of CUDA wheels on a CPU machine.
    assert "torch==2.13.0" in PYPROJECT["project"]["dependencies"]


def test_environment_yml_installs_the_course_from_pyproject():
    assert ENVIRONMENT["channels"] == ["conda-forge"]
    assert pip_section() == ["-e .[test]"], "pip installs the course itself, so every version comes from pyproject.toml"
    assert "pip" in conda_section()


def test_environment_yml_python_satisfies_requires_python():
    python = [d for d in conda_section() if re.match(r"python\s*[=<>]", d)]
    assert len(python) == 1, "environment.yml names one python version"
    version = tuple(int(x) for x in re.search(r"(\d+)\.(\d+)", python[0]).groups())
    low = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups())
    assert version >= low, f"environment.yml's {python[0]} is older than requires-python {low}"


def test_versioned_conda_packages_equal_the_pins():
    for dependency in conda_section():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==?|>=|<=|~=|>|<)\s*(\S+)", dependency)
        if not match or match.group(1) == "python":
            continue
        name, version = canonical(match.group(1)), match.group(2)
        assert name in pins(), f"{dependency}: versioned in environment.yml but not pinned in pyproject.toml"
        assert version == pins()[name], f"{dependency} in environment.yml, {name}=={pins()[name]} in pyproject.toml"


def test_notebook_install_cells_use_the_pins():
    """Install cells (the Colab cell) install the course itself; any version they name must be the pin."""
    for path in sorted((REPO_ROOT / "notebooks").rglob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            installs = [line for line in "".join(cell["source"]).splitlines() if re.search(r"pip.*install", line)]
            for match in PINNED.finditer("\n".join(installs)):
                name = canonical(match["name"])
                assert pins().get(name) == match["version"], f"{path.name}: {match[0]} but pyproject pins {pins().get(name)}"


def test_environment_check_reads_the_same_pins():
    runtime = {canonical(m["name"]): m["version"] for m in map(PINNED.fullmatch, PYPROJECT["project"]["dependencies"])}
    assert {canonical(k): v for k, v in pinned_requirements().items()} == runtime, (
        "the installed course is older than pyproject.toml: run `bash scripts/course.sh test` (it reinstalls)")
    assert pyproject_requirements() == PYPROJECT["project"]["dependencies"]
