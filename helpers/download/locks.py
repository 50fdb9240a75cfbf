"""One worker per folder: an exclusive lock that names its holder, and that dies with it.

The lock is `fcntl.flock` on a small file beside the work (`workspace/.lesson01.lock`, `.git/course-pull.lock`). The
kernel releases it when the holder's process ends, however it ends (a crash, SIGKILL, a notebook kernel restarted), so
a lock can never outlive its holder. The file also records who holds it (pid, host, since when, what): a second copy
is refused with that name, and a lock file still naming a holder that is gone is taken over, and that is said. A holder
that ends cleanly empties the file.

Where `fcntl` does not exist (Windows), folders are not locked.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from ..errors import CourseError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

_held: dict[str, list] = {}  # lock file -> [open file, how many holds in this process]


def _read(lock: Path) -> dict:
    for _ in range(3):  # the holder may be writing it right now
        try:
            text = lock.read_text()
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            time.sleep(0.05)
    return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "pid unknown"
    host = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    return f"pid {holder.get('pid')}{host}, since {holder.get('since', '?')}"


CONTENDED_RETRY_S = 0.2  # how long a lock that is taken is tried again before the caller is refused


def _take(handle) -> None:
    """An exclusive flock on `handle`, or BlockingIOError if another holder keeps it for CONTENDED_RETRY_S. Tried
    again meanwhile because `holder_of` (another lesson asking who pulls) tests a free lock by taking it for an
    instant: a pull that starts in that instant must not be refused as running beside "pid unknown"."""
    deadline = time.monotonic() + CONTENDED_RETRY_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def acquire(lock: str | Path, what: str, busy: str, fix: str) -> bool:
    """Take the lock at `lock` for `what` (e.g. "lesson 01"), for this process; re-entrant. Refuses with
    CourseError(`busy` + the holder, `fix`) while another live process holds it. True if a dead holder's was taken."""
    lock = Path(lock)
    key = str(lock.resolve())
    if key in _held:
        _held[key][1] += 1
        return False
    if fcntl is None:
        _held[key] = [None, 1]
        return False
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock, "a+")  # never truncates: a refused contender must not erase the holder's name
    try:
        _take(handle)
    except BlockingIOError:
        handle.close()
        raise CourseError(f"{busy}: {_describe(_read(lock))}.", fix) from None
    except BaseException:
        handle.close()
        raise
    before = _read(lock)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                             "since": time.strftime("%Y-%m-%d %H:%M:%S"), "program": " ".join(sys.argv)[:200]}))
    handle.flush()
    _held[key] = [handle, 1]
    if before and before.get("pid") != os.getpid():
        print(f"Took over the lock of {before.get('what', what)} ({_describe(before)}): that process is no longer "
              f"running (it ended without releasing {lock}).")
        return True
    return False


def release(lock: str | Path) -> None:
    """Give back one hold of this process; the last one empties the file and unlocks it."""
    key = str(Path(lock).resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    handle = entry[0]
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()  # a clean end: the next holder has nothing to take over
        handle.close()


@contextlib.contextmanager
def holding(lock: str | Path, what: str, busy: str, fix: str):
    """`with holding(...)`: the lock for the duration of the block (see `acquire`)."""
    acquire(lock, what, busy, fix)
    try:
        yield
    finally:
        release(lock)


def holder_of(lock: str | Path) -> dict | None:
    """Who holds the lock at `lock` now ({} if a live holder left no name), or None when nobody does. Takes nothing:
    a free lock is locked and unlocked at once, its file left as it was."""
    lock = Path(lock)
    if not lock.is_file():
        return None
    if str(lock.resolve()) in _held:
        return _read(lock) or {"pid": os.getpid()}
    if fcntl is None:
        return None
    try:
        handle = open(lock, "r")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(lock)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


CLAIM_SEARCH_DEPTH = 3  # how deep claim_folder looks for clones inside the folder it is about to delete


def _busy_clones(folder: Path) -> tuple[list[str], list[int]]:
    """What is at work on a git clone inside `folder`, in words, and the process ids: a `pull` holding its lock (one
    started from a terminal with `python -m helpers.download pull`, or from another notebook), or git / git-lfs
    processes running there."""
    from .clone import git_processes_in

    found, pids = [], []
    for top, dirs, _files in os.walk(folder):
        depth = len(Path(top).relative_to(folder).parts)
        if ".git" in dirs:
            holder = holder_of(Path(top) / ".git" / "course-pull.lock")  # pulling.LOCK_FILE (not imported: a cycle)
            if holder is not None:
                found.append(f"{holder.get('what') or 'a pull'} is running ({_describe(holder)})")
                if isinstance(holder.get("pid"), int):
                    pids.append(holder["pid"])
        dirs[:] = [] if depth >= CLAIM_SEARCH_DEPTH else [d for d in dirs if d != ".git"]
    running = git_processes_in(folder)
    if running:
        found.append(f"git is running there (pid {', '.join(map(str, running))})")
        pids += running
    return found, sorted(set(pids))


def claim_folder(folder: str | Path, holder: str = "lesson 01") -> Path:
    """The lesson's own folder, emptied and recreated, locked for as long as this process (the notebook's kernel)
    lives: a second copy of the lesson in the same workspace is refused instead of deleting the first one's files
    under it, and so is a folder whose clone is being downloaded into (lesson 01 suggests running a long pull in a
    terminal: deleting the clone under it would lose the download and break the pull). Re-running the notebook in the
    same kernel is fine."""
    folder = Path(folder)
    lock = folder.parent / f".{folder.name}.lock"
    acquire(lock, holder,
            busy=f"another {holder} is running in this workspace ({folder.parent})",
            fix="finish or stop that one first (in Jupyter: its notebook's Kernel > Shut Down Kernel), then run this "
                "cell again; or run this copy in its own workspace: set GROK2_COURSE_WORKSPACE=/another/folder "
                "before starting Jupyter")
    busy, pids = _busy_clones(folder) if folder.is_dir() else ([], [])
    if busy:
        release(lock)  # this call's hold only: refused, it leaves things as they were
        stop = f"Ctrl-C in its terminal, or `kill {' '.join(map(str, pids))}`" if pids else "Ctrl-C in its terminal"
        raise CourseError(
            f"{holder} starts by deleting and rebuilding {folder}, but {'; '.join(busy)}: deleting it now would "
            "destroy that download under it.",
            f"let it finish (a pull prints a summary when done) or stop it ({stop}), then run this cell again; it "
            f"deletes the clone and what was downloaded into it: to keep them, first move the clone out of {folder}")
    shutil.rmtree(folder, ignore_errors=True)  # this lesson's own folder, nothing else
    folder.mkdir(parents=True)
    return folder


@atexit.register
def _release_all() -> None:
    for key in list(_held):
        _held[key][1] = 1
        release(key)
