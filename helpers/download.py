"""Getting model weights: Git LFS pointers, clones, pulls, verification, resuming, and the hub download.

    clone = clone_without_weights(url, folder)        # GIT_LFS_SKIP_SMUDGE=1 git clone: pointers, not weights
    manifest = lfs_manifest(clone)                    # {path: LFSPointer}: every size and sha256, nothing downloaded
    report = pull(clone, include=["config.json", "tokenizer*"])   # git lfs pull, guarded, verified, resumable
    verify(clone)                                     # size + sha256 of every file against its pointer
    hub_download("xai-org/grok-2", folder, allow_patterns=[...])   # the faster way: huggingface_hub over HTTPS

Works without torch or transformers: a learner can fetch weights on a machine that cannot run them.
From a terminal (e.g. inside tmux, so that a closed laptop does not stop a 500 GB download):

    python -m helpers.download pull  FOLDER [--include PATTERN ...] [--exclude PATTERN ...]
    python -m helpers.download verify FOLDER
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CourseError
from .units import format_bytes, parse_bytes

# ------------------------------------------------------------------------------------------------------- pointers

POINTER_VERSION = "https://git-lfs.github.com/spec/v1"
POINTER_MAX_BYTES = 1024  # the spec caps pointer files well below this
POINTER_LINE = re.compile(rb"^(version|oid|size) (.+)$")
MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".bin", ".model", ".txt", ".jinja", ".gguf", ".pt", ".pth", ".msgpack")


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


# ------------------------------------------------------------------------------------------------ git and git-lfs

GIT_TIMEOUT_S = 600  # one short git command (clone of the small files, checkout, ls-tree); pulls are watched instead
STALL_TIMEOUT_S = 300  # a pull whose downloads make no progress for this long is treated as a dropped connection
# Phrases in git's, git-lfs's and the hub's messages; HTTP codes only as whole numbers (an oid may contain "403").
NETWORK_HINTS = ("could not resolve", "connection", "timed out", "timeout", "tls", "ssl", "reset by peer",
                 "unexpected eof", "early eof", "hung up", "network", "no route", "stalled", "name resolution",
                 "connect", "remote protocol", r"\b50[234]\b")
AUTH_HINTS = (r"\b401\b", r"\b403\b", "authentication", "unauthorized", "forbidden", "access to model", "gated",
              "could not read username", "terminal prompts disabled")
INVALID_HASH = re.compile(r"invalid hash ([0-9a-f]{64}), expected ([0-9a-f]{64})")
MISSING_HINTS = (r"\b404\b", "not found", "does not appear to be a git repository", "does not exist",
                 "remote missing object")


def git_lfs_install_help() -> str:
    """How to install git-lfs here (Colab first when running on Colab), then everywhere else."""
    ways = [
        "Debian/Ubuntu: `sudo apt-get install git-lfs`",
        "Fedora/RHEL: `sudo dnf install git-lfs`",
        "macOS: `brew install git-lfs`",
        "Windows: it comes with Git for Windows (git-scm.com)",
        "conda: `conda install -c conda-forge git-lfs`",
        "Colab: `!apt-get -qq install git-lfs` in a cell",
    ]
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        ways.insert(0, ways.pop())
    return "install git-lfs - " + "; ".join(ways) + " - then run `git lfs install` once"


def require_git_lfs() -> str:
    """git-lfs's version line, or a CourseError that says how to install it on each platform."""
    if shutil.which("git") is None:
        raise CourseError("git is not installed.", "install git (git-scm.com, or your package manager), then git-lfs")
    try:
        result = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        result = None
    if result is None or result.returncode != 0:
        raise CourseError("git-lfs is not installed: a clone would contain pointer files, not weights.", git_lfs_install_help())
    return result.stdout.strip()


