"""`pull`: `git lfs pull` for the selected LFS files, made safe to run, re-run, interrupt and kill. One pull per clone
at a time (a lock), the disk checked first, progress in bytes, retries with backoff that keep what arrived, every file
verified against its pointer, a damaged one fetched again once, and no git or git-lfs left running afterwards."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CourseError
from ..units import format_bytes
from .clone import (clear_stale_index_lock, drop_local_object, git_dir, lfs_manifest, refresh_index, restore_pointer,
                    stored_bytes)
from .disk import ensure_disk_space
from .failures import INVALID_HASH, _last_line, classify_failure, explain_failure, require_git_lfs
from .locks import holding
from .pointers import LFSPointer, download_bytes, select
from .processes import finish, git, start, stop
from .integrity import FileState, VerifiedCache, file_state

STALL_TIMEOUT_S = 300  # a pull whose downloads make no progress for this long is treated as a dropped connection
CACHE_FILE = "course-verified.json"  # in .git: the files already hashed (see integrity.VerifiedCache)
LOCK_FILE = "course-pull.lock"  # in .git: one pull per clone at a time


def verified_cache(repo: str | Path) -> VerifiedCache:
    """The clone's record of files already hashed (what `pull` and `load_model(verify=True)` skip)."""
    return VerifiedCache(git_dir(repo) / CACHE_FILE)


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
        cached = sum(f.ok and f.from_cache for f in self.files)
        how = (f"{done - cached} hashed now, {cached} hashed before and unchanged since (size, times and inode; "
               "`verify` re-hashes every byte)") if cached else "every byte hashed now"
        return (f"{done}/{len(self.files)} files verified ({how}); {format_bytes(self.total_bytes, binary=False)}: "
                f"downloaded now {format_bytes(self.downloaded_bytes, binary=False)}, kept from before "
                f"{format_bytes(self.kept_bytes, binary=False)}; {self.attempts} git lfs pull run(s), {self.seconds:.1f} s")


def _run_lfs_pull(repo: Path, paths: list[str], manifest: dict[str, LFSPointer], bar, stall_timeout_s: float) -> tuple[int, str]:
    """One `git lfs pull --include <paths>`, watched: the bar follows the bytes landing in .git/lfs; a download that
    makes no progress for `stall_timeout_s` is stopped. Returns (exit code, stderr). The command runs in its own
    process group behind a watchdog (`processes`): it is ended on every way out of here, and if this process dies."""
    where = git_dir(repo)
    total = sum(manifest[p].size for p in paths)
    last, last_change = sum(stored_bytes(where, manifest[p]) for p in paths), time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = start(["git", "lfs", "pull", "--include", ",".join(paths), "--exclude", ""], cwd=repo,
                        stdout=subprocess.DEVNULL, stderr=errors, env={"GIT_TERMINAL_PROMPT": "0"}, watched=True)
        try:
            while process.poll() is None:
                now = sum(stored_bytes(where, manifest[p]) for p in paths)
                if now != last:
                    if bar is not None:
                        bar.update(max(0, now - last))
                    last, last_change = now, time.monotonic()
                elif now < total and time.monotonic() - last_change > stall_timeout_s:
                    stop(process)
                    return 1, f"download stalled: no progress for {stall_timeout_s:.0f} s (connection timed out)"
                time.sleep(0.1)
        except BaseException:  # KeyboardInterrupt (the stop button, Ctrl-C, SIGTERM from the CLI): never leave git running
            stop(process)
            raise
        finish(process)
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
    rehash: bool = False,
) -> PullReport:
    """`git lfs pull` for the selected LFS files, made safe to run, re-run and interrupt:

    * files already present and verified are skipped: a cache remembers what was hashed, and trusts it only while the
      file's size, mtime, ctime and inode are unchanged (see `integrity.VerifiedCache`); `rehash=True` hashes every byte;
    * the disk is checked first - git-lfs keeps two copies of each file (.git/lfs/objects and the file itself);
    * progress is shown in bytes; a stalled or failed transfer is retried with exponential backoff, keeping complete
      objects and partial downloads, so a re-run (after a crash, a kill, a reboot) continues where it stopped;
    * every file is verified against its pointer's sha256 and size; a damaged one is fetched again once, then named;
    * one pull per clone at a time: a second one is refused, naming the first one's process.
    """
    require_git_lfs()
    started = time.monotonic()
    repo = Path(repo)
    manifest = lfs_manifest(repo)  # refuses, with the fix, a folder that is not a clone
    wanted = select(manifest, include, exclude)
    if not wanted:
        tracked = [t for t in git(["ls-files", "-z"], cwd=repo).stdout.split("\0") if t]
        if select(tracked, include, exclude):  # plain git files (config.json ...): they came with the clone
            return PullReport(files=[], total_bytes=0, kept_bytes=0, downloaded_bytes=0,
                              seconds=time.monotonic() - started)
        raise CourseError(f"No file in {repo} matches include={include} exclude={exclude}.",
                          f"check the patterns against the LFS files: {', '.join(list(manifest)[:6])} ...")
    where = git_dir(repo)
    with holding(where / LOCK_FILE, f"a pull in {repo}", busy=f"another pull is running in {repo}",
                 fix="wait for it to finish (it prints a summary), or stop it (what it downloaded is kept); then run "
                     "this pull again"):
        return _locked_pull(repo, manifest, wanted, retries, backoff_s, progress, stall_timeout_s, rehash, started)


def _locked_pull(repo: Path, manifest: dict[str, LFSPointer], wanted: list[str], retries: int, backoff_s: float,
                 progress: bool, stall_timeout_s: float, rehash: bool, started: float) -> PullReport:
    where = git_dir(repo)
    clear_stale_index_lock(repo)
    cache = verified_cache(repo)
    if rehash:
        cache.entries = {}
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
                drop_local_object(repo, manifest[p])
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
    refresh_index(repo, [p for p in wanted if states[p].ok])
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
        print(f"Interrupted: {format_bytes(have, binary=False)} of {format_bytes(total, binary=False)} are on disk and "
              "kept; no git or git-lfs process is left running; run the same pull again to continue.", file=sys.stderr)
        raise
    finally:
        bar.close()
        report.downloaded_bytes += sum(stored_bytes(where, manifest[p]) - stored_before.get(p, 0) for p in paths)
