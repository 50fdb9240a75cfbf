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
