"""The suite's own guard (conftest.py): a run that leaves a process behind fails, names it, and kills it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("parallel", [[], ["-p", "xdist.plugin", "-n", "2"]], ids=["serial", "two-workers"])
def test_a_run_that_leaves_a_process_behind_fails_and_names_it(tmp_path, parallel):
    """Two ways to leave a process behind: a child the test forgets, and an orphan whose parent exited first (as git
    does when a killed `pull` leaves it). The suite adopts orphans (PR_SET_CHILD_SUBREAPER), so the guard sees both.
    With pytest-xdist (what course.sh runs) a worker's own exit status does not decide the run: the worker hands what
    it found to the controller, which names it and fails the run."""
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(
        "import subprocess, sys\n\n"
        "def test_starts_and_forgets():\n"
        "    subprocess.Popen(['sleep', '37'])\n\n"
        "def test_parent_dies_child_lives():\n"
        "    # the middle process starts `sleep 41` in its own session and exits at once: a classic double fork\n"
        "    subprocess.run([sys.executable, '-c', \"import subprocess; "
        "subprocess.Popen(['sleep', '41'], start_new_session=True)\"], check=True)\n")
    # Only the plugins this needs (PYTEST_DISABLE_PLUGIN_AUTOLOAD): the guard is conftest.py, and each plugin the
    # environment holds (nbval and its Jupyter stack) would cost every worker seconds of imports.
    env = {**os.environ, "GROK2_COURSE_LEFTOVER_GRACE_S": "0.5", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *parallel, str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout
    assert "left 2 process(es) running (now killed)" in run.stdout, run.stdout
    assert "sleep 37" in run.stdout and "sleep 41" in run.stdout
    running = [p for p in psutil.process_iter(["cmdline", "status"])
               if p.info["cmdline"] in (["sleep", "37"], ["sleep", "41"]) and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert not running, "the guard reported the processes but did not kill them"
