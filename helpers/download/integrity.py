"""Are the bytes on disk the bytes the repository holds? Each LFS file against its pointer (size, then sha256 of every
byte), a cache of files already hashed so that a resumed pull need not re-hash hundreds of GB, and a structural check
of safetensors files (header and length) that reads only their headers.

What the cache trusts, and why: an entry records (oid, size, mtime_ns, ctime_ns, inode) as they were *before* the file
was hashed, and is kept only if they are unchanged *after* hashing (the bytes did not move under the hash). A later
check skips the hash only if all five still match. Writing to a file changes its mtime and ctime; restoring the mtime
(`touch -d`, `os.utime`, `cp -p`, rsync) sets the ctime to now, which no program can set back; replacing the file gives
it a new inode. So every change made *through the file system* is seen. What no metadata can show is the medium
changing under the file system (a bit rotting on disk, bad RAM in the page cache): only hashing every byte again
sees that - `verify()` always does, and so does `pull(rehash=True)` (`--rehash` on the command line). The price of the
strict key: a file copied, restored from a backup or moved to another disk is hashed again once.

On Windows the cache vouches for nothing: there `st_ctime` is the file's *creation* time, which a write does not change
and which any program may set (SetFileTime), so the key cannot show that the bytes stayed the same; every check hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CourseError
from .clone import lfs_manifest
from .pointers import POINTER_MAX_BYTES, LFSPointer, read_pointer

SAFETENSORS_HEADER_MAX = 100_000_000  # the safetensors library refuses larger headers
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
               "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


@dataclass(frozen=True)
class FileState:
    path: str
    state: str  # "ok", "pointer" (not downloaded), "missing", "size mismatch", "checksum mismatch"
    expected_sha256: str
    actual_sha256: str | None = None
    expected_size: int = 0
    actual_size: int | None = None
    from_cache: bool = False  # ok because it was hashed before and is unchanged since (see the module's docstring)

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def describe(self) -> str:
        if self.state == "checksum mismatch":
            return f"{self.path}: checksum mismatch - expected sha256 {self.expected_sha256}, got {self.actual_sha256}"
        if self.state == "size mismatch":
            return f"{self.path}: size mismatch - expected {self.expected_size:,} bytes, got {self.actual_size:,}"
        if self.state == "pointer":
            return f"{self.path}: still an LFS pointer ({self.expected_size:,} bytes not downloaded)"
        return f"{self.path}: {self.state}"


def sha256_of(path: str | Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class VerifiedCache:
    """Files already hashed, keyed by (oid, size, mtime_ns, ctime_ns, inode): see the module's docstring for what that
    proves. Stored as JSON, replaced atomically (a kill while saving leaves the previous version)."""

    def __init__(self, path: Path | None):
        self.path = path
        try:
            self.entries = json.loads(path.read_text()) if path and path.exists() else {}
        except (OSError, ValueError):  # unreadable: start again (it only saves time, it never decides anything)
            self.entries = {}

    @staticmethod
    def key(target: Path, pointer: LFSPointer) -> list:
        stat = target.stat()
        return [pointer.oid, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]

    @staticmethod
    def trustworthy() -> bool:
        """Can (size, mtime, ctime, inode) show that a file did not change here? Not on Windows, where ctime is the
        creation time (see the module's docstring): there every file is hashed on every check."""
        return os.name != "nt"

    def hit(self, path: str, target: Path, pointer: LFSPointer) -> bool:
        return self.path is not None and self.trustworthy() and self.entries.get(path) == self.key(target, pointer)

    def record(self, path: str, target: Path, pointer: LFSPointer, before: list) -> None:
        """Remember that `target` hashed right; `before` is its key taken before hashing (changed since: not kept)."""
        if self.path is None or not self.trustworthy() or self.key(target, pointer) != before:
            return
        self.entries[path] = before
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.entries))
        os.replace(temporary, self.path)


def file_state(folder: str | Path, path: str, pointer: LFSPointer, full_check: bool = True,
               cache: VerifiedCache | None = None) -> FileState:
    """How the file at folder/path compares with its pointer: size first, then sha256 of every byte (unless `cache`
    vouches for it: hashed before, and unchanged since)."""
    target = Path(folder) / path
    base = dict(path=path, expected_sha256=pointer.oid, expected_size=pointer.size)
    if not target.exists():
        return FileState(state="missing", **base)
    if pointer.size > POINTER_MAX_BYTES and read_pointer(target) is not None:
        return FileState(state="pointer", actual_size=target.stat().st_size, **base)
    size = target.stat().st_size
    if size != pointer.size:
        return FileState(state="size mismatch", actual_size=size, **base)
    if not full_check:
        return FileState(state="ok", actual_size=size, **base)
    if cache is not None and cache.hit(path, target, pointer):
        return FileState(state="ok", actual_size=size, from_cache=True, **base)
    before = VerifiedCache.key(target, pointer)
    actual = sha256_of(target)
    if actual == pointer.oid and cache is not None:
        cache.record(path, target, pointer, before)
    state = "ok" if actual == pointer.oid else "checksum mismatch"
    return FileState(state=state, actual_sha256=actual, actual_size=size, **base)


def verify(folder: str | Path, paths: Iterable[str] | None = None, manifest: dict[str, LFSPointer] | None = None,
           cache: VerifiedCache | None = None) -> list[FileState]:
    """Check every (selected) LFS file against its pointer: size, then sha256 of the bytes on disk (all of them,
    unless a `cache` is given).

    `folder` is a clone (the manifest comes from git) or any folder with a manifest given, e.g. `hub_manifest(...)`
    for files fetched with `hf download`.
    """
    if manifest is None:
        manifest = lfs_manifest(folder)  # refuses, with the fix, what is not a clone
    elif not Path(folder).expanduser().is_dir():
        raise CourseError(f"{folder} is not a folder{'' if Path(folder).exists() else ' (it does not exist)'}.",
                          "pass the folder the files were downloaded into (check the path)")
    return [file_state(folder, p, manifest[p], cache=cache) for p in (sorted(manifest) if paths is None else paths)]


# ------------------------------------------------------------------------------------------------- safetensors


def safetensors_problem(path: str | Path) -> str | None:
    """What is wrong with a safetensors file's structure (truncated, damaged header, wrong length), or None.
    Reads only the 8-byte length and the JSON header: cheap even for a checkpoint of hundreds of GB. A flipped bit among
    the tensor bytes is not seen here: only the sha256 (`verify`) sees that."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"only {size} bytes: too short for a safetensors file (it starts with an 8-byte header length)"
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > SAFETENSORS_HEADER_MAX or 8 + length > size:
            return (f"its first 8 bytes announce a {length:,}-byte header, but the file has {size:,} bytes: it is "
                    "truncated, damaged, or not a safetensors file")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        return f"its header is not valid JSON ({error}): the header is damaged"
    if not isinstance(header, dict):
        return "its header is not a JSON object: the header is damaged"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] or not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            return f"its header's entry for {name!r} is damaged ({str(entry)[:120]})"
        count = 1
        for dim in shape:
            count *= dim
        width = DTYPE_BYTES.get(entry.get("dtype"))
        if width is not None and count * width != offsets[1] - offsets[0]:
            return f"its header's entry for {name!r} is damaged: shape {shape} in {entry['dtype']} does not match its bytes"
        end = max(end, offsets[1])
    data = size - 8 - length
    if end > data:
        return f"truncated: its tensors need {8 + length + end:,} bytes and the file has {size:,}"
    if end < data:
        return f"{data - end:,} bytes longer than its tensors need: damaged, or something was appended to it"
    return None
