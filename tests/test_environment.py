"""The environment check: one line per requirement, a fix for every problem, no network, no hang, no GPU needed."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from types import SimpleNamespace

import pytest

import helpers.environment as environment
import helpers.hardware
from helpers.environment import GB, GPU, Check, Hardware

LINE = re.compile(r"^(\[OK\]   |\[WARN\] |\[FAIL\] )\S")


def by_name(checks):
    return {c.name: c for c in checks}


def fake_path(tmp_path, programs: dict[str, str]):
    """A folder holding only the given shell scripts, to put alone on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, body in programs.items():
        script = folder / name
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(0o755)
    return str(folder)


# ----------------------------------------------------------------------------------------------------- the report


def test_report_has_one_line_per_check_and_a_fix_for_every_problem(capsys):
    checks = environment.check_environment()
    names = [c.name for c in checks]
    for expected in ("Python", "grok2-course", "torch", "transformers", "PyTorch build", "GPU", "RAM", "Disk", "git",
                     "git-lfs", "Jupyter kernel", "Profile"):
        assert expected in names
    environment.print_report(checks)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(checks)
    assert all(LINE.match(line) for line in lines), lines
    assert all(c.fix for c in checks if c.status != "OK"), "every problem names its fix"


def test_line_format():
    assert Check("OK", "Python", "3.11.7").line() == "[OK]   Python 3.11.7"
    line = Check("FAIL", "git-lfs", "not found", environment.GIT_LFS_FIX).line()
    assert line.startswith("[FAIL] git-lfs not found — Fix: sudo apt-get install git-lfs (macOS: brew install git-lfs;")
    assert Check("OK", "x", "y", fix="ignored when OK").line() == "[OK]   x y"
    with pytest.raises(ValueError):
        Check("MAYBE", "x", "y")


def test_python_version_line():
    check = environment.check_python()
    assert check.status == "OK" and check.detail == ".".join(map(str, sys.version_info[:3]))


def test_the_check_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the environment check opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert environment.check_environment()


def test_a_broken_check_becomes_a_warning_not_a_crash(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(environment, "check_git", broken)
    checks = by_name(environment.check_environment())
    assert checks["git"].status == "WARN" and "boom" in checks["git"].detail and checks["git"].fix


# ------------------------------------------------------------------------------------------------- git and git-lfs


@pytest.mark.skipif(os.name == "nt", reason="PATH shell scripts")
def test_missing_git_lfs_via_path(tmp_path, monkeypatch):
    """Only git on PATH (git finds the git-lfs program through PATH): lesson 01's requirement fails with its fix."""
    real_git = shutil.which("git")
    if real_git:
        path = fake_path(tmp_path, {"git": f'exec "{real_git}" "$@"'})
    else:  # no git here at all: a stand-in that knows --version and nothing else
        path = fake_path(tmp_path, {"git": '[ "$1" = --version ] && { echo "git version 2.0.0"; exit 0; }\n'
                                           "echo \"git: '$1' is not a git command.\" >&2; exit 1"})
    monkeypatch.setenv("PATH", path)
    checks = by_name(environment.check_git())
    assert checks["git"].status == "OK"
    lfs = checks["git-lfs"]
    assert lfs.status == "FAIL" and lfs.detail == "not found"
    for platform in ("sudo apt-get install git-lfs", "brew install git-lfs", "Git for Windows", "Colab", "git lfs install"):
        assert platform in lfs.fix
    assert " — Fix: " in lfs.line()


@pytest.mark.skipif(os.name == "nt", reason="PATH shell scripts")
def test_missing_git_fails_both_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_path(tmp_path, {}))
    checks = by_name(environment.check_git())
    assert checks["git"].status == checks["git-lfs"].status == "FAIL"


@pytest.mark.skipif(os.name == "nt", reason="PATH shell scripts")
def test_a_program_that_hangs_does_not_hang_the_check(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_path(tmp_path, {"git": "sleep 30"}))
    monkeypatch.setattr(environment, "PROGRAM_TIMEOUT_S", 1)
    start = time.monotonic()
    checks = by_name(environment.check_git())
    assert time.monotonic() - start < 10
    assert checks["git"].status == "FAIL"


@pytest.mark.skipif(shutil.which("git") is None or environment._first_line_of(["git", "lfs", "version"]) is None,
                    reason="git-lfs is not installed here")
def test_git_lfs_version_when_installed():
    lfs = by_name(environment.check_git())["git-lfs"]
    assert lfs.status == "OK" and re.match(r"\d+\.\d+", lfs.detail)


# ---------------------------------------------------------------------------------------------------- the pins


