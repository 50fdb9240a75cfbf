"""What this machine is: one [OK] / [WARN] / [FAIL] line per requirement, each problem with its fix.

    from helpers.environment import check_environment, print_report
    print_report(check_environment())          # or: python -m helpers.environment [profile]

Rules this module keeps:
- no network, ever (the hub's reachability is not checked: lesson 01 deals with downloads);
- never hangs: every external program runs with a short timeout;
- works with no GPU, no torch and no psutil: a check that cannot run says so instead of crashing.

The machine itself (GPUs, RAM, disk, bf16 support) is read by `helpers.hardware`, which `load_model` also uses to
choose dtype and placement; this module judges what it reads.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import hardware as _hardware
from .hardware import BF16_MIN_CAPABILITY, GPU, Hardware, hardware_summary  # noqa: F401  (the setup check's names)
from .paths import REPO_ROOT, workspace_dir
from .units import GB

DISTRIBUTION = "grok2-course"
KERNEL_NAME = "grok2-course"
MIN_PYTHON = (3, 10)
PROGRAM_TIMEOUT_S = 10
COURSE_VENV = REPO_ROOT / ".venv"

# What each profile needs, in words and numbers (the planner in helpers.memory has the exact figures).
PROFILE_NEEDS = {
    # profile: (free disk at the workspace, minimum GPU memory per GPU, GPUs)
    "tiny": (1 * GB, 0, 0),
    "small": (15 * GB, 12 * GB, 1),  # ~6.6 GB of fp16 weights + download cache, KV cache, LoRA training
    "grok-2": (600 * GB, 40 * GB, 8),  # ~500 GB download; the official path is 8 GPUs with > 40 GB (FP8)
}

INSTALL_FIX = "run `bash scripts/course.sh lab` (or `pip install -e .` in the course folder, in the course's environment)"
GIT_LFS_FIX = (
    "sudo apt-get install git-lfs (macOS: brew install git-lfs; Windows: bundled with Git for Windows; "
    "Colab: !apt-get -qq install git-lfs), then git lfs install"
)


@dataclass(frozen=True)
class Check:
    """One requirement: its status ("OK", "WARN" or "FAIL"), what was found, and what to do if it is not OK."""

    status: str
    name: str
    detail: str
    fix: str = ""

    def __post_init__(self):
        if self.status not in ("OK", "WARN", "FAIL"):
            raise ValueError(f"status must be OK, WARN or FAIL, not {self.status!r}")

    def line(self) -> str:
        text = f"[{self.status}]".ljust(7) + f"{self.name} {self.detail}".rstrip()
        return text + (f" — Fix: {self.fix}" if self.fix and self.status != "OK" else "")


# The machine itself (GPUs, RAM, disk) is read by helpers.hardware; the checks below judge it.


# ---------------------------------------------------------------------------------------------------- the pins


def _pins_from(requirements: list[str]) -> dict[str, str]:
    """{name: version} for the `name==version` requirements that are not behind an extra."""
    pins = {}
    for requirement in requirements:
        if "extra ==" in requirement.replace('"', "").replace("'", ""):
            continue
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;,]+)", requirement)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def pyproject_requirements(path: Path = REPO_ROOT / "pyproject.toml", extras: bool = False) -> list[str]:
    """`[project] dependencies` of pyproject.toml, then with `extras` every list of `[project.optional-dependencies]`
    in the file's order (tomllib; tomli on Python 3.10; else a strict minimal parse)."""
    text = path.read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            tomllib = None
    if tomllib is not None:
        project = tomllib.loads(text)["project"]
        groups = project.get("optional-dependencies", {}).values() if extras else ()
        return list(project["dependencies"]) + [requirement for group in groups for requirement in group]
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", project, re.S | re.M)
    found = re.findall(r"\"([^\"]+)\"", block.group(1)) if block else []
    if extras and "\n[project.optional-dependencies]" in text:
        section = text.split("\n[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
        found += re.findall(r"\"([^\"]+)\"", re.sub(r"(?m)#.*$", "", section))
    return found


def _installed_distribution():
    """The course's installed metadata in this Python, or None. The `grok2_course.egg-info` folder that a build leaves
    in the course folder does not count: it is found only because the course folder is on sys.path."""
    for dist in importlib.metadata.distributions(name=DISTRIBUTION):
        try:
            where = Path(str(dist.locate_file(""))).resolve()
        except (OSError, TypeError, ValueError):
            continue
        if where != REPO_ROOT.resolve():
            return dist
    return None


def _installed_from(dist) -> Path | None:
    """The folder an installed course was installed from (PEP 610 direct_url.json), if recorded."""
    try:
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    except (ValueError, AttributeError):
        return None
    if not url.startswith("file://"):
        return None
    return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))