def _git(args: list[str], cwd: str | Path | None = None, env: dict | None = None, check: bool = True,
         timeout: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def _last_line(message: str) -> str:
    """The line that says why (the first one naming a known cause), else the last line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    hints = AUTH_HINTS + MISSING_HINTS + NETWORK_HINTS
    telling = [line for line in lines if any(re.search(hint, line.lower()) for hint in hints)]
    return (telling or lines or ["no message"])[0][:300]


def classify_failure(message: str) -> str:
    """'auth', 'missing', 'network' or 'other', from git's / git-lfs's / the hub's error text."""
    lower = message.lower()
    for kind, hints in (("auth", AUTH_HINTS), ("missing", MISSING_HINTS), ("network", NETWORK_HINTS)):
        if any(re.search(hint, lower) for hint in hints):
            return kind
    return "other"


def explain_failure(message: str, what: str, kept: str = "") -> CourseError:
    """A CourseError for a failed git / git-lfs / hub command, naming the fix for each kind of failure."""
    kind = classify_failure(message)
    if kind == "auth":
        return CourseError(
            f"{what}: the hub refused access ({_last_line(message)}). HTTP 401 means it does not know who you are "
            "(no token, or a bad one); 403 means you are known but not allowed (licence not accepted, or no access).",
            "open the model's page on huggingface.co while logged in and accept its licence (gated repositories), then "
            "authenticate: `hf auth login` (for git: a token with read access as the password, or a credential helper)",
        )
    if kind == "missing":
        return CourseError(f"{what}: not found ({_last_line(message)}).",
                           "check the repository id / URL and the revision; a private repository also answers 'not found' "
                           "until you are logged in (`hf auth login`)")
    if kind == "network":
        return CourseError(f"{what}: network failure ({_last_line(message)}).",
                           "check the connection and run the same command again: " + (kept or "nothing already "
                           "downloaded and verified is fetched again") + ".")
    return CourseError(f"{what} failed: {message.strip()[:500]}", "read the message above; run the command in a terminal to see more")


# -------------------------------------------------------------------------------------------------- the clone


def clone_without_weights(url: str, destination: str | Path, revision: str | None = None) -> Path:
    """`GIT_LFS_SKIP_SMUDGE=1 git clone`: history and small files, a pointer for each LFS file (seconds, not hours).

    revision: a commit hash (or tag/branch) to check out - record the hash to make a download reproducible.
    """
    require_git_lfs()
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise CourseError(f"{destination} exists and is not empty.", "choose a new folder, or delete this one if it is yours to delete")
    skip = {"GIT_LFS_SKIP_SMUDGE": "1", "GIT_TERMINAL_PROMPT": "0"}
    try:
        _git(["clone", "--quiet", url, str(destination)], env=skip, timeout=3600)
    except subprocess.CalledProcessError as error:
        raise explain_failure(error.stderr or error.stdout or "", f"git clone {url}") from error
    _git(["lfs", "install", "--local"], cwd=destination)  # filters for this clone, even if `git lfs install` never ran
    if revision:
        try:
            _git(["checkout", "--quiet", revision], cwd=destination, env=skip)
        except subprocess.CalledProcessError as error:
            raise CourseError(
                f"Unknown revision {revision!r} in {url}.",
                "use a commit hash (or branch/tag) that exists: `git log --oneline` in the clone lists them; on the hub, "
                "the repository's 'Files and versions' > history",
            ) from error
    return destination


def current_revision(repo: str | Path) -> str:
    """The commit hash checked out in `repo`: write it down to download the same bytes again later."""
    return _git(["rev-parse", "HEAD"], cwd=repo).stdout.strip()


# ----------------------------------------------------------------------------------------------- what to fetch


def lfs_manifest(repo: str | Path, revision: str = "HEAD") -> dict[str, LFSPointer]:
    """{path: pointer} for every LFS file of `revision`, read from git's objects (works whatever is downloaded)."""
    listing = _git(["ls-tree", "-r", "-l", "-z", revision], cwd=repo).stdout.split("\0")
    small = {}
    for entry in filter(None, listing):
        meta, path = entry.split("\t", 1)
        _, kind, blob, size = meta.split()
        if kind == "blob" and size.isdigit() and int(size) <= POINTER_MAX_BYTES:
            small[blob] = small.get(blob, []) + [path]
    if not small:
        return {}
    batch = subprocess.run(["git", "cat-file", "--batch"], cwd=repo, input="\n".join(small).encode() + b"\n",
                           capture_output=True, timeout=GIT_TIMEOUT_S, check=True).stdout
    manifest, offset = {}, 0
    while offset < len(batch):  # "<sha> blob <size>\n<content>\n" per object
        header_end = batch.index(b"\n", offset)
        blob, _, size = batch[offset:header_end].decode().split()
        content = batch[header_end + 1 : header_end + 1 + int(size)]
        offset = header_end + 1 + int(size) + 1
        pointer = LFSPointer.parse(content)
        if pointer:
            manifest.update({path: pointer for path in small[blob]})
    return dict(sorted(manifest.items()))


def _matches(path: str, pattern: str) -> bool:
    # Like git-lfs's --include/--exclude: a pattern without "/" matches the file name in any folder.
    return fnmatch.fnmatch(path, pattern) or ("/" not in pattern and fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern))