def test_pin_mismatch_and_missing_package(monkeypatch):
    monkeypatch.setattr(environment, "installed_requirements", lambda: [
        "transformers==0.0.1", "no-such-package-xyz==1.0", 'pytest==0.0.1; extra == "test"'])
    checks = by_name(environment.check_packages())
    assert checks["transformers"].status == "WARN"
    assert "expected 0.0.1" in checks["transformers"].detail
    assert checks["transformers"].fix == "pip install transformers==0.0.1"
    assert checks["no-such-package-xyz"].status == "FAIL" and "course.sh" in checks["no-such-package-xyz"].fix
    assert "pytest" not in checks, "test extras are not required to run the lessons"


def test_stale_install_is_reported(monkeypatch):
    monkeypatch.setattr(environment, "installed_requirements", lambda: ["transformers==0.0.1"])
    check = environment.check_course_install()
    assert check.status == "WARN" and "older pyproject.toml" in check.detail


def fake_distribution(location, url=None, requires=("torch==2.13.0",)):
    direct_url = json.dumps({"url": url, "dir_info": {"editable": True}}) if url else None
    return SimpleNamespace(version="0.1.0", requires=list(requires), locate_file=lambda name: location,
                           read_text=lambda name: direct_url if name == "direct_url.json" else None)


def test_the_egg_info_left_in_the_course_folder_is_not_an_install(monkeypatch):
    monkeypatch.setattr(environment.importlib.metadata, "distributions",
                        lambda **kwargs: [fake_distribution(environment.REPO_ROOT)])
    assert environment.installed_requirements() is None
    assert environment.check_course_install().status == "WARN"


def test_an_install_from_another_folder_is_reported(monkeypatch, tmp_path):
    other = fake_distribution(tmp_path / "site-packages", url=(tmp_path / "old-checkout").as_uri())
    monkeypatch.setattr(environment.importlib.metadata, "distributions", lambda **kwargs: [other])
    check = environment.check_course_install()
    assert check.status == "WARN" and "another folder" in check.detail and "old-checkout" in check.detail


def test_pins_come_from_pyproject_when_the_course_is_not_installed(monkeypatch):
    monkeypatch.setattr(environment, "installed_requirements", lambda: None)
    pins = environment.pinned_requirements()
    assert pins["torch"] == "2.13.0" and "pytest" not in pins
    assert environment.check_course_install().status == "WARN"


