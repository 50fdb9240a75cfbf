"""The environment check: one line per requirement, a fix for every problem, never the network."""

from __future__ import annotations

import helpers.environment as environment


def test_report_lines_and_statuses(capsys):
    checks = environment.check_environment()
    assert {c.status for c in checks} <= {"OK", "WARN", "FAIL"}
    names = [c.name for c in checks]
    for expected in ("Python", "torch", "transformers", "PyTorch build", "GPU", "RAM", "Disk", "git", "git-lfs", "Jupyter kernel"):
        assert expected in names
    environment.print_report(checks)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(checks) and all(line.startswith(("[OK]", "[WARN]", "[FAIL]")) for line in lines)
    assert all(c.fix for c in checks if c.status != "OK"), "every problem names its fix"


def test_missing_git_lfs_names_the_fix_per_platform(monkeypatch):
    real = environment._version_of
    monkeypatch.setattr(environment, "_version_of", lambda program: None if "lfs" in program else real(program))
    lfs = next(c for c in environment.check_git() if c.name == "git-lfs")
    assert lfs.status == "FAIL"
    for platform in ("apt-get install git-lfs", "brew install git-lfs", "Git for Windows", "Colab"):
        assert platform in lfs.fix
    assert "Fix:" in lfs.line()


def test_pin_mismatch_is_a_warning_with_the_command(monkeypatch):
    monkeypatch.setattr(environment, "pinned_requirements", lambda: {"transformers": "0.0.1", "no-such-package-xyz": "1.0"})
    checks = {c.name: c for c in environment.check_packages()}
    assert checks["transformers"].status == "WARN" and "pip install transformers==0.0.1" in checks["transformers"].fix
    assert checks["no-such-package-xyz"].status == "FAIL"


def test_hardware_summary_on_this_machine():
    hardware = environment.hardware_summary()
    assert hardware.device in ("cpu", "cuda", "mps")
    assert hardware.ram_total_bytes >= hardware.ram_available_bytes > 0 and hardware.disk_free_bytes > 0
    assert all(g.total_bytes >= g.free_bytes for g in hardware.gpus)
