"""A watchdog between the course and one git / git-lfs command: it ends the command's whole process group when the
process that started it dies, even by SIGKILL (which runs no handler, no `finally`, no atexit).

How it knows: the starter keeps the write end of a pipe open and never writes to it; this script blocks reading the
read end (file descriptor FD). The kernel closes every descriptor of a process that dies, however it dies, so the read
returns end-of-file exactly then. The watchdog then sends SIGTERM to its process group (the command, git-lfs, its
transfer agents: `helpers.download.processes` starts each command in a new session), waits a few seconds, and sends
SIGKILL to whatever is left, itself included.

Run as a file with the standard library only (it must start in milliseconds and work without torch):
    python -I -S _watchdog.py FD GRACE_S -- git lfs pull ...
Its exit status is the command's (128 + N for a command ended by signal N).
"""

import os
import signal
import subprocess
import sys
import threading
import time


def _end_group(child: subprocess.Popen, grace_s: float) -> None:
    group = os.getpgrp()
    try:
        os.killpg(group, signal.SIGTERM)  # this process's own handler (below) ignores it
        deadline = time.monotonic() + grace_s
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(group, signal.SIGKILL)  # what is left of the group, this watchdog included


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: _watchdog.py FD GRACE_S -- COMMAND ...\n")
        return 2
    lifeline, grace_s, command = int(argv[1]), float(argv[2]), argv[4:]
    # A no-op handler, not SIG_IGN: an ignored signal would stay ignored in the command after exec.
    signal.signal(signal.SIGTERM, lambda *_: None)
    child = subprocess.Popen(command)  # same process group, same stdin/stdout/stderr; the lifeline is not inherited

    def watch() -> None:
        while True:
            try:
                if not os.read(lifeline, 1):
                    break  # end of file: the starter is gone
            except InterruptedError:
                continue
            except OSError:
                break
        if child.poll() is None:
            _end_group(child, grace_s)

    threading.Thread(target=watch, daemon=True).start()
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