def installed_requirements() -> list[str] | None:
    """Requires-Dist of the installed course (None when it is not installed, e.g. running from a plain checkout)."""
    dist = _installed_distribution()
    return None if dist is None else list(dist.requires or [])


def pinned_requirements(requirements: list[str] | None = None) -> dict[str, str]:
    """{package: pinned version} of `requirements` (requirement strings, in their order), by default the installed
    course's metadata, else pyproject.toml's dependencies. Requirements behind an extra (`; extra == "test"`) are left
    out: `pinned_requirements(pyproject_requirements(extras=True))` gives every pin of pyproject.toml, extras included."""
    if requirements is None:
        installed = installed_requirements()
        requirements = installed if installed is not None else pyproject_requirements()
    return _pins_from(requirements)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------------- the checks


def check_python() -> Check:
    version = platform.python_version()
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("OK", "Python", version)
    return Check("FAIL", "Python", f"{version} is too old (the course needs 3.10 or newer)",
                 "install Python 3.10+ (python.org, pyenv, or `conda env create -f environment.yml`)")


def check_course_install() -> Check:
    """Is the course installed here, and from the pyproject.toml in this folder (not an older copy of it)?"""
    installed = installed_requirements()
    if installed is None:
        return Check("WARN", "grok2-course", "not installed in this Python (pins read from pyproject.toml)", INSTALL_FIX)
    dist = _installed_distribution()
    version = dist.version if dist is not None else "?"
    source = _installed_from(dist) if dist is not None else None
    if source is not None and source.resolve() != REPO_ROOT.resolve():
        return Check("WARN", "grok2-course", f"{version} is installed from another folder ({source}), not {REPO_ROOT}",
                     INSTALL_FIX)
    try:
        current = _pins_from(pyproject_requirements())
    except (OSError, KeyError, IndexError, ValueError):
        return Check("OK", "grok2-course", version)
    if _pins_from(installed) != current:
        return Check("WARN", "grok2-course", f"{version} was installed from an older pyproject.toml (the pins changed)",
                     INSTALL_FIX)
    return Check("OK", "grok2-course", f"{version} ({REPO_ROOT})")


def check_packages() -> list[Check]:
    """Each pinned package installed, at the pinned version."""
    checks = []
    for name, wanted in pinned_requirements().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check("FAIL", name, f"not installed (course pins {wanted})", INSTALL_FIX))
            continue
        if installed.split("+")[0] == wanted:  # torch reports e.g. 2.13.0+cpu or 2.13.0+cu128
            checks.append(Check("OK", name, installed))
        else:
            checks.append(Check("WARN", name, f"{installed} installed, expected {wanted} (the course's pin; lesson output may differ)",
                                f"pip install {_canonical(name)}=={wanted}"))
    return checks


def check_torch_build() -> Check:
    torch = _hardware.torch_or_none()
    if torch is None:
        return Check("FAIL", "PyTorch build", "torch is not importable", INSTALL_FIX)
    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda} build"
    elif getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip} build"
    elif sys.platform == "darwin":
        build = "macOS build (CPU + MPS)"
    else:
        build = "CPU-only build"
    return Check("OK", "PyTorch build", f"{torch.__version__} ({build})")


