"""What a model repository's large files are, before any of them is downloaded: Git LFS pointers, the patterns that
select them (read as `git lfs pull --include/--exclude` reads them), their sizes, and how the released Grok 2 files
group by tensor-parallel rank. Pure functions on text and names: no git, no network, no torch."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

POINTER_VERSION = "https://git-lfs.github.com/spec/v1"
POINTER_MAX_BYTES = 1024  # the spec caps pointer files well below this
POINTER_LINE = re.compile(rb"^(version|oid|size) (.+)$")
MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".bin", ".model", ".txt", ".jinja", ".gguf", ".pt", ".pth", ".msgpack")
TP_FILE = re.compile(r"-TP-(common|\d{3})\.safetensors$")


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

    def text(self) -> str:
        """The pointer file's exact content."""
        return f"version {self.version}\noid sha256:{self.oid}\nsize {self.size}\n"


def read_pointer(path: str | Path) -> LFSPointer | None:
    """The LFS pointer stored at `path`, or None for a real file (reads at most 1 KB)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size > POINTER_MAX_BYTES:
        return None
    with path.open("rb") as handle:
        return LFSPointer.parse(handle.read(POINTER_MAX_BYTES + 1))


def find_lfs_pointers(folder: str | Path) -> list[Path]:
    """Files in a model folder that are still LFS pointers where real data should be (.git and .cache skipped)."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(part in (".git", ".cache") for part in parts) or not path.is_file():
            continue
        if (path.suffix in MODEL_FILE_SUFFIXES or path.name.startswith("tokenizer")) and read_pointer(path):
            found.append(path)
    return found


def _matches(path: str, pattern: str) -> bool:
    # Like git-lfs's --include/--exclude: a pattern without "/" matches the file name in any folder.
    return fnmatch.fnmatch(path, pattern) or ("/" not in pattern and fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern))


def select(paths: Iterable[str], include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> list[str]:
    """Paths matching any `include` glob (all if None) and no `exclude` glob, as `git lfs pull -I/-X` read them."""
    include, exclude = list(include or []), list(exclude or [])
    return sorted(p for p in paths if (not include or any(_matches(p, i) for i in include))
                  and not any(_matches(p, x) for x in exclude))


def download_bytes(manifest: dict[str, LFSPointer], paths: Iterable[str] | None = None) -> int:
    """Bytes of the selected files (all of them if `paths` is None), from their pointers."""
    return sum(manifest[p].size for p in (manifest if paths is None else paths))


def download_seconds(size_bytes: float, bits_per_second: float) -> float:
    """Transfer time at a sustained link speed (1 byte = 8 bits; protocol overhead and retries not counted)."""
    return size_bytes * 8 / bits_per_second


def tensor_parallel_layout(sizes: dict[str, int]) -> dict:
    """Group a pre-sharded checkpoint's files ({name: bytes}) by tensor-parallel rank, as SGLang's loader reads them:
    rank r loads every *-TP-common file plus its own *-TP-{r:03d} files."""
    common = {n: s for n, s in sizes.items() if (m := TP_FILE.search(n)) and m.group(1) == "common"}
    ranks: dict[int, dict[str, int]] = {}
    for name, size in sizes.items():
        match = TP_FILE.search(name)
        if match and match.group(1) != "common":
            ranks.setdefault(int(match.group(1)), {})[name] = size
    return {
        "common_files": len(common),
        "common_bytes": sum(common.values()),
        "ranks": len(ranks),
        "files_per_rank": {r: len(f) for r, f in sorted(ranks.items())},
        "bytes_per_rank": {r: sum(f.values()) for r, f in sorted(ranks.items())},
        "total_bytes": sum(common.values()) + sum(sum(f.values()) for f in ranks.values()),
    }
