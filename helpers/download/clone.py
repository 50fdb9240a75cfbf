"""The clone: git's side of a model repository. Cloning without the weights, reading every LFS pointer from git's
objects, the local LFS store (complete and partial downloads), putting a pointer back, and cleaning up after a git
command that was killed half-way (a stale index.lock, index entries that still record the pointer)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import CourseError
from .failures import explain_failure, require_git_lfs
from .pointers import POINTER_MAX_BYTES, LFSPointer
from .processes import GIT_TIMEOUT_S, git

SKIP_SMUDGE = {"GIT_LFS_SKIP_SMUDGE": "1", "GIT_TERMINAL_PROMPT": "0"}


def require_clone(folder: str | Path) -> Path:
    """`folder` if it is the top of a git clone, else a CourseError that says what it is instead, and what to pass."""
    folder = Path(folder).expanduser()
    make_one = "`download.clone_without_weights(url, folder)` makes one (lesson 01)"
    if not folder.exists():
        relative = "" if folder.is_absolute() else f" (a relative path starts from {Path.cwd()})"
        raise CourseError(f"{folder} does not exist{relative}.", f"pass the folder you cloned into; {make_one}")
    if not folder.is_dir():
        raise CourseError(f"{folder} is a file, not a clone.", f"pass the folder you cloned into; {make_one}")
    result = git(["rev-parse", "--show-toplevel"], cwd=folder, check=False)
    top = Path(result.stdout.strip()).resolve() if result.returncode == 0 and result.stdout.strip() else None
    if top != folder.resolve():
        if top is not None:
            what = f"a folder inside the git repository {top}, not a clone of its own"
        elif "not a git repository" in result.stderr:
            what = "not a git clone"
        else:
            what = f"not a usable git clone (git says: {result.stderr.strip()[:200]})"
        raise CourseError(f"{folder} is {what}.",
                          f"pass the folder you cloned into; {make_one}; for files fetched with `hf download`, check them "
                          "with `download.verify(folder, manifest=download.hub_manifest(repo_id))`")
    return folder


def clone_without_weights(url: str, destination: str | Path, revision: str | None = None) -> Path:
    """`GIT_LFS_SKIP_SMUDGE=1 git clone`: history and small files, a pointer for each LFS file (seconds, not hours).

    revision: a commit hash (or tag/branch) to check out - record the hash to make a download reproducible.
    """
    require_git_lfs()
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise CourseError(f"{destination} exists and is not empty.", "choose a new folder, or delete this one if it is yours to delete")
    try:
        git(["clone", "--quiet", url, str(destination)], env=SKIP_SMUDGE, timeout=3600)
    except subprocess.CalledProcessError as error:
        raise explain_failure(error.stderr or error.stdout or "", f"git clone {url}") from error
    git(["lfs", "install", "--local"], cwd=destination)  # filters for this clone, even if `git lfs install` never ran
    if revision:
        try:
            git(["checkout", "--quiet", revision], cwd=destination, env=SKIP_SMUDGE)
        except subprocess.CalledProcessError as error:
            raise CourseError(
                f"Unknown revision {revision!r} in {url}.",
                "use a commit hash (or branch/tag) that exists: `git log --oneline` in the clone lists them; on the hub, "
                "the repository's 'Files and versions' > history",
            ) from error
    return destination


def current_revision(repo: str | Path) -> str:
    """The commit hash checked out in `repo`: write it down to download the same bytes again later."""
    return git(["rev-parse", "HEAD"], cwd=require_clone(repo)).stdout.strip()


def lfs_manifest(repo: str | Path, revision: str = "HEAD") -> dict[str, LFSPointer]:
    """{path: pointer} for every LFS file of `revision`, read from git's objects (works whatever is downloaded)."""
    listing = git(["ls-tree", "-r", "-l", "-z", revision], cwd=require_clone(repo)).stdout.split("\0")
    small = {}
    for entry in filter(None, listing):
        meta, path = entry.split("\t", 1)
        _, kind, blob, size = meta.split()
        if kind == "blob" and size.isdigit() and int(size) <= POINTER_MAX_BYTES:
            small[blob] = small.get(blob, []) + [path]
    if not small:
        return {}
    batch = git(["cat-file", "--batch"], cwd=repo, input="\n".join(small).encode() + b"\n", text=False).stdout
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


def git_dir(repo: str | Path) -> Path:
    """The clone's .git folder, as an absolute path (a CourseError with the fix if `repo` is not a clone)."""
    plain = Path(repo).expanduser() / ".git"
    if (plain / "HEAD").is_file() and (plain / "objects").is_dir():
        # An ordinary clone, known without starting git: progress bars and polling loops ask many times a second.
        return plain.resolve()
    try:  # a worktree or submodule (.git is a file naming the real folder), a folder inside a clone, or no clone
        return Path(git(["rev-parse", "--absolute-git-dir"], cwd=repo).stdout.strip())
    except (subprocess.CalledProcessError, OSError):  # no such folder (OSError from the cwd), or not a repository
        require_clone(repo)
        raise


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
    git(["checkout", "HEAD", "--", path], cwd=repo, env={"GIT_LFS_SKIP_SMUDGE": "1"})


def drop_local_object(repo: str | Path, pointer: LFSPointer) -> None:
    """Delete a (damaged) object from the clone's LFS store, so that the next pull fetches it again."""
    object_path(git_dir(repo), pointer.oid).unlink(missing_ok=True)


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


HASH_FLOOR_BYTES_PER_S = 20_000_000  # the slowest disk + sha256 a timeout allows for (a USB disk, a network share)


def refresh_index(repo: Path, paths: list[str]) -> None:
    """Make git see verified files as unmodified. A git-lfs checkout killed half-way leaves index entries that record
    the pointer's size, and git takes a size change for a content change; re-adding a verified file stages exactly the
    committed pointer again (git-lfs's clean filter re-hashes it)."""
    if not paths:
        return
    # Both commands may run git-lfs's clean filter, which hashes whole files: allow for the bytes at a slow disk's
    # pace rather than cut a legitimate re-hash of hundreds of GB short (both run watched, like every git command).
    size = sum((Path(repo) / p).stat().st_size for p in paths if (Path(repo) / p).is_file())
    timeout = GIT_TIMEOUT_S + size / HASH_FLOOR_BYTES_PER_S
    status = git(["status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=repo,
                 timeout=timeout).stdout.splitlines()
    stale = [line[3:] for line in status if line[:2] == " M"]
    if stale:
        git(["add", "--", *stale], cwd=repo, timeout=timeout)
