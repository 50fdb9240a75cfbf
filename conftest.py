"""pytest settings shared by the tests and the notebook runs (nbval), and the check that a run leaves no process behind."""

import ctypes
import ctypes.util
import os
import sys
import time

import pytest

# A test that starts a server, a git pull, torchrun or a kernel must end it, even when it fails: a leftover process
# keeps a port, a lock or a download going on a learner's machine. At the end of the run, every process this pytest
# started (children, grandchildren) must be gone, after a short grace for ones already on their way out.
LEFTOVER_GRACE_S = float(os.environ.get("GROK2_COURSE_LEFTOVER_GRACE_S", "10"))
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def _adopt_orphans() -> bool:
    """Make this pytest the 'subreaper' of everything it starts (Linux). Without it, a process whose parent died (git
    left behind by a killed `helpers.download pull`, a double-forked server) is re-parented to init and vanishes from
    pytest's process tree, so the check below could not see it. With it, such orphans become pytest's children."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


def pytest_configure(config):
    _adopt_orphans()


def pytest_collection_modifyitems(items):
    # nbval gives a finished cell's output messages only 5 s to arrive. On a busy 2-core machine (CI, a workshop
    # laptop) a kernel that has just loaded several models can take longer to flush them; 5 s then fails a correct
    # cell. Cell *execution* keeps its own limit (pytest-timeout in pyproject.toml).
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 120


def _live_descendants():
    import psutil

    alive = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def _describe(process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:160]}"
    except Exception:  # it ended while we looked
        return f"pid {process.pid}"


def _reap_adopted_zombies():
    """Orphans adopted by the subreaper are our children now: collect the exit status of those that ended (nobody
    else will), so they do not stay as zombies. Only at the end of the run, when no test waits on its own children."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _reap_adopted_zombies()
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    leftovers = _live_descendants()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.5)
        leftovers = _live_descendants()
    if not leftovers:
        return
    lines = "\n".join("  " + _describe(p) for p in leftovers)
    for process in leftovers:  # do not leave them running after reporting them
        try:
            process.kill()
        except Exception:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"This test run left {len(leftovers)} process(es) running (now killed); a test did not end what it started:\n{lines}"
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
