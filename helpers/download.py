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


# ------------------------------------------------------------------------------------------------ git and git-lfs

import fnmatch  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402

from .errors import CourseError  # noqa: E402

GB = 1000**3
GIT_TIMEOUT_S = 3600  # one git command; a real shard of Grok 2 is 17 GB
GIT_LFS_INSTALL_HELP = (
    "install git-lfs - Debian/Ubuntu: `sudo apt-get install git-lfs`; macOS: `brew install git-lfs`; Windows: it comes "
    "with Git for Windows; Colab: `!apt-get -qq install git-lfs` - then run `git lfs install` once"
)
NETWORK_HINTS = ("could not resolve", "connection", "timed out", "timeout", "tls", "ssl", "503", "502", "reset by peer")


def require_git_lfs() -> str:
    """git-lfs's version line, or a CourseError that says how to install it on each platform."""
    if shutil.which("git") is None:
        raise CourseError("git is not installed.", "install git from git-scm.com (or your package manager)")
    try:
        result = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        result = None
    if result is None or result.returncode != 0:
        raise CourseError("git-lfs is not installed: a clone would contain pointer files, not weights.", GIT_LFS_INSTALL_HELP)
    return result.stdout.strip()


def _git(args: list[str], cwd: str | Path | None = None, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
    )
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def _explain_git_failure(error: subprocess.CalledProcessError, what: str) -> CourseError:
    message = (error.stderr or error.stdout or "").strip()
    lower = message.lower()
    if "401" in lower or "403" in lower or "authentication" in lower or "access to model" in lower:
        return CourseError(f"{what}: the hub refused access ({message.splitlines()[-1][:200]}).",
                           "the repository is gated or private: accept its licence on its hub page while logged in, "
                           "then authenticate (`hf auth login`, or a token with read access as the git password)")
    if any(hint in lower for hint in NETWORK_HINTS):
        return CourseError(f"{what}: network failure ({message.splitlines()[-1][:200]}).",
                           "check the connection and run the same command again: completed files are kept and "
                           "verified, only the missing ones are fetched")
    return CourseError(f"{what} failed: {message[:400]}", "read git's message above; run the command in a terminal to see more")


# ----------------------------------------------------------------------------------------------------- what to fetch


def lfs_manifest(repo: str | Path, revision: str = "HEAD") -> dict[str, LFSPointer]:
    """{path: pointer} for every LFS file of `revision`, read from git's objects (works whatever is downloaded)."""
    listing = _git(["ls-tree", "-r", "-l", revision], cwd=repo).stdout.splitlines()
    manifest = {}
    for line in listing:
        meta, path = line.split("\t", 1)
        _, kind, blob, size = meta.split()
        if kind == "blob" and size.isdigit() and int(size) <= POINTER_MAX_BYTES:
            pointer = LFSPointer.parse(_git(["cat-file", "blob", blob], cwd=repo).stdout)
            if pointer:
                manifest[path] = pointer
    return manifest