def select(paths: Iterable[str], include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> list[str]:
    """Paths matching any `include` glob (all if None) and no `exclude` glob, as `git lfs pull -I/-X` read them."""
    include, exclude = list(include or []), list(exclude or [])
    return sorted(p for p in paths if (not include or any(_matches(p, i) for i in include))
                  and not any(_matches(p, x) for x in exclude))


def download_bytes(manifest: dict[str, LFSPointer], paths: Iterable[str] | None = None) -> int:
    return sum(manifest[p].size for p in (manifest if paths is None else paths))


def download_seconds(size_bytes: float, bits_per_second: float) -> float:
    """Transfer time at a sustained link speed (1 byte = 8 bits; protocol overhead and retries not counted)."""
    return size_bytes * 8 / bits_per_second


# ------------------------------------------------------------------------------------------------------- the disk


def free_disk_bytes(where: str | Path) -> int:
    """Free space where files will land; GROK2_COURSE_DISK_LIMIT (bytes, or a size such as 10GB) caps it, to rehearse
    a full disk."""
    where = Path(where).absolute()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    limit = os.environ.get("GROK2_COURSE_DISK_LIMIT")
    if not limit:
        return free
    try:
        return min(free, parse_bytes(limit, "GROK2_COURSE_DISK_LIMIT"))
    except ValueError as error:
        raise CourseError(str(error), "Set GROK2_COURSE_DISK_LIMIT to a size such as 10GB or 500MiB, or unset it.") from None


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


# ------------------------------------------------------------------------------------ the local LFS store and progress


def git_dir(repo: str | Path) -> Path:
    return Path(_git(["rev-parse", "--absolute-git-dir"], cwd=repo).stdout.strip())


def object_path(repo_git_dir: Path, oid: str) -> Path:
    """Where git-lfs keeps a downloaded object: .git/lfs/objects/ab/cd/abcd..."""
    return repo_git_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def stored_bytes(repo_git_dir: Path, pointer: LFSPointer) -> int:
    """Bytes of this object already on this machine: all of them once it is in the LFS store, else the part in
    .git/lfs/incomplete/<oid>.tmp (git-lfs resumes that over HTTPS with a Range request)."""
    done = object_path(repo_git_dir, pointer.oid)
    if done.exists() and done.stat().st_size == pointer.size:
        return pointer.size
    partial = repo_git_dir / "lfs" / "incomplete" / f"{pointer.oid}.tmp"
    return min(partial.stat().st_size, pointer.size) if partial.exists() else 0


def local_progress(repo: str | Path, paths: Iterable[str] | None = None,
                   manifest: dict[str, LFSPointer] | None = None) -> dict[str, int]:
    """{path: bytes already downloaded} for LFS files of `repo` (complete objects and partial downloads)."""
    manifest = manifest or lfs_manifest(repo)
    where = git_dir(repo)
    return {p: stored_bytes(where, manifest[p]) for p in (sorted(manifest) if paths is None else paths)}


def restore_pointer(repo: str | Path, path: str) -> None:
    """Put the pointer back in place of a damaged or partial file, so that `git lfs pull` writes it again."""
    (Path(repo) / path).unlink(missing_ok=True)
    # From the commit, not the index: git-lfs may have staged the damaged file's own (wrong) pointer.
    _git(["checkout", "HEAD", "--", path], cwd=repo, env={"GIT_LFS_SKIP_SMUDGE": "1"})


def git_processes_in(repo: str | Path) -> list[int] | None:
    """Process ids of git / git-lfs commands working in `repo` (Linux: from /proc); None where that cannot be known."""
    proc = Path("/proc")
    if not (proc / "self" / "cwd").exists():
        return None
    repo = Path(repo).resolve()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "comm").read_text().strip() not in ("git", "git-lfs"):
                continue
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or not ours to read
            continue
        if cwd == repo or repo in cwd.parents:
            found.append(int(entry.name))
    return found