def test_pyproject_is_readable_without_tomllib(monkeypatch):
    expected = environment.pyproject_requirements()
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` now raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "tomli", None)
    assert environment.pyproject_requirements() == expected


def test_installed_torch_local_version_matches_its_pin(monkeypatch):
    monkeypatch.setattr(environment, "installed_requirements", lambda: ["torch==2.13.0"])
    monkeypatch.setattr(environment.importlib.metadata, "version", lambda name: "2.13.0+cu128")
    assert environment.check_packages()[0].status == "OK"


# ---------------------------------------------------------------------------------------------------- hardware


def test_hardware_summary_on_this_machine():
    hardware = environment.hardware_summary()
    assert hardware.device in ("cpu", "cuda", "mps")
    assert hardware.ram_total_bytes >= hardware.ram_available_bytes > 0
    assert hardware.disk_free_bytes > 0
    assert all(g.total_bytes >= g.free_bytes >= 0 for g in hardware.gpus)
    assert (hardware.device == "cuda") == bool(hardware.gpus)


def test_hardware_summary_without_torch(monkeypatch):
    monkeypatch.setattr(helpers.hardware, "torch_or_none", lambda: None)
    hardware = environment.hardware_summary()
    assert hardware.device == "cpu" and hardware.gpus == []
    assert by_name(environment.check_environment())["PyTorch build"].status == "FAIL"


def test_hardware_summary_reads_every_cuda_gpu(monkeypatch):
    torch = pytest.importorskip("torch")
    cards = [("Tesla T4", 15 * GB, 14 * GB, (7, 5)), ("NVIDIA H100 80GB HBM3", 80 * GB, 79 * GB, (9, 0))]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cards))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(
        name=cards[i][0], total_memory=cards[i][1], major=cards[i][3][0], minor=cards[i][3][1]))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (cards[i][2], cards[i][1]))
    hardware = environment.hardware_summary()
    assert hardware.device == "cuda"
    assert [(g.name, g.total_bytes, g.free_bytes, g.capability) for g in hardware.gpus] == cards
    assert [g.supports_bf16 for g in hardware.gpus] == [False, True]


def test_compute_dtype_follows_the_bf16_rule(monkeypatch):
    torch = pytest.importorskip("torch")
    capability = {"now": (7, 5)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["now"])
    assert helpers.hardware.compute_dtype("cuda") == torch.float16  # a T4: no bf16
    capability["now"] = (8, 0)
    assert helpers.hardware.compute_dtype("cuda:0") == torch.bfloat16  # an A100
    assert helpers.hardware.compute_dtype("cuda", bf16=False) == torch.float16  # known already: the GPU is not asked
    assert helpers.hardware.compute_dtype("mps") == torch.float16
    assert helpers.hardware.compute_dtype("cpu") == helpers.hardware.compute_dtype(torch.device("cpu")) == torch.float32


def test_device_kind_reads_no_gpu_properties_and_agrees_with_the_summary(monkeypatch):
    torch = pytest.importorskip("torch")
    assert helpers.hardware.device_kind() == environment.hardware_summary().device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: pytest.fail("read a GPU's properties"))
    assert helpers.hardware.device_kind() == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # CUDA built in, no GPU visible
    assert helpers.hardware.device_kind() in ("cpu", "mps")
    monkeypatch.setattr(helpers.hardware, "torch_or_none", lambda: None)
    assert helpers.hardware.device_kind() == "cpu"


def test_gpu_lines_explain_bf16():
    t4 = GPU(0, "Tesla T4", 15 * GB, 14 * GB, (7, 5))
    h100 = GPU(1, "NVIDIA H100 80GB HBM3", 80 * GB, 79 * GB, (9, 0))
    lines = environment.check_gpus(Hardware("cuda", [t4, h100], 64 * GB, 60 * GB, 500 * GB), "small")
    assert lines[0].status == "WARN" and "Tesla T4" in lines[0].detail and "7.5" in lines[0].detail
    assert "fp16" in lines[0].detail and "8.0" in lines[0].detail
    assert lines[1].status == "OK" and "14.0 of 15.0" in lines[0].detail and "bf16 OK" in lines[1].detail


def test_no_gpu_is_fine_for_tiny_and_a_warning_for_small(monkeypatch):
    cpu = Hardware("cpu", [], 16 * GB, 8 * GB, 100 * GB)
    monkeypatch.setattr(environment.shutil, "which", lambda name: None)  # no nvidia-smi either
    assert environment.check_gpus(cpu, "tiny")[0].status == "OK"
    small = environment.check_gpus(cpu, "small")[0]
    assert small.status == "WARN" and "Colab" in small.fix


def test_profile_against_the_hardware():
    cpu = Hardware("cpu", [], 16 * GB, 8 * GB, 100 * GB)
    t4 = Hardware("cuda", [GPU(0, "Tesla T4", 15 * GB, 14 * GB, (7, 5))], 12 * GB, 10 * GB, 80 * GB)
    node = Hardware("cuda", [GPU(i, "H100", 80 * GB, 79 * GB, (9, 0)) for i in range(8)], 2000 * GB, 1900 * GB, 10**13)
    assert environment.check_profile(cpu, "tiny")[0].status == "OK"
    assert environment.check_profile(cpu, "small")[0].status == "WARN"
    assert environment.check_profile(t4, "small")[0].status == "OK"
    assert environment.check_profile(t4, "grok-2")[0].status == "WARN"
    assert environment.check_profile(node, "grok-2")[0].status == "OK"
    unknown, fallback = environment.check_profile(cpu, "grok-3")
    assert unknown.status == "FAIL" and "tiny" in unknown.fix and fallback == "tiny"


def test_disk_need_follows_the_profile():
    hardware = Hardware("cpu", [], 16 * GB, 8 * GB, 50 * GB)
    assert environment.check_disk(hardware, "tiny").status == "OK"
    grok = environment.check_disk(hardware, "grok-2")
    assert grok.status == "WARN" and "GROK2_COURSE_WORKSPACE" in grok.fix


# ------------------------------------------------------------------------------------------------ the kernel


def test_outside_a_kernel_says_so():
    check = environment.check_kernel()
    assert check.status == "OK" and "not running in a notebook kernel" in check.detail


def test_kernel_from_another_environment_is_a_warning(tmp_path, monkeypatch):
    venv = tmp_path / ".venv"
    venv.mkdir()
    monkeypatch.setattr(environment, "COURSE_VENV", venv)
    monkeypatch.setattr(environment, "_in_kernel", lambda: True)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    wrong = environment.check_kernel()
    assert wrong.status == "WARN" and "grok2-course" in wrong.fix
    monkeypatch.setattr(sys, "prefix", str(venv))
    assert environment.check_kernel().status == "OK"
    monkeypatch.setattr(environment, "COURSE_VENV", tmp_path / "no-venv")  # conda / Colab: no .venv to compare with
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    assert environment.check_kernel().status == "OK"
