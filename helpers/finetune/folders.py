"""Writing the folders fine-tuning produces (adapters, checkpoints) so that nothing is ever lost: atomically, never over
files the course did not write, and recovered on the next call after a kill.

A folder is written in four moves, each a rename on one file system (atomic):

    .NAME.tmp-WRITER-xxxx   written here (a kill leaves a half-written copy: removed on the next call)
    .NAME.new-WRITER        renamed once complete
    NAME -> .NAME.old-WRITER, then .NAME.new-WRITER -> NAME, then .NAME.old-WRITER is removed

A kill between two renames leaves `.NAME.new-WRITER` and perhaps `.NAME.old-WRITER` beside a missing NAME: the next
call puts the complete new copy in place (or, if only the old one is there, gives it back) and says so. Leftovers of a
process that is still running are left alone: it may be writing them now.

WRITER is `PID@START`: the writer's process id and when that process started (Linux: clock ticks since boot, from
/proc/PID/stat; elsewhere psutil's creation time in ms). A process id alone is not enough: ids are reused, and a
leftover whose writer died would be taken for work in progress whenever another process got that id (on a busy
machine, or after a reboot, for ever). A live process with that id but another start time is not the writer.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# `-PID` alone: names written before the start time was recorded (their writer is judged by its id only).
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|new|old)-(?P<pid>\d+)(?:@(?P<start>\d+))?(?:-[^/]*)?$")


def _start_time(pid: int) -> str | None:
    """When process `pid` started, as digits that differ between two processes that had the same id; None if there is
    no such process or it cannot be known here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime (the name in parentheses may hold spaces)
    except (OSError, IndexError):
        pass
    if Path("/proc/self/stat").exists():
        return None  # Linux, and no such process
    try:
        import psutil

        return str(round(psutil.Process(pid).create_time() * 1000))
    except Exception:  # psutil missing, no such process, access denied
        return None


def _writer() -> str:
    """This process, as leftover names record it: PID@START (PID alone where the start time cannot be read)."""
    pid = os.getpid()
    start = _start_time(pid)
    return f"{pid}@{start}" if start else str(pid)


def _running(pid: int, start: str | None = None) -> bool:
    """Is the writer that left this still running? Another live process with this id (this process's own leftovers
    cannot be in progress: it is here), and, where the name records it, the same start time: otherwise the id was
    reused and the writer is gone."""
    if pid == os.getpid():
        return False
    if start is not None:
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


_PUT_BACK = {
    "new": "finished an interrupted save of {final}: its complete new version is now in place",
    "old": "restored {final} from {entry}, left by an interrupted save",
}
_REMOVED = {
    "new": "removed {entry}: a save of {name} interrupted before it replaced anything ({final} is as it was)",
    "old": "removed {entry}: the previous version of {name}, already replaced by a save interrupted just before "
           "removing it",
}


def recover_interrupted_writes(parent: str | Path, wanted: str | Callable[[str], bool]) -> list[str]:
    """Finish or undo what a killed write left in `parent` for the folders named `wanted` (a name, or a test of one).
    Returns one sentence per thing done, for the caller to show."""
    parent = Path(parent)
    matches = (lambda name: name == wanted) if isinstance(wanted, str) else wanted
    if not parent.is_dir():
        return []
    leftovers: dict[str, list[tuple[str, Path]]] = {}
    for entry in parent.iterdir():
        found = _LEFTOVER.match(entry.name)
        if found and entry.is_dir() and matches(found["name"]) and not _running(int(found["pid"]), found["start"]):
            leftovers.setdefault(found["name"], []).append((found["kind"], entry))
    order = {"tmp": 0, "new": 1, "old": 2}  # a complete new copy first; an old one only if nothing took its place
    notes = []
    for name, entries in sorted(leftovers.items()):
        final = parent / name
        for kind, entry in sorted(entries, key=lambda item: (order[item[0]], -item[1].stat().st_mtime)):
            if kind == "tmp":
                shutil.rmtree(entry, ignore_errors=True)
                notes.append(f"removed {entry.name}: a half-written copy of {name} left by an interrupted save")
            elif not final.exists():
                os.replace(entry, final)
                notes.append(_PUT_BACK[kind].format(final=final, entry=entry.name))
            else:
                shutil.rmtree(entry, ignore_errors=True)
                notes.append(_REMOVED[kind].format(final=final, entry=entry.name, name=name))
    return notes


def _make_readable(folder: Path) -> None:
    folder.chmod(0o755)  # mkdtemp makes it private; checkpoints and adapters are ordinary files
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def write_directory_atomically(final: str | Path, write: Callable[[Path], None]) -> list[str]:
    """Call `write(folder)` on a fresh temporary folder beside `final`, then swap it in place of `final` by renames.

    The caller decides beforehand that `final` may be replaced (it holds only what the course wrote). An error or a
    kill at any point leaves either the previous `final` or the new one, whole. Returns the recovery notes of the
    earlier interrupted writes of `final` that were finished or undone first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    notes = recover_interrupted_writes(final.parent, final.name)
    writer = _writer()
    new, old = final.with_name(f".{final.name}.new-{writer}"), final.with_name(f".{final.name}.old-{writer}")
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{writer}-", dir=final.parent))
    try:
        write(staging)
        _make_readable(staging)
        os.replace(staging, new)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    return notes


def set_aside(folder: str | Path, label: str = "earlier") -> Path:
    """Rename `folder` to the first free `NAME.LABEL-N` beside it, and return that path. Nothing is deleted."""
    folder = Path(folder)
    for number in range(1, 10_000):
        target = folder.with_name(f"{folder.name}.{label}-{number}")
        if not target.exists():
            os.rename(folder, target)
            return target
    raise FileExistsError(f"no free name {folder.name}.{label}-N beside {folder}")


__all__ = ["recover_interrupted_writes", "write_directory_atomically", "set_aside"]