def check_gpus(hardware: Hardware, profile: str) -> list[Check]:
    """One line per CUDA GPU: name, free/total memory, compute capability and what it means for bf16."""
    if hardware.gpus:
        checks = []
        for gpu in hardware.gpus:
            detail = (f"{gpu.index} {gpu.name}: {gpu.free_bytes / GB:.1f} of {gpu.total_bytes / GB:.1f} GB free, "
                      f"compute capability {gpu.capability[0]}.{gpu.capability[1]}")
            if gpu.supports_bf16:
                checks.append(Check("OK", "GPU", detail + " (bf16 OK)"))
            else:
                checks.append(Check("WARN", "GPU", detail + " - bf16 needs 8.0+, so the course uses fp16 here",
                                    "nothing to do: load_model picks fp16 on this GPU (a T4 is 7.5)"))
        return checks
    torch = _hardware.torch_or_none()
    needs_gpu = PROFILE_NEEDS.get(profile, (0, 0, 0))[2] > 0
    status = "WARN" if needs_gpu else "OK"
    if torch is not None and not torch.version.cuda and shutil.which("nvidia-smi"):
        return [Check("WARN", "GPU", "an NVIDIA GPU is present but this PyTorch is a CPU-only build",
                      "install the CUDA build of the pinned torch (pytorch.org > Get started, same version)")]
    detail = "no CUDA GPU: lessons run on the CPU" + (" (fine for the tiny profile)" if not needs_gpu else "")
    fix = ("" if not needs_gpu else
           "use a CUDA machine or Colab (Runtime > Change runtime type > T4 GPU), or GROK2_COURSE_PROFILE=tiny")
    return [Check(status, "GPU", detail, fix)]


def check_mps(hardware: Hardware) -> list[Check]:
    """Apple's GPU (Metal, "MPS"). Only reported on macOS."""
    if sys.platform != "darwin":
        return []
    if hardware.device == "mps":
        return [Check("OK", "Apple MPS", "available (bitsandbytes 4/8-bit kernels may be missing: lesson 03)")]
    if platform.machine() == "arm64":
        return [Check("WARN", "Apple MPS", "not available on this Apple Silicon Mac",
                      "use an arm64 (not x86/Rosetta) Python on macOS 12.3+ and the pinned torch")]
    return [Check("OK", "Apple MPS", "not available (Intel Mac): lessons run on the CPU")]


def check_ram(hardware: Hardware) -> Check:
    total, available = hardware.ram_total_bytes, hardware.ram_available_bytes
    if total == 0:
        return Check("WARN", "RAM", "could not be measured", INSTALL_FIX + " (psutil is one of the pins)")
    detail = f"{available / GB:.1f} of {total / GB:.1f} GB available"
    if available < 2 * GB:
        return Check("WARN", "RAM", detail + " (little left)", "close other programs or notebooks (Kernel > Shut Down)")
    return Check("OK", "RAM", detail)


def check_disk(hardware: Hardware, profile: str) -> Check:
    where = workspace_dir()
    free = hardware.disk_free_bytes
    need = PROFILE_NEEDS.get(profile, PROFILE_NEEDS["tiny"])[0]
    detail = f"{free / GB:.1f} GB free at {where}"
    if free < need:
        return Check("WARN", "Disk", f"{detail}; the {profile} profile needs about {need / GB:.0f} GB",
                     "free space, or set GROK2_COURSE_WORKSPACE to a folder on a bigger disk before starting Jupyter")
    return Check("OK", "Disk", detail)


