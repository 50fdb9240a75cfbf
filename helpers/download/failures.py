"""Why a git, git-lfs or hub command failed, in words a learner can act on: is git-lfs installed (and how to install
it on each platform), and is a failure about access (401/403, gated), a missing repository, or the network."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from ..errors import CourseError

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


def git_missing() -> CourseError:
    """The error for a machine without git (no `git` on PATH): what to install, git and git-lfs, on each platform."""
    return CourseError(
        "git is not installed (no `git` program on PATH): clones, pulls and checks of a clone need git and git-lfs.",
        "install git (Debian/Ubuntu: `sudo apt-get install git git-lfs`; Fedora/RHEL: `sudo dnf install git git-lfs`; "
        "macOS: `brew install git git-lfs`; Windows: Git for Windows from git-scm.com, git-lfs included; conda: "
        "`conda install -c conda-forge git git-lfs`), run `git lfs install` once, then restart Jupyter (or the "
        "terminal) so that PATH includes them; files fetched with `hf download` need no git: check them with "
        "`download.verify(folder, manifest=download.hub_manifest(repo_id))`")


def require_git_lfs() -> str:
    """git-lfs's version line, or a CourseError that says how to install it (and git) on each platform."""
    if shutil.which("git") is None:
        raise git_missing()
    try:
        result = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        result = None
    if result is None or result.returncode != 0:
        raise CourseError("git-lfs is not installed: a clone would contain pointer files, not weights.", git_lfs_install_help())
    return result.stdout.strip()


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
