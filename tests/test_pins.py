"""One source of truth for versions: pyproject.toml pins everything; environment.yml and the check agree with it."""

from __future__ import annotations

import re

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from helpers.environment import pinned_requirements
from helpers.paths import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
ENVIRONMENT = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())


def all_requirements() -> list[str]:
    project = PYPROJECT["project"]
    return project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]


def test_every_dependency_is_pinned_exactly():
    for requirement in all_requirements():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", requirement), f"not pinned with ==: {requirement}"


def test_torch_pin_is_the_one_release():
    assert "torch==2.13.0" in PYPROJECT["project"]["dependencies"]


def test_environment_yml_agrees_with_pyproject():
    conda = [d for d in ENVIRONMENT["dependencies"] if isinstance(d, str)]
    pip_section = next(d["pip"] for d in ENVIRONMENT["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[test]"], "pip installs the course itself, so versions come from pyproject.toml"
    assert "conda-forge" in ENVIRONMENT["channels"]
    python = next(d for d in conda if d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    low = tuple(map(int, re.search(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups()))
    assert (major, minor) >= low
    pins = {r.split("==")[0].lower(): r.split("==")[1] for r in all_requirements()}
    for dependency in conda:
        name, _, version = dependency.partition("=")
        if version and name.lower() in pins:
            assert version == pins[name.lower()], f"{name} {version} in environment.yml, {pins[name.lower()]} in pyproject"


def test_environment_check_reads_the_same_pins():
    assert pinned_requirements() == {r.split("==")[0]: r.split("==")[1] for r in PYPROJECT["project"]["dependencies"]}
