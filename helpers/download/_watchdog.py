"""A watchdog between the course and one git / git-lfs command: it ends the command's whole process group when the
process that started it dies, even by SIGKILL (which runs no handler, no `finally`, no atexit).

How it knows: the starter keeps the write end of a pipe open and never writes to it; this script waits on the read end
(file descriptor FD). The kernel closes every descriptor of a process that dies, however it dies, so the read end
becomes readable (end-of-file) exactly then. The watchdog then sends SIGTERM to its process group (the command, git-lfs,
its transfer agents: `helpers.download.processes` starts each command in a new session), waits a few seconds, and sends
SIGKILL to whatever is left, itself included.

Every git command on a clone runs behind it, short ones included, so it must cost little: it imports only `os`,
`_signal` and `select` (the `signal` module alone would pull in `enum` and double the start-up time; `subprocess` and
`threading` more again) and starts the command with `posix_spawnp`. On Linux it waits on the pipe and on a pidfd of the
command at once (no thread, no polling); where there is no `os.pidfd_open` (macOS), a thread watches the pipe.

Run as a file with the standard library only (it must start in milliseconds and work without torch):
    python -I -S _watchdog.py FD GRACE_S -- git lfs pull ...
Its exit status is the command's (128 + N for a command ended by signal N; 127 if the command does not exist).
"""

import _signal
import os
import select
import sys
import time


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _end_group(reaped, grace_s: float) -> None:
    """SIGTERM to the whole group (this process's own handler ignores it), up to `grace_s` for the command to end,
    then SIGKILL to what is left, this watchdog included. `reaped(timeout)` waits for the command."""
    group = os.getpgrp()
    try:
        os.killpg(group, _signal.SIGTERM)
        reaped(grace_s)
    finally:
        os.killpg(group, _signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: _watchdog.py FD GRACE_S -- COMMAND ...\n")
        return 2
    lifeline, grace_s, command = int(argv[1]), float(argv[2]), argv[4:]
    os.set_inheritable(lifeline, False)  # the command does not need it
    # A no-op handler, not SIG_IGN: an ignored signal would stay ignored in the command after exec.
    _signal.signal(_signal.SIGTERM, lambda *_: None)
    # Python ignores SIGPIPE (and SIGXFSZ) at start-up: the command gets the defaults back, as with subprocess.
    defaults = tuple(getattr(_signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(_signal, name))
    try:  # posix_spawn, not fork + exec: a few milliseconds less for every git command
        pid = os.posix_spawnp(command[0], command, os.environ, setsigdef=defaults)  # same group, stdin/out/err
    except OSError as error:
        sys.stderr.write(f"{command[0]}: {error.strerror} (command not found or not runnable)\n")
        return 127

    if hasattr(os, "pidfd_open"):
        try:
            exited = os.pidfd_open(pid)
        except OSError:  # a kernel older than 5.3
            exited = None
    else:
        exited = None

    if exited is not None:
        def reaped(timeout: float) -> None:
            select.select([exited], [], [], timeout)

        while True:
            ready, _, _ = select.select([lifeline, exited], [], [])  # retried by Python after a signal (PEP 475)
            if exited in ready:
                return _exit_code(os.waitpid(pid, 0)[1])
            if lifeline in ready and not os.read(lifeline, 1):  # end of file: the starter is gone
                _end_group(reaped, grace_s)

    import threading  # only where there is no pidfd: a thread blocks on the pipe while this one waits for the command

    status: list[int] = []

    def reaped(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not status and time.monotonic() < deadline:
            time.sleep(0.05)

    def watch() -> None:
        while True:
            try:
                if not os.read(lifeline, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        if not status:
            _end_group(reaped, grace_s)

    threading.Thread(target=watch, daemon=True).start()
    status.append(os.waitpid(pid, 0)[1])
    return _exit_code(status[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