def clear_stale_index_lock(repo: str | Path, max_age_s: float = 600) -> bool:
    """Remove .git/index.lock left behind by a killed git command (a killed `git lfs pull` can leave one, and every
    later git command then fails with "Unable to create .../index.lock: File exists"). Only when no git command is
    running in `repo` (or, where that cannot be checked, when the lock is older than `max_age_s`)."""
    lock = git_dir(repo) / "index.lock"
    if not lock.exists():
        return False
    running = git_processes_in(repo)
    stale = not running if running is not None else time.time() - lock.stat().st_mtime > max_age_s
    if not stale:
        raise CourseError(
            f"git's index in {repo} is locked ({lock})" + (f" by running git process(es) {running}." if running else "."),
            "wait for the other git command to finish (or stop it); if none is running, delete that index.lock file",
        )
    lock.unlink()
    print(f"Removed a stale {lock} (left by a killed git command; no git command is running here).", file=sys.stderr)
    return True


def _refresh_index(repo: Path, paths: list[str]) -> None:
    """Make git see verified files as unmodified. A git-lfs checkout killed half-way leaves index entries that record
    the pointer's size, and git takes a size change for a content change; re-adding a verified file stages exactly the
    committed pointer again (git-lfs's clean filter re-hashes it)."""
    if not paths:
        return
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=repo).stdout.splitlines()
    stale = [line[3:] for line in status if line[:2] == " M"]
    if stale:
        _git(["add", "--", *stale], cwd=repo)


