"""Will it fit? Free space where files will land (GROK2_COURSE_DISK_LIMIT caps it, to rehearse a full disk), and a
refusal before downloading, with the numbers, when the selected files will not fit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import CourseError
from ..units import format_bytes, parse_bytes

DISK_LIMIT_ENV_VAR = "GROK2_COURSE_DISK_LIMIT"


def free_disk_bytes(where: str | Path) -> int:
    """Free space where files will land; GROK2_COURSE_DISK_LIMIT (bytes, or a size such as 10GB) caps it, to rehearse
    a full disk."""
    where = Path(where).absolute()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    limit = os.environ.get(DISK_LIMIT_ENV_VAR)
    if not limit:
        return free
    try:
        return min(free, parse_bytes(limit, DISK_LIMIT_ENV_VAR))
    except ValueError as error:
        raise CourseError(str(error), f"Set {DISK_LIMIT_ENV_VAR} to a size such as 10GB or 500MiB, or unset it.") from None


def ensure_disk_space(needed_bytes: int, where: str | Path, margin: float = 1.05, detail: str = "") -> None:
    """Refuse before downloading if `needed_bytes` (plus 5%) will not fit at `where`: say how much, and where."""
    free = free_disk_bytes(where)
    if needed_bytes * margin > free:
        raise CourseError(
            f"Not enough disk space: this needs {format_bytes(needed_bytes, binary=False)}{detail} + 5% margin, and only "
            f"{format_bytes(free, binary=False)} are free at {Path(where).absolute()}. Nothing was downloaded.",
            "free space there, download fewer files (include/--include), put the download on a bigger disk (clone "
            "there, or set GROK2_COURSE_WORKSPACE), or use `hf download --local-dir` (one copy instead of git-lfs's two)",
        )
