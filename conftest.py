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
    _share_the_machine_between_workers()


def pytest_collection_modifyitems(items):
    # nbval gives a finished cell's output messages only 5 s to arrive. On a busy 2-core machine (CI, a workshop
    # laptop) a kernel that has just loaded several models can take longer to flush them; 5 s then fails a correct
    # cell. Cell *execution* keeps its own limit (pytest-timeout in pyproject.toml).
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 120
    if _xdist_worker():
        # The parallel run hands out work in this order (below): the notebooks, one long in-order unit, start at
        # once; then the test files that take longest, so that none of them is left to run alone at the end.
        def rank(item):
            if item.path.suffix == ".ipynb":
                return 0
            name = item.path.name
            return 1 + SLOWEST_TEST_FILES.index(name) if name in SLOWEST_TEST_FILES else len(SLOWEST_TEST_FILES) + 1

        items.sort(key=rank)  # stable: each file keeps its own order


# Measured on 2 cores (`--durations`); a stale entry only costs time, never correctness.
SLOWEST_TEST_FILES = ("test_gpu_check_tools.py", "test_finetune.py", "test_serve.py", "test_browser.py",
                      "test_tensor_parallel.py", "test_serve_bad_input.py", "test_download.py", "test_gguf.py",
                      "test_fast_generation.py", "test_tiny_model.py", "test_no_leftover_processes.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """How `pytest -n N` (what course.sh runs) shares the work: every notebook goes to ONE worker, in order, because
    later lessons use what earlier ones saved (lesson 06 serves lesson 05's adapter) and a notebook's cells share one
    kernel; every test file is one unit, so its module-scoped fixtures (a trained model, a running server) are built
    once, not once per worker. The largest unit (the notebooks) starts first; the others go to whichever worker is
    free. (pytest-xdist's own `--dist loadgroup` would do this with markers, but its 3.8 release cannot rename items
    under pytest 9, so the groups are drawn here, from the item ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksInOrderTestFilesAnywhere(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "notebooks" if path.endswith(".ipynb") else path

    config.option.loadscopereorder = False  # keep the order the workers collected (pytest_collection_modifyitems)
    return NotebooksInOrderTestFilesAnywhere(config, log)


def _xdist_worker() -> str | None:
    """gw0, gw1, ... inside a pytest-xdist worker, else None."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def _share_the_machine_between_workers():
    """Each parallel worker gets its own scratch workspace (two workers must not take each other's lesson lock or
    folders) and its share of the cores: two workers running 2-thread PyTorch on 2 cores spin-wait for each other.
    The workspaces are subfolders of $GROK2_COURSE_WORKSPACE, or of workspace/test-run (what course.sh uses), never the
    learner's own workspace/."""
    worker = _xdist_worker()
    if worker is None:
        return
    base = os.environ.get("GROK2_COURSE_WORKSPACE") or os.path.join(os.path.dirname(__file__), "workspace", "test-run")
    os.environ["GROK2_COURSE_WORKSPACE"] = os.path.join(base, worker)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    threads = str(max(1, cores // max(1, workers)))
    # Read by PyTorch when it is first imported here (tests/conftest.py, after this hook), and inherited by every
    # process a test starts: notebook kernels, servers, torchrun ranks.
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("MKL_NUM_THREADS", threads)


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


_REPORTED_BY_WORKERS: list[str] = []  # leftovers that parallel workers found in their own trees (pytest-xdist)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist, in the controller: a worker has finished; collect the leftovers it found (a worker's own exit
    status does not decide the run's, so it sends them here instead)."""
    _REPORTED_BY_WORKERS.extend(getattr(node, "workeroutput", {}).get("grok2_leftover_processes", []))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _reap_adopted_zombies()
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    leftovers = _live_descendants()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.5)
        leftovers = _live_descendants()
    found = [_describe(p) for p in leftovers]
    for process in leftovers:  # do not leave them running after reporting them
        try:
            process.kill()
        except Exception:
            pass
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:  # a pytest-xdist worker: the controller reports and fails the run
        worker_output["grok2_leftover_processes"] = found
        return
    found += _REPORTED_BY_WORKERS
    if not found:
        return
    lines = "\n".join("  " + line for line in found)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (f"This test run left {len(found)} process(es) running (now killed); a test did not end what it "
               f"started:\n{lines}")
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