def _drop_local_object(repo: str | Path, pointer: LFSPointer) -> None:
    object_path(git_dir(repo), pointer.oid).unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class FileState:
    path: str
    state: str  # "ok", "pointer" (not downloaded), "missing", "size mismatch", "checksum mismatch"
    expected_sha256: str
    actual_sha256: str | None = None
    expected_size: int = 0
    actual_size: int | None = None

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
    """Files already hashed, keyed by (oid, size, mtime): a resumed 500 GB pull need not re-hash 400 GB first.
    Any change to a file (a new mtime or size) makes it be hashed again."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries = json.loads(path.read_text()) if path and path.exists() else {}

    @staticmethod
    def _key(target: Path, pointer: LFSPointer) -> list:
        stat = target.stat()
        return [pointer.oid, stat.st_size, stat.st_mtime_ns]

    def hit(self, path: str, target: Path, pointer: LFSPointer) -> bool:
        return self.path is not None and self.entries.get(path) == self._key(target, pointer)

    def record(self, path: str, target: Path, pointer: LFSPointer) -> None:
        if self.path is not None:
            self.entries[path] = self._key(target, pointer)
            self.path.write_text(json.dumps(self.entries))


def file_state(folder: str | Path, path: str, pointer: LFSPointer, full_check: bool = True,
               cache: VerifiedCache | None = None) -> FileState:
    """How the file at folder/path compares with its pointer: size first, then sha256 of every byte."""
    target = Path(folder) / path
    base = dict(path=path, expected_sha256=pointer.oid, expected_size=pointer.size)
    if not target.exists():
        return FileState(state="missing", **base)
    if pointer.size > POINTER_MAX_BYTES and read_pointer(target) is not None:
        return FileState(state="pointer", actual_size=target.stat().st_size, **base)
    size = target.stat().st_size
    if size != pointer.size:
        return FileState(state="size mismatch", actual_size=size, **base)
    if not full_check or (cache is not None and cache.hit(path, target, pointer)):
        return FileState(state="ok", actual_size=size, **base)
    actual = sha256_of(target)
    if actual == pointer.oid and cache is not None:
        cache.record(path, target, pointer)
    state = "ok" if actual == pointer.oid else "checksum mismatch"
    return FileState(state=state, actual_sha256=actual, actual_size=size, **base)


def verify(folder: str | Path, paths: Iterable[str] | None = None, manifest: dict[str, LFSPointer] | None = None) -> list[FileState]:
    """Check every (selected) LFS file against its pointer: size, then sha256 of the bytes on disk.

    `folder` is a clone (the manifest comes from git) or any folder with a manifest given, e.g. `hub_manifest(...)`
    for files fetched with `hf download`.
    """
    manifest = manifest if manifest is not None else lfs_manifest(folder)
    return [file_state(folder, p, manifest[p]) for p in (sorted(manifest) if paths is None else paths)]


# ---------------------------------------------------------------------------------------------------------- pull


@dataclass
class PullReport:
    """What a pull did: the state of each selected file, and how much was downloaded now versus kept from before."""

    files: list[FileState]
    total_bytes: int  # of the selected files
    kept_bytes: int  # already here when the pull started: verified files, complete or partial downloads
    downloaded_bytes: int  # fetched by this pull
    attempts: int = 0  # git lfs pull runs (0: nothing to do)
    seconds: float = 0.0
    retried_because: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def summary(self) -> str:
        if not self.files:
            return "nothing to pull: the selected files are plain git files, already here with the clone"
        done = sum(f.ok for f in self.files)
        return (f"{done}/{len(self.files)} files verified ({format_bytes(self.total_bytes, binary=False)}); downloaded now "
                f"{format_bytes(self.downloaded_bytes, binary=False)}, kept from before {format_bytes(self.kept_bytes, binary=False)}; "
                f"{self.attempts} git lfs pull run(s), {self.seconds:.1f} s")


def _run_lfs_pull(repo: Path, paths: list[str], manifest: dict[str, LFSPointer], bar, stall_timeout_s: float) -> tuple[int, str]:
    """One `git lfs pull --include <paths>`, watched: the bar follows the bytes landing in .git/lfs; a download that
    makes no progress for `stall_timeout_s` is stopped. Returns (exit code, stderr)."""
    where = git_dir(repo)
    total = sum(manifest[p].size for p in paths)
    last, last_change = sum(stored_bytes(where, manifest[p]) for p in paths), time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(["git", "lfs", "pull", "--include", ",".join(paths), "--exclude", ""], cwd=repo,
                                   stdout=subprocess.DEVNULL, stderr=errors, text=True,
                                   env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        try:
            while process.poll() is None:
                now = sum(stored_bytes(where, manifest[p]) for p in paths)
                if now != last:
                    if bar is not None:
                        bar.update(max(0, now - last))
                    last, last_change = now, time.monotonic()
                elif now < total and time.monotonic() - last_change > stall_timeout_s:
                    process.terminate()
                    process.wait(timeout=60)
                    return 1, f"download stalled: no progress for {stall_timeout_s:.0f} s (connection timed out)"
                time.sleep(0.1)
        except BaseException:  # KeyboardInterrupt (the notebook's stop button) included: never leave git running
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        now = sum(stored_bytes(where, manifest[p]) for p in paths)
        if bar is not None and now > last:
            bar.update(now - last)
        errors.seek(0)
        return process.returncode, errors.read()


def pull(
    repo: str | Path,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    retries: int = 3,
    backoff_s: float = 5.0,
    progress: bool = True,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> PullReport:
    """`git lfs pull` for the selected LFS files, made safe to run, re-run and interrupt:

    * files already present and verified are skipped (a cache remembers what was hashed, keyed by size and mtime);
    * the disk is checked first - git-lfs keeps two copies of each file (.git/lfs/objects and the file itself);
    * progress is shown in bytes; a stalled or failed transfer is retried with exponential backoff, keeping complete
      objects and partial downloads, so a re-run (after a crash, a kill, a reboot) continues where it stopped;
    * every file is verified against its pointer's sha256 and size; a damaged one is fetched again once, then named.
    """
    require_git_lfs()
    started = time.monotonic()
    repo = Path(repo)
    manifest = lfs_manifest(repo)
    wanted = select(manifest, include, exclude)
    if not wanted:
        tracked = [t for t in _git(["ls-files", "-z"], cwd=repo).stdout.split("\0") if t]
        if select(tracked, include, exclude):  # plain git files (config.json ...): they came with the clone
            return PullReport(files=[], total_bytes=0, kept_bytes=0, downloaded_bytes=0,
                              seconds=time.monotonic() - started)
        raise CourseError(f"No file in {repo} matches include={include} exclude={exclude}.",
                          f"check the patterns against the LFS files: {', '.join(list(manifest)[:6])} ...")
    where = git_dir(repo)
    clear_stale_index_lock(repo)
    cache = VerifiedCache(where / "course-verified.json")
    states = {p: file_state(repo, p, manifest[p], cache=cache) for p in wanted}
    todo = [p for p in wanted if not states[p].ok]
    total = download_bytes(manifest, wanted)
    stored_before = {p: stored_bytes(where, manifest[p]) for p in todo}
    kept = download_bytes(manifest, [p for p in wanted if states[p].ok]) + sum(stored_before.values())
    report = PullReport(files=[], total_bytes=total, kept_bytes=kept, downloaded_bytes=0)
    if todo:
        for p in todo:
            if states[p].state != "pointer":
                restore_pointer(repo, p)  # a damaged, half-written or deleted file: git lfs pull will write it again
        to_fetch = sum(manifest[p].size - stored_before[p] for p in todo)
        to_check_out = download_bytes(manifest, todo)
        ensure_disk_space(to_fetch + to_check_out, repo,
                          detail=f" ({format_bytes(to_fetch, binary=False)} to download into .git/lfs/objects, then "
                                 f"{format_bytes(to_check_out, binary=False)} of files checked out from there)")
        _pull_with_retries(repo, todo, manifest, report, retries, backoff_s, progress, stall_timeout_s, stored_before)
        for p in todo:
            states[p] = file_state(repo, p, manifest[p], cache=cache)
        damaged = [p for p in todo if states[p].state in ("size mismatch", "checksum mismatch")]
        if damaged:  # a bad copy in .git/lfs/objects would be checked out again and again: drop it, fetch once more
            for p in damaged:
                _drop_local_object(repo, manifest[p])
                restore_pointer(repo, p)
            _pull_with_retries(repo, damaged, manifest, report, retries, backoff_s, progress, stall_timeout_s,
                               {p: 0 for p in damaged})
            for p in damaged:
                states[p] = file_state(repo, p, manifest[p], cache=cache)
        still_bad = [states[p] for p in todo if not states[p].ok]
        if still_bad:
            raise CourseError("Downloaded file(s) failed verification: " + "; ".join(s.describe() for s in still_bad) + ".",
                              "the source is damaged or changed under you: pin a revision, run the pull again later, or "
                              "report it to the repository's owners")
    _refresh_index(repo, [p for p in wanted if states[p].ok])
    report.files = [states[p] for p in wanted]
    report.seconds = time.monotonic() - started
    return report


def _pull_with_retries(repo: Path, paths: list[str], manifest: dict[str, LFSPointer], report: PullReport, retries: int,
                       backoff_s: float, progress: bool, stall_timeout_s: float, stored_before: dict[str, int]) -> None:
    from tqdm.auto import tqdm

    where = git_dir(repo)
    total = download_bytes(manifest, paths)
    initial = sum(stored_before.values())
    bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc="git lfs pull", disable=not progress)
    try:
        for attempt in range(retries + 1):
            report.attempts += 1
            code, message = _run_lfs_pull(repo, paths, manifest, bar, stall_timeout_s)
            if code == 0:
                break
            complete = [p for p in paths if stored_bytes(where, manifest[p]) == manifest[p].size]
            have = sum(stored_bytes(where, manifest[p]) for p in paths)
            kept = (f"{len(complete)} of the {len(paths)} files are complete and {format_bytes(have, binary=False)} of "
                    f"{format_bytes(total, binary=False)} are on disk - kept, a re-run fetches only the rest")
            error = explain_failure(message, f"git lfs pull in {repo}", kept=kept)
            bad_hash = INVALID_HASH.search(message)
            if bad_hash:  # git-lfs checks each object's sha256 before keeping it: name the file, not a temp path
                actual, expected = bad_hash.groups()
                path = next((p for p in paths if manifest[p].oid == expected), expected)
                error = CourseError(
                    f"{path}: checksum mismatch - the source sent bytes with sha256 {actual}, expected {expected} "
                    "(git-lfs discarded them).",
                    "run the pull again later (a proxy or the connection may have damaged them); if it persists, the "
                    "source itself is damaged: pin a known-good revision or report it to the repository's owners")
            if classify_failure(message) in ("auth", "missing") or attempt == retries:
                raise error
            delay = backoff_s * 2**attempt
            report.retried_because.append(_last_line(message))
            print(f"git lfs pull failed ({_last_line(message)}); {kept}. Retrying in {delay:.1f} s "
                  f"(attempt {attempt + 2} of {retries + 1}).", file=sys.stderr)
            time.sleep(delay)
    except KeyboardInterrupt:
        have = sum(stored_bytes(where, manifest[p]) for p in paths)
        print(f"Interrupted: {format_bytes(have, binary=False)} of {format_bytes(total, binary=False)} are on disk and kept; run the same pull again "
              "to continue.", file=sys.stderr)
        raise
    finally:
        bar.close()
        report.downloaded_bytes += sum(stored_bytes(where, manifest[p]) - stored_before.get(p, 0) for p in paths)


# -------------------------------------------------------------------------------------------------- the hub way


def hub_manifest(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> dict[str, LFSPointer]:
    """{path: pointer} for the LFS files of a hub repository, from the hub's API (nothing downloaded, no git)."""
    from huggingface_hub import HfApi

    try:
        entries = HfApi().list_repo_tree(repo_id, recursive=True, revision=revision, token=token)
        return {e.path: LFSPointer(oid=e.lfs.sha256, size=e.lfs.size) for e in entries if getattr(e, "lfs", None)}
    except Exception as error:  # noqa: BLE001 - turned into a CourseError with the fix
        raise _explain_hub_error(error, repo_id, revision) from error