def select(paths: Iterable[str], include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> list[str]:
    """Paths matching any `include` glob (all if None) and no `exclude` glob, as `git lfs pull -I/-X` read them."""
    chosen = []
    for path in paths:
        if include and not any(fnmatch.fnmatch(path, pattern) for pattern in include):
            continue
        if exclude and any(fnmatch.fnmatch(path, pattern) for pattern in exclude):
            continue
        chosen.append(path)
    return sorted(chosen)


def download_bytes(manifest: dict[str, LFSPointer], paths: Iterable[str] | None = None) -> int:
    return sum(manifest[p].size for p in (manifest if paths is None else paths))


def download_seconds(size_bytes: int, bits_per_second: float) -> float:
    return size_bytes * 8 / bits_per_second


def free_disk_bytes(where: str | Path) -> int:
    """Free space where files will land; GROK2_COURSE_DISK_LIMIT (bytes) caps it, to rehearse a full disk."""
    where = Path(where)
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    limit = os.environ.get("GROK2_COURSE_DISK_LIMIT")
    return min(free, int(limit)) if limit else free


def _human(n: float) -> str:
    return f"{n / GB:,.2f} GB" if n >= GB else f"{n / 1e6:,.2f} MB"


def ensure_disk_space(needed_bytes: int, where: str | Path, margin: float = 1.05) -> None:
    """Refuse before downloading if `needed_bytes` (plus 5%) will not fit at `where`."""
    free = free_disk_bytes(where)
    if needed_bytes * margin > free:
        raise CourseError(
            f"Not enough disk space: the download needs {_human(needed_bytes)} (+5% margin) and only "
            f"{_human(free)} are free at {Path(where).resolve()}.",
            "free space there, download fewer files (--include), or choose another folder (GROK2_COURSE_WORKSPACE)",
        )


# ----------------------------------------------------------------------------------------------- clone, pull, verify


def clone_without_weights(url: str, destination: str | Path, revision: str | None = None) -> Path:
    """`GIT_LFS_SKIP_SMUDGE=1 git clone`: history and small files, pointers instead of LFS files. Optionally pin a
    revision (a commit hash: the way to make a download reproducible)."""
    require_git_lfs()
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise CourseError(f"{destination} exists and is not empty.", "choose a new folder, or delete this one if it is yours to delete")
    try:
        _git(["clone", url, str(destination)], env={"GIT_LFS_SKIP_SMUDGE": "1"})
    except subprocess.CalledProcessError as error:
        raise _explain_git_failure(error, f"git clone {url}") from error
    if revision:
        try:
            _git(["checkout", "--quiet", revision], cwd=destination, env={"GIT_LFS_SKIP_SMUDGE": "1"})
        except subprocess.CalledProcessError as error:
            raise CourseError(f"Unknown revision {revision!r} in {url}.",
                              "use a commit hash or branch that exists: `git log --oneline` in the clone lists them") from error
    return destination


def sha256_of(path: str | Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileState:
    path: str
    state: str  # "ok", "pointer" (not downloaded), "missing", "size mismatch", "checksum mismatch"
    expected_sha256: str
    actual_sha256: str | None = None
    expected_size: int = 0
    actual_size: int | None = None

    def describe(self) -> str:
        if self.state == "checksum mismatch":
            return f"{self.path}: checksum mismatch - expected sha256 {self.expected_sha256}, got {self.actual_sha256}"
        if self.state == "size mismatch":
            return f"{self.path}: size mismatch - expected {self.expected_size} bytes, got {self.actual_size}"
        return f"{self.path}: {self.state}"


def file_state(repo: str | Path, path: str, pointer: LFSPointer, full_check: bool = True) -> FileState:
    target = Path(repo) / path
    base = dict(path=path, expected_sha256=pointer.oid, expected_size=pointer.size)
    if not target.exists():
        return FileState(state="missing", **base)
    if read_pointer(target) is not None and pointer.size > POINTER_MAX_BYTES:
        return FileState(state="pointer", **base)
    size = target.stat().st_size
    if size != pointer.size:
        return FileState(state="size mismatch", actual_size=size, **base)
    if not full_check:
        return FileState(state="ok", actual_size=size, **base)
    actual = sha256_of(target)
    state = "ok" if actual == pointer.oid else "checksum mismatch"
    return FileState(state=state, actual_sha256=actual, actual_size=size, **base)


def verify(repo: str | Path, paths: Iterable[str] | None = None, manifest: dict[str, LFSPointer] | None = None) -> list[FileState]:
    """Check every (selected) LFS file against its pointer: size, then sha256 of the bytes on disk."""
    manifest = manifest or lfs_manifest(repo)
    return [file_state(repo, p, manifest[p]) for p in (sorted(manifest) if paths is None else paths)]


def pull(
    repo: str | Path,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    retries: int = 3,
    backoff_s: float = 2.0,
    on_file_done: Callable[[FileState], None] | None = None,
    progress: bool = True,
) -> list[FileState]:
    """`git lfs pull` file by file, resumable: files already present and verified are skipped, a damaged file is
    fetched again, each file is verified after download, transient failures are retried with backoff.

    Guards the disk first: refuses if the files still to fetch do not fit.
    """
    require_git_lfs()
    repo = Path(repo)
    manifest = lfs_manifest(repo)
    wanted = select(manifest, include, exclude)
    todo = [p for p in wanted if file_state(repo, p, manifest[p]).state != "ok"]
    ensure_disk_space(download_bytes(manifest, todo), repo)
    from tqdm.auto import tqdm

    results = [FileState(path=p, state="ok", expected_sha256=manifest[p].oid, expected_size=manifest[p].size)
               for p in wanted if p not in todo]
    bar = tqdm(total=download_bytes(manifest, todo), unit="B", unit_scale=True, desc="git lfs pull", disable=not progress)
    for path in todo:
        target = repo / path
        if target.exists() and read_pointer(target) is None:
            target.unlink()  # a damaged or partial copy: back to the pointer, then fetch
            _git(["checkout", "--", path], cwd=repo, env={"GIT_LFS_SKIP_SMUDGE": "1"})
        for attempt in range(retries + 1):
            try:
                _git(["lfs", "pull", "--include", path, "--exclude", ""], cwd=repo)
                break
            except subprocess.CalledProcessError as error:
                if attempt == retries:
                    raise _explain_git_failure(error, f"git lfs pull {path}") from error
                time.sleep(backoff_s * 2**attempt)
        state = file_state(repo, path, manifest[path])
        if state.state != "ok":
            # A bad object in the local LFS store would be checked out again and again: drop it and fetch once more.
            _drop_local_object(repo, manifest[path])
            target.unlink(missing_ok=True)
            _git(["checkout", "--", path], cwd=repo, env={"GIT_LFS_SKIP_SMUDGE": "1"})
            _git(["lfs", "pull", "--include", path, "--exclude", ""], cwd=repo)
            state = file_state(repo, path, manifest[path])
            if state.state != "ok":
                raise CourseError(f"Downloaded file failed verification - {state.describe()}.",
                                  "the source is damaged or changed: re-run later, or report it to the repository owners")
        bar.update(manifest[path].size)
        results.append(state)
        if on_file_done:
            on_file_done(state)
    bar.close()
    return sorted(results, key=lambda s: s.path)


def _drop_local_object(repo: Path, pointer: LFSPointer) -> None:
    git_dir = Path(_git(["rev-parse", "--git-dir"], cwd=repo).stdout.strip())
    git_dir = git_dir if git_dir.is_absolute() else repo / git_dir
    (git_dir / "lfs" / "objects" / pointer.oid[:2] / pointer.oid[2:4] / pointer.oid).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------ the hub way


def hub_download(repo_id: str, local_dir: str | Path, allow_patterns: list[str] | None = None,
                 revision: str | None = None) -> Path:
    """`huggingface_hub.snapshot_download`: parallel, resumable HTTP downloads, no git needed (the faster way)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_dir=str(local_dir), allow_patterns=allow_patterns, revision=revision))
    except GatedRepoError as error:
        raise CourseError(f"{repo_id} is gated (HTTP 401/403).",
                          "accept its licence on its hub page while logged in, then `hf auth login`") from error
    except RevisionNotFoundError as error:
        raise CourseError(f"Unknown revision {revision!r} of {repo_id}.", "use a commit hash listed on the repository's 'Files' history") from error
    except RepositoryNotFoundError as error:
        raise CourseError(f"No repository {repo_id!r} (or it is private).", "check the id; for a private one, log in with `hf auth login`") from error
