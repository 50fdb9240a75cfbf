"""scripts/prepare_workshop.sh (and `course.sh workshop`): the offline kit for a workshop room, tested without
downloading anything: a dry run on a temporary folder (the files it writes, the commands it would run), a real
`git bundle` (a few MB) that clones, and the kit's install.sh in its own dry run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from helpers.environment import pinned_requirements, pyproject_requirements
from helpers.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "prepare_workshop.sh"


def kit(*args, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def pins() -> list[str]:
    """Every `name==version` of pyproject.toml, extras included, in its order (what requirements.txt must list)."""
    return [f"{name}=={version}" for name, version in pinned_requirements(pyproject_requirements(extras=True)).items()]


def test_dry_run_writes_the_kit_text_and_downloads_nothing(tmp_path):
    out = tmp_path / "kit"
    result = kit("--dry-run", "--out", str(out), "--python", "3.12", "--platform", "linux-x86_64",
                 "--platform", "macos-arm64", "--platform", "windows-x86_64", "--with-small-model")
    written = sorted(p.name for p in out.iterdir())
    assert written == ["README.txt", "install.sh", "requirements.txt"], written  # no wheelhouse, no bundle
    requirements = [l for l in (out / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert requirements == pins()
    assert any(r.startswith("torch==") for r in requirements) and any(r.startswith("nbval==") for r in requirements)
    assert os.access(out / "install.sh", os.X_OK)
    commands = [l[2:] for l in result.stdout.splitlines() if l.startswith("+ ")]
    downloads = [c for c in commands if " -m pip download " in c]
    assert len(downloads) == 3
    for tag in ("manylinux_2_28_x86_64", "macosx_14_0_arm64", "win_amd64"):
        (line,) = [c for c in downloads if f"--platform {tag}" in c]
        assert "--only-binary=:all:" in line and "--python-version 3.12" in line and "--implementation cp" in line
        assert "--extra-index-url https://download.pytorch.org/whl/cpu" in line  # the CPU torch wheel
        assert f"--dest {out}/wheelhouse" in line and f"-r {out}/requirements.txt" in line
    assert any(re.search(r"git -C \S+ bundle create \S+/grok2-course\.bundle", c) for c in commands)
    assert "Skipped: HF_HUB_OFFLINE=1" in result.stdout  # the small model only when the hub is reachable
    readme = (out / "README.txt").read_text()
    assert "Python 3.12" in readme and "pip install --no-index --find-links ../wheelhouse" in readme


def test_host_platform_downloads_what_pip_would_install_here(tmp_path):
    result = kit("--dry-run", "--out", str(tmp_path / "kit"))
    (line,) = [l for l in result.stdout.splitlines() if " -m pip download " in l]
    assert "--platform" not in line and "--only-binary" not in line


def test_the_bundle_clones_and_install_sh_installs_offline(tmp_path):
    if not (REPO_ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout")
    if subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("the checkout has no commit yet")
    out = tmp_path / "kit"
    kit("--no-wheels", "--out", str(out))
    bundle = out / "grok2-course.bundle"
    assert bundle.is_file() and not (out / "wheelhouse").exists()
    subprocess.run(["git", "bundle", "verify", str(bundle)], check=True, capture_output=True, cwd=REPO_ROOT)
    clone = tmp_path / "laptop" / "grok2-course"
    subprocess.run(["git", "clone", "-q", str(bundle), str(clone)], check=True, capture_output=True)
    assert (clone / "pyproject.toml").is_file() and (clone / "data" / "tiny-grok-2" / "model.safetensors").is_file()

    shown = subprocess.run(["bash", str(out / "install.sh"), "--dry-run", str(clone)], capture_output=True,
                           text=True, check=True, timeout=60).stdout
    assert "git clone" not in shown  # already cloned: it goes straight to the install
    assert f"PIP_NO_INDEX=1 PIP_FIND_LINKS={out}/wheelhouse bash scripts/course.sh lab" in shown
    fresh = subprocess.run(["bash", str(out / "install.sh"), "--dry-run", str(tmp_path / "other")],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert f"git clone {bundle} {tmp_path / 'other'}" in fresh


def test_wrong_options_are_refused(tmp_path):
    result = kit("--dry-run", "--out", str(tmp_path / "kit"), "--platform", "amiga", check=False)
    assert result.returncode != 0 and "unknown platform amiga" in result.stderr
    result = kit("--dry-run", "--out", str(tmp_path / "kit"), "--python", "three", check=False)
    assert result.returncode != 0 and "--python wants X.Y" in result.stderr


def test_course_sh_has_a_workshop_command():
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "course.sh"), "workshop", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--with-small-model" in result.stdout