def _first_line_of(program: list[str]) -> str | None:
    """The first line a program prints, or None if it is missing, fails, or takes longer than a few seconds."""
    if shutil.which(program[0]) is None:
        return None
    try:
        result = subprocess.run(program, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else None


def check_git() -> list[Check]:
    git = _first_line_of(["git", "--version"])
    if git is None:
        return [Check("FAIL", "git", "not found", "install git (git-scm.com; Debian/Ubuntu: sudo apt-get install git)"),
                Check("FAIL", "git-lfs", "not found", GIT_LFS_FIX)]
    lfs = _first_line_of(["git", "lfs", "version"])
    return [Check("OK", "git", git.removeprefix("git version ").strip()),
            Check("OK", "git-lfs", lfs.replace("git-lfs/", "", 1)) if lfs else Check("FAIL", "git-lfs", "not found", GIT_LFS_FIX)]


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - any IPython trouble means "not a kernel we can inspect"
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _kernel_registered() -> bool | None:
    """Whether a Jupyter kernel named grok2-course is installed (None if jupyter_client is missing)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
    except ImportError:
        return None
    try:
        return KERNEL_NAME in KernelSpecManager().find_kernel_specs()
    except Exception:  # noqa: BLE001 - a broken kernelspec folder must not break the check
        return None


def check_kernel() -> Check:
    """Inside a notebook: does the kernel run the course's environment? Outside: say so."""
    here = Path(sys.prefix).resolve()
    in_venv = COURSE_VENV.exists() and here == COURSE_VENV.resolve()
    if not _in_kernel():
        where = "the course's .venv" if in_venv else sys.executable
        return Check("OK", "Jupyter kernel", f"not running in a notebook kernel (Python: {where})")
    if in_venv:
        registered = _kernel_registered()
        note = "" if registered is not False else f"; the '{KERNEL_NAME}' kernel is not registered"
        return Check("OK", "Jupyter kernel", f"runs the course's .venv ({sys.executable}){note}")
    if COURSE_VENV.exists():
        return Check("WARN", "Jupyter kernel", f"runs {sys.executable}, not the course's .venv",
                     f"Kernel > Change Kernel > {KERNEL_NAME}, or start JupyterLab with `bash scripts/course.sh lab`")
    # No .venv in the course folder: a conda environment, Colab, or an install of your own. Fine if the pins match.
    return Check("OK", "Jupyter kernel", f"runs {sys.executable} (no course .venv here: conda, Colab or your own env)")


def check_profile(hardware: Hardware, profile_name: str | None) -> tuple[Check, str]:
    """Which profile is active, and whether this machine can run its model."""
    from .errors import CourseError
    from .profiles import get_profile

    try:
        profile = get_profile(profile_name)
    except CourseError as error:
        return Check("FAIL", "Profile", error.problem, error.fix), "tiny"
    name = profile.name
    _, per_gpu, gpus_needed = PROFILE_NEEDS.get(name, (0, 0, 0))
    big_gpus = [g for g in hardware.gpus if g.total_bytes >= per_gpu]
    if gpus_needed == 0 or len(big_gpus) >= gpus_needed:
        return Check("OK", "Profile", f"{name}: {profile.title}; this machine can run it"), name
    if name == "small":
        return Check("WARN", "Profile", f"small: no GPU with >= {per_gpu / GB:.0f} GB here; {profile.title} would run "
                     "on the CPU, slowly (16 GB of RAM)",
                     "use Colab with a T4 GPU, or GROK2_COURSE_PROFILE=tiny"), name
    return Check("WARN", "Profile", f"{name}: {profile.title} needs {gpus_needed} GPUs with > {per_gpu / GB:.0f} GB; this "
                 f"machine has {len(big_gpus)}. The lessons still plan and explain it; loading it is refused",
                 "run the grok-2 profile on an 8-GPU node; here use GROK2_COURSE_PROFILE=tiny or small"), name


def _guarded(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """Run one group of checks; if it breaks, one WARN line instead of a crash."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - the report must always print
        return [Check("WARN", name, f"could not be checked ({type(error).__name__}: {error})",
                      "report this with the full line to the course maintainers")]


def check_environment(profile_name: str | None = None) -> list[Check]:
    """Every check, in reading order. `profile_name` defaults to $GROK2_COURSE_PROFILE, else tiny."""
    try:
        hardware = hardware_summary()
    except Exception:  # noqa: BLE001
        hardware = Hardware(device="cpu")
    try:
        profile_check, profile = check_profile(hardware, profile_name)
    except Exception as error:  # noqa: BLE001
        profile_check, profile = Check("WARN", "Profile", f"could not be checked ({error})", "use GROK2_COURSE_PROFILE=tiny"), "tiny"
    checks = [check_python()]
    checks += _guarded("grok2-course", lambda: [check_course_install()])
    checks += _guarded("packages", check_packages)
    checks += _guarded("PyTorch build", lambda: [check_torch_build()])
    checks += _guarded("GPU", lambda: check_gpus(hardware, profile))
    checks += _guarded("Apple MPS", lambda: check_mps(hardware))
    checks += _guarded("RAM", lambda: [check_ram(hardware)])
    checks += _guarded("Disk", lambda: [check_disk(hardware, profile)])
    checks += _guarded("git", check_git)
    checks += _guarded("Jupyter kernel", lambda: [check_kernel()])
    checks.append(profile_check)
    return checks


def print_report(checks: list[Check]) -> None:
    """One line per check: `[OK]   name detail`, problems followed by `— Fix: ...`."""
    for check in checks:
        print(check.line())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    checks = check_environment(argv[0] if argv else None)
    print_report(checks)
    return 1 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here reads the network anyway
    sys.exit(main())
