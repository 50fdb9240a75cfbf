"""Getting model weights: Git LFS pointers, clones, pulls, verification, and the hub download.

Works without torch or transformers: a learner can fetch weights on a machine that cannot run them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POINTER_VERSION = "https://git-lfs.github.com/spec/v1"
POINTER_MAX_BYTES = 1024  # the spec caps pointer files well below this
POINTER_LINE = re.compile(rb"^(version|oid|size) (.+)$")
MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".bin", ".model", ".txt", ".jinja", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class LFSPointer:
    """What git stores in place of a large file: the spec version, the file's sha256 and its size in bytes."""

    oid: str
    size: int
    version: str = POINTER_VERSION

    @classmethod
    def parse(cls, content: str | bytes) -> LFSPointer | None:
        """The pointer in `content`, or None if it is not a Git LFS pointer."""
        data = content.encode() if isinstance(content, str) else content
        if len(data) > POINTER_MAX_BYTES or not data.startswith(b"version "):
            return None
        fields = {}
        for line in data.strip().splitlines():
            match = POINTER_LINE.match(line.strip())
            if match:
                fields[match.group(1).decode()] = match.group(2).decode().strip()
        if not {"version", "oid", "size"} <= fields.keys() or "git-lfs" not in fields["version"]:
            return None
        algorithm, _, digest = fields["oid"].partition(":")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", digest) or not fields["size"].isdigit():
            return None
        return cls(oid=digest, size=int(fields["size"]), version=fields["version"])


def read_pointer(path: str | Path) -> LFSPointer | None:
    """The LFS pointer stored at `path`, or None for a real file (reads at most 1 KB)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size > POINTER_MAX_BYTES:
        return None
    with path.open("rb") as handle:
        return LFSPointer.parse(handle.read(POINTER_MAX_BYTES + 1))


def find_lfs_pointers(folder: str | Path) -> list[Path]:
    """Files in a model folder that are still LFS pointers where real data should be."""
    folder = Path(folder)
    candidates = (p for p in sorted(folder.rglob("*")) if p.is_file() and ".git" not in p.relative_to(folder).parts)
    return [p for p in candidates if p.suffix in MODEL_FILE_SUFFIXES or p.name.startswith("tokenizer") if read_pointer(p)]
