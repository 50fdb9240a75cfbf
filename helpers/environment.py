"""What this machine is: one [OK] / [WARN] / [FAIL] line per requirement, each problem with its fix.

Never touches the network and never hangs: every external program is called with a short timeout.
`hardware_summary()` is the machine-readable part that `load_model` uses to choose dtype and placement.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .paths import REPO_ROOT, workspace_dir

GB = 1000**3
DISTRIBUTION = "grok2-course"
MIN_PYTHON = (3, 10)
MIN_FREE_DISK_BYTES = 5 * GB  # the tiny course needs little; downloads of real models need far more (lesson 01)


@dataclass(frozen=True)
class Check:
    status: str  # "OK", "WARN" or "FAIL"
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status}]".ljust(7) + f"{self.name}: {self.detail}"
        return text + (f" — Fix: {self.fix}" if self.fix and self.status != "OK" else "")


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda", "mps" or "cpu"
    gpus: list[GPU] = field(default_factory=list)
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    disk_free_bytes: int = 0


def hardware_summary() -> Hardware:
    """GPUs with their free memory, RAM, free disk at the workspace."""
    import psutil
    import torch

    gpus = []
    device = "cpu"
    if torch.cuda.is_available():
        device = "cuda"
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            props = torch.cuda.get_device_properties(index)
            gpus.append(GPU(index, props.name, total, free, (props.major, props.minor)))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    memory = psutil.virtual_memory()
    return Hardware(
        device=device,
        gpus=gpus,
        ram_total_bytes=memory.total,
        ram_available_bytes=memory.available,
        disk_free_bytes=shutil.disk_usage(workspace_dir()).free,
    )


# ----------------------------------------------------------------------------------------------------- the checks


def pinned_requirements() -> dict[str, str]:
    """{package: pinned version} from the installed course's metadata, else from pyproject.toml."""
    pins = {}
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        requirements = _requirements_from_pyproject()
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;,]+)", requirement)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def _requirements_from_pyproject() -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("OK", "Python", version)
    return Check("FAIL", "Python", f"{version} is too old", "install Python 3.10 or newer (python.org, pyenv or conda)")


def check_packages() -> list[Check]:
    checks = []
    for name, wanted in pinned_requirements().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check("FAIL", name, f"not installed (pinned {wanted})", "run `pip install -e .` in the course folder"))
            continue
        base = installed.split("+")[0]  # torch reports e.g. 2.13.0+cpu
        if base == wanted:
            checks.append(Check("OK", name, installed))
        else:
            checks.append(
                Check("WARN", name, f"{installed} installed, course pinned {wanted}",
                      f"`pip install {_canonical(name)}=={wanted}` (other versions may change lesson output)")
            )
    return checks


def check_torch_and_gpus() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("FAIL", "PyTorch", "not importable", "run `pip install -e .` in the course folder")]
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
    checks = [Check("OK", "PyTorch build", f"{torch.__version__} ({build})")]
    hardware = hardware_summary()
    if hardware.device == "cuda":
        for gpu in hardware.gpus:
            detail = (f"GPU {gpu.index} {gpu.name}: {gpu.free_bytes / GB:.1f} of {gpu.total_bytes / GB:.1f} GB free, "
                      f"compute capability {gpu.capability[0]}.{gpu.capability[1]}")
            if gpu.capability < (8, 0):
                checks.append(Check("WARN", "GPU", detail + " - no bf16: the course uses fp16 here",
                                    "nothing to do; bf16 needs compute capability 8.0+ (A100, RTX 30xx, H100)"))
            else:
                checks.append(Check("OK", "GPU", detail))
    elif hardware.device == "mps":
        checks.append(Check("OK", "GPU", "Apple MPS available (bitsandbytes kernels may be missing: lesson 03)"))
    else:
        fix = ("for the small and grok-2 profiles use a CUDA machine or Colab (Runtime > Change runtime type > T4 GPU); "
               "the tiny profile needs none")
        if torch.version.cuda is None and shutil.which("nvidia-smi"):
            fix = "an NVIDIA GPU is present but this PyTorch is CPU-only: install a CUDA build of the pinned torch from pytorch.org"
        checks.append(Check("WARN", "GPU", "no CUDA or MPS device: lessons run on the CPU", fix))
    return checks


def check_memory_and_disk() -> list[Check]:
    hardware = hardware_summary()
    checks = [Check("OK", "RAM", f"{hardware.ram_available_bytes / GB:.1f} of {hardware.ram_total_bytes / GB:.1f} GB available")]
    where = workspace_dir()
    free = hardware.disk_free_bytes / GB
    if hardware.disk_free_bytes >= MIN_FREE_DISK_BYTES:
        checks.append(Check("OK", "Disk", f"{free:.1f} GB free at {where}"))
    else:
        checks.append(Check("WARN", "Disk", f"only {free:.1f} GB free at {where}",
                            "free space, or point GROK2_COURSE_WORKSPACE at a bigger disk before starting Jupyter"))
    return checks


def _version_of(program: list[str]) -> str | None:
    try:
        result = subprocess.run(program, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


GIT_LFS_FIX = ("Debian/Ubuntu: `sudo apt-get install git-lfs`; macOS: `brew install git-lfs`; Windows: included in Git for "
               "Windows; Colab: `!apt-get -qq install git-lfs`; then run `git lfs install` once")


def check_git() -> list[Check]:
    checks = []
    git = _version_of(["git", "--version"]) if shutil.which("git") else None
    checks.append(Check("OK", "git", git) if git else Check("FAIL", "git", "not found", "install git (git-scm.com)"))
    lfs = _version_of(["git", "lfs", "version"]) if git else None
    checks.append(Check("OK", "git-lfs", lfs) if lfs else Check("FAIL", "git-lfs", "not found (lesson 01 needs it)", GIT_LFS_FIX))
    return checks


def check_kernel() -> Check:
    """Is this notebook's Python the course's environment (where `helpers` is installed)?"""
    in_kernel = "ipykernel" in sys.modules
    course_python = REPO_ROOT / ".venv" / "bin" / "python"
    where = sys.prefix
    if not in_kernel:
        return Check("OK", "Jupyter kernel", f"not running in a notebook kernel (Python at {where})")
    if course_python.exists() and Path(sys.prefix).resolve() != (REPO_ROOT / ".venv").resolve():
        return Check("WARN", "Jupyter kernel", f"this kernel runs {sys.executable}, not the course's .venv",
                     "Kernel > Change kernel > grok2-course (or start JupyterLab with `bash scripts/course.sh lab`)")
    return Check("OK", "Jupyter kernel", f"running in {where}")


def check_environment() -> list[Check]:
    checks = [check_python(), *check_packages(), *check_torch_and_gpus(), *check_memory_and_disk(), *check_git(), check_kernel()]
    return checks


def print_report(checks: list[Check]) -> None:
    for check in checks:
        print(check.line())


if __name__ == "__main__":
    report = check_environment()
    print_report(report)
    sys.exit(1 if any(c.status == "FAIL" for c in report if c.name not in ("git-lfs",)) else 0)
