"""The hub way: `huggingface_hub` over HTTPS (what `hf download` runs): sizes and checksums of a hub repository's LFS
files from its API, and a parallel, resumable download that checks the disk first. No git needed."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CourseError
from .disk import ensure_disk_space
from .failures import explain_failure
from .pointers import LFSPointer


def _refuse_when_offline(repo_id: str) -> None:
    """Fail in seconds, not after minutes of retries, when the hub cannot be reached at all."""
    from ..network import hub_offline_reason

    reason = hub_offline_reason()
    if reason and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on"):
        raise CourseError(f"Cannot reach the hub for {repo_id}: {reason}.",
                          "connect to the internet (behind a proxy, set HTTPS_PROXY) and run the same call again - "
                          "complete files are kept and partial ones resume")


def hub_manifest(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> dict[str, LFSPointer]:
    """{path: pointer} for the LFS files of a hub repository, from the hub's API (nothing downloaded, no git)."""
    from huggingface_hub import HfApi

    _refuse_when_offline(repo_id)
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

    _refuse_when_offline(repo_id)
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
