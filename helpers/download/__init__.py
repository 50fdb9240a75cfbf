"""Getting model weights: Git LFS pointers, clones, pulls, verification, resuming, and the hub download.

    clone = clone_without_weights(url, folder)        # GIT_LFS_SKIP_SMUDGE=1 git clone: pointers, not weights
    manifest = lfs_manifest(clone)                    # {path: LFSPointer}: every size and sha256, nothing downloaded
    report = pull(clone, include=["config.json", "tokenizer*"])   # git lfs pull, guarded, verified, resumable
    verify(clone)                                     # size + sha256 of every file against its pointer
    hub_download("xai-org/grok-2", folder, allow_patterns=[...])   # the faster way: huggingface_hub over HTTPS

Works without torch or transformers: a learner can fetch weights on a machine that cannot run them.
From a terminal (e.g. inside tmux, so that a closed laptop does not stop a download of hundreds of GB):

    python -m helpers.download pull  FOLDER [--include PATTERN ...] [--exclude PATTERN ...] [--rehash]
    python -m helpers.download verify FOLDER

One module per concern: `pointers` (what the large files are, selecting them, sizes), `processes` (running git so that
nothing is left behind), `failures` (why a command failed, in words with the fix), `clone` (git's side: clone,
manifest, the LFS store, cleaning up after kills), `disk`, `integrity` (sha256 against pointers, the hash cache,
safetensors structure), `locks` (one worker per folder), `pulling`, `hub` (`hf download`'s way), `cli`.
"""

from .cli import main
from .clone import (
    clear_stale_index_lock,
    clone_without_weights,
    current_revision,
    drop_local_object,
    git_dir,
    git_processes_in,
    lfs_manifest,
    local_progress,
    object_path,
    refresh_index,
    require_clone,
    restore_pointer,
    stored_bytes,
)
from .disk import ensure_disk_space, free_disk_bytes
from .failures import (
    AUTH_HINTS,
    INVALID_HASH,
    MISSING_HINTS,
    NETWORK_HINTS,
    classify_failure,
    explain_failure,
    git_lfs_install_help,
    require_git_lfs,
)
from .hub import hub_download, hub_manifest
from .locks import claim_folder
from .pointers import (
    MODEL_FILE_SUFFIXES,
    POINTER_LINE,
    POINTER_MAX_BYTES,
    POINTER_VERSION,
    TP_FILE,
    LFSPointer,
    download_bytes,
    download_seconds,
    find_lfs_pointers,
    read_pointer,
    select,
    tensor_parallel_layout,
)
from .processes import GIT_TIMEOUT_S
from .processes import git as _git
from .pulling import STALL_TIMEOUT_S, PullReport, pull, verified_cache
from .integrity import FileState, VerifiedCache, file_state, safetensors_problem, sha256_of, verify

__all__ = [
    "AUTH_HINTS", "GIT_TIMEOUT_S", "INVALID_HASH", "MISSING_HINTS", "MODEL_FILE_SUFFIXES", "NETWORK_HINTS",
    "POINTER_LINE", "POINTER_MAX_BYTES", "POINTER_VERSION", "STALL_TIMEOUT_S", "TP_FILE", "FileState", "LFSPointer", "PullReport",
    "VerifiedCache", "claim_folder", "classify_failure", "clear_stale_index_lock", "clone_without_weights",
    "current_revision", "download_bytes", "download_seconds", "drop_local_object", "ensure_disk_space",
    "explain_failure", "file_state", "find_lfs_pointers", "free_disk_bytes", "git_dir", "git_lfs_install_help",
    "git_processes_in", "hub_download", "hub_manifest", "lfs_manifest", "local_progress", "main", "object_path",
    "pull", "read_pointer", "refresh_index", "require_clone", "require_git_lfs", "restore_pointer",
    "safetensors_problem", "select", "sha256_of", "stored_bytes", "tensor_parallel_layout", "verified_cache", "verify",
]
