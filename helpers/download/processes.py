"""Running git and git-lfs so that no command outlives the course's call that started it.

Every command starts in its own session (so its own process group: git, the git-lfs it runs, git-lfs's transfer
agents), and the whole group is ended on every way out of the call: a normal return, an exception, a timeout, Ctrl-C
or the notebook's stop button, and SIGTERM / SIGHUP (the command line turns them into KeyboardInterrupt). A process
killed with SIGKILL runs none of that, so every git command on a clone is started through `_watchdog.py`, a
few-millisecond standard-library process that notices its starter's death (a pipe only the starter holds reaches
end-of-file) and ends the group. Short commands too: `git status` and `git add` run git-lfs's clean filter, which hashes
whole files (minutes on hundreds of GB), and `git checkout` writes files; killed unwatched, each would run on holding
`.git/index.lock`. Why not PR_SET_PDEATHSIG: it is Linux-only, reaches only the direct child (git, not the git-lfs it
starts), fires when the starting *thread* ends, and needs a `preexec_fn`, which is unsafe in a process with threads
(a Jupyter kernel).

On Windows (no process groups of this kind) commands run as plain child processes, ended with terminate/kill.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

GIT_TIMEOUT_S = 600  # one short git command (checkout, ls-tree); clones, pulls and re-hashing get their own
STOP_GRACE_S = 5.0  # SIGTERM, then this long for git-lfs to stop cleanly, then SIGKILL
WATCHDOG = Path(__file__).with_name("_watchdog.py")
POSIX = os.name == "posix"

_lifelines: dict[int, int] = {}  # pid of a watched command -> the write end of its watchdog's pipe
_started: dict[int, subprocess.Popen] = {}  # commands still to be ended (an atexit hook ends them on a normal exit)


def start(args: list[str], *, cwd: str | Path | None = None, env: dict | None = None, watched: bool = True,
          stdin=subprocess.DEVNULL, stdout=None, stderr=None, text: bool = True) -> subprocess.Popen:
    """`subprocess.Popen(args)` in a new process group, through the watchdog (see the module's docstring; `watched=False`
    only for a command that cannot outlive this process anyway). End it with `stop` (or `finish` once it has exited),
    on every path."""
    options = dict(cwd=cwd, env={**os.environ, **(env or {})}, stdin=stdin, stdout=stdout, stderr=stderr, text=text)
    if not POSIX:
        process = subprocess.Popen(args, **options)
        _started[process.pid] = process
        return process
    if not watched:
        process = subprocess.Popen(args, start_new_session=True, **options)
        _started[process.pid] = process
        return process
    read_end, write_end = os.pipe()  # both close-on-exec; pass_fds hands only the read end to the watchdog
    try:
        command = [sys.executable, "-I", "-S", str(WATCHDOG), str(read_end), str(STOP_GRACE_S), "--", *args]
        process = subprocess.Popen(command, start_new_session=True, pass_fds=(read_end,), **options)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _lifelines[process.pid] = write_end
    _started[process.pid] = process
    return process


def group_members(pgid: int) -> list[int] | None:
    """Ids of the processes of group `pgid` still running, or None where this machine cannot list them (no /proc, no
    psutil). Zombies do not count: a member whose parent died first waits, dead, for init (or a container's first
    process) to reap it, which may take seconds, and signals reach it anyway. Shared with helpers.serving, so it needs
    neither torch nor (on Linux) psutil."""
    proc = Path("/proc")
    if (proc / "self" / "stat").exists():
        members = []
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp
            except (OSError, IndexError):  # gone meanwhile
                continue
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
        return members
    try:
        import psutil
    except ImportError:
        return None
    members = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (psutil.Error, OSError):  # gone meanwhile, or not ours to look at
            continue
    return members


def _group_alive(pgid: int) -> bool:
    """Is any process of the group still running (zombies aside, see `group_members`)? Where members cannot be listed,
    any process the group's signals still reach counts."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a reused id that is not ours: nothing of ours is left in it
        return False
    members = group_members(pgid)
    return members is None or bool(members)


def stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """End the command and everything it started: SIGTERM to its group, SIGKILL to what is left after `grace_s`."""
    try:
        if not POSIX:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)
            return
        pgid = process.pid
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and (process.poll() is None or _group_alive(pgid)):
                time.sleep(0.05)
            if _group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a process in uninterruptible sleep (a hung NFS mount): nothing more to do
            pass
    finally:
        finish(process)


def finish(process: subprocess.Popen) -> None:
    """After the command has exited: end anything it left running in its group, and let go of its watchdog."""
    if POSIX and process.poll() is not None and _group_alive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    lifeline = _lifelines.pop(process.pid, None)
    if lifeline is not None:
        os.close(lifeline)  # the watchdog sees end-of-file, and its command has already ended: it just exits
    _started.pop(process.pid, None)


def run(args: list[str], *, cwd: str | Path | None = None, env: dict | None = None, timeout: float = GIT_TIMEOUT_S,
        input: str | bytes | None = None, text: bool = True, watched: bool = True,
        check: bool = False) -> subprocess.CompletedProcess:
    """Like `subprocess.run(args, capture_output=True)`, in its own process group, ended on every path."""
    process = start(args, cwd=cwd, env=env, watched=watched, text=text,
                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    except BaseException:  # a timeout, Ctrl-C, SIGTERM turned into KeyboardInterrupt: never leave it running
        stop(process)
        raise
    finish(process)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, args, stdout, stderr)
    return result


def git(args: list[str], cwd: str | Path | None = None, env: dict | None = None, check: bool = True,
          timeout: float = GIT_TIMEOUT_S, input: str | bytes | None = None, text: bool = True) -> subprocess.CompletedProcess:
    """`git ARGS`, watched (see the module's docstring), output captured; raises CalledProcessError on failure when
    `check`, and a CourseError naming how to install git where there is none (not a raw FileNotFoundError)."""
    if shutil.which("git", path=(env or {}).get("PATH", os.environ.get("PATH"))) is None:
        from .failures import git_missing

        raise git_missing()
    return run(["git", *args], cwd=cwd, env=env, timeout=timeout, input=input, text=text, check=check)


def stop_on_signals() -> None:
    """For the command line: SIGTERM and SIGHUP (a closed terminal) raise KeyboardInterrupt, as Ctrl-C does, so that
    every `finally` runs and every started command is ended."""
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)


@atexit.register
def _end_leftovers() -> None:
    for process in list(_started.values()):
        stop(process, grace_s=1.0)
