"""The suite's own guard (conftest.py): a run that leaves a process behind fails, names it, and kills it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def test_a_run_that_leaves_a_process_behind_fails_and_names_it(tmp_path):
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(
        "import subprocess\n\n"
        "def test_starts_and_forgets():\n"
        "    subprocess.Popen(['sleep', '37'])\n")
    env = {**os.environ, "GROK2_COURSE_LEFTOVER_GRACE_S": "0.5"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout
    assert "left 1 process(es) running (now killed)" in run.stdout and "sleep 37" in run.stdout
    running = [p for p in psutil.process_iter(["cmdline", "status"])
               if p.info["cmdline"] == ["sleep", "37"] and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert not running, "the guard reported the process but did not kill it"


def test_an_orphan_whose_parent_died_is_caught_too(tmp_path):
    """A process whose parent exits (as git does when a killed `pull` leaves it behind) is re-parented; the suite
    adopts such orphans (PR_SET_CHILD_SUBREAPER), so the guard still sees, names and kills it."""
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_orphan.py").write_text(
        "import subprocess, sys\n\n"
        "def test_parent_dies_child_lives():\n"
        "    # the middle process starts `sleep 41` in its own session and exits at once: a classic double fork\n"
        "    subprocess.run([sys.executable, '-c', \"import subprocess; "
        "subprocess.Popen(['sleep', '41'], start_new_session=True)\"], check=True)\n")
    env = {**os.environ, "GROK2_COURSE_LEFTOVER_GRACE_S": "0.5"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout
    assert "sleep 41" in run.stdout
    running = [p for p in psutil.process_iter(["cmdline", "status"])
               if p.info["cmdline"] == ["sleep", "41"] and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert not running, "the guard reported the orphan but did not kill it"