def _explain_hub_error(error: Exception, repo_id: str, revision: str | None) -> CourseError:
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    if isinstance(error, GatedRepoError):
        return explain_failure(f"403 gated: {error}", f"{repo_id}")
    if isinstance(error, RevisionNotFoundError):
        return CourseError(f"Unknown revision {revision!r} of {repo_id}.",
                           "use a commit hash, branch or tag that exists (the repository's 'Files and versions' > history)")
    if isinstance(error, RepositoryNotFoundError):
        return CourseError(f"No repository {repo_id!r} on the hub (or it is private, or you are not logged in).",
                           "check the id (organisation/name); for a private or gated one, `hf auth login` first")
    if isinstance(error, LocalEntryNotFoundError) or os.environ.get("HF_HUB_OFFLINE") == "1":
        return CourseError(f"Cannot reach the hub for {repo_id}, and the files are not in the local cache ({error}).",
                           "connect to the internet and unset HF_HUB_OFFLINE; behind a proxy set HTTPS_PROXY; then run "
                           "the same call again - complete files are kept and partial ones resume")
    return explain_failure(f"{type(error).__name__}: {error}", f"hub download of {repo_id}",
                           kept="complete files are kept and partial ones (.incomplete) resume")


def hub_download(repo_id: str, local_dir: str | Path | None = None, allow_patterns: list[str] | None = None,
                 revision: str | None = None, max_workers: int = 8, check_disk: bool = True) -> Path:
    """`huggingface_hub.snapshot_download` (what `hf download` runs): parallel HTTPS downloads, resumable, no git.

    Sizes the files first (a dry run: no bytes of weights downloaded) and refuses if they do not fit.
    local_dir=None: into the shared cache (~/.cache/huggingface/hub/models--org--name/snapshots/<commit>/).
    """
    from huggingface_hub import snapshot_download

    kwargs = dict(revision=revision, allow_patterns=allow_patterns, max_workers=max_workers,
                  local_dir=str(local_dir) if local_dir else None)
    try:
        if check_disk:
            from huggingface_hub.constants import HF_HUB_CACHE
            from huggingface_hub.errors import DryRunError

            try:
                plan = snapshot_download(repo_id, dry_run=True, **kwargs)
            except DryRunError:  # no answer from the hub: the real call below says why, precisely
                plan = None
            if plan is not None:
                ensure_disk_space(sum(f.file_size or 0 for f in plan if f.will_download), local_dir or HF_HUB_CACHE)
        return Path(snapshot_download(repo_id, **kwargs))
    except CourseError:
        raise
    except Exception as error:  # noqa: BLE001 - turned into a CourseError with the fix
        raise _explain_hub_error(error, repo_id, revision) from error


# ------------------------------------------------------------------------------------------- tensor-parallel files

TP_FILE = re.compile(r"-TP-(common|\d{3})\.safetensors$")


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


# --------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.download", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pull_cmd = commands.add_parser("pull", help="git lfs pull, guarded, resumable, verified")
    pull_cmd.add_argument("repo")
    pull_cmd.add_argument("--include", nargs="*")
    pull_cmd.add_argument("--exclude", nargs="*")
    pull_cmd.add_argument("--retries", type=int, default=5)
    verify_cmd = commands.add_parser("verify", help="size and sha256 of every LFS file against its pointer")
    verify_cmd.add_argument("repo")
    args = parser.parse_args(argv)
    try:
        if args.command == "pull":
            print(pull(args.repo, include=args.include, exclude=args.exclude, retries=args.retries).summary())
            return 0
        bad = [s for s in verify(args.repo) if not s.ok]
        print("\n".join(s.describe() for s in bad) or "every LFS file matches its pointer")
        return 1 if bad else 0
    except CourseError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
